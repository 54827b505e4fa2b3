package attach_test

// Races between an attachment's own lifecycle (attach with a changed spec,
// detach, attach again) and everything else: application transactions whose
// commits interleave with it, jobs mid-way, recalc watch, imports, TRUNCATE
// and COPY. After each scenario everything is brought up to date and the
// share tables are compared with a fresh full recalculation of the same
// stored state, and recalc.record with the application's rows.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// raceOpps are three opportunities, one per account.
const raceOpps = `INSERT INTO crm.opportunity VALUES
    ('00000000-0000-0000-0000-000000000001', 1, 'bob', 'new', 500, '2027-01-01'),
    ('00000000-0000-0000-0000-000000000002', 2, 'dave', 'won', 5000, NULL),
    ('00000000-0000-0000-0000-000000000003', 3, 'carol', 'lost', 10, NULL)`

const opp1, opp2, opp3 = `'00000000-0000-0000-0000-000000000001'`, `'00000000-0000-0000-0000-000000000002'`, `'00000000-0000-0000-0000-000000000003'`

// raceCheckFull brings everything up to date, and fails unless no captured
// write waits, and the share tables are exactly a full recalculation's of
// the same stored state.
func (b *bundle) raceCheckFull(t *testing.T, what string) {
	t.Helper()
	b.run(t)
	var waiting []string
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(array_agg(DISTINCT object), '{}') FROM recalc.change
		WHERE kind IN ('attached', 'attached_all')`).Scan(&waiting); err != nil {
		t.Fatal(err)
	}
	if len(waiting) > 0 {
		t.Errorf("%s: captured writes still wait after a run: %v", what, waiting)
	}
	got := testdb.Materialized(t, b.admin)
	b.full(t)
	if want := testdb.Materialized(t, b.admin); got != want {
		t.Fatalf("%s: the share tables differ from a full recalculation's:\n%s", what, oracle.Diff(want, got))
	}
}

// checkObjectMirror fails unless object's records are exactly want's rows
// (id, owner, parent, fields without nulls), read by the test from the
// application's tables.
func (b *bundle) checkObjectMirror(t *testing.T, object, want, what string) {
	t.Helper()
	var diff []string
	err := b.admin.QueryRow(context.Background(), `
		WITH e(id, owner, parent, f) AS (`+want+`),
		m AS (SELECT id, owner, parent, jsonb_strip_nulls(fields) f FROM recalc.record WHERE object = $1)
		SELECT coalesce(array_agg(d ORDER BY d), '{}') FROM (
		    (SELECT 'missing ' || id || ' ' || coalesce(owner, '-') || ' ' || coalesce(parent, '-') || ' ' || f::text FROM (SELECT * FROM e EXCEPT SELECT * FROM m) a)
		    UNION ALL (SELECT 'extra ' || id || ' ' || coalesce(owner, '-') || ' ' || coalesce(parent, '-') || ' ' || f::text FROM (SELECT * FROM m EXCEPT SELECT * FROM e) b)) z(d)`, object).Scan(&diff)
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		t.Fatalf("%s: records of %s differ from the application's rows: %v", what, object, diff)
	}
}

// beginRR begins a REPEATABLE READ transaction on a connection of its own
// and takes its snapshot.
// writeRetried commits tx's write sql, or, when the capture's guard refused
// it with 40001 (its snapshot predates the attach, migration 037), rolls
// it back and writes again in a new REPEATABLE READ transaction, as an
// application retries a serialization failure. It returns the write's
// error, the retry's when there was one.
func writeRetried(t *testing.T, pool *pgxpool.Pool, tx pgx.Tx, sql string) error {
	t.Helper()
	ctx := context.Background()
	_, err := tx.Exec(ctx, sql)
	if err == nil {
		return tx.Commit(ctx)
	}
	_ = tx.Rollback(ctx)
	if pg.Code(err) != "40001" {
		return fmt.Errorf("refused with %w, not a serialization failure to retry", err)
	}
	return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, sql)
		return err
	})
}

func beginRR(t *testing.T, pool *pgxpool.Pool, iso pgx.TxIsoLevel) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	c, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Release)
	tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) }) //nolint:errcheck // no-op once ended
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	return tx
}

func mustTx(t *testing.T, tx pgx.Tx, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := tx.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func commit(t *testing.T, tx pgx.Tx) {
	t.Helper()
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// attachAsync applies spec in the background.
func (b *bundle) attachAsync(t *testing.T, spec string) (done chan struct{}, out *string, err *error) {
	done, out, err = make(chan struct{}), new(string), new(error)
	go func() {
		defer close(done)
		*out, *err = b.attach(t, spec)
	}()
	return done, out, err
}

// TestRaceAttackReattachChangedSpec: the spec of the opportunity changes
// (its owner column, a criteria column added, its parent column, the table
// swapped for a view over it) and is applied again while the application
// writes the table: A's write, begun before the attach, holds it up and
// commits while it waits; B and C took their snapshots (REPEATABLE READ,
// READ COMMITTED) before the attach and write after it committed; D wrote
// a column only the new spec reads before the attach. Every write is in
// the records, and access is a full run's.
func TestRaceAttackReattachChangedSpec(t *testing.T) {
	t.Parallel()
	oppSpec := `{"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["stage", "amount", "closes_on"]}`
	for _, tc := range []struct {
		name      string
		prep      []string // as the application, before the first attach
		old, new  string   // the opportunity's entries
		d, a      string   // D's and A's writes
		b, c      string   // B's and C's
		wantQuery string   // the opportunity's records from the rows
	}{
		{
			name: "owner column changed",
			prep: []string{`ALTER TABLE crm.opportunity ADD COLUMN manager_id text`, `UPDATE crm.opportunity SET manager_id = owner_id`},
			old:  oppSpec, new: strings.Replace(oppSpec, `"owner": "owner_id"`, `"owner": "manager_id"`, 1),
			d: `UPDATE crm.opportunity SET manager_id = 'alice' WHERE id = ` + opp3,
			a: `UPDATE crm.opportunity SET manager_id = 'frank' WHERE id = ` + opp1,
			b: `UPDATE crm.opportunity SET manager_id = 'erin' WHERE id = ` + opp2,
			c: `INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000009', 2, 'bob', 'x', 7, NULL, 'dave')`,
			wantQuery: `SELECT 'opportunity:' || id, manager_id::text, 'account:' || account_id,
			    jsonb_strip_nulls(jsonb_build_object('stage', stage, 'amount', amount, 'closes_on', closes_on)) FROM crm.opportunity`,
		},
		{
			name: "criteria column added",
			old:  strings.Replace(oppSpec, `["stage", "amount", "closes_on"]`, `["stage", "closes_on"]`, 1), new: oppSpec,
			d: `UPDATE crm.opportunity SET amount = 9000 WHERE id = ` + opp3,
			a: `UPDATE crm.opportunity SET amount = 1001 WHERE id = ` + opp1,
			b: `UPDATE crm.opportunity SET amount = 1 WHERE id = ` + opp2,
			c: `INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000009', 2, 'bob', 'x', 7777, NULL)`,
			wantQuery: `SELECT 'opportunity:' || id, owner_id::text, 'account:' || account_id,
			    jsonb_strip_nulls(jsonb_build_object('stage', stage, 'amount', amount, 'closes_on', closes_on)) FROM crm.opportunity`,
		},
		{
			name: "parent column changed",
			prep: []string{`ALTER TABLE crm.opportunity ADD COLUMN acct2 bigint`, `UPDATE crm.opportunity SET acct2 = account_id`},
			old:  oppSpec, new: strings.Replace(oppSpec, `"parent": "account_id"`, `"parent": "acct2"`, 1),
			d: `UPDATE crm.opportunity SET acct2 = 1 WHERE id = ` + opp3,
			a: `UPDATE crm.opportunity SET acct2 = 3 WHERE id = ` + opp1,
			b: `UPDATE crm.opportunity SET acct2 = 1 WHERE id = ` + opp2,
			c: `INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000009', 2, 'bob', 'x', 7, NULL, 3)`,
			wantQuery: `SELECT 'opportunity:' || id, owner_id::text, 'account:' || acct2,
			    jsonb_strip_nulls(jsonb_build_object('stage', stage, 'amount', amount, 'closes_on', closes_on)) FROM crm.opportunity`,
		},
		{
			name: "table swapped for a view",
			old:  oppSpec,
			new: `{"object": "opportunity", "table": "crm_recalc.opp_v", "id": "id", "owner": "owner_id", "parent": "account_id",
			       "fields": ["stage", "amount", "closes_on"], "capture": [{"table": "crm.opportunity", "id": "id"}]}`,
			d: `UPDATE crm.opportunity SET owner_id = 'alice' WHERE id = ` + opp3,
			a: `UPDATE crm.opportunity SET owner_id = 'frank' WHERE id = ` + opp1,
			b: `UPDATE crm.opportunity SET owner_id = 'erin', amount = 2000 WHERE id = ` + opp2,
			c: `INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000009', 2, 'bob', 'x', 7, NULL)`,
			wantQuery: `SELECT 'opportunity:' || id, owner_id::text, 'account:' || account_id,
			    jsonb_strip_nulls(jsonb_build_object('stage', stage, 'amount', amount, 'closes_on', closes_on)) FROM crm.opportunity`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.exec(t, b.app, raceOpps)
			b.exec(t, b.app, tc.prep...)
			b.exec(t, b.engine, `CREATE VIEW crm_recalc.opp_v AS SELECT id, account_id, owner_id, stage, amount, closes_on FROM crm.opportunity`)
			oldSpec := crmSpecWith(t, `{"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["stage", "amount", "closes_on"]}`, tc.old)
			newSpec := crmSpecWith(t, `{"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["stage", "amount", "closes_on"]}`, tc.new)
			b.mustAttach(t, oldSpec)
			b.run(t)
			b.exec(t, b.app, tc.d) // D: before the attach, a column the old capture may not read
			txB := beginRR(t, b.app, pgx.RepeatableRead)
			txC := beginRR(t, b.app, pgx.ReadCommitted)
			a, pid := hold(t, b.app, tc.a)
			done, out, attachErr := b.attachAsync(t, newSpec)
			waitBlocked(t, b.admin, pid, done, "recalc attach to wait for A")
			commit(t, a)
			<-done
			if *attachErr != nil {
				t.Fatalf("attach: %v", *attachErr)
			}
			if !strings.Contains(*out, "opportunity      updated") {
				t.Fatalf("attach did not update the opportunity:\n%s", *out)
			}
			mustTx(t, txC, tc.c)
			commit(t, txC)
			// B's snapshot is older than the attach: its write succeeds, or
			// fails as a serialization failure whose retry succeeds, and is
			// captured either way.
			errB := writeRetried(t, b.app, txB, tc.b)
			b.run(t)
			b.checkObjectMirror(t, "opportunity", tc.wantQuery, "after the changed spec and a run")
			b.raceCheckFull(t, "after the changed spec")
			if errB != nil {
				t.Fatalf("a REPEATABLE READ write begun before the attach and made after it was refused, the capture being complete: %v", errB)
			}
		})
	}
}

