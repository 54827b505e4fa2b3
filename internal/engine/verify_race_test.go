package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/sharetable"
)

// verifyWriter writes to recalc.record with plain SQL, as an application
// does, over the families of accounts a000..a089 (a090..a099 are never
// written): owner and field changes, new cases (rootless, or with the root
// the application computed), deletes, cases moved to another account, and
// now and then an account deleted and inserted again.
func verifyWriter(ctx context.Context, pool *pgxpool.Pool, seed uint64, n *atomic.Int64) error {
	r := rand.New(rand.NewPCG(seed, 7))
	owners := []string{"u1", "u2", "u3", "u4", "u5"}
	account := func() string { return fmt.Sprintf("a%03d", r.IntN(90)) }
	caseOf := func() string { return fmt.Sprintf("c%03d_%d", r.IntN(90), r.IntN(2)) }
	for k := 0; ctx.Err() == nil; k++ {
		var sql string
		var args []any
		switch r.IntN(8) {
		case 0, 1: // owner change
			id := account()
			if r.IntN(2) == 0 {
				id = caseOf()
			}
			sql, args = `UPDATE recalc.record SET owner = $2 WHERE id = $1`, []any{id, owners[r.IntN(len(owners))]}
		case 2: // field change: the criteria rule matches tier 1
			sql, args = `UPDATE recalc.record SET fields = jsonb_build_object('tier', $2::int) WHERE id = $1`, []any{account(), r.IntN(3)}
		case 3: // a new case, rootless
			sql, args = `INSERT INTO recalc.record (id, object, owner, parent) VALUES ($1, 'case', $2, $3) ON CONFLICT (id) DO NOTHING`,
				[]any{fmt.Sprintf("n%d_%d", seed, k), owners[r.IntN(len(owners))], account()}
		case 4: // a new case with its root, as the application computed it
			sql, args = `INSERT INTO recalc.record (id, object, owner, parent, root_id)
				SELECT $1, 'case', $2, id, root_id FROM recalc.record WHERE id = $3 ON CONFLICT (id) DO NOTHING`,
				[]any{fmt.Sprintf("m%d_%d", seed, k), owners[r.IntN(len(owners))], account()}
		case 5: // delete a case, an original or a new one
			if r.IntN(2) == 0 {
				sql, args = `DELETE FROM recalc.record WHERE id = $1`, []any{caseOf()}
			} else {
				sql, args = `DELETE FROM recalc.record WHERE rid = (SELECT rid FROM recalc.record WHERE id LIKE 'n%' OR id LIKE 'm%' ORDER BY random() LIMIT 1)`, nil
			}
		case 6: // a case moves to another account
			sql, args = `UPDATE recalc.record SET parent = $2 WHERE id = $1`, []any{caseOf(), account()}
		case 7: // an account goes, orphaning its cases, or comes back
			id := account()
			if r.IntN(2) == 0 {
				sql, args = `DELETE FROM recalc.record WHERE id = $1`, []any{id}
			} else {
				sql, args = `INSERT INTO recalc.record (id, object, owner) VALUES ($1, 'account', $2) ON CONFLICT (id) DO NOTHING`, []any{id, owners[r.IntN(len(owners))]}
			}
		}
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: %w", sql, err)
		}
		n.Add(1)
		time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
	}
	return nil
}

// materializers: what materializes the writes beside verify.
type materializers int

const (
	watchOnly    materializers = iota // a watch: its fast path, and a job for a batch too big for it
	plainRuns                         // a watch, and plain runs
	plainAndFull                      // a watch, plain runs, and full ones now and then (which repair drift)
)

// verifyMaterializer materializes the writes as `recalc watch` does, on
// the fast path or with a job, and as runs do (m). As a watch, it tries
// again after a step or run fails, and counts the failures: a job's chunk
// that keeps finding records moved into its families by the writers fails
// the job, which the next run resumes.
func verifyMaterializer(ctx context.Context, pool *pgxpool.Pool, seed uint64, m materializers, failed *atomic.Int64) error {
	r := rand.New(rand.NewPCG(seed, 11))
	opt := engine.Options{LockTimeout: 2 * time.Second, Retries: 5}
	live := engine.NewLive(opt, 1000)
	for ctx.Err() == nil {
		var err error
		switch n := r.IntN(30); {
		case m == watchOnly || n >= 10:
			_, err = live.Step(ctx, pool, zerolog.Nop())
		case n == 0 && m == plainAndFull:
			full := opt
			full.Full, full.InPlace = true, r.IntN(2) == 0
			_, err = engine.Run(ctx, pool, full, zerolog.Nop())
		default:
			_, err = engine.Run(ctx, pool, opt, zerolog.Nop())
		}
		switch {
		case ctx.Err() != nil:
		case err != nil && !strings.Contains(err.Error(), "a record moved between families while they were computed"):
			return err
		case err != nil:
			failed.Add(1)
		}
		time.Sleep(time.Duration(r.IntN(10)) * time.Millisecond)
	}
	return nil
}

