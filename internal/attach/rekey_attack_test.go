package attach_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/schema"
)

// shiftCases gives case 1 to bob, as case 2 is (so that no owner change
// marks id 2), then moves cases 2 -> 3 and 1 -> 2 in one UPDATE, in the
// order of a sequential scan (the update of case 1 put it last).
var shiftCases = []string{`UPDATE support."case" SET owner_id = 'bob' WHERE id = 1`,
	`SET LOCAL enable_indexscan = off`, `SET LOCAL enable_bitmapscan = off`, `UPDATE support."case" SET id = id + 1`}

// TestRekeyAttackOneStatementTakesAVacatedID: one UPDATE of an attached
// table moves a row off its id and another row onto it (cases 2 -> 3 and
// 1 -> 2, in the order a sequential scan reads them; a unique index checks
// each row as it is written, so the chain goes through). Both rows changed
// their id, and a row whose id an UPDATE changes away is gone (version 54):
// its record's shares and team entries go, as they do for the same UPDATE
// of recalc.record. But the capture of an UPDATE pairs old and new rows by
// id, so it read id 2 as one row updated in place, and frank's manual share
// on case 2, and the team entry of account 2, went to
// the rows that took the id: other cases and accounts, owned by the same
// users, which nothing shares with frank. Found by an attack helper.
func TestRekeyAttackOneStatementTakesAVacatedID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		stmts  []string // run as the application, in one transaction
		record string   // a record frank had edit on through its manual share or its team
		level  string   // what frank has on it after the writes and a run
	}{
		{"update, cases", shiftCases, "case:2", "none"},
		// Every attached column alike: the capture logged nothing at all.
		// Read, not none: his share on case 2, still under account 2, gives
		// it (implicit parent access); the team's edit must go.
		{"update, accounts alike", []string{`UPDATE crm.account SET vip = false WHERE id = 2`,
			`UPDATE crm.account SET owner_id = 'dave', industry = 'energy', amount = 250.5, vip = false WHERE id = 1`,
			`UPDATE crm.account SET name = name WHERE id = 1`, `DELETE FROM crm.account WHERE id = 3`,
			`UPDATE support."case" SET account_id = 2`,
			`SET LOCAL enable_indexscan = off`, `SET LOCAL enable_bitmapscan = off`,
			`UPDATE crm.account SET id = id + 1 WHERE id IN (1, 2)`}, "account:2", "read"},
		{"merge", []string{`UPDATE support."case" SET owner_id = 'bob' WHERE id = 1`,
			`SET LOCAL enable_indexscan = off`, `SET LOCAL enable_bitmapscan = off`, `SET LOCAL enable_hashjoin = off`, `SET LOCAL enable_mergejoin = off`,
			`MERGE INTO support."case" c USING (SELECT 1) v(x) ON true WHEN MATCHED THEN UPDATE SET id = c.id + 1`}, "case:2", "none"},
		{"upsert", []string{`UPDATE support."case" SET owner_id = 'bob' WHERE id = 1`,
			`INSERT INTO support."case" VALUES (2, 2, 'bob', 1, 'Closed'), (1, 1, 'bob', 4, 'New') ON CONFLICT (id) DO UPDATE SET id = excluded.id + 1`}, "case:2", "none"},
		// The chain made by a foreign key's ON UPDATE CASCADE: the cascaded
		// updates fire the statement's capture once, over both rows (old
		// ids 2 and 1, new 3 and 2), so only the fifth trigger tells that
		// id 2 changed hands.
		{"on update cascade", []string{`UPDATE support."case" SET owner_id = 'bob' WHERE id = 1`,
			`CREATE TABLE crm.case_no (n bigint PRIMARY KEY)`, `INSERT INTO crm.case_no VALUES (1), (2)`,
			`ALTER TABLE support."case" ADD FOREIGN KEY (id) REFERENCES crm.case_no ON UPDATE CASCADE`,
			`UPDATE crm.case_no SET n = n WHERE n = 1`, `SET LOCAL enable_indexscan = off`, `SET LOCAL enable_bitmapscan = off`,
			`UPDATE crm.case_no SET n = n + 1`}, "case:2", "none"},
		// An update that keeps the ids keeps the shares.
		{"update keeping the ids", []string{`UPDATE support."case" SET priority = priority + 1`}, "case:2", "edit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupSharedCase(t)
			if _, err := testkit.ImportString(context.Background(), b.engine, `{"teams": [{"record": "account:2", "user": "frank", "access": "edit"}]}`); err != nil {
				t.Fatal(err)
			}
			b.run(t)
			if got := levelOf(t, b, "frank", "account:2"); got != "edit" {
				t.Fatalf("premise: frank has %s on account:2, want edit (the team entry)", got)
			}
			appTx(t, b, tc.stmts...)
			b.checkMirrorAfterRun(t, tc.name)
			if got := levelOf(t, b, "frank", tc.record); got != tc.level {
				t.Errorf("after the rows moved off their ids and onto others': frank has %s on %s, want %s", got, tc.record, tc.level)
			}
			if out, err := b.recalc("verify"); err != nil {
				t.Errorf("verify: %v\n%s", err, out)
			}
		})
	}
}