// TestRaceAttackDetachAndAttachAgain: an object is detached while the
// application writes its table (A's write holds the detach up and commits
// while it waits; B, begun before, writes after); rows are written between
// the detach and attaching again. While detached nothing of the object
// keeps access (no materialized record, access none, no manual share); once
// attached again its records are the rows, the ones written meanwhile
// included, and access is the oracle's and a full run's.
func TestRaceAttackDetachAndAttachAgain(t *testing.T) {
	t.Parallel()
	for _, object := range []string{"case", "account"} {
		t.Run(object, func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t, raceOpps)
			ctx := context.Background()
			// A manual share on a record of the object.
			if _, err := raceImportMerge(ctx, b, fmt.Sprintf(`{"version": 1, "shares": [{"object": %q, "record": "%s:1", "grantee": "user:frank", "access": "edit", "cause": "manual"}]}`, object, object)); err != nil {
				t.Fatalf("import the share: %v", err)
			}
			b.run(t)
			if lvl := levelOf(t, b, "frank", object+":1"); lvl != "edit" {
				t.Fatalf("frank's access to %s:1 with a manual edit share: %q", object, lvl)
			}
			table := map[string]string{"case": `support."case"`, "account": "crm.account"}[object]
			txB := beginRR(t, b.app, pgx.ReadCommitted)
			a, pid := hold(t, b.app, `UPDATE `+table+` SET owner_id = 'alice' WHERE id = 2`)
			done := make(chan struct{})
			var detachErr error
			go func() { defer close(done); _, detachErr = b.recalc("detach", object) }()
			waitBlocked(t, b.admin, pid, done, "recalc detach to wait for A")
			commit(t, a)
			<-done
			if detachErr != nil {
				t.Fatalf("detach: %v", detachErr)
			}
			switch object {
			case "case":
				mustTx(t, txB, `INSERT INTO support."case" VALUES (50, 3, 'dave', 5, 'Open')`)
				b.exec(t, b.app, `UPDATE support."case" SET owner_id = 'frank', priority = 9 WHERE id = 1`,
					`INSERT INTO support."case" VALUES (51, 1, 'carol', 1, 'Open')`, `DELETE FROM support."case" WHERE id = 2`)
			case "account":
				mustTx(t, txB, `INSERT INTO crm.account (id, name, owner_id, industry) VALUES (50, 'New', 'dave', 'tech')`)
				b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'frank', vip = true WHERE id = 1`,
					`INSERT INTO crm.account (id, name, owner_id) VALUES (51, 'Other', 'carol')`,
					`INSERT INTO support."case" VALUES (52, 51, 'erin', 5, 'New')`)
			}
			commit(t, txB)
			b.raceCheckFull(t, "after the detach")
			var n int
			if err := b.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.acl_record WHERE object = $1)
				+ (SELECT count(*) FROM recalc.record WHERE object = $1)`, object).Scan(&n); err != nil || n != 0 {
				t.Fatalf("after the detach and a run: %d records of %s left (%v)", n, object, err)
			}
			for _, u := range crmUsers {
				for _, id := range []string{"1", "2", "50"} {
					var lvl string
					if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level($1, $2, $3::text)`, u, object, id).Scan(&lvl); err != nil {
						t.Fatal(err)
					}
					if lvl != "none" {
						t.Errorf("after the detach %s has %s access to %s %s", u, lvl, object, id)
					}
				}
			}
			b.mustAttach(t, crmSpec)
			b.checkMirror(t, "after attaching again")
			b.run(t)
			b.checkOracle(t, "after attaching again")
			b.raceCheckFull(t, "after attaching again")
			var manual int
			if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.acl_share s JOIN recalc.acl_record r USING (rid)
				WHERE r.id = $1 AND s.cause = 'manual'`, object+":1").Scan(&manual); err != nil || manual != 0 {
				t.Errorf("%d manual share rows on %s:1 after detach and attach again (%v): the detach deleted its shares", manual, object, err)
			}
		})
	}
}