// verifyRounds runs Verify n times while writers and a materializer
// (verifyMaterializer) run, and returns the reports, with the errors apart
// from those of a job being unfinished when Verify started (it then
// refuses to start). A writer's or the materializer's error fails the test.
func verifyRounds(t *testing.T, b *bundle, n int, opt engine.VerifyOptions, m materializers) (reps []*engine.VerifyReport, errs []error) {
	t.Helper()
	stop, cancel := context.WithCancel(b.ctx)
	g, ctx := errgroup.WithContext(stop)
	var writes, failed atomic.Int64
	for i := range 2 {
		g.Go(func() error { return verifyWriter(ctx, b.pool, uint64(i+1)+uint64(time.Now().UnixNano()), &writes) })
	}
	g.Go(func() error { return verifyMaterializer(ctx, b.pool, uint64(time.Now().UnixNano()), m, &failed) })
	for len(reps) < n && ctx.Err() == nil {
		rep, err := engine.Verify(ctx, b.pool, opt, zerolog.Nop())
		switch {
		case ctx.Err() != nil:
		case err != nil && strings.Contains(err.Error(), "is unfinished: run `recalc run` first"):
			time.Sleep(time.Millisecond)
		case err != nil:
			errs = append(errs, err)
			reps = append(reps, nil)
		default:
			reps = append(reps, rep)
		}
	}
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d verifies beside %d writes (%d runs failed on records moving, and were resumed)", n, writes.Load(), failed.Load())
	return reps, errs
}

// driftOf says what a report found, for messages.
func driftOf(rep *engine.VerifyReport) string {
	return fmt.Sprintf("share rows %+v, record rows %d, closure %d/%d (checked %d, skipped %d)",
		rep.ShareRows, rep.RecordRows, rep.ClosureMissing, rep.ClosureExtra, rep.Families, rep.Skipped)
}

// settle runs until a run has nothing to do: the tables are then up to
// date.
func settle(t *testing.T, b *bundle) {
	t.Helper()
	for i := 0; ; i++ {
		rep := b.run(t, engine.Options{})
		if rep.Nothing {
			return
		}
		if i > 10 {
			t.Fatalf("still something to run after %d runs", i)
		}
	}
}