// TestRekeyCaptureUpgrade: a capture installed before version 67, its fifth
// trigger an AFTER DELETE ... WHEN (false), gets the new fifth trigger from
// the upgrade, run by the engine, which does not own the table (it drops
// the old trigger with its function), once the migration has committed, in
// a short transaction of its own: while the application holds the table,
// the upgrade says so and leaves the old trigger, and `recalc init` again
// renews it. The chain of ids is then marked.
func TestRekeyCaptureUpgrade(t *testing.T) {
	t.Parallel()
	b := setupSharedCase(t)
	ctx := context.Background()
	pin := oldCasePin(t, b)
	if def := pin(); !strings.Contains(def, "AFTER DELETE") {
		t.Fatalf("premise: the old fifth trigger: %s", def)
	}
	// An application transaction holds the table: the schema is migrated,
	// the trigger is not renewed, and the error says to run init again.
	tx, _ := hold(t, b.app, `UPDATE support."case" SET status = status WHERE id = 1`)
	if _, err := schema.Migrate(ctx, b.engine); err == nil || !strings.Contains(err.Error(), "capture of object case kept its old trigger") {
		t.Fatalf("upgrade while the application holds the table: %v, want the schema migrated and the trigger left", err)
	}
	if err := schema.Check(ctx, b.engine); err != nil {
		t.Fatalf("after the upgrade while the table was held: %v", err)
	}
	if def := pin(); !strings.Contains(def, "AFTER DELETE") {
		t.Fatalf("the fifth trigger, renewed under the application's lock: %s", def)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.Migrate(ctx, b.engine); err != nil {
		t.Fatalf("upgrade as the engine: %v", err)
	}
	if def := pin(); !strings.Contains(def, "AFTER UPDATE") || !strings.Contains(def, "IS DISTINCT FROM") {
		t.Fatalf("after the upgrade, the fifth trigger: %s", def)
	}
	b.run(t) // reads the object again whole: its fingerprint changed
	if got := levelOf(t, b, "frank", "case:2"); got != "edit" {
		t.Fatalf("after the upgrade and a run: frank has %s on case:2, want edit (his manual share, kept)", got)
	}
	appTx(t, b, shiftCases...)
	b.checkMirrorAfterRun(t, "after the upgrade and the chain of ids")
	if got := levelOf(t, b, "frank", "case:2"); got != "none" {
		t.Errorf("after the upgrade and the chain of ids: frank has %s on case:2, want none", got)
	}
	if out, err := b.recalc("verify"); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}

// oldCasePin gives support.case's capture the fifth trigger as version 20
// made it and sets the schema back to version 66, as a database attached
// before version 67 is; it returns a function that reads the trigger's
// definition.
func oldCasePin(t *testing.T, b *bundle) func() string {
	t.Helper()
	ctx := context.Background()
	var fn string
	if err := b.engine.QueryRow(ctx, `SELECT func FROM recalc.attach_capture WHERE object = 'case' AND relid = 'support.case'::regclass`).Scan(&fn); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `DROP TRIGGER `+ident(fn+"_pin")+` ON support."case"`)
	b.exec(t, b.engine, `CREATE TRIGGER `+ident(fn+"_pin")+` AFTER DELETE ON support."case" REFERENCING OLD TABLE AS old_rows
			FOR EACH ROW WHEN (false) EXECUTE FUNCTION recalc.`+ident(fn)+`()`,
		`UPDATE recalc.attach_capture c SET fingerprint = f.fingerprint FROM recalc.attach_fingerprints() f WHERE f.object = c.object AND f.relid = c.relid`,
		`DELETE FROM recalc.schema_version WHERE version >= 67`)
	return func() string {
		t.Helper()
		var def string
		if err := b.admin.QueryRow(ctx, `SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'support.case'::regclass AND tgname = $1`, fn+"_pin").Scan(&def); err != nil {
			t.Fatal(err)
		}
		return def
	}
}