// raceImportMerge merges file into the stored model as the engine.
func raceImportMerge(ctx context.Context, b *bundle, file string) (*store.Result, error) {
	return store.ImportWith(ctx, b.engine, strings.NewReader(file), model.DefaultLimits(), zerolog.Nop(), nil, store.Options{Merge: true})
}

// TestRaceAttackDetachWhileChunkWaits: a run plans the change of case 1,
// and its chunk waits for a row lock; meanwhile the case is detached (and
// writes go on), then the chunk goes on. The next run leaves nothing of
// the detached object, and access is a full run's; attaching again restores
// it.
func TestRaceAttackDetachWhileChunkWaits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, object, holder string }{
		{"leaf", "case", `SELECT FROM recalc.acl_record WHERE id = 'case:1' FOR UPDATE`},
		{"parent", "account", `SELECT FROM recalc.acl_record WHERE id = 'account:1' FOR UPDATE`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t, raceOpps)
			ctx := context.Background()
			b.exec(t, b.app, `UPDATE support."case" SET owner_id = 'dave', priority = 5 WHERE id = 1`,
				`UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`)
			holder, pid := hold(t, b.engine, tc.holder)
			done := make(chan struct{})
			var runErr error
			go func() {
				defer close(done)
				_, runErr = engine.Run(ctx, b.engine, engine.Options{Workers: 1, ChunkSize: 1, LockTimeout: 20 * time.Second}, zerolog.Nop())
			}()
			waitBlocked(t, b.admin, pid, done, "the run's chunk to wait")
			if _, err := b.recalc("detach", tc.object); err != nil {
				t.Fatalf("detach while the chunk waits: %v", err)
			}
			b.exec(t, b.app, `UPDATE support."case" SET owner_id = 'frank' WHERE id = 1`)
			if err := holder.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			<-done
			if runErr != nil {
				t.Fatalf("run: %v", runErr)
			}
			b.raceCheckFull(t, "after a detach while a chunk waited")
			b.mustAttach(t, crmSpec)
			b.run(t)
			b.checkMirror(t, "after attaching again")
			b.checkOracle(t, "after attaching again")
		})
	}
}