// TestVerifyDuringWrites: verify, without and with --repair, while the
// application writes records with plain SQL and a watch (its fast path and
// jobs) and runs materialize them. A change not yet materialized when a
// family is compared is pending by design, and one materialized while
// verify runs is no drift either: on tables that were right, verify
// reports nothing, every time. A share row deleted by hand in a family no
// one writes is reported, exactly, every time, and repaired.
func TestVerifyDuringWrites(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	const rounds = 60

	reps, errs := verifyRounds(t, b, rounds, engine.VerifyOptions{}, plainAndFull)
	var drifted []string
	checked, skipped, none := 0, 0, 0
	for _, rep := range reps {
		if rep != nil && rep.Drift() {
			drifted = append(drifted, driftOf(rep))
		}
		if rep != nil {
			checked, skipped = checked+rep.Families, skipped+rep.Skipped
		}
		if rep != nil && rep.Families == 0 {
			none++
		}
	}
	t.Logf("families checked %d, skipped %d; %d verifies checked none (a full job ran)", checked, skipped, none)
	if len(drifted) > 0 {
		t.Errorf("%d of %d verifies reported drift on tables that were right; the first: %s", len(drifted), rounds, drifted[0])
	}
	if len(errs) > 0 {
		t.Errorf("%d of %d verifies failed; the first: %v", len(errs), rounds, errs[0])
	}

	// Genuine drift: a099's owner row, in a family no writer touches.
	settle(t, b)
	b.exec(t, `DELETE FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a099') AND cause = 'owner'`)
	lastJob := lastJobID(t, b)
	reps, errs = verifyRounds(t, b, rounds/3, engine.VerifyOptions{}, plainRuns)
	want := []string{"account/owner 1/0/0"}
	wrong, clean := 0, 0
	for _, rep := range reps {
		if rep == nil {
			continue
		}
		if !rep.Drift() { // once a full job (below) has repaired the row
			clean++
			continue
		}
		var got []string
		for _, c := range rep.ShareRows {
			got = append(got, fmt.Sprintf("%s/%s %d/%d/%d", c.Object, c.Cause, c.Missing, c.Extra, c.Wrong))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") || rep.RecordRows != 0 || rep.ClosureMissing+rep.ClosureExtra != 0 {
			if wrong == 0 {
				t.Errorf("verify beside writes, a099's owner row deleted: %s; want share rows %v only", driftOf(rep), want)
			}
			wrong++
		}
	}
	if wrong > 0 || len(errs) > 0 {
		t.Errorf("%d of %d verifies misreported the deleted row, %d failed (the first error: %v)", wrong, len(reps), len(errs), errs)
	}
	if clean > 0 && !fullJobSince(t, b, lastJob) {
		t.Errorf("%d of %d verifies found no drift, and no full job repaired the deleted row", clean, len(reps))
	}

	// --repair beside the writes and a watch (that stops it only when a
	// batch goes to a job) repairs that row once, and finds nothing else.
	settle(t, b)
	b.exec(t, `DELETE FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a099') AND cause = 'owner'`)
	lastJob = lastJobID(t, b)
	reps, errs = verifyRounds(t, b, rounds/3, engine.VerifyOptions{Repair: true}, watchOnly)
	// A repair stops when a job starts, and fails when a writer keeps
	// moving records into the families it locked (it tries three times);
	// the next one finds the row missing again, unless the one that stopped
	// had repaired it already, and says so in its error.
	stopped := 0
	for _, err := range errs {
		if stop := (*engine.RepairStopped)(nil); errors.As(err, &stop) {
			reps = append(reps, stop.Repaired)
			stopped++
		}
	}
	repaired := 0
	for _, rep := range reps {
		if rep == nil || !rep.Drift() {
			continue
		}
		if len(rep.ShareRows) == 1 && rep.ShareRows[0] == (sharetable.DiffCount{Object: "account", Cause: "owner", Missing: 1}) &&
			rep.RecordRows == 0 && repaired == 0 {
			repaired++
			continue
		}
		t.Errorf("verify --repair beside writes reported %s", driftOf(rep))
	}
	moved := 0
	for _, err := range errs {
		switch {
		case strings.Contains(err.Error(), "a record moved between families while they were computed"):
			moved++
		case !strings.Contains(err.Error(), "started while verify ran"):
			t.Errorf("verify --repair beside writes: %v", err)
		}
	}
	// A full job (the watch's, for a batch too big for its fast path on a
	// loaded machine) repairs the row too, and a repair then finds nothing.
	full := fullJobSince(t, b, lastJob)
	t.Logf("verify --repair: %d repaired the deleted row, %d stopped for a job, %d failed on records moving, %d of those after repairing; a full job ran: %v",
		repaired, len(errs)-moved, moved, stopped, full)
	if repaired > 1 || repaired == 0 && !full {
		t.Errorf("verify --repair beside writes repaired the deleted row %d times, and no full job ran: want once", repaired)
	}
	settle(t, b)
	if _, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{Repair: true}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	checkSettled(t, b.ctx, b.pool)
}

