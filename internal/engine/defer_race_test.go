package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// These tests race the deferral of either side, and its resume, against
// application transactions on connections of their own, the plan's root
// fixes (Plan's savepoint, rolled back while the share rows wait), a job's
// chunks and finish, the watch's Live.Step and `recalc plan`. As in
// race_test.go, they stop the engine with locks only. After each scenario
// the materialized tables and recalc.invalid_record must be what a full
// run makes of what is stored, and the access what the oracle computes.

// drBundle is racePool's database (raceOrg(12): accounts a000..a011 with
// two cases each, task__c under case) as a bundle whose stored model
// follows recalc.record (syncRecords).
func drBundle(t *testing.T) *bundle {
	t.Helper()
	return setupOrg(t, raceOrg(12), engine.Options{})
}

// syncRecords makes b.cur's records what recalc.record holds: the tests
// write records with plain SQL, from several connections, and never touch
// a002, whose manual share an owner change would wipe.
func (b *bundle) syncRecords(t *testing.T) {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT object, id, owner, coalesce(parent, ''), fields::text, coalesce(territories, '{}')
		FROM recalc.record ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var recs []model.Record
	for rows.Next() {
		var r model.Record
		var fields string
		if err := rows.Scan(&r.Object, &r.ID, &r.Owner, &r.Parent, &fields, &r.Territories); err != nil {
			t.Fatal(err)
		}
		if r.Fields, err = model.ParseFields([]byte(fields)); err != nil {
			t.Fatal(err)
		}
		if len(r.Territories) == 0 {
			r.Territories = nil
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	b.cur.Records = validRecords(b.cur, recs)
	// The shares an owner change or a delete wiped (the tests add none).
	kept := b.cur.Shares[:0]
	for _, sh := range b.cur.Shares {
		var ok bool
		if err := b.pool.QueryRow(b.ctx, `SELECT EXISTS (SELECT FROM recalc.share_input WHERE record = $1 AND grantee = $2 AND cause = $3)`,
			sh.Record, sh.Grantee.String(), sh.Cause).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if ok {
			kept = append(kept, sh)
		}
	}
	b.cur.Shares = kept
}

// validRecords drops from recs, for the oracle, the records written with
// plain SQL that the model could not hold: a parent that is missing, not of
// the object's parent object, or itself dropped. recalc gives them no
// access (README); the full-run comparison covers their record rows.
func validRecords(m *model.Model, recs []model.Record) []model.Record {
	parentOf := map[string]string{}
	for _, o := range m.Objects {
		parentOf[o.Name] = o.Parent
	}
	byID := map[string]*model.Record{}
	for i := range recs {
		byID[recs[i].ID] = &recs[i]
	}
	memo := map[string]bool{}
	var valid func(r *model.Record, depth int) bool
	valid = func(r *model.Record, depth int) bool {
		if v, ok := memo[r.ID]; ok {
			return v
		}
		ok := depth < 100
		if ok && r.Parent != "" {
			p := byID[r.Parent]
			ok = p != nil && p.Object == parentOf[r.Object] && valid(p, depth+1)
		}
		memo[r.ID] = ok
		return ok
	}
	var out []model.Record
	for i := range recs {
		if valid(&recs[i], 0) {
			out = append(out, recs[i])
		}
	}
	return out
}

// invalidRecords lists recalc.invalid_record.
func (b *bundle) invalidRecords(t *testing.T) string {
	t.Helper()
	var got string
	if err := b.pool.QueryRow(b.ctx, `SELECT coalesce(string_agg(record || ': ' || reason, '; ' ORDER BY record), '') FROM recalc.invalid_record`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	return got
}

// checkDeferRace requires no change row, no unfinished job and no rootless
// record to be left; the materialized tables and recalc.invalid_record to
// be what a full run makes of what is stored; and access to be the oracle's.
func checkDeferRace(t *testing.T, b *bundle, what string) {
	t.Helper()
	var pending, unfinished, rootless int
	if err := b.pool.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM recalc.change), (SELECT count(*) FROM recalc.job WHERE status <> 'done'),
		(SELECT count(*) FROM recalc.record WHERE root_id IS NULL)`).Scan(&pending, &unfinished, &rootless); err != nil {
		t.Fatal(err)
	}
	if pending != 0 || unfinished != 0 || rootless != 0 {
		t.Errorf("%s: %d change rows, %d unfinished jobs, %d rootless records left, want none", what, pending, unfinished, rootless)
	}
	got, gotInvalid := testdb.Materialized(t, b.pool), b.invalidRecords(t)
	b.full(t, engine.Options{})
	if want := testdb.Materialized(t, b.pool); got != want {
		t.Errorf("%s: the materialized tables differ from a full run's:\n%s", what, lineDiff(got, want))
	}
	if want := b.invalidRecords(t); gotInvalid != want {
		t.Errorf("%s: recalc.invalid_record lists %q; after a full run %q", what, gotInvalid, want)
	}
	b.syncRecords(t)
	testkit.CheckOracle(t, b.ctx, b.pool, b.cur, what)
}

// holdRows begins an application transaction on a connection of its own
// that locks the records ids (FOR UPDATE) and returns it, with its pid.
func holdRows(t *testing.T, pool *pgxpool.Pool, ids ...string) (pgx.Tx, uint32) {
	t.Helper()
	c := connect(t, pool)
	tx := begin(t, c)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	tag, err := tx.Exec(context.Background(), `SELECT FROM recalc.record WHERE id = ANY($1) FOR UPDATE`, ids)
	if err != nil || tag.RowsAffected() != int64(len(ids)) {
		t.Fatalf("lock %v: %v (%d rows)", ids, err, tag.RowsAffected())
	}
	return tx, c.PgConn().PID()
}

func deferSides(t *testing.T, b *bundle, sides ...string) {
	t.Helper()
	if len(sides) == 0 {
		return
	}
	if err := store.Defer(b.ctx, b.pool, sides); err != nil {
		t.Fatal(err)
	}
}

func resumeSides(t *testing.T, b *bundle, sides ...string) {
	t.Helper()
	if len(sides) == 0 {
		return
	}
	if err := store.Undefer(b.ctx, b.pool, sides); err != nil {
		t.Fatal(err)
	}
}

// stepWithin runs one Live.Step bounded to limit and reports its error and
// how long it took.
func stepWithin(b *bundle, live *engine.Live, limit time.Duration) (*engine.LiveReport, time.Duration, error) {
	ctx, cancel := context.WithTimeout(b.ctx, limit)
	defer cancel()
	start := time.Now()
	rep, err := live.Step(ctx, b.pool, zerolog.Nop())
	return rep, time.Since(start), err
}

// TestDeferRaceFastPathLockTimeout: nothing deferred, the watch's fast
// path must wait for an application's row lock no longer than its lock
// timeout (docs/operations.md, --lock-timeout: "how long a step waits for a
// row lock: an application's, on a record whose family root it fixes, or
// another writer's, on materialized rows"), then fall back to a job, which
// fails after its retries; once the lock is gone a step materializes it.
func TestDeferRaceFastPathLockTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		write string
		lock  string // the row the other transaction holds
	}{
		{"a rootless insert whose record the application holds",
			`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c900', 'case', 'u1', 'a001')`,
			`SELECT FROM recalc.record WHERE id = 'c900' FOR UPDATE`},
		{"an owner change whose materialized row another writer holds",
			`UPDATE recalc.record SET owner = 'u2' WHERE id = 'a004'`,
			`SELECT FROM recalc.acl_record WHERE id = 'a004' FOR UPDATE`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			live := engine.NewLive(engine.Options{LockTimeout: 100 * time.Millisecond, Retries: 1}, 1000)
			b.step(t, live) // loads the configuration: the next step may take the fast path
			b.exec(t, tc.write)
			holder := begin(t, connect(t, b.pool))
			mustExec(t, holder, tc.lock)
			// It gives up by itself, on its lock timeout, while the row is
			// still held: not when the holder lets go (never, here) or the
			// caller's deadline ends it. (How long that takes is the
			// machine's: about a second on a quiet one.)
			_, took, err := stepWithin(b, live, time.Minute)
			if errors.Is(err, context.DeadlineExceeded) || !pg.IsLockNotAvailable(err) {
				t.Errorf("a step held up by a row lock for %s ended with %v; with a lock timeout of 100 ms and one retry it should give up on its own (55P03)", took, err)
			}
			rollback(t, holder, "the held row")
			if _, _, err := stepWithin(b, live, 15*time.Second); err != nil {
				t.Fatalf("step once the row is free: %v", err)
			}
			checkDeferRace(t, b, "after the lock was released")
		})
	}
}

