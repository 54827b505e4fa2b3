package attach_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/testkit"
)

// uaState reads the invalid records of object (id and reason's head) and
// the stuck objects.
func (b *bundle) uaState(t *testing.T, object string) (invalid, stuck string) {
	t.Helper()
	if err := b.admin.QueryRow(context.Background(), `SELECT
		(SELECT coalesce(string_agg(record || ' ' || split_part(reason, ' (', 1), ',' ORDER BY record), '') FROM recalc.invalid_record WHERE record LIKE $1 || ':%'),
		(SELECT coalesce(string_agg(object || ' ' || coalesce(error_code, ''), ','), '') FROM recalc.attach_stuck)`, object).Scan(&invalid, &stuck); err != nil {
		t.Fatal(err)
	}
	return invalid, stuck
}

// uaLevel is user's access level to record key.
func (b *bundle) uaLevel(t *testing.T, user, key string) string {
	t.Helper()
	var got string
	if err := b.engine.QueryRow(context.Background(), `SELECT recalc.access_level($1, $2)`, user, key).Scan(&got); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestUnreadableAggregateViewBlamesTheView: an account view that
// aggregates (GROUP BY) is not flattened into the absorb's read, so the
// read computes every group whatever ids it asks for: one opportunity whose
// stage the view's cast does not fit makes every read fail, alone too. A
// read of an id that names no row fails as well, so the view is to blame:
// the object's writes wait (stuck with the SQLSTATE) rather than every
// account be mirrored closed. (Before, the check read no id at all, which
// a semi-join answers without computing the view, and every account was
// closed: one application row revoked the whole object.)
func TestUnreadableAggregateViewBlamesTheView(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.account_agg AS
		SELECT a.id, a.owner_id, max((o.stage)::integer) AS top_stage
		FROM crm.account a LEFT JOIN crm.opportunity o ON o.account_id = a.id GROUP BY a.id, a.owner_id`)
	b.exec(t, b.app, `INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000001', 1, 'bob', '2', 10, NULL)`)
	spec := `{"objects": [
  {"object": "account", "table": "crm_recalc.account_agg", "id": "id", "owner": "owner_id", "fields": ["top_stage"],
   "capture": [{"table": "crm.account", "id": "id"}, {"table": "crm.opportunity", "id": "account_id"}]}]}`
	if out, err := b.attach(t, spec); err != nil {
		t.Fatalf("attach: %v\n%s", err, out)
	}
	b.run(t)
	if l := b.uaLevel(t, "dave", "account:2"); l != "all" {
		t.Fatalf("dave's access to account:2 is %s before, want all", l)
	}
	b.exec(t, b.app, `UPDATE crm.opportunity SET stage = 'won' WHERE account_id = 1`,
		`UPDATE crm.account SET name = 'Globex 2' WHERE id IN (2, 3)`)
	b.run(t)
	invalid, stuck := b.uaState(t, "account")
	if invalid != "" || stuck != "account 22P02" {
		t.Errorf("one opportunity the aggregating view cannot read: invalid records %q, stuck %q; want none closed, account stuck with 22P02", invalid, stuck)
	}
	if l := b.uaLevel(t, "dave", "account:2"); l != "all" {
		t.Errorf("dave, account:2's owner, has %s to it, want all", l)
	}
}

// uaSpec attaches accounts through a view casting a text score, the
// contacts through contact_v, and cases through a view casting their status:
// a row whose score or status is no integer is unreadable.
const uaSpec = `{"objects": [
  {"object": "account", "table": "crm_recalc.account_s", "id": "id", "owner": "owner_id",
   "fields": ["industry", "vip", "score"], "territories": "territories", "capture": [{"table": "crm.account", "id": "id"}]},
  {"object": "contact", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["title"], "capture": [{"table": "crm.contact", "id": "id"}, {"table": "crm.contact_account", "id": "contact_id"}]},
  {"object": "case", "table": "crm_recalc.case_s", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["priority", "status_n"], "capture": [{"table": "support.case", "id": "id"}]}]}`

// uaSetup attaches uaSpec over the CRM (every score and status readable).
func uaSetup(t *testing.T) *bundle {
	t.Helper()
	b := setup(t)
	b.exec(t, b.app, `ALTER TABLE crm.account ADD COLUMN score text NOT NULL DEFAULT '1'`,
		`UPDATE support."case" SET status = '1'`)
	b.exec(t, b.engine,
		`CREATE VIEW crm_recalc.account_s AS SELECT a.id, a.owner_id, a.industry, a.vip, a.territories, (a.score)::integer AS score FROM crm.account a`,
		`CREATE VIEW crm_recalc.case_s AS SELECT c.id, c.owner_id, c.account_id, c.priority, (c.status)::integer AS status_n FROM support."case" c`)
	b.mustAttach(t, uaSpec)
	b.run(t)
	return b
}

// uaIncrementalEqualsFull fails unless the access an incremental run left
// equals a full run's.
func (b *bundle) uaIncrementalEqualsFull(t *testing.T, when string) {
	t.Helper()
	ctx := context.Background()
	b.run(t)
	inc := testkit.AccessCSV(t, ctx, b.engine)
	b.full(t)
	if full := testkit.AccessCSV(t, ctx, b.engine); inc != full {
		t.Errorf("%s: the incremental run's access differs from a full run's\nincremental:\n%s\nfull:\n%s", when, inc, full)
	}
}

// TestUnreadableFamiliesGetNoAccess: a case that cannot be read loses its
// parent, so its owner's implicit read of the account goes; an account that
// cannot be read closes its case and controlled-by-parent contact too (their
// parent is invalid); incremental runs agree with full ones throughout.
func TestUnreadableFamiliesGetNoAccess(t *testing.T) {
	t.Parallel()
	b := uaSetup(t)
	b.exec(t, b.app, `INSERT INTO support."case" VALUES (3, 3, 'frank', 1, '1')`,
		`INSERT INTO crm.contact VALUES ('00000000-0000-0000-0000-0000000000c3', 'dave', 'CFO', NULL)`,
		`INSERT INTO crm.contact_account VALUES ('00000000-0000-0000-0000-0000000000c3', 3)`)
	b.run(t)
	const contact = "contact:00000000-0000-0000-0000-0000000000c3"
	want := func(when string, levels map[[2]string]string) {
		t.Helper()
		b.run(t)
		for k, l := range levels {
			if got := b.uaLevel(t, k[0], k[1]); got != l {
				t.Errorf("%s: %s's access to %s is %s, want %s", when, k[0], k[1], got, l)
			}
		}
	}
	want("all readable", map[[2]string]string{{"frank", "account:3"}: "read", {"frank", "case:3"}: "all", {"carol", contact}: "all"})
	b.uaIncrementalEqualsFull(t, "all readable")

	b.exec(t, b.app, `UPDATE support."case" SET status = 'n/a' WHERE id = 3`)
	want("case:3 unreadable", map[[2]string]string{{"frank", "account:3"}: "none", {"frank", "case:3"}: "none", {"carol", "account:3"}: "all"})
	b.uaIncrementalEqualsFull(t, "case:3 unreadable")

	b.exec(t, b.app, `UPDATE support."case" SET status = '2' WHERE id = 3`, `UPDATE crm.account SET score = 'high' WHERE id = 3`)
	want("account:3 unreadable", map[[2]string]string{{"frank", "account:3"}: "none", {"frank", "case:3"}: "none",
		{"carol", "account:3"}: "none", {"carol", contact}: "none", {"dave", contact}: "none", {"alice", "case:3"}: "none"})
	b.uaIncrementalEqualsFull(t, "account:3 unreadable")

	b.exec(t, b.app, `UPDATE crm.account SET score = '3' WHERE id = 3`)
	want("corrected", map[[2]string]string{{"frank", "account:3"}: "read", {"frank", "case:3"}: "all", {"carol", contact}: "all"})
	b.uaIncrementalEqualsFull(t, "corrected")
}

// TestUnreadableKeepsManualSharesWipesOnOwnerChange: a manual share gives
// nothing while its record is unreadable and again once it is corrected;
// an owner change written together with the unreadable value is applied
// (and wipes the share) once the row is read again, never before.
func TestUnreadableKeepsManualSharesWipesOnOwnerChange(t *testing.T) {
	t.Parallel()
	b := uaSetup(t)
	ctx := context.Background()
	if _, err := testkit.ImportString(ctx, b.engine, `{"shares": [{"object": "case", "record": "case:1", "grantee": "user:frank", "access": "edit", "cause": "manual"}]}`); err != nil {
		t.Fatal(err)
	}
	step := func(when, stmt, owner string, levels map[string]string) {
		t.Helper()
		b.exec(t, b.app, stmt)
		b.run(t)
		if _, o := b.recordOf(t, "case:1"); o != owner {
			t.Errorf("%s: case:1's owner is %q, want %q", when, o, owner)
		}
		for u, l := range levels {
			if got := b.uaLevel(t, u, "case:1"); got != l {
				t.Errorf("%s: %s's access to case:1 is %s, want %s", when, u, got, l)
			}
		}
	}
	step("shared", `SELECT 1`, "erin", map[string]string{"frank": "edit", "erin": "all"})
	step("unreadable", `UPDATE support."case" SET status = '1.5' WHERE id = 1`, "erin", map[string]string{"frank": "none", "erin": "none", "alice": "none"})
	step("corrected", `UPDATE support."case" SET status = '1' WHERE id = 1`, "erin", map[string]string{"frank": "edit", "erin": "all"})
	step("given to dave, unreadable", `UPDATE support."case" SET status = 'x', owner_id = 'dave' WHERE id = 1`, "erin",
		map[string]string{"frank": "none", "erin": "none", "dave": "none"})
	step("given to dave, corrected", `UPDATE support."case" SET status = '1' WHERE id = 1`, "dave",
		map[string]string{"frank": "none", "dave": "all"})
	b.uaIncrementalEqualsFull(t, "after the owner change")
}

// TestUnreadableNeverTakesOverAnotherObjectsRecord: a record of another
// object holding an unreadable row's key stays as it is.
func TestUnreadableNeverTakesOverAnotherObjectsRecord(t *testing.T) {
	t.Parallel()
	b := uaSetup(t)
	b.exec(t, b.engine, `INSERT INTO recalc.record (id, object, owner) VALUES ('case:9', 'account', 'alice')`)
	b.run(t)
	b.exec(t, b.app, `INSERT INTO support."case" VALUES (9, 1, 'bob', 1, 'bad')`, `UPDATE support."case" SET owner_id = 'carol' WHERE id = 2`)
	b.run(t)
	var object, owner, terr string
	if err := b.admin.QueryRow(context.Background(), `SELECT object, owner, territories::text FROM recalc.record WHERE id = 'case:9'`).Scan(&object, &owner, &terr); err != nil {
		t.Fatal(err)
	}
	if object != "account" || owner != "alice" || terr != "{}" {
		t.Errorf("case:9 of object account became object %s owner %s territories %s", object, owner, terr)
	}
	if _, stuck := b.uaState(t, "case"); stuck != "" {
		t.Errorf("stuck objects %q", stuck)
	}
	if _, o := b.recordOf(t, "case:2"); o != "carol" {
		t.Errorf("case:2's owner is %q, want carol", o)
	}
}

// uaTicketSetup attaches object case through a view of a table with text
// ids, whose status the view casts.
func uaTicketSetup(t *testing.T) *bundle {
	t.Helper()
	b := setup(t)
	b.exec(t, b.app, `CREATE TABLE crm.ticket (id text PRIMARY KEY, owner_id text NOT NULL, account_id bigint, status text)`,
		`GRANT SELECT, TRIGGER ON crm.ticket TO `+ident(b.engineRole))
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.ticket_v AS SELECT t.id, t.owner_id, t.account_id, (t.status)::integer AS status_n FROM crm.ticket t`)
	b.mustAttach(t, `{"objects": [
  {"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id"},
  {"object": "case", "table": "crm_recalc.ticket_v", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["status_n"], "capture": [{"table": "crm.ticket", "id": "id"}]}]}`)
	return b
}

// TestUnreadableRowWithLongIDFailsClosedAlone: a row whose id is over the
// 1 KiB a record id may hold (such rows are not mirrored) and whose status
// the view cannot read must not stall its object's absorb again. Here the
// absorb's own id bound keeps the long row out of the read; the closing of
// unreadable ids (whose read may fail before that bound applies: a cast in
// the view's filter) skips it too, rather than break recalc.record's bound.
func TestUnreadableRowWithLongIDFailsClosedAlone(t *testing.T) {
	t.Parallel()
	b := uaTicketSetup(t)
	var closed int
	if err := b.engine.QueryRow(context.Background(), `SELECT recalc.attach_unreadable(a, ARRAY[repeat('x', 1100), 'T9']) FROM recalc.attachment a WHERE a.object = 'case'`).Scan(&closed); err != nil || closed != 1 {
		t.Fatalf("closing a long id and T9: %d records (%v), want T9's alone", closed, err)
	}
	b.exec(t, b.app, `INSERT INTO crm.ticket VALUES ('T1', 'bob', 1, '1'), (repeat('x', 1100), 'bob', 1, 'bad'), ('T2', 'dave', 2, '2')`)
	b.run(t)
	b.exec(t, b.app, `UPDATE crm.ticket SET owner_id = 'carol' WHERE id = 'T1'`)
	b.run(t)
	_, stuck := b.uaState(t, "case")
	if _, o := b.recordOf(t, "case:T1"); o != "carol" || stuck != "" {
		t.Errorf("case:T1's owner is %q (want carol), stuck objects %q (want none)", o, stuck)
	}
}

// TestUnreadableRowAtTheProbeID: the row that cannot be read holds the
// empty text id, which an earlier attach_blames_view probed as an id that
// names no row; the probes are now other rows of the view, and the row
// fails closed alone instead of the view being blamed.
func TestUnreadableRowAtTheProbeID(t *testing.T) {
	t.Parallel()
	b := uaTicketSetup(t)
	b.exec(t, b.app, `INSERT INTO crm.ticket VALUES ('T1', 'bob', 1, '1'), ('T2', 'dave', 2, '2')`)
	b.run(t)
	b.exec(t, b.app, `INSERT INTO crm.ticket VALUES ('', 'bob', 1, 'bad')`)
	b.run(t)
	if invalid, stuck := b.uaState(t, "case"); invalid != "case: values out of bounds or unreadable" || stuck != "" {
		t.Errorf("a bad row with the empty id: invalid records %q, stuck %q; want it closed alone, none stuck", invalid, stuck)
	}
}

// TestUnreadableEveryRowWithinTheTimeout: one statement makes 1,000 cases
// unreadable; the absorb reads them apart (halves, then id by id: about
// 1.3 sandboxed reads a row) and must finish within its statement_timeout
// (10 s + 5 ms an id), mirroring them all closed, rather than leave the
// object stuck.
func TestUnreadableEveryRowWithinTheTimeout(t *testing.T) {
	t.Parallel()
	b := uaSetup(t)
	b.exec(t, b.app, `INSERT INTO support."case" SELECT g, 1, 'erin', 1, '1' FROM generate_series(10, 1009) g`)
	b.run(t)
	b.exec(t, b.app, `UPDATE support."case" SET status = 'x' || id WHERE id >= 10`)
	start := time.Now()
	b.run(t)
	took := time.Since(start)
	invalid, stuck := b.uaState(t, "case")
	n := strings.Count(invalid, ",") + 1
	t.Logf("1,000 unreadable rows absorbed in %v: %d invalid, stuck %q", took, n, stuck)
	if stuck != "" || n != 1000 {
		t.Errorf("1,000 unreadable rows in one statement: stuck %q, %d invalid records after %v; want none stuck, 1000 closed", stuck, n, took)
	}
	if l := b.uaLevel(t, "erin", "case:17"); l != "none" {
		t.Errorf("erin's access to the unreadable case:17 is %s", l)
	}
	if stuck == "" {
		return
	}
	// How long the bisect takes with no timeout at all (from SQL).
	start = time.Now()
	var rows int
	if err := b.engine.QueryRow(context.Background(), `SELECT count(*) FROM recalc.attach_absorb()`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	invalid, stuck = b.uaState(t, "case")
	t.Logf("the same absorb without a statement_timeout took %v: %d invalid records, stuck %q", time.Since(start), strings.Count(invalid, ",")+1, stuck)
}

// TestUnreadableRowRacingWriters: while runs absorb, writers from real
// connections flip case 7 between readable and not, change its owner,
// delete and insert it again, and write its neighbours. Once they stop,
// one run mirrors the final rows exactly: case 7 closed iff its final
// status is unreadable, its owner the row's (or the last read one),
// incremental equal to full.
func TestUnreadableRowRacingWriters(t *testing.T) {
	t.Parallel()
	b := uaSetup(t)
	ctx := context.Background()
	b.exec(t, b.app, `INSERT INTO support."case" SELECT g, 1, 'erin', 1, '1' FROM generate_series(3, 40) g`)
	b.run(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stmts := []string{
		`UPDATE support."case" SET status = 'x', owner_id = 'dave' WHERE id = 7`,
		`UPDATE support."case" SET status = '3', owner_id = 'bob' WHERE id = 7`,
		`DELETE FROM support."case" WHERE id = 7`,
		`INSERT INTO support."case" VALUES (7, 2, 'carol', 1, 'bad') ON CONFLICT (id) DO UPDATE SET status = 'bad', owner_id = 'carol'`,
		`UPDATE support."case" SET status = CASE WHEN status = '1' THEN 'y' ELSE '1' END WHERE id IN (8, 20)`,
		`UPDATE support."case" SET owner_id = CASE WHEN owner_id = 'erin' THEN 'frank' ELSE 'erin' END WHERE id BETWEEN 3 AND 40`,
	}
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = b.app.Exec(ctx, stmts[(i*7+w)%len(stmts)])
				time.Sleep(time.Millisecond)
			}
		}(w)
	}
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		b.run(t)
	}
	close(stop)
	wg.Wait()
	b.run(t)
	var mismatch string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(string_agg(x, ', '), '') FROM (
		SELECT 'case:' || c.id || ' row owner ' || c.owner_id || ' status ' || c.status || ' record ' || coalesce(r.owner || ' ' || r.territories::text || ' ' || r.fields::text, 'missing') AS x
		FROM support."case" c LEFT JOIN recalc.record r ON r.id = 'case:' || c.id
		WHERE r.id IS NULL OR CASE WHEN c.status ~ '^[0-9]+$' THEN r.owner <> c.owner_id OR r.territories <> '{}' OR r.fields->>'status_n' IS DISTINCT FROM c.status
		                           ELSE r.territories <> '{""}' OR r.fields <> '{}' END
		UNION ALL SELECT r.id || ' without a row' FROM recalc.record r WHERE r.object = 'case' AND NOT EXISTS (SELECT FROM support."case" c WHERE 'case:' || c.id = r.id)) m`).Scan(&mismatch); err != nil {
		t.Fatal(err)
	}
	if mismatch != "" {
		t.Errorf("after the writers stopped, the mirror differs: %s", mismatch)
	}
	b.uaIncrementalEqualsFull(t, "after the race")
}