// lastJobID is the id of the newest job, 0 if none.
func lastJobID(t *testing.T, b *bundle) int64 {
	t.Helper()
	var id int64
	if err := b.pool.QueryRow(b.ctx, `SELECT coalesce(max(id), 0) FROM recalc.job`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// fullJobSince reports whether a full job newer than job id finished: it
// recomputed every family, and so repaired any drift.
func fullJobSince(t *testing.T, b *bundle, id int64) bool {
	t.Helper()
	var full bool
	if err := b.pool.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM recalc.job WHERE id > $1 AND status = 'done'
		AND (kind = 'full' OR coalesce((plan -> 'plan' ->> 'full')::boolean, false)))`, id).Scan(&full); err != nil {
		t.Fatal(err)
	}
	return full
}

// TestVerifyBesideJobRootFix: a005 is deleted with plain SQL; verify
// starts (no job is unfinished) and a run plans while verify loads: the
// plan fixes the roots of a005's orphaned cases (each a family of its own
// now) and commits them with the job, and the job's chunk has not yet
// written them when verify compares. The change row names a005 only; the
// cases' new families are pending all the same, in the job's chunks (an
// incremental job), or as every family is (a full job), and verify
// reports no drift.
func TestVerifyBesideJobRootFix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		opt              engine.Options
		checked, skipped int
	}{
		// Checked: the 100 families less a005's, and the two new ones,
		// which the job recomputes; skipped: a005's, pending when verify
		// started, and the two new ones.
		{"incremental", engine.Options{Workers: 1}, 99, 3},
		// Every family is pending: a005's when verify started, the others when it compared.
		{"full", engine.Options{Workers: 1, Full: true}, 0, 102},
		{"full in place", engine.Options{Workers: 1, Full: true, InPlace: true}, 0, 102},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			b.exec(t, `DELETE FROM recalc.record WHERE id = 'a005'`)

			vg := &gate{}
			vLoad := vg.arm(`FROM recalc.applied_section WHERE side`)
			vPool := gatedPool(t, b.pool, vg)
			vDone := startVerify(b.ctx, vPool)
			waitReached(t, vLoad, "verify's load")

			rg := &gate{}
			claim := rg.arm(`AND status = 'pending' ORDER BY n LIMIT 1 FOR UPDATE SKIP LOCKED`)
			rPool := gatedPool(t, b.pool, rg)
			run := startRun(t, rPool, tc.opt)
			waitReached(t, claim, "the job's first chunk")

			close(vLoad.release)
			r := <-vDone
			if r.err != nil {
				t.Fatalf("verify beside the job: %v", r.err)
			}
			if r.rep.Drift() || r.rep.Families != tc.checked || r.rep.Skipped != tc.skipped {
				t.Errorf("verify beside a job whose plan fixed roots: %s; want no drift, %d families checked and %d skipped",
					driftOf(r.rep), tc.checked, tc.skipped)
			}
			close(claim.release)
			run.wait(t)
			checkSettled(t, b.ctx, b.pool)
		})
	}
}

// TestVerifyBesideWrite: the owner of a001 changes with plain SQL while
// verify runs, at two points of its comparison: after it read the changes
// pending, before its chunk reads the families; and after its chunk read
// a001's record, before it reads the share rows, the change then
// materialized by a watch's fast path in between. Either way the tables
// are right (the change pending, then materialized), and verify reports
// no drift.
func TestVerifyBesideWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, at    string
		materialize bool
	}{
		{"after verify read the pending changes", `SELECT rid FROM recalc.record WHERE root_id = ANY($1) ORDER BY rid`, false},
		{"between the chunk's reads of records and share rows, materialized", `SELECT rid, gid, cause, level, boss_ok FROM recalc.acl_share`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			vg := &gate{}
			at := vg.arm(tc.at)
			vPool := gatedPool(t, b.pool, vg)
			vDone := startVerify(b.ctx, vPool)
			waitReached(t, at, "verify's point")
			b.exec(t, `UPDATE recalc.record SET owner = 'u4' WHERE id = 'a001'`)
			if tc.materialize {
				if rep := b.step(t, engine.NewLive(engine.Options{}, 1000)); !rep.Fast || rep.Changes != 1 {
					t.Fatalf("watch step: %+v, want the change on the fast path", rep)
				}
			}
			close(at.release)
			r := <-vDone
			if r.err != nil {
				t.Fatalf("verify beside the write: %v", r.err)
			}
			if r.rep.Drift() || r.rep.Families != 100 || r.rep.Skipped != 0 {
				t.Errorf("verify beside an owner change: %s; want no drift, every family checked", driftOf(r.rep))
			}
			settle(t, b)
			checkSettled(t, b.ctx, b.pool)
		})
	}
}

// TestVerifyBesideTruncate: the application truncates recalc.record while
// a chunk of verify compares, after the chunk's snapshot was taken. A
// truncate is not visible to a snapshot (the table reads empty to one
// taken before it): the chunk holds the tables it reads from its first
// statement, so the truncate waits for it, and verify compares the
// families as they were, with no drift.
func TestVerifyBesideTruncate(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	const readLog = `FROM recalc.change WHERE kind NOT IN ('attached', 'attached_all')`
	vg := &gate{}
	load, chunk := vg.arm(readLog), vg.arm(readLog) // loadVerification's read of the log, then the chunk's
	vPool := gatedPool(t, b.pool, vg)
	vDone := startVerify(b.ctx, vPool)
	waitReached(t, load, "verify's load")
	close(load.release)
	pid := waitReached(t, chunk, "verify's chunk, its snapshot taken")

	truncated := make(chan error, 1)
	go func() {
		_, err := b.pool.Exec(b.ctx, `TRUNCATE recalc.record`)
		truncated <- err
	}()
	// The truncate waits for the chunk, or, the tables not held, commits.
	obs := connect(t, b.pool)
	for waiting := false; !waiting; {
		select {
		case err := <-truncated:
			t.Errorf("the truncate committed while verify's chunk compared (err %v); want it to wait", err)
			truncated <- err
			waiting = true
			continue
		default:
		}
		if err := obs.QueryRow(b.ctx, `SELECT count(*) > 0 FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`, int32(pid)).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(chunk.release)
	r := <-vDone
	if r.err != nil {
		t.Fatalf("verify beside a truncate: %v", r.err)
	}
	if r.rep.Drift() || r.rep.Families != 100 {
		t.Errorf("verify beside a truncate: %s; want no drift, every family checked", driftOf(r.rep))
	}
	if err := <-truncated; err != nil {
		t.Fatalf("truncate: %v", err)
	}
	settle(t, b)
	checkSettled(t, b.ctx, b.pool)
}

// TestVerifyTruncatePending: recalc.record was truncated and no run has
// materialized it yet. Every family is pending, as the truncate's change
// row says, none differs by drift.
func TestVerifyTruncatePending(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	b.exec(t, `TRUNCATE recalc.record`)
	rep, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{}, zerolog.Nop())
	if err != nil || rep.Drift() || rep.Families != 0 || rep.Skipped != 100 {
		t.Fatalf("verify after a truncate, before a run: %+v, %v; want no drift, the 100 families skipped", rep, err)
	}
	settle(t, b)
	checkSettled(t, b.ctx, b.pool)
}

// verifyResult is what a Verify started by startVerify returned.
type verifyResult struct {
	rep *engine.VerifyReport
	err error
}

// startVerify runs Verify on pool in the background; its result comes on
// the channel returned.
func startVerify(ctx context.Context, pool *pgxpool.Pool) <-chan verifyResult {
	done := make(chan verifyResult, 1)
	go func() {
		rep, err := engine.Verify(ctx, pool, engine.VerifyOptions{}, zerolog.Nop())
		done <- verifyResult{rep, err}
	}()
	return done
}

// TestVerifyBesideClosureChange: a job that changes the closure (u5 joins
// group g1) commits while verify compares the closure, after it took its
// snapshot and before it reads the stored entries. Verify compares them as
// of its snapshot, with the configuration it loaded, and reports no drift;
// read afterwards, the new entries read as drift from the old
// configuration. A full job's swap of the closure waits for the
// comparison.
func TestVerifyBesideClosureChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opt  engine.Options
	}{
		{"incremental", engine.Options{Workers: 1}},
		{"full", engine.Options{Workers: 1, Full: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			vg := &gate{}
			at := vg.arm(`FROM recalc.acl_member ORDER BY gid, uid`)
			vDone := startVerify(b.ctx, gatedPool(t, b.pool, vg))
			release := releaser(t, at)
			pid := waitReached(t, at, "verify's read of the closure")
			b.importFile(t, `{"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`)
			run := startRun(t, b.pool, tc.opt)
			if tc.opt.Full {
				obs, err := b.pool.Acquire(b.ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(obs.Release)
				waitBlockedBy(t, obs.Conn(), pid, run.done, "the full job's swap")
			} else {
				run.wait(t)
			}
			release()
			r := <-vDone
			if r.err != nil {
				t.Fatalf("verify beside a closure change: %v", r.err)
			}
			if r.rep.Drift() {
				t.Errorf("verify beside a job that changed the closure: %s; want no drift", driftOf(r.rep))
			}
			run.wait(t)
			checkSettled(t, b.ctx, b.pool)
		})
	}
}

