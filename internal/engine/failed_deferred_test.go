package engine_test

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
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