// TestInitWarnsThoughAPinIsLeft: `recalc init` whose upgrade leaves a
// table its old fifth trigger (the application holds the table) exits 1
// saying so, but first says what every init says of the migrated schema:
// the migrations applied, and the tables whose row-level security
// policies an earlier recalc installed (to enable again). It returned at
// the trigger's error, so an operator whose application held a table at
// the upgrade was never told of the outdated policies, nor at any later
// init while a table could not be renewed.
func TestInitWarnsThoughAPinIsLeft(t *testing.T) {
	t.Parallel()
	b := setupOwnRoles(t) // rls enable runs as the application, made a member of the engine's role
	b.mustAttach(t, crmSpec)
	b.run(t)
	b.rlsEnableWarnings(t, "--table", "crm.opportunity", "--object", "opportunity", "--write")
	b.exec(t, b.app, `COMMENT ON POLICY recalc_read ON crm.opportunity IS NULL`) // as an earlier recalc left it
	pin := oldCasePin(t, b)
	tx, _ := hold(t, b.app, `UPDATE support."case" SET status = status WHERE id = 1`)
	_, err := b.recalc("init")
	if err == nil || !strings.Contains(err.Error(), "capture of object case kept its old trigger") {
		t.Fatalf("init while the application holds support.case: %v, want the trigger left named", err)
	}
	for _, want := range []string{"schema created or upgraded", `"table":"crm.opportunity"`, "an earlier recalc installed this table's row-level security policies",
		"(role " + b.appRole + ")"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("init that left a trigger did not say %q: %v", want, err)
		}
	}
	if def := pin(); !strings.Contains(def, "AFTER DELETE") {
		t.Fatalf("premise: the fifth trigger, renewed under the application's lock: %s", def)
	}
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.recalc("init"); err != nil {
		t.Fatalf("init once the table is free: %v", err)
	}
	if def := pin(); !strings.Contains(def, "AFTER UPDATE") {
		t.Errorf("after init with the table free, the fifth trigger: %s", def)
	}
}