// TestRaceAttackAttachDuringFullRun: a full run is mid-way (a chunk waits
// for a row lock, in place; or all chunks are done and the swap waits)
// while the spec changes (case detached, account's fields changed) and the
// application writes; then the job goes on. After the next run the share
// tables are a full run's, and attaching the spec back restores the rest.
func TestRaceAttackAttachDuringFullRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		inPlace bool
		holder  string
	}{
		{"in place, chunk waits", true, `SELECT FROM recalc.acl_record WHERE id = 'account:2' FOR UPDATE`},
		{"swapping, swap waits", false, `LOCK TABLE recalc.acl_share IN ACCESS SHARE MODE`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t, raceOpps)
			ctx := context.Background()
			b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'erin' WHERE id = 2`) // account 2's family differs: the full run locks it
			holder, pid := hold(t, b.engine, tc.holder)
			done := make(chan struct{})
			var runErr error
			go func() {
				defer close(done)
				_, runErr = engine.Full(ctx, b.engine, engine.Options{Workers: 1, ChunkSize: 1, InPlace: tc.inPlace, LockTimeout: 20 * time.Second}, zerolog.Nop())
			}()
			waitBlocked(t, b.admin, pid, done, "the full run to wait")
			noCase := crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")] + "\n]}"
			noCase = strings.Replace(noCase, `"fields": ["industry", "amount", "vip"]`, `"fields": ["industry", "vip"]`, 1)
			b.exec(t, b.app, `UPDATE crm.account SET industry = 'tech', owner_id = 'erin' WHERE id = 3`)
			if out, err := b.attach(t, noCase); err != nil {
				t.Fatalf("attach while a full run waits: %v\n%s", err, out)
			}
			b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id, vip) VALUES (60, 'Mid', 'carol', true)`,
				`UPDATE crm.account SET vip = false, industry = 'x' WHERE id = 2`)
			if err := holder.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			<-done
			if runErr != nil {
				t.Fatalf("full run: %v", runErr)
			}
			b.raceCheckFull(t, "after an attach during a full run")
			var n int
			if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.acl_record WHERE object = 'case'`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("%d materialized cases left after detaching them during a full run (%v)", n, err)
			}
			b.mustAttach(t, crmSpec)
			b.run(t)
			b.checkMirror(t, "after attaching the spec back")
			b.checkOracle(t, "after attaching the spec back")
		})
	}
}

// TestRaceAttackAttachWhileWatching: recalc watch steps (engine.Live)
// while the spec changes and is detached and attached again, and the
// application writes; once fresh, the share tables are a full run's.
func TestRaceAttackAttachWhileWatching(t *testing.T) {
	t.Parallel()
	b := setupAttached(t, raceOpps)
	ctx := context.Background()
	live := engine.NewLive(engine.Options{}, 1000)
	step := func() {
		t.Helper()
		if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
			t.Fatalf("live step: %v", err)
		}
	}
	step()
	stop := make(chan struct{})
	stepped := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				stepped <- nil
				return
			default:
			}
			if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
				stepped <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	changed := strings.Replace(crmSpec, `"fields": ["priority", "status"]`, `"fields": ["status"]`, 1)
	noCase := crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")] + "\n]}"
	for i, spec := range []string{changed, noCase, crmSpec, changed, crmSpec} {
		b.exec(t, b.app, fmt.Sprintf(`UPDATE support."case" SET priority = %d, owner_id = '%s' WHERE id = 1`, i%5, crmUsers[i%len(crmUsers)]),
			fmt.Sprintf(`INSERT INTO support."case" VALUES (%d, %d, 'bob', %d, 'x')`, 100+i, 1+i%3, i))
		txB := beginRR(t, b.app, pgx.ReadCommitted)
		mustTx(t, txB, fmt.Sprintf(`UPDATE crm.account SET owner_id = '%s' WHERE id = %d`, crmUsers[(i+2)%len(crmUsers)], 1+i%3))
		if i%2 == 0 {
			commit(t, txB)
		}
		b.mustAttach(t, spec)
		if i%2 == 1 {
			commit(t, txB)
		}
		b.exec(t, b.app, fmt.Sprintf(`UPDATE support."case" SET owner_id = 'frank' WHERE id = %d`, 100+i))
	}
	close(stop)
	if err := <-stepped; err != nil {
		t.Fatalf("live step: %v", err)
	}
	step()
	step()
	b.checkMirror(t, "after the watch")
	got := testdb.Materialized(t, b.admin)
	b.full(t)
	if want := testdb.Materialized(t, b.admin); got != want {
		t.Fatalf("after attaching while watching: the share tables differ from a full recalculation's:\n%s", oracle.Diff(want, got))
	}
}

// TestRaceAttackImportChangesAttachedObject: an import, held open, removes
// the case object from the model (or changes its OWD, or its rule's
// criteria) while the application writes support.case, before and after
// the import commits; then the model is put back. Access is always a full
// run's, and the records the rows.
func TestRaceAttackImportChangesAttachedObject(t *testing.T) {
	t.Parallel()
	noCaseModel := strings.Replace(strings.Replace(crmModel,
		`,
    {"name": "case", "parent": "account", "internal_owd": "private", "external_owd": "private"}`, ``, 1),
		`,
    {"id": "hot_case", "object": "case", "type": "criteria", "target": "role:west", "access": "read",
     "criteria": {"conditions": [{"field": "priority", "op": "ge", "value": 3}]}}`, ``, 1)
	for _, tc := range []struct{ name, model string }{
		{"object removed", noCaseModel},
		{"OWD changed", strings.Replace(crmModel, `{"name": "case", "parent": "account", "internal_owd": "private", "external_owd": "private"}`,
			`{"name": "case", "parent": "account", "internal_owd": "public_read_only", "external_owd": "private"}`, 1)},
		{"criteria changed", strings.Replace(crmModel, `[{"field": "priority", "op": "ge", "value": 3}]`,
			`[{"field": "status", "op": "equals", "value": "Open"}]`, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.model == crmModel {
				t.Fatal("the model did not change")
			}
			b := setupAttachedNotRun(t)
			ctx := context.Background()
			if tc.name == "object removed" { // an object with records cannot be removed
				b.exec(t, b.app, `DELETE FROM support."case"`)
			}
			b.run(t)
			imp := beginRR(t, b.engine, pgx.ReadCommitted)
			if _, err := store.ImportTx(ctx, imp, strings.NewReader(tc.model), model.DefaultLimits(), zerolog.Nop()); err != nil {
				t.Fatalf("import: %v", err)
			}
			b.exec(t, b.app, `UPDATE support."case" SET priority = 5, status = 'Open', owner_id = 'bob' WHERE id = 2`,
				`INSERT INTO support."case" VALUES (40, 3, 'carol', 4, 'Open')`)
			txB, _ := hold(t, b.app, `INSERT INTO support."case" VALUES (41, 1, 'erin', 1, 'Open')`)
			// A run waits for the import (model lock).
			done := make(chan struct{})
			var runErr error
			go func() {
				defer close(done)
				_, runErr = engine.Run(ctx, b.engine, engine.Options{Workers: 1}, zerolog.Nop())
			}()
			waitBlocked(t, b.admin, imp.Conn().PgConn().PID(), done, "the run to wait for the import")
			commit(t, imp)
			<-done
			if runErr != nil {
				t.Fatalf("run: %v", runErr)
			}
			commit(t, txB)
			b.exec(t, b.app, `DELETE FROM support."case" WHERE id = 1`, `UPDATE support."case" SET priority = 1 WHERE id = 40`)
			b.checkMirrorAfterRun(t, "after the import")
			b.raceCheckFull(t, "after the import")
			if tc.name == "object removed" {
				var n int
				if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.acl_share s JOIN recalc.acl_record r USING (rid) WHERE r.object = 'case'`).Scan(&n); err != nil || n != 0 {
					t.Errorf("%d share rows of cases left once case is no object of the model (%v)", n, err)
				}
			}
			// The model back.
			if _, err := store.Import(ctx, b.engine, strings.NewReader(crmModel), model.DefaultLimits(), zerolog.Nop(), nil); err != nil {
				t.Fatalf("import back: %v", err)
			}
			b.exec(t, b.app, `UPDATE support."case" SET owner_id = 'dave' WHERE id = 41`)
			b.run(t)
			b.checkMirror(t, "after the model came back")
			// Case 40 was absorbed while its object was no object of the
			// model; the incremental run after the object came back must
			// recompute it as a full run does.
			b.raceCheckFull(t, "after the model came back")
			b.checkOracle(t, "after the model came back")
		})
	}
}