// planRolledBack is `recalc plan`: engine.Plan in a transaction rolled
// back; dryRunRolledBack is the dry run of `recalc plan FILE`.
func planRolledBack(b *bundle, opt engine.Options) error {
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(b.ctx) //nolint:errcheck // rolled back on purpose
	_, err = engine.Plan(b.ctx, tx, opt)
	return err
}

func dryRunRolledBack(b *bundle) error {
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(b.ctx) //nolint:errcheck // rolled back on purpose
	_, err = engine.DryRun(b.ctx, tx, engine.Options{InPlace: true}, zerolog.Nop())
	return err
}

// closureCurrent reports whether the closure side was computed from the
// stored configuration.
func closureCurrent(t *testing.T, b *bundle) bool {
	t.Helper()
	stored, err := store.StoredConfig(b.ctx, b.pool)
	if err != nil {
		t.Fatal(err)
	}
	applied, err := store.AppliedConfig(b.ctx, b.pool, store.SideClosure)
	if err != nil {
		t.Fatal(err)
	}
	return string(stored) == string(applied)
}

// TestDeferRaceLockedWhileDeferred: an application transaction holds
// records whose family roots the plan must fix (a rootless insert, a
// re-parented case) while a side is deferred. With the share rows deferred
// the plan's root fixes are rolled back anyway: `recalc run`, a watch step
// and `recalc plan` must change nothing, say so and succeed (README, "Bulk
// loads": "recalc run # changes nothing while deferred, says so, exits 0"),
// and a membership change, whose side is not deferred, must be applied. With
// only the closure deferred the share rows need the fixes: the run fails
// after its bounded retries. Then the lock goes, everything resumes, and the
// tables must be a full run's.
func TestDeferRaceLockedWhileDeferred(t *testing.T) {
	t.Parallel()
	for _, sides := range [][]string{{store.SideRules}, {store.SideRules, store.SideClosure}, {store.SideClosure}} {
		t.Run(strings.Join(sides, "+"), func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			deferSides(t, b, sides...)
			rulesDeferred, closureDeferred := slices.Contains(sides, store.SideRules), slices.Contains(sides, store.SideClosure)
			before := b.access(t)
			b.exec(t, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c900', 'case', 'u1', 'a001')`,
				`UPDATE recalc.record SET parent = 'a003' WHERE id = 'c001_0'`)
			if !closureDeferred {
				b.importFile(t, `{"groups":[{"id":"g9","members":["user:u1","user:u2"]}]}`)
			}
			holder, _ := holdRows(t, b.pool, "c900", "c001_0")
			opt := engine.Options{LockTimeout: 100 * time.Millisecond, Retries: 1}
			ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
			rep, err := engine.Run(ctx, b.pool, opt, zerolog.Nop())
			cancel()
			switch {
			case rulesDeferred && err != nil:
				t.Errorf("recalc run with the share rows deferred, while the application holds records whose root fixes the plan would roll back: %v; want it to succeed", err)
			case !rulesDeferred && (err == nil || !strings.Contains(err.Error(), "stayed locked")):
				t.Errorf("run with the share rows due under a held record: %v, want the bounded wait's error", err)
			}
			if rulesDeferred && !closureDeferred && !closureCurrent(t, b) {
				t.Errorf("the membership change was not applied though the closure is not deferred (run: %+v, %v)", rep, err)
			}
			live := engine.NewLive(opt, 1000)
			if _, took, err := stepWithin(b, live, 15*time.Second); rulesDeferred && err != nil {
				t.Errorf("watch step with the share rows deferred, under a held record: %v after %s; want it to succeed", err, took)
			}
			if err := planRolledBack(b, opt); rulesDeferred && err != nil {
				t.Errorf("recalc plan with the share rows deferred, under a held record: %v; want it to succeed", err)
			}
			if got := b.access(t); rulesDeferred && closureDeferred && got != before {
				t.Errorf("access moved while both sides were deferred:\n%s", oracle.Diff(before, got))
			}
			rollback(t, holder, "the held records")
			resumeSides(t, b, sides...)
			b.run(t, engine.Options{})
			checkDeferRace(t, b, "after resume")
		})
	}
}

