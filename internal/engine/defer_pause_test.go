package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// lockedBuffer is a bytes.Buffer that a logger's goroutine writes while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pausedState is what a paused job must leave alone: the materialized
// tables, the jobs' rows and their chunks' statuses.
func pausedState(t *testing.T, b *bundle) string {
	t.Helper()
	var jobs string
	if err := b.pool.QueryRow(b.ctx, `SELECT coalesce(string_agg(format('%s %s %s %s', j.id, j.status, j.error,
		(SELECT string_agg(c.n || ':' || c.status, ',' ORDER BY c.n) FROM recalc.chunk c WHERE c.job_id = j.id)), '; ' ORDER BY j.id), '')
		FROM recalc.job j`).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	return jobs + "\n" + testdb.Materialized(t, b.pool)
}

// TestDeferPausesRunningJob: a job planned before `recalc defer` went on
// working its chunks after defer returned, and each chunk reads the records
// of its families as it runs, so a record written after the deferral got
// its access before `recalc resume`. Two runs (two processes' workers) each
// work a chunk of a three-chunk job, stopped inside it by an application's
// row lock; `recalc defer` must wait for both chunks; once it returns, a
// case of each family given a new owner must give that owner no access; both runs report the job
// paused (not failed), the last chunk pending; a run while deferred changes
// nothing and says so, as `recalc wait`, `recalc status` and `recalc
// verify` do; an import finishes the job first, its chunk leaving out the
// family written since, then imports; `recalc resume` gives the owners their access, the tables then a full run's and
// the access the oracle's.
func TestDeferPausesRunningJob(t *testing.T) {
	t.Parallel()
	b := drBundle(t)
	b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`,
		`UPDATE recalc.record SET owner = 'u1' WHERE id = 'a005'`,
		`UPDATE recalc.record SET owner = 'u2' WHERE id = 'a009'`)
	obs, other, listener := connect(t, b.pool), connect(t, b.pool), connect(t, b.pool)
	mustExec(t, listener, `LISTEN recalc_jobs`)
	holder := begin(t, other)
	defer holder.Rollback(b.ctx) //nolint:errcheck // no-op once ended
	mustExec(t, holder, `SELECT FROM recalc.acl_record WHERE id IN ('c001_0', 'c005_0', 'c009_0') FOR UPDATE`)
	opt := engine.Options{Workers: 1, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 1}
	first := startRun(t, b.pool, opt)
	waitBlocked(t, obs, other.PgConn().PID(), 1, first.done, "the first run's chunk to wait for the application's lock")
	second := startRun(t, b.pool, opt)
	waitBlocked(t, obs, other.PgConn().PID(), 2, second.done, "the second run's chunk to wait for the application's lock")
	var chunks int
	if err := b.pool.QueryRow(b.ctx, `SELECT chunks FROM recalc.job WHERE status = 'running'`).Scan(&chunks); err != nil || chunks != 3 {
		t.Fatalf("the job has %d chunks (%v), want 3: one per family changed", chunks, err)
	}

	logs := &lockedBuffer{}
	env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.New(logs)}
	deferred := make(chan error, 1)
	go func() { deferred <- cli.DeferCmd(b.ctx, env, []string{store.SideClosure, store.SideRules}) }()
	// Written after `recalc defer` returned, in each family of the job:
	// the resume gives the new owners their access.
	owners := map[string]string{"c001_1": "u2", "c005_1": "u3", "c009_1": "u1"}
	for id, user := range owners {
		if l := b.level(t, user, id); l != "none" {
			t.Fatalf("%s on %s before the test's write: %s, want none", user, id, l)
		}
	}
	var pre *preDefer
	write := func() {
		pre = snapshotPreDefer(t, b, "c001_1", "c005_1", "c009_1")
		for id, user := range owners {
			b.exec(t, `UPDATE recalc.record SET owner = '`+user+`' WHERE id = '`+id+`'`)
		}
	}
	select {
	case err := <-deferred:
		t.Errorf("recalc defer returned (%v) while two chunks that read no deferral were in flight", err)
		write()
		rollback(t, holder, "the application's lock")
	case <-logged(logs, "waiting for the import, plan, watch step or job chunks in flight"):
		// Past a second, it says why it waits; and waits for the chunks
		// only: no plan or step holds the model lock.
		if n := lockWaiters(t, obs); n != 3 {
			t.Errorf("%d sessions wait for a lock, want 3: the two chunks and recalc defer", n)
		}
		rollback(t, holder, "the application's lock")
		if err := <-deferred; err != nil {
			t.Fatal(err)
		}
		write()
	case <-time.After(30 * time.Second):
		t.Fatal("recalc defer neither returned nor said that it waits within 30 s")
	}
	var job int64
	for _, r := range []*bgRun{first, second} {
		rep := r.wait(t)
		job = rep.Job
		// The other run's chunk may commit after this report is read.
		if !rep.Paused || rep.Status != "paused" || rep.Chunks != 3 || rep.ChunksDone < 1 || rep.ChunksDone > 2 || rep.Deferred[store.SideRules].IsZero() {
			t.Errorf("a run whose job paused reported %+v, want paused with 1 or 2 of 3 chunks done and the rules deferred", rep)
		}
	}
	for id, user := range owners {
		if l := b.level(t, user, id); l != "none" {
			t.Errorf("%s on %s, its owner since after `recalc defer` returned: %s, want none until the resume", user, id, l)
		}
	}

	if ended := jobsEnded(t, listener); ended != "" {
		t.Errorf("the paused job was announced as ended: %s", ended)
	}
	before := pausedState(t, b)
	if !strings.Contains(before, " running  ") || !strings.Contains(before, ":pending") {
		t.Fatalf("the paused job is not running with a chunk pending:\n%s", before)
	}
	rep := b.run(t, engine.Options{})
	if !rep.Paused || rep.ChunksDone != 2 {
		t.Errorf("a run while deferred reported %+v, want the job paused, its two chunks in flight at the deferral done", rep)
	}
	if after := pausedState(t, b); after != before {
		t.Errorf("a run while deferred changed the job or the tables:\n%s", lineDiff(after, before))
	}
	if _, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "run `recalc resume` first") {
		t.Errorf("recalc verify beside the paused job: %v, want it to say to resume first", err)
	}
	out := &bytes.Buffer{}
	env.Out = out
	if err := cli.WaitCmd(b.ctx, env, 0); err == nil || !strings.Contains(err.Error(), "is paused") || !strings.Contains(err.Error(), "`recalc resume` finishes it") {
		t.Errorf("recalc wait on the paused job: %v, want it paused and to run recalc resume", err)
	}
	if err := cli.StatusCmd(b.ctx, env, "text", 5); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), " paused ") || !strings.Contains(out.String(), "chunks 2/3") || strings.Contains(out.String(), "interrupted") {
		t.Errorf("recalc status shows the paused job as:\n%s", out)
	}

	// An import never lands beside an unfinished job (it computes from
	// the configuration it planned): it finishes the paused job first,
	// announced as done, then imports; what it imports waits for the
	// resume.
	file := filepath.Join(t.TempDir(), "groups.json")
	if err := os.WriteFile(file, []byte(`{"groups":[{"id":"g9","members":["user:u1"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cli.ImportWith(b.ctx, env, file, -1, model.DefaultLimits(), store.Options{}, time.Minute); err != nil {
		t.Fatalf("an import beside the paused job: %v, want it to finish the job, then import", err)
	}
	var status string
	if err := b.pool.QueryRow(b.ctx, `SELECT status FROM recalc.job WHERE id = $1`, job).Scan(&status); err != nil || status != "done" {
		t.Errorf("job %d after an import beside it: %s (%v), want done", job, status, err)
	}
	if ended := jobsEnded(t, listener); !strings.Contains(ended, fmt.Sprintf("job %d done", job)) {
		t.Errorf("the import finished the paused job %d and announced %q, want it done", job, ended)
	}
	// Its chunks left out the families written since the job was planned:
	// their owners wait for the resume too.
	checkNoAccess(t, b, owners, "after an import finished the paused job")
	pre.check(t, b, "after an import finished the paused job")
	if rep := b.run(t, engine.Options{}); !rep.Nothing || len(rep.Deferred) != 2 {
		t.Errorf("a run after the import, still deferred, reported %+v, want nothing done, both sides deferred", rep)
	}

	if err := cli.ResumeCmd(b.ctx, env, []string{store.SideClosure, store.SideRules}, engine.Options{}); err != nil {
		t.Fatal(err)
	}
	for id, user := range owners {
		if l := b.level(t, user, id); l == "none" {
			t.Errorf("%s on %s after the resume: none, want the owner's access", user, id)
		}
	}
	checkDeferRace(t, b, "after resume")
}

// stopInFirstChunk plans a job of owner changes to a001 and a005 (two
// chunks) and stops its run, cancelled inside its first chunk: the job is
// left running, every chunk pending, no process working on it. It returns
// the job's id.
func stopInFirstChunk(t *testing.T, b *bundle) int64 {
	t.Helper()
	b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'a005'`)
	obs, other := connect(t, b.pool), connect(t, b.pool)
	holder := begin(t, other)
	mustExec(t, holder, `SELECT FROM recalc.acl_record WHERE id IN ('c001_0', 'c005_0') FOR UPDATE`)
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = engine.Run(ctx, b.pool, engine.Options{Workers: 1, ChunkSize: 3, LockTimeout: 20 * time.Second}, zerolog.Nop())
	}()
	waitBlocked(t, obs, other.PgConn().PID(), 1, done, "the first chunk to wait for the application's lock")
	cancel()
	<-done
	rollback(t, holder, "the application's lock")
	var job int64
	var pending int
	if err := b.pool.QueryRow(b.ctx, `SELECT j.id, (SELECT count(*) FROM recalc.chunk c WHERE c.job_id = j.id AND c.status = 'pending')
		FROM recalc.job j WHERE j.status = 'running'`).Scan(&job, &pending); err != nil || pending < 2 {
		t.Fatalf("the stopped job: %v, %d chunks pending, want all", err, pending)
	}
	return job
}

// TestDeferLiftedBeforeChunksLeavesJob: a job planned while nothing was
// deferred, whose process stopped before any chunk completed, and deferred
// and resumed meanwhile, is not paused: the next run finishes it as before.
func TestDeferLiftedBeforeChunksLeavesJob(t *testing.T) {
	t.Parallel()
	b := drBundle(t)
	job := stopInFirstChunk(t, b)
	env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
	if err := cli.DeferCmd(b.ctx, env, []string{store.SideRules}); err != nil {
		t.Fatal(err)
	}
	resumeSides(t, b, store.SideRules)
	if rep := b.run(t, engine.Options{}); rep.Paused || rep.Job != job || rep.Status != "done" {
		t.Errorf("the run after the deferral was lifted reported %+v, want job %d done", rep, job)
	}
	checkDeferRace(t, b, "after the run")
}

// TestWatchStepsOncePerPause: `recalc watch` beside a job paused by a
// deferral of share rows runs no job, and logs it, once per pause, not at
// every step (every change or poll), until the deferral changes; then it
// finishes the job.
func TestWatchStepsOncePerPause(t *testing.T) {
	t.Parallel()
	b := drBundle(t)
	job := stopInFirstChunk(t, b)
	deferSides(t, b, store.SideRules)
	logs := &lockedBuffer{}
	live := engine.NewLive(engine.Options{}, 1000)
	for i := 0; i < 3; i++ {
		b.exec(t, `UPDATE recalc.record SET fields = '{"tier": 4}' WHERE id = 'a003'`) // a change: not an idle step
		rep, err := live.Step(b.ctx, b.pool, zerolog.New(logs))
		switch {
		case err != nil:
			t.Fatal(err)
		case i == 0 && (rep.Run == nil || !rep.Run.Paused || rep.Run.Job != job):
			t.Errorf("the first step reported %+v (run %+v), want job %d paused", rep, rep.Run, job)
		case i > 0 && (rep.Run != nil || !rep.Deferred):
			t.Errorf("step %d beside the paused job reported %+v (run %+v), want it deferred, with no run", i+1, rep, rep.Run)
		}
	}
	if n := strings.Count(logs.String(), "the job is paused"); n != 1 {
		t.Errorf("three steps beside the paused job logged it %d times, want once:\n%s", n, logs)
	}
	resumeSides(t, b, store.SideRules)
	// It finishes the job, then plans the change to a003 (the report's).
	if rep := b.step(t, live); rep.Run == nil || rep.Run.Paused || rep.Run.Status != "done" {
		t.Errorf("the step after the resume reported %+v, want its jobs done", rep.Run)
	}
	var status string
	if err := b.pool.QueryRow(b.ctx, `SELECT status FROM recalc.job WHERE id = $1`, job).Scan(&status); err != nil || status != "done" {
		t.Errorf("job %d after the resume's step: %q (%v), want done", job, status, err)
	}
	b.step(t, live)
	checkDeferRace(t, b, "after the resume")
}

// waitBlocked waits until n sessions wait for a lock that session pid
// holds. It fails the test if done closes first or after 20 s.
func waitBlocked(t *testing.T, obs *pgx.Conn, pid uint32, n int, done <-chan struct{}, what string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var got int
		if err := obs.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`,
			int32(pid)).Scan(&got); err != nil {
			t.Fatalf("read lock waits: %v", err)
		}
		if got >= n {
			return
		}
		select {
		case <-done:
			t.Fatalf("the run ended before %s", what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// jobsEnded lists the jobs whose end listener, which listens on
// recalc_jobs, was told of ("job N STATUS"): a statement on it makes the
// server send those committed before.
func jobsEnded(t *testing.T, listener *pgx.Conn) string {
	t.Helper()
	mustExec(t, listener, `SELECT`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // only those received
	var out []string
	for {
		n, err := listener.WaitForNotification(ctx)
		if n == nil {
			if err == nil || ctx.Err() == nil {
				t.Fatalf("read notifications: %v", err)
			}
			return strings.Join(out, "; ")
		}
		var p struct {
			Job    int64  `json:"job"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal([]byte(n.Payload), &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("job %d %s", p.Job, p.Status))
	}
}

// lockWaiters counts the sessions of obs's database that wait for a lock.
func lockWaiters(t *testing.T, obs *pgx.Conn) int {
	t.Helper()
	var n int
	if err := obs.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// logged is closed once buf holds text (polled every 5 ms, for at most 30 s).
func logged(buf *lockedBuffer, text string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if strings.Contains(buf.String(), text) {
				close(ch)
				return
			}
		}
	}()
	return ch
}