// TestUnreadableUsersAggregateViewBlamesTheView: a users view that
// aggregates (GROUP BY) is computed whole by each read, so one users row
// that the view cannot read fails every read of ids, alone too; the view is
// to blame, and the users' writes wait (stuck) rather than every user be
// made inactive.
func TestUnreadableUsersAggregateViewBlamesTheView(t *testing.T) {
	t.Parallel()
	b := setupFlagUsers(t, `SELECT u.id, u.role_id, bool_and((u.flag)::boolean) AS active FROM crm.app_user u GROUP BY u.id, u.role_id`)
	b.run(t)
	if l := b.uaLevel(t, "dave", "account:2"); l != "all" {
		t.Fatalf("dave's access to his account:2 is %s before, want all", l)
	}
	b.exec(t, b.app, `UPDATE crm.app_user SET flag = 'maybe' WHERE id = 'bob'`)
	b.run(t)
	inactive := b.inactiveUsers(t)
	if _, stuck := b.uaState(t, "users"); inactive != "" || stuck != "users 22P02" {
		t.Errorf("after bob's row became unreadable: users inactive %q, stuck %q; want none inactive, users stuck with 22P02", inactive, stuck)
	}
	if l := b.uaLevel(t, "dave", "account:2"); l != "all" {
		t.Errorf("dave's access to his account:2 is %s, want all", l)
	}
}
