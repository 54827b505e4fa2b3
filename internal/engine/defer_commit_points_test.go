package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
)

// These tests stop a job, with locks held from other connections, at each
// point where `recalc defer` can find it, and check what the deferral
// promises (README, "Bulk loads"; SECURITY.md): defer returns only once
// what read no deferral and reads records (a plan, a chunk) has ended; a
// write committed after it returns gets no access until `recalc resume`,
// even where an import finishes a paused job first; no job fails, each is announced once, and after the
// resume the tables are a full run's and the access the oracle's.

// deferPoint is where the job is stopped when `recalc defer` runs.
type deferPoint struct {
	name string
	full bool // a full run's job (its chunks copy into staging tables), else an incremental one of three chunks
	// wait: defer must wait for the stopped step (it holds the model lock,
	// or a chunk's share of the deferral lock), else it returns at once.
	wait bool
	// done is how many of the job's chunks are done once defer has
	// returned, and once the runs have returned (-1: all); paused, whether
	// the job then has chunks left, and pauses.
	done   int
	paused bool
}

var deferPoints = []deferPoint{
	{name: "inside the plan", wait: true, done: 0, paused: true},
	{name: "inside the first chunk", wait: true, done: 1, paused: true},
	{name: "two runs inside two chunks", wait: true, done: 2, paused: true},
	// The second chunk has claimed its chunk and waits for the deferral
	// lock, which the test holds: defer waits for the test's lock, not for
	// the chunk, which then reads the deferral and works nothing.
	{name: "between chunks", wait: true, done: 1, paused: true},
	{name: "inside the last chunk", wait: true, done: 3},
	// A finish, a stage and a swap read no record: they write what the
	// chunks computed, and the configuration the job captured when planned.
	{name: "before the finish", done: 3},
	{name: "inside a full job's first chunk", full: true, wait: true, done: 1, paused: true},
	{name: "inside a full job's stage", full: true, done: -1},
	{name: "inside a full job's swap", full: true, done: -1},
}

// TestDeferCommitPoints: for each point of deferPoints, `recalc defer`
// (both sides, the share rows alone, the share rows alone with an import
// before the resume) runs while the job is stopped there; then the owners
// of three cases (one in each of the job's families) change, and two cases
// move between families.
func TestDeferCommitPoints(t *testing.T) {
	t.Parallel()
	both, rules := []string{store.SideClosure, store.SideRules}, []string{store.SideRules}
	for _, p := range deferPoints {
		for _, v := range []struct {
			name  string
			sides []string
			imp   bool
		}{{"both sides", both, false}, {"rules", rules, false}, {"rules, then an import", rules, true}} {
			t.Run(p.name+", "+v.name, func(t *testing.T) {
				t.Parallel()
				testDeferPoint(t, p, v.sides, v.imp)
			})
		}
	}
}

// deferOwners are the cases given new owners after `recalc defer` returned,
// one in each family the incremental job works (a001, a005, a009).
var deferOwners = map[string]string{"c001_1": "u2", "c005_1": "u3", "c009_1": "u1"}

// deferWritten are the records written after `recalc defer` returned: the
// cases of deferOwners, and those moved between families.
var deferWritten = []string{"c001_1", "c005_1", "c009_1", "c001_0", "c010_0"}