// TestVerifyBesideUnfinishedClosureJob: a job that takes u4 out of group g1
// (and changes a rule, so that it has chunks) is created while verify
// compares the families, and is unfinished when verify compares the
// closure. It deleted u4's entry with its creation, so the closure differs
// from the configuration verify loaded by design: verify says it did not
// compare it, and reports no drift.
func TestVerifyBesideUnfinishedClosureJob(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	const lock = `LOCK TABLE recalc.record, recalc.acl_record, recalc.acl_share, recalc.acl_member`
	vg := &gate{}
	families, closure := vg.arm(lock), vg.arm(lock)
	vDone := startVerify(b.ctx, gatedPool(t, b.pool, vg))
	release := releaser(t, closure)
	waitReached(t, families, "verify's comparison of the families")
	b.importFile(t, groupsAndRuleChange(`"user:u5"`))
	run, releaseClaim := startHeldRun(t, b)
	close(families.release)
	waitReached(t, closure, "verify's comparison of the closure")
	release()
	r := <-vDone
	if r.err != nil {
		t.Fatalf("verify beside the job: %v", r.err)
	}
	job := lastJobID(t, b)
	if r.rep.Drift() || r.rep.ClosureSkipped != job {
		t.Errorf("verify beside an unfinished job that removes a closure entry: %s, closure skipped for job %d; want no drift, skipped for job %d",
			driftOf(r.rep), r.rep.ClosureSkipped, job)
	}
	releaseClaim()
	run.wait(t)
	checkSettled(t, b.ctx, b.pool)
}