// TestDeferRacePlanInterleavings stops a run's plan inside its root fixes,
// on a rootless record c900 the application holds, with nothing or the
// closure deferred (with the share rows deferred the plan fixes no root,
// and the writes below race it instead). While it waits,
// other transactions commit: a task under the held c900, an account and
// then a case under it in two transactions, a parent's delete, a
// re-parenting, and perhaps a deferral or the resume of both sides. Then
// the holder rolls back, or commits c900 re-parented. The run must
// succeed; after a watch step and a run under the deferral then in force,
// the resume of everything and a run, the tables must be a full run's.
func TestDeferRacePlanInterleavings(t *testing.T) {
	t.Parallel()
	for _, start := range []struct {
		name  string
		sides []string
	}{{"nothing deferred", nil}, {"rules deferred", []string{store.SideRules}},
		{"closure deferred", []string{store.SideClosure}}, {"both deferred", []string{store.SideRules, store.SideClosure}}} {
		for _, during := range []string{"writes", "defer rules", "resume"} {
			for _, end := range []string{"rolled back", "re-parents c900"} {
				t.Run(fmt.Sprintf("%s, %s, holder %s", start.name, during, end), func(t *testing.T) {
					t.Parallel()
					b := drBundle(t)
					deferSides(t, b, start.sides...)
					b.exec(t, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c900', 'case', 'u1', 'a001')`)
					holder, pid := holdRows(t, b.pool, "c900")
					obs, app := connect(t, b.pool), connect(t, b.pool)
					run := startRun(t, b.pool, engine.Options{Workers: 2, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 1})
					if !slices.Contains(start.sides, store.SideRules) {
						waitBlockedBy(t, obs, pid, run.done, "the plan's root fix to wait for c900")
					} // else the plan fixes no root, and waits for nothing: the writes race it
					mustExec(t, app, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('t900', 'task__c', 'u2', 'c900')`)
					mustExec(t, app, `INSERT INTO recalc.record (id, object, owner) VALUES ('ra1', 'account', 'u3')`)
					mustExec(t, app, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('rc1', 'case', 'u4', 'ra1')`)
					mustExec(t, app, `DELETE FROM recalc.record WHERE id = 'a003'`)
					mustExec(t, app, `UPDATE recalc.record SET parent = 'a004' WHERE id = 'c005_0'`)
					switch during {
					case "defer rules":
						deferSides(t, b, store.SideRules)
					case "resume":
						resumeSides(t, b, store.SideRules, store.SideClosure)
					}
					if end == "rolled back" {
						rollback(t, holder, "the holder")
					} else {
						mustExec(t, holder, `UPDATE recalc.record SET parent = 'a005' WHERE id = 'c900'`)
						commit(t, holder, "the holder")
					}
					run.wait(t)
					b.step(t, engine.NewLive(engine.Options{}, 1000))
					b.run(t, engine.Options{})
					resumeSides(t, b, store.SideRules, store.SideClosure)
					b.run(t, engine.Options{})
					checkDeferRace(t, b, "after resume")
				})
			}
		}
	}
}

// TestDeferRaceChainsWhileDeferred: while the share rows (or both sides)
// are deferred, three connections commit one by one inserts of rootless
// families, re-parentings of chains, deletes of parents (orphaning cases
// and tasks), a parent re-inserted under its old id, a case deleted and
// re-created elsewhere, a task under an account, an account's id taken by
// another; between the commits run `recalc run`, watch steps, `recalc
// plan` and a dry run. Access must not move; then the sides resume, one at
// a time or together, with a run or a watch step after each.
func TestDeferRaceChainsWhileDeferred(t *testing.T) {
	t.Parallel()
	steps := []string{
		`INSERT INTO recalc.record (id, object, owner) VALUES ('ra1', 'account', 'u1')`,
		`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('rc1', 'case', 'u2', 'ra1')`,
		`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('rt1', 'task__c', 'u3', 'rc1')`,
		`UPDATE recalc.record SET parent = 'a004' WHERE id = 'rc1'`,
		`UPDATE recalc.record SET parent = 'ra1' WHERE id = 'c005_0'`,
		`DELETE FROM recalc.record WHERE id = 'ra1'`,
		`DELETE FROM recalc.record WHERE id = 'a006'`,
		`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('rt2', 'task__c', 'u1', 'c006_0')`,
		`INSERT INTO recalc.record (id, object, owner, fields) VALUES ('a006', 'account', 'u4', '{"tier": 2}')`,
		`DELETE FROM recalc.record WHERE id = 'c007_0'`,
		`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c007_0', 'case', 'u1', 'a008')`,
		`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('rt3', 'task__c', 'u2', 'a009')`,
		`UPDATE recalc.record SET parent = 'c008_0' WHERE id = 'rt1'`,
		`DELETE FROM recalc.record WHERE id = 'a008'`,
		`UPDATE recalc.record SET id = 'a008' WHERE id = 'a010'`,
		`UPDATE recalc.record SET owner = 'u2' WHERE id = 'c004_1'`,
		`DELETE FROM recalc.record WHERE id = 'a004'`,
	}
	type resume struct {
		name  string
		order [][]string
	}
	for _, sides := range [][]string{{store.SideRules}, {store.SideRules, store.SideClosure}} {
		orders := []resume{{"together", [][]string{sides}}}
		if len(sides) == 2 {
			orders = append(orders, resume{"rules first", [][]string{{store.SideRules}, {store.SideClosure}}},
				resume{"closure first", [][]string{{store.SideClosure}, {store.SideRules}}})
		}
		for _, o := range orders {
			for _, watchResumes := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s deferred, resumed %s, by %s", strings.Join(sides, "+"), o.name, map[bool]string{false: "run", true: "watch"}[watchResumes]), func(t *testing.T) {
					t.Parallel()
					b := drBundle(t)
					live := engine.NewLive(engine.Options{}, 1000)
					b.step(t, live)
					deferSides(t, b, sides...)
					before := b.access(t)
					apps := conns(t, b.pool, 3)
					for i, sql := range steps {
						mustExec(t, apps[i%3], sql)
						var err error
						switch i % 4 {
						case 0:
							_, err = engine.Run(b.ctx, b.pool, engine.Options{}, zerolog.Nop())
						case 1:
							_, err = live.Step(b.ctx, b.pool, zerolog.Nop())
						case 2:
							err = planRolledBack(b, engine.Options{})
						case 3:
							err = dryRunRolledBack(b)
						}
						if err != nil {
							t.Fatalf("after step %d (%s): engine %d: %v", i, sql, i%4, err)
						}
						if got := b.access(t); got != before {
							t.Fatalf("after step %d (%s): access moved while deferred:\n%s", i, sql, oracle.Diff(before, got))
						}
					}
					for _, s := range o.order {
						resumeSides(t, b, s...)
						if watchResumes {
							b.step(t, live)
						} else {
							b.run(t, engine.Options{})
						}
					}
					checkDeferRace(t, b, "after resume")
				})
			}
		}
	}
}