func (b *bundle) checkMirrorAfterRun(t *testing.T, what string) {
	t.Helper()
	b.run(t)
	b.checkMirror(t, what)
}

// TestRaceAttackTruncateAndCopy: TRUNCATE of an attached table races with
// a write begun before it (which commits first, the TRUNCATE waiting) and
// one begun after (which commits after the TRUNCATE, and after a run); and a
// COPY commits while an absorb holds the case object's read, after it
// took the change log. Every write is in the records.
func TestRaceAttackTruncateAndCopy(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	ctx := context.Background()
	a, pidA := hold(t, b.app, `UPDATE support."case" SET owner_id = 'frank' WHERE id = 1`)
	txB := beginRR(t, b.app, pgx.ReadCommitted)
	tr, err := b.app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Rollback(ctx) //nolint:errcheck
	trDone := make(chan error, 1)
	go func() {
		_, err := tr.Exec(ctx, `TRUNCATE support."case"`)
		if err == nil {
			_, err = tr.Exec(ctx, `INSERT INTO support."case" VALUES (10, 1, 'dave', 9, 'T')`)
		}
		trDone <- err
	}()
	waitBlocked(t, b.admin, pidA, nil, "TRUNCATE to wait for A")
	commit(t, a)
	if err := <-trDone; err != nil {
		t.Fatalf("truncate: %v", err)
	}
	// B writes after the TRUNCATE (waits for it), commits after a run.
	bDone := make(chan error, 1)
	go func() {
		_, err := txB.Exec(ctx, `INSERT INTO support."case" VALUES (11, 2, 'erin', 3, 'B')`)
		bDone <- err
	}()
	waitBlocked(t, b.admin, tr.Conn().PgConn().PID(), nil, "B to wait for the TRUNCATE")
	if err := tr.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatalf("B: %v", err)
	}
	b.run(t)
	b.checkObjectMirror(t, "case", `SELECT 'case:' || id, owner_id::text, 'account:' || account_id,
	    jsonb_strip_nulls(jsonb_build_object('priority', priority, 'status', status)) FROM support."case" WHERE id <> 11`, "after the TRUNCATE and a run, B open")
	commit(t, txB)

	// COPY that commits while the absorb of case waits to write.
	cp, err := b.app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Rollback(ctx) //nolint:errcheck
	if _, err := cp.CopyFrom(ctx, pgx.Identifier{"support", "case"}, []string{"id", "account_id", "owner_id", "priority", "status"},
		pgx.CopyFromRows([][]any{{int64(20), int64(1), "carol", int32(7), "C"}, {int64(21), int64(2), "frank", int32(1), "C"}})); err != nil {
		t.Fatalf("copy: %v", err)
	}
	b.exec(t, b.app, `UPDATE support."case" SET priority = 8 WHERE id = 10`)
	// The absorb's write of case 11 waits, after it took the change log and read the rows.
	holder, pid := hold(t, b.admin, `SELECT FROM recalc.record WHERE id = 'case:10' FOR UPDATE`)
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		_, runErr = engine.Run(ctx, b.engine, engine.Options{Workers: 1}, zerolog.Nop())
	}()
	waitBlocked(t, b.admin, pid, done, "the absorb to wait for the read view")
	if err := cp.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	b.run(t)
	b.checkMirror(t, "after the COPY")
	b.checkOracle(t, "after the COPY")
	b.raceCheckFull(t, "after the COPY")
}

// TestRaceAttackRepeatableReadAcrossFirstAttach: an application transaction
// at REPEATABLE READ takes its snapshot, the table is attached (for the
// first time), and the transaction then writes the table. Its snapshot
// shows no capture, so the guard refuses the write as a serialization
// failure (40001, migration 037), never as a broken capture; the retry
// succeeds and is captured.
func TestRaceAttackRepeatableReadAcrossFirstAttach(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rr := beginRR(t, b.app, pgx.RepeatableRead)
	b.mustAttach(t, crmSpec)
	err := writeRetried(t, b.app, rr, `UPDATE support."case" SET owner_id = 'frank' WHERE id = 2`)
	b.run(t)
	b.checkMirror(t, "after the REPEATABLE READ write")
	if err != nil {
		t.Fatalf("a REPEATABLE READ write whose snapshot predates the attach was refused, the capture being complete: %v", err)
	}
}