// groupsAndRuleChange is a change of minimalOrg: u4 leaves group g1, g3's
// members are g3 (JSON strings), and rule acct_tier shares tier 2
// accounts instead of tier 1 (a job with chunks).
func groupsAndRuleChange(g3 string) string {
	return `{"groups":[{"id":"g1","members":[]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":[` + g3 + `]}],
		"rules":[{"id":"acct_tier","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"tier","op":"equals","value":2}]}},
			{"id":"case_rep","object":"case","type":"owner","source":"group:g2","target":"group:g3","access":"edit"}]}`
}

// startHeldRun starts a run of one worker on b whose first chunk's claim
// waits, once the job is created, until the function returned releases it
// (or the test ends).
func startHeldRun(t *testing.T, b *bundle) (*bgRun, func()) {
	t.Helper()
	rg := &gate{}
	claim := rg.arm(`AND status = 'pending' ORDER BY n LIMIT 1 FOR UPDATE SKIP LOCKED`)
	run := startRun(t, gatedPool(t, b.pool, rg), engine.Options{Workers: 1})
	release := releaser(t, claim)
	waitReached(t, claim, "the job's first chunk")
	return run, release
}

// releaser returns a function that releases p once, and calls it as the
// test ends, before the gated pool closes: a test that fails while a
// session waits at p ends instead of waiting for it.
func releaser(t *testing.T, p *point) func() {
	release := sync.OnceFunc(func() { close(p.release) })
	t.Cleanup(release)
	return release
}

// TestVerifyClosureBesideRuleChange: a job that changes only a rule
// finishes while verify waits to compare the closure. The closure depends
// on the groups, roles, users and territories alone, so verify still
// compares it, and finds the entry deleted behind recalc's back meanwhile;
// it used to give up on any new configuration.
func TestVerifyClosureBesideRuleChange(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	const lock = `LOCK TABLE recalc.record, recalc.acl_record, recalc.acl_share, recalc.acl_member`
	vg := &gate{}
	families, closure := vg.arm(lock), vg.arm(lock)
	vDone := startVerify(b.ctx, gatedPool(t, b.pool, vg))
	release := releaser(t, closure)
	waitReached(t, families, "verify's comparison of the families")
	close(families.release)
	waitReached(t, closure, "verify's comparison of the closure")
	b.importFile(t, `{"rules":[{"id":"acct_tier","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"tier","op":"equals","value":2}]}},
		{"id":"case_rep","object":"case","type":"owner","source":"group:g2","target":"group:g3","access":"edit"}]}`)
	if rep := b.run(t, engine.Options{Workers: 1}); rep.Job == 0 || rep.RowsAdded == 0 || rep.ClosureAdded+rep.ClosureRemoved != 0 {
		t.Fatalf("the rule change ran %+v; want a job that changes share rows and leaves the closure alone", rep)
	}
	b.exec(t, `DELETE FROM recalc.acl_member WHERE ctid = (SELECT min(ctid) FROM recalc.acl_member)`)
	release()
	r := <-vDone
	if r.err != nil {
		t.Fatalf("verify beside a job that changed only a rule: %v", r.err)
	}
	if r.rep.ClosureMissing != 1 || r.rep.ClosureExtra != 0 || r.rep.ClosureSkipped != 0 {
		t.Errorf("verify's closure beside a rule change: %d missing, %d extra, skipped for job %d; want the one entry deleted missing",
			r.rep.ClosureMissing, r.rep.ClosureExtra, r.rep.ClosureSkipped)
	}
	if _, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{Repair: true}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	b.checkOracle(t, "after the repair")
}