// TestDeferRaceJobAndDeferral races `recalc defer` and `recalc resume`
// (store.Defer, store.Undefer) against a running job, stopped by a lock
// while a chunk waits for a family's materialized row, or while its finish
// waits for the job row or for a closure row it deletes. While it waits, the
// deferral changes and the application commits a parent's delete, a
// rootless insert under a record of the job's families, a re-parenting.
// Then the job ends, a run and a watch step follow under the deferral in
// force, everything resumes, and the tables must be a full run's.
func TestDeferRaceJobAndDeferral(t *testing.T) {
	t.Parallel()
	type tc struct {
		name    string
		sides   []string // deferred before the job is planned
		at      string   // "chunk", "finish" (job row), "closure" (a member row the finish deletes)
		toggle  func(q pg.Querier) error
		closure bool // the job is planned from a membership change
	}
	deferRules := func(q pg.Querier) error { return store.Defer(context.Background(), q, []string{store.SideRules}) }
	deferBoth := func(q pg.Querier) error {
		return store.Defer(context.Background(), q, []string{store.SideRules, store.SideClosure})
	}
	resumeRules := func(q pg.Querier) error { return store.Undefer(context.Background(), q, []string{store.SideRules}) }
	resumeAll := func(q pg.Querier) error {
		return store.Undefer(context.Background(), q, []string{store.SideRules, store.SideClosure})
	}
	swap := func(q pg.Querier) error {
		return errors.Join(store.Undefer(context.Background(), q, []string{store.SideClosure}), deferRules(q))
	}
	for _, c := range []tc{
		{"rules deferred during a chunk", nil, "chunk", deferRules, false},
		{"both deferred during a chunk", nil, "chunk", deferBoth, false},
		{"rules deferred during the finish", nil, "finish", deferRules, false},
		{"both deferred during the finish", nil, "finish", deferBoth, false},
		{"closure resumed, rules deferred, during a chunk", []string{store.SideClosure}, "chunk", swap, true},
		{"closure resumed, rules deferred, during the finish", []string{store.SideClosure}, "finish", swap, true},
		{"rules resumed during a closure job's finish", []string{store.SideRules}, "closure", resumeRules, true},
		{"both resumed during a closure job's finish", []string{store.SideRules}, "closure", resumeAll, true},
		{"rules deferred during a closure job's finish", nil, "closure", deferRules, true},
		{"both deferred during a closure job's finish", nil, "closure", deferBoth, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			b.importFile(t, `{"groups":[{"id":"g9","members":["user:u1"]}]}`)
			b.run(t, engine.Options{})
			deferSides(t, b, c.sides...)
			if c.closure {
				b.importFile(t, `{"groups":[{"id":"g9","members":["user:u2"]}]}`)
			}
			b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`,
				`UPDATE recalc.record SET owner = 'u1' WHERE id = 'a005'`,
				`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c900', 'case', 'u2', 'a001')`,
				`DELETE FROM recalc.record WHERE id = 'a007'`)
			obs, other, other2, app := connect(t, b.pool), connect(t, b.pool), connect(t, b.pool), connect(t, b.pool)
			holder := begin(t, other)
			defer holder.Rollback(b.ctx) //nolint:errcheck // no-op once ended
			switch c.at {
			case "chunk", "finish":
				mustExec(t, holder, `SELECT FROM recalc.acl_record WHERE id = 'c001_0' FOR UPDATE`)
			case "closure":
				mustExec(t, holder, `SELECT FROM recalc.acl_member WHERE gid = (SELECT gid FROM recalc.grantee WHERE key = 'group:g9') FOR UPDATE`)
			}
			run := startRun(t, b.pool, engine.Options{Workers: 2, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 1})
			waitBlockedBy(t, obs, other.PgConn().PID(), run.done, "the job to wait at "+c.at)
			if c.at == "finish" {
				jobLock := begin(t, other2)
				defer jobLock.Rollback(b.ctx) //nolint:errcheck // no-op once ended
				mustExec(t, jobLock, `SELECT FROM recalc.job WHERE status = 'running' FOR NO KEY UPDATE`)
				rollback(t, holder, "the row lock")
				waitBlockedBy(t, obs, other2.PgConn().PID(), run.done, "the job's finish to wait for the job row")
				holder = jobLock
			}
			// The deferral changes on a connection of its own: it bumps
			// recalc.config_version, whose row a finish that has recorded a
			// side as applied holds until it commits.
			tog := connect(t, b.pool)
			toggled := make(chan error, 1)
			go func() { toggled <- c.toggle(tog) }()
			waitSettledOrBlocked(t, obs, tog.PgConn().PID(), toggled)
			mustExec(t, app, `DELETE FROM recalc.record WHERE id = 'a001'`) // c001_*, c900 orphaned
			mustExec(t, app, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('t901', 'task__c', 'u4', 'c005_1')`)
			mustExec(t, app, `UPDATE recalc.record SET parent = 'a009' WHERE id = 'c005_0'`)
			rollback(t, holder, "the lock")
			run.wait(t)
			if err := <-toggled; err != nil {
				t.Fatal(err)
			}
			live := engine.NewLive(engine.Options{}, 1000)
			b.step(t, live)
			b.run(t, engine.Options{})
			b.step(t, live)
			resumeSides(t, b, store.SideRules, store.SideClosure)
			b.run(t, engine.Options{})
			if !closureCurrent(t, b) {
				t.Error("the closure is not current after resume")
			}
			checkDeferRace(t, b, "after resume")
		})
	}
}

// waitSettledOrBlocked waits until the session pid waits for a lock, or
// done has a value (which it puts back).
func waitSettledOrBlocked(t *testing.T, obs *pgx.Conn, pid uint32, done chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			return
		default:
		}
		var blocked bool
		if err := obs.QueryRow(context.Background(), `SELECT cardinality(pg_blocking_pids($1)) > 0`, int32(pid)).Scan(&blocked); err != nil {
			t.Fatal(err)
		}
		if blocked {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the deferral change neither ended nor waited for a lock")
}

// TestDeferRaceWatchUnderLoad: `recalc watch` (a Live stepping under
// watch.Run) runs while four connections write records at random
// (live_test.go's writeLoad) and a fifth toggles the deferral: both sides,
// the closure resumed alone, the rules resumed alone, the rules deferred
// again, with `recalc plan` and runs in between. Once all resumes and the
// watch catches up, the tables must be a full run's.
func TestDeferRaceWatchUnderLoad(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, liveOrg(12), engine.Options{})
			b.cur = testkit.Import(t, b.ctx, b.pool, nil, liveOrg(12)) // the model as stored (imported twice: no change)
			b.run(t, engine.Options{})
			var fast atomic.Int64
			w := startWatch(b.pool, &fast)
			defer w.stop()
			done := make(chan error, 1)
			go func() { done <- writeLoad(b.ctx, conns(t, b.pool, 4), seed, 50) }()
			toggles := []func() error{
				func() error { return store.Defer(b.ctx, b.pool, []string{store.SideRules, store.SideClosure}) },
				func() error { return planRolledBack(b, engine.Options{LockTimeout: 2 * time.Second}) },
				func() error { return store.Undefer(b.ctx, b.pool, []string{store.SideClosure}) },
				func() error {
					_, err := engine.Run(b.ctx, b.pool, engine.Options{LockTimeout: 2 * time.Second, Retries: 5}, zerolog.Nop())
					return err
				},
				func() error { return store.Undefer(b.ctx, b.pool, []string{store.SideRules}) },
				func() error { return store.Defer(b.ctx, b.pool, []string{store.SideRules}) },
				func() error { return dryRunRolledBack(b) },
				func() error { return store.Defer(b.ctx, b.pool, []string{store.SideClosure}) },
				func() error { return store.Undefer(b.ctx, b.pool, []string{store.SideRules}) },
			}
			for i := 0; ; i++ {
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
					goto settled
				case <-time.After(40 * time.Millisecond):
				}
				if err := toggles[i%len(toggles)](); err != nil {
					t.Fatalf("toggle %d: %v", i%len(toggles), err)
				}
			}
		settled:
			resumeSides(t, b, store.SideRules, store.SideClosure)
			if err := changes.WaitFresh(b.ctx, b.pool, 0, 20*time.Second); err != nil {
				t.Fatalf("wait fresh after resume: %v", err)
			}
			w.stop()
			checkDeferRace(t, b, "after the load and resume")
		})
	}
}