func testDeferPoint(t *testing.T, p deferPoint, sides []string, withImport bool) {
	b := drBundle(t)
	b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`,
		`UPDATE recalc.record SET owner = 'u1' WHERE id = 'a005'`,
		`UPDATE recalc.record SET owner = 'u2' WHERE id = 'a009'`)
	obs, listener := connect(t, b.pool), connect(t, b.pool)
	mustExec(t, listener, `LISTEN recalc_jobs`)
	var lastJob int64
	if err := b.pool.QueryRow(b.ctx, `SELECT max(id) FROM recalc.job`).Scan(&lastJob); err != nil {
		t.Fatal(err)
	}
	runs, release := stopJob(t, b, obs, p)
	env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
	waiting := lockWaiters(t, obs)
	deferred := make(chan error, 1)
	go func() { deferred <- cli.DeferCmd(b.ctx, env, sides) }()
	if p.wait {
		// It waits for the stopped step: one more session waits for a
		// lock, and defer has not returned.
		awaitWaiters(t, obs, waiting+1, deferred, "recalc defer to wait for the stopped step")
		release()
		if err := <-deferred; err != nil {
			t.Fatal(err)
		}
		// What it waited for has ended when it returns.
		if done := chunksDone(t, b, lastJob); done != p.done {
			t.Errorf("recalc defer returned with %d chunks of the job done, want %d: the step it waited for had not ended", done, p.done)
		}
	} else {
		select {
		case err := <-deferred:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("recalc defer waited 20 s for a step that reads no record")
		}
	}
	pre := snapshotPreDefer(t, b, deferWritten...)
	for id, user := range deferOwners {
		if l := b.level(t, user, id); l != "none" {
			t.Fatalf("%s on %s before the test's write: %s, want none", user, id, l)
		}
		b.exec(t, `UPDATE recalc.record SET owner = '`+user+`' WHERE id = '`+id+`'`)
	}
	// Cases moved between the job's first and last families: a paused job
	// resumed reads them in neither twice.
	b.exec(t, `UPDATE recalc.record SET parent = 'a010' WHERE id = 'c001_0'`, `UPDATE recalc.record SET parent = 'a002' WHERE id = 'c010_0'`)
	if !p.wait {
		release()
	}
	paused := p.paused
	for _, r := range runs {
		// A run reads its report once its own workers stop: another run's
		// chunk may commit after.
		rep := r.wait(t)
		if rep.Paused != paused || (paused && (rep.ChunksDone > p.done || (len(runs) == 1 && rep.ChunksDone != p.done))) || (!paused && rep.Status != "done") {
			t.Errorf("a run stopped %s reported %+v, want paused %v with %d chunks done (else done)", p.name, rep, paused, p.done)
		}
	}
	if done := chunksDone(t, b, lastJob); paused && done != p.done {
		t.Errorf("the paused job has %d chunks done, want %d: the chunks that began after the deferral worked", done, p.done)
	}
	checkNoAccess(t, b, deferOwners, "once the job's runs returned")
	if rep := b.run(t, engine.Options{}); rep.Paused != paused || (!paused && !rep.Nothing) {
		t.Errorf("a run while deferred reported %+v, want the job paused %v, else nothing done", rep, paused)
	}
	checkNoAccess(t, b, deferOwners, "after a run while deferred")
	imported := map[string]string{}
	if withImport {
		// It finishes a paused job first, whose chunks leave out the
		// families written since the job was planned, then imports: the
		// imported record's owner waits for the resume, as do the writes.
		importRecord(t, b, env, `{"object":"account","id":"a100","owner":"u2"}`)
		imported["a100"] = "u2"
		checkNoAccess(t, b, imported, "after the import")
		checkNoAccess(t, b, deferOwners, "after the import")
		pre.check(t, b, "after the import")
		var unfinished int
		if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.job WHERE status <> 'done'`).Scan(&unfinished); err != nil || unfinished != 0 {
			t.Errorf("%d jobs unfinished after the import (%v), want the paused one finished", unfinished, err)
		}
	}
	if err := cli.ResumeCmd(b.ctx, env, sides, engine.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []map[string]string{deferOwners, imported} {
		for id, user := range m {
			if l := b.level(t, user, id); l == "none" {
				t.Errorf("%s on %s after the resume: none, want the owner's access", user, id)
			}
		}
	}
	checkAnnouncedOnce(t, b, listener, lastJob)
	checkDeferRace(t, b, "after the resume")
}

