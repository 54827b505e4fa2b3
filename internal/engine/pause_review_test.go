package engine_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/store"
)

// TestFailedJobUnderDeferralIsNotPaused: a job that failed with chunks
// left read as paused (queue.Job.Paused) once share rows were deferred,
// though recalc status, the payload and the metrics said failed: `recalc
// run` then reported it paused without resuming it (its error hidden, the
// job still failed), and `recalc import` finished it as a paused job. A
// failed job is failed: the import is refused saying to run `recalc run`,
// and the run resumes it, whose chunks then pause, the job running and
// read as paused everywhere.
func TestFailedJobUnderDeferralIsNotPaused(t *testing.T) {
	t.Parallel()
	b := drBundle(t)
	b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`)
	holder := b.begin(t)
	if _, err := holder.Exec(b.ctx, `SELECT FROM recalc.acl_record WHERE id LIKE 'c001%' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	opt := engine.Options{Workers: 1, LockTimeout: 100 * time.Millisecond, Retries: 0}
	if _, err := engine.Run(b.ctx, b.pool, opt, zerolog.Nop()); err == nil {
		t.Fatal("a run whose chunk waits past its lock timeout succeeded, want its job failed")
	}
	if err := holder.Rollback(b.ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.Defer(b.ctx, b.pool, []string{store.SideRules}); err != nil {
		t.Fatal(err)
	}
	job, err := queue.Unfinished(b.ctx, b.pool)
	if err != nil || job == nil || job.Status != queue.Failed {
		t.Fatalf("unfinished job %+v (%v), want the failed one", job, err)
	}
	if job.Paused {
		t.Errorf("job %d, failed, reads as paused once share rows are deferred: want failed, for `recalc run` to resume it", job.ID)
	}
	var busy *store.BusyError
	_, err = store.ImportWith(b.ctx, b.pool, strings.NewReader(`{"groups":[{"id":"g9","members":["user:u1"]}]}`),
		model.DefaultLimits(), zerolog.Nop(), nil, store.Options{})
	if !errors.As(err, &busy) || busy.Status != queue.Failed {
		t.Errorf("an import beside the failed job while deferred: %v, want it refused as failed (run `recalc run`), not finished as paused", err)
	}
	rep, err := engine.Run(b.ctx, b.pool, opt, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var stored, payload string
	if err := b.pool.QueryRow(b.ctx, `SELECT status, recalc.job_payload(id) ->> 'status' FROM recalc.job WHERE id = $1`, job.ID).
		Scan(&stored, &payload); err != nil {
		t.Fatal(err)
	}
	if !rep.Paused || rep.Status != string(queue.Paused) || stored != string(queue.Running) || payload != rep.Status {
		t.Errorf("a run beside the failed job while deferred reports paused %v, status %q; the job is stored %q, its payload says %q: "+
			"want it resumed (running) and paused, as the payload says", rep.Paused, rep.Status, stored, payload)
	}
}

// TestWatchWithoutFastPathStepsOncePerPause: `recalc watch --fast-records
// 0` (no fast path) ran Run at every step beside a job paused by a
// deferral, logging the pause each time, where the README says it logs it
// once and steps again once the deferral changes: the check of the pause,
// and the version read before Run, were in the fast path's transaction.
func TestWatchWithoutFastPathStepsOncePerPause(t *testing.T) {
	t.Parallel()
	b := drBundle(t)
	job := stopInFirstChunk(t, b)
	deferSides(t, b, store.SideRules)
	logs := &lockedBuffer{}
	live := engine.NewLive(engine.Options{}, 0)
	for i := 0; i < 3; i++ {
		b.exec(t, `UPDATE recalc.record SET fields = '{"tier": 4}' WHERE id = 'a003'`)
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
	if rep := b.step(t, live); rep.Run == nil || rep.Run.Paused || rep.Run.Status != "done" {
		t.Errorf("the step after the resume reported %+v, want its jobs done", rep.Run)
	}
	b.step(t, live)
	checkDeferRace(t, b, "after the resume")
}