// TestRekeyCaptureUpgradeWithoutTriggerRight: the application, which owns
// its table, may revoke the engine's TRIGGER right on it. The upgrade's
// renewal of the fifth trigger (which drops the old capture function with
// its triggers, then creates them anew) then fails on that table alone:
// the schema is migrated, the error names the object, and the old capture
// is left whole (its five triggers; the application's writes go through);
// once the right is back, the upgrade renews it. Held: an attack helper
// tried to make the renewal leave the table with no capture at all.
func TestRekeyCaptureUpgradeWithoutTriggerRight(t *testing.T) {
	t.Parallel()
	b := setupSharedCase(t)
	ctx := context.Background()
	pin := oldCasePin(t, b)
	b.exec(t, b.app, `REVOKE TRIGGER ON support."case" FROM `+ident(b.engineRole))
	if _, err := schema.Migrate(ctx, b.engine); err == nil || !strings.Contains(err.Error(), "capture of object case kept its old trigger") {
		t.Fatalf("upgrade without the TRIGGER right: %v, want the schema migrated and the trigger left", err)
	}
	var triggers int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM pg_trigger t JOIN recalc.attach_capture c ON c.relid = t.tgrelid
		AND t.tgfoid = to_regprocedure('recalc.' || quote_ident(c.func) || '()') WHERE c.object = 'case'`).Scan(&triggers); err != nil {
		t.Fatal(err)
	}
	if def := pin(); triggers != 5 || !strings.Contains(def, "AFTER DELETE") {
		t.Fatalf("after the upgrade that could not renew: %d capture triggers, the fifth %s; want the old five", triggers, def)
	}
	appTx(t, b, `UPDATE support."case" SET priority = priority + 1 WHERE id = 2`)
	b.exec(t, b.app, `GRANT TRIGGER ON support."case" TO `+ident(b.engineRole))
	if _, err := schema.Migrate(ctx, b.engine); err != nil {
		t.Fatalf("upgrade with the right back: %v", err)
	}
	if def := pin(); !strings.Contains(def, "AFTER UPDATE") {
		t.Errorf("after the upgrade with the right back, the fifth trigger: %s", def)
	}
	b.checkMirrorAfterRun(t, "after the renewal")
}

// TestRenewPinHonoursSessionLockTimeout: the upgrade's renewal of the
// fifth trigger waited 200 ms for each try of its lock, ten tries in about
// 6.5 s, whatever the session's lock_timeout, where the migrations before
// it wait the session's lock_timeout for each lock: an application that
// held a table for 8 s left it its old trigger. With lock_timeout = 10s
// in the engine's connection options, each try waits that long, within 10
// s of tries (migrateWait), and the renewal waits for the table.
//
// With a lock_timeout shorter than the 10 s, each try waited the whole of
// it, the last one starting just before the 10 s ran out: with 7s, beside
// an application holding the table throughout, it gave up after two
// tries, 14 s, its writes queued behind the second for 4 s past the 10 s
// the docs give. The tries after the first wait what is left of the 10 s,
// so it gives up, the old trigger kept, after about 10 s.
func TestRenewPinHonoursSessionLockTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		lockTimeout string
		held        time.Duration // how long the application holds the table; 0: throughout
		renewed     bool
	}{
		{"10s", 8 * time.Second, true},
		{"7s", 0, false},
	} {
		t.Run("lock_timeout "+tc.lockTimeout, func(t *testing.T) {
			t.Parallel()
			b := setupSharedCase(t)
			ctx := context.Background()
			pin := oldCasePin(t, b)
			cfg := b.engine.Config()
			cfg.ConnConfig.RuntimeParams["lock_timeout"] = tc.lockTimeout
			engine, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer engine.Close()
			tx, _ := hold(t, b.app, `UPDATE support."case" SET status = status WHERE id = 1`)
			released := make(chan struct{})
			if tc.held > 0 {
				time.AfterFunc(tc.held, func() { _ = tx.Rollback(context.Background()); close(released) })
			} else {
				close(released) // the test's cleanup ends the transaction
			}
			start := time.Now()
			_, err = schema.Migrate(ctx, engine)
			took := time.Since(start)
			<-released
			switch def := pin(); {
			case tc.renewed && (err != nil || took < tc.held || !strings.Contains(def, "AFTER UPDATE")):
				t.Errorf("upgrade with lock_timeout %s while the application holds support.case for %s: %v after %s, the fifth trigger %s; "+
					"want the renewal to wait for it", tc.lockTimeout, tc.held, err, took.Round(100*time.Millisecond), def)
			case !tc.renewed && (!errors.As(err, new(*schema.PinsError)) || took < 9500*time.Millisecond || took > 12500*time.Millisecond ||
				!strings.Contains(def, "AFTER DELETE")):
				t.Errorf("upgrade with lock_timeout %s while the application holds support.case throughout: %v after %s, the fifth trigger %s; "+
					"want the old trigger kept after about 10 s", tc.lockTimeout, err, took.Round(100*time.Millisecond), def)
			}
		})
	}
}