// stopJob starts the run(s) of a job (of three chunks, one family each, for
// an incremental one) and stops it at p with locks held from connections of
// its own; release lets it go on.
func stopJob(t *testing.T, b *bundle, obs *pgx.Conn, p deferPoint) ([]*bgRun, func()) {
	t.Helper()
	opt := engine.Options{Workers: 1, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 1}
	if p.full {
		// Its chunks wait for the deferral lock, held; then the step waits
		// for the staging tables (its first chunk copies into them), the
		// job row (its stage marks the job staged) or the share tables (its
		// swap locks them EXCLUSIVE).
		opt.Full, opt.ChunkSize = true, 12
		deferralLock, pid := holdDeferralLock(t, b)
		run := startRun(t, b.pool, opt)
		waitBlockedBy(t, obs, pid, run.done, "the full job's first chunk to wait for the deferral lock")
		stop := "SELECT FROM recalc.job WHERE status = 'running' FOR NO KEY UPDATE"
		switch {
		case strings.Contains(p.name, "first chunk"):
			stop = "LOCK TABLE recalc.acl_record_next, recalc.acl_share_next IN SHARE MODE"
		case strings.Contains(p.name, "swap"):
			stop = "LOCK TABLE recalc.acl_record IN ROW SHARE MODE"
		}
		holder, pid := holdWith(t, b, stop)
		rollback(t, deferralLock, "the deferral lock")
		waitBlockedBy(t, obs, pid, run.done, "the full job to stop "+p.name)
		return []*bgRun{run}, func() { rollback(t, holder, "the lock stopping the job") }
	}
	if p.name == "inside the plan" { // its root fix of a rootless case waits
		b.exec(t, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c900', 'case', 'u1', 'a001')`)
		holder, pid := holdRows(t, b.pool, "c900")
		run := startRun(t, b.pool, opt)
		waitBlockedBy(t, obs, pid, run.done, "the plan to wait for c900")
		return []*bgRun{run}, func() { rollback(t, holder, "c900") }
	}
	// Each family's materialized row held by a transaction of its own: a
	// chunk waits for one in its work, after it read the deferral.
	fams := map[uint32]pgx.Tx{}
	for _, id := range []string{"c001_0", "c005_0", "c009_0"} {
		tx, pid := holdWith(t, b, `SELECT FROM recalc.acl_record WHERE id = '`+id+`' FOR UPDATE`)
		fams[pid] = tx
	}
	releaseAll := func() {
		for _, tx := range fams {
			_ = tx.Rollback(context.Background())
		}
	}
	runs := []*bgRun{startRun(t, b.pool, opt)}
	pass := func() { // lets the chunk in flight commit
		pid := blocking(t, obs, fams, runs[0].done)
		rollback(t, fams[pid], "a family's row")
		delete(fams, pid)
	}
	blocking(t, obs, fams, runs[0].done)
	switch p.name {
	case "two runs inside two chunks":
		runs = append(runs, startRun(t, b.pool, opt))
		awaitWaiters(t, obs, 2, nil, "the second run's chunk to wait for a family's row")
	case "between chunks":
		// The deferral row's lock waits for the first chunk's share of it.
		// A row lock's waiter is not first in line once that chunk commits:
		// the second chunk's share could come first, and that chunk then
		// waited for a family's row the test holds while the test waited
		// for it, until its LockTimeout (20 s). recalc.chunk held EXCLUSIVE,
		// queued behind the first chunk's claim, keeps the second from
		// claiming until the test has the deferral row.
		lock, gate := connect(t, b.pool), connect(t, b.pool)
		tx, gateTx := begin(t, lock), begin(t, gate)
		taken, gated := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := tx.Exec(context.Background(), `SELECT FROM recalc.engine_lock WHERE scope = 5 FOR UPDATE`)
			taken <- err
		}()
		waitSettledOrBlocked(t, obs, lock.PgConn().PID(), taken)
		go func() {
			_, err := gateTx.Exec(context.Background(), `LOCK TABLE recalc.chunk IN EXCLUSIVE MODE`)
			gated <- err
		}()
		waitSettledOrBlocked(t, obs, gate.PgConn().PID(), gated)
		pass()
		if err := <-taken; err != nil {
			t.Fatal(err)
		}
		if err := <-gated; err != nil {
			t.Fatal(err)
		}
		rollback(t, gateTx, "recalc.chunk")
		waitBlockedBy(t, obs, lock.PgConn().PID(), runs[0].done, "the second chunk to wait for the deferral lock")
		return runs, func() { rollback(t, tx, "the deferral lock"); releaseAll() }
	case "inside the last chunk":
		pass()
		pass()
		blocking(t, obs, fams, runs[0].done)
	case "before the finish":
		holder, pid := holdWith(t, b, `SELECT FROM recalc.job WHERE status = 'running' FOR NO KEY UPDATE`)
		releaseAll()
		waitBlockedBy(t, obs, pid, runs[0].done, "the finish to wait for the job row")
		return runs, func() { rollback(t, holder, "the job row") }
	}
	return runs, releaseAll
}

// holdWith begins a transaction on a connection of its own, runs sql in it
// and returns it, with the connection's pid.
func holdWith(t *testing.T, b *bundle, sql string) (pgx.Tx, uint32) {
	t.Helper()
	c := connect(t, b.pool)
	tx := begin(t, c)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	mustExec(t, tx, sql)
	return tx, c.PgConn().PID()
}

// holdDeferralLock takes the deferral lock (row 5 of recalc.engine_lock) as
// `recalc defer` does: chunks wait for it before they read the deferral.
func holdDeferralLock(t *testing.T, b *bundle) (pgx.Tx, uint32) {
	t.Helper()
	return holdWith(t, b, `SELECT FROM recalc.engine_lock WHERE scope = 5 FOR UPDATE`)
}

// blocking waits until a session waits for a lock that one of holders'
// sessions holds, and returns that one's pid.
func blocking(t *testing.T, obs *pgx.Conn, holders map[uint32]pgx.Tx, done <-chan struct{}) uint32 {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for pid := range holders {
			var n int
			if err := obs.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`,
				int32(pid)).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				return pid
			}
		}
		select {
		case <-done:
			t.Fatal("the run ended before a chunk waited for a family's row")
		default:
		}
	}
	t.Fatal("no chunk waited for a family's row within 20 s")
	return 0
}

// awaitWaiters waits until n sessions of the database wait for a lock. It
// fails the test if returned has a value first (which it puts back) or
// after 20 s.
func awaitWaiters(t *testing.T, obs *pgx.Conn, n int, returned chan error, what string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if lockWaiters(t, obs) >= n {
			return
		}
		select {
		case err := <-returned:
			returned <- err
			t.Fatalf("it returned (%v) before %s", err, what)
		default:
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// chunksDone counts the done chunks of the jobs after job since.
func chunksDone(t *testing.T, b *bundle, since int64) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.chunk WHERE job_id > $1 AND status = 'done'`, since).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkNoAccess requires each user of owners (record: user) to have no
// access to its record.
func checkNoAccess(t *testing.T, b *bundle, owners map[string]string, when string) {
	t.Helper()
	for id, user := range owners {
		if l := b.level(t, user, id); l != "none" {
			t.Errorf("%s on %s, its owner since after `recalc defer` returned: %s %s, want none until the resume", user, id, l, when)
		}
	}
}

// importRecord imports, merged into the stored model, a file of one record.
func importRecord(t *testing.T, b *bundle, env *cli.Env, record string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "records.json")
	if err := os.WriteFile(file, []byte(`{"records":[`+record+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cli.ImportWith(b.ctx, env, file, -1, model.DefaultLimits(), store.Options{Merge: true}, time.Minute); err != nil {
		t.Fatalf("import: %v", err)
	}
}

// checkAnnouncedOnce requires every job after since to be done and its end
// announced once on listener, which listens on recalc_jobs.
func checkAnnouncedOnce(t *testing.T, b *bundle, listener *pgx.Conn, since int64) {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT id FROM recalc.job WHERE id > $1 ORDER BY id`, since)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, id := range ids {
		want = append(want, fmt.Sprintf("job %d done", id))
	}
	got := strings.Split(jobsEnded(t, listener), "; ")
	slices.Sort(got)
	slices.Sort(want)
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("announced %q, want each job done once: %q", got, want)
	}
}

// TestDeferResumeRacesChunkDecision: a job's chunk has claimed its chunk
// and waits for the deferral lock (held by the test) to read the deferral,
// when `recalc defer` commits; then `recalc resume` lifts it, and its run
// joins the job, its own chunk waiting there too; perhaps a second `recalc
// defer` commits. Once the lock goes, the chunks read the deferral as it
// then is: deferred again, both runs report the job paused with no chunk
// done, a write after the second defer waits for the last resume; lifted,
// the two runs finish the job. No job fails, each is announced once.
func TestDeferResumeRacesChunkDecision(t *testing.T) {
	t.Parallel()
	for _, again := range []bool{false, true} {
		t.Run(fmt.Sprintf("deferred again %v", again), func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`,
				`UPDATE recalc.record SET owner = 'u1' WHERE id = 'a005'`,
				`UPDATE recalc.record SET owner = 'u2' WHERE id = 'a009'`)
			obs, listener := connect(t, b.pool), connect(t, b.pool)
			mustExec(t, listener, `LISTEN recalc_jobs`)
			var lastJob int64
			if err := b.pool.QueryRow(b.ctx, `SELECT max(id) FROM recalc.job`).Scan(&lastJob); err != nil {
				t.Fatal(err)
			}
			lock, pid := holdDeferralLock(t, b)
			opt := engine.Options{Workers: 1, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 1}
			run := startRun(t, b.pool, opt)
			waitBlockedBy(t, obs, pid, run.done, "the first chunk to wait for the deferral lock")
			rules := []string{store.SideRules}
			// Each command in a goroutine of its own, with its own output.
			async := func(n int, what string, f func(env *cli.Env) error) chan error {
				ch := make(chan error, 1)
				env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
				go func() { ch <- f(env) }()
				awaitWaiters(t, obs, n, ch, what)
				return ch
			}
			first := async(2, "recalc defer to wait for the chunk", func(env *cli.Env) error { return cli.DeferCmd(b.ctx, env, rules) })
			resumed := async(3, "the resume's chunk to wait for the deferral lock", func(env *cli.Env) error {
				return cli.ResumeCmd(b.ctx, env, rules, opt)
			})
			second := make(chan error, 1)
			if again {
				second = async(4, "the second recalc defer to wait", func(env *cli.Env) error { return cli.DeferCmd(b.ctx, env, rules) })
			} else {
				second <- nil
			}
			rollback(t, lock, "the deferral lock")
			for _, ch := range []chan error{first, resumed, second} {
				if err := <-ch; err != nil {
					t.Fatal(err)
				}
			}
			rep := run.wait(t)
			if rep.Paused != again || (again && rep.ChunksDone != 0) || (!again && rep.Status != "done") {
				t.Errorf("the first run reported %+v, want paused %v with no chunk done (else done)", rep, again)
			}
			if again {
				for id, user := range deferOwners {
					b.exec(t, `UPDATE recalc.record SET owner = '`+user+`' WHERE id = '`+id+`'`)
				}
				b.run(t, engine.Options{})
				checkNoAccess(t, b, deferOwners, "after a run while deferred again")
				env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
				if err := cli.ResumeCmd(b.ctx, env, rules, engine.Options{}); err != nil {
					t.Fatal(err)
				}
			}
			checkAnnouncedOnce(t, b, listener, lastJob)
			checkDeferRace(t, b, "after the resume")
		})
	}
}

// TestDeferPausesJobBesideAttachedWrites: the same for writes to attached
// tables. A job planned from two of them (two families, a chunk each),
// stopped as its first chunk waits to read the deferral, pauses; writes
// committed after `recalc defer` returned, one in a family of the job, one
// outside it, give no access through a run, a watch step or an import
// that finishes the job until `recalc resume`; then the access is the oracle's and the tables a full run's.
func TestDeferPausesJobBesideAttachedWrites(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, attachedBase, engine.Options{})
	b.exec(t, attachedApp...)
	applySpec(t, b, attachedSpec("owner_id", attachedObjects...))
	b.run(t, engine.Options{})
	b.exec(t, `UPDATE app.proj SET owner_id = 'u2' WHERE id = 'p1'`, `UPDATE app.account SET owner_id = 'u2' WHERE id = 'a1'`)
	obs := connect(t, b.pool)
	lock, pid := holdDeferralLock(t, b)
	run := startRun(t, b.pool, engine.Options{Workers: 1, ChunkSize: 1, LockTimeout: 20 * time.Second, Retries: 1})
	waitBlockedBy(t, obs, pid, run.done, "the first chunk to wait for the deferral lock")
	env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
	deferred := make(chan error, 1)
	go func() { deferred <- cli.DeferCmd(b.ctx, env, []string{store.SideRules}) }()
	awaitWaiters(t, obs, 2, deferred, "recalc defer to wait for the deferral lock")
	rollback(t, lock, "the deferral lock")
	if err := <-deferred; err != nil {
		t.Fatal(err)
	}
	owners := map[string]string{"proj__c:p1": "u3", "task__c:k9": "u2"}
	for id, user := range owners {
		if l := b.level(t, user, id); l != "none" {
			t.Fatalf("%s on %s before the test's write: %s, want none", user, id, l)
		}
	}
	b.exec(t, `UPDATE app.proj SET owner_id = 'u3' WHERE id = 'p1'`, `UPDATE app.task SET owner_id = 'u2' WHERE id = 'k9'`)
	if rep := run.wait(t); !rep.Paused || rep.ChunksDone != 0 {
		t.Errorf("the run reported %+v, want its job paused with no chunk done", rep)
	}
	if rep := b.run(t, engine.Options{}); !rep.Paused {
		t.Errorf("a run while deferred reported %+v, want the job paused", rep)
	}
	b.step(t, engine.NewLive(engine.Options{}, 1000))
	checkNoAccess(t, b, owners, "after a run and a watch step while deferred")
	// An import finishes the paused job first, and the writes still give
	// no access: nothing absorbs them beside the paused job (no plan runs),
	// so its chunk reads none of them; an absorb would log a change of each
	// record it wrote, whose family the chunk would leave out.
	file := filepath.Join(t.TempDir(), "groups.json")
	if err := os.WriteFile(file, []byte(`{"groups":[{"id":"g9","members":["user:u1"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cli.ImportWith(b.ctx, env, file, -1, model.DefaultLimits(), store.Options{Merge: true}, time.Minute); err != nil {
		t.Fatalf("an import beside the paused job: %v", err)
	}
	checkNoAccess(t, b, owners, "after an import finished the paused job")
	if err := cli.ResumeCmd(b.ctx, env, []string{store.SideRules}, engine.Options{}); err != nil {
		t.Fatal(err)
	}
	for id, user := range owners {
		if l := b.level(t, user, id); l == "none" {
			t.Errorf("%s on %s after the resume: none, want the owner's access", user, id)
		}
	}
	b.cur = appModel(t, b, "owner_id", attachedObjects...)
	b.checkOracle(t, "after the resume")
	checkFull(t, b, "after the resume")
}
