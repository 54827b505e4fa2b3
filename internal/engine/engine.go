// Package engine runs recalculations as persistent jobs; it orchestrates
// and holds no SQL. A run plans from what the share tables were last
// computed from to what is stored now (Plan, with internal/planner), stores
// the job and its chunks, and then works the chunks on a pool of workers.
// Any number of `recalc run` processes, on any hosts, work one job
// together: each claims chunks with FOR UPDATE SKIP LOCKED, and a chunk's
// rows and its "done" mark commit in one transaction. Killing a process at
// any moment leaves the job resumable; the next run finishes it.
//
// A full job computes every family into staging tables and swaps them in
// atomically at the end. An incremental job recomputes only the affected
// families and writes the difference in place, under row locks.
//
// A job's life has one verb per step, here as in internal/queue:
//   - create: createJob plans and stores the job and its chunks (queue.Create);
//   - claim and complete: workChunks claims each chunk, computes it
//     (workChunk) and completes it, in one transaction (queue.Claim,
//     queue.Complete, through internal/workers);
//   - stage: a full job's staging tables get their indexes, closure and
//     drift count once every chunk is complete (queue.MarkStaged);
//   - finish: swap in a full job's tables or apply an incremental job's
//     closure, record the configuration as applied, consume the change
//     rows and mark the job done (queue.Finish);
//   - fail: failJob marks a job that hit an error failed (queue.Fail);
//   - resume: the next run sets a failed job running again (queue.Resume).
//
// runJob drives a job through them, and Run drives runJob.
//
// DryRun (`recalc plan FILE`), Verify and Explain recompute without a job.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/notify"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/workers"
)

// Options tune a run.
type Options struct {
	Workers   int  // chunks worked at once by this process
	ChunkSize int  // records per chunk, whole families kept together
	Full      bool // recompute everything
	// InPlace makes full jobs, asked for (Full) or planned (a truncate, or
	// a change touching most families), rewrite the live tables family by
	// family under row locks, as an incremental job over every family (or
	// over those changed), instead of building new tables and swapping
	// them in. It is slower from scratch, so a first computation swaps
	// anyway (Plan); over current tables it writes only the families that
	// differ, needs no second copy of the tables on disk, and neither
	// readers nor the application's commits notice it, while a swap waits
	// for open readers, empties the tables for a snapshot taken before it,
	// and its index builds write the whole tables' WAL at once, which every
	// commit then waits to flush (see bench/).
	InPlace     bool
	Trigger     string        // what started the run, recorded on the job
	LockTimeout time.Duration // how long a chunk waits for a row lock
	// SwapWait is how long a full job's swap waits for open readers to let
	// go of the live tables before it copies the new rows into them in
	// place instead (0 means sharetable.SwapWait, 10 s).
	SwapWait time.Duration
	Retries  int     // retries of a chunk on lock timeout, deadlock or serialization failure
	Nice     float64 // after each chunk, a worker rests Nice times as long as it took (workers.Options)
	// FullAbove switches an incremental plan to a full job when it would
	// recompute more than this share of all families (0 means 0.5).
	FullAbove float64
	// Notify receives the completion notification of a job this process
	// ends (done or failed), besides the NOTIFY every job sends.
	Notify *notify.Notifier
	// Announce, when set, takes a finished job's completion notification
	// over from Notify's synchronous delivery, and Run leaves the
	// redelivery of kept ones to the caller too: `recalc watch` delivers
	// both beside its loop (notify.Notifier.Background, RedeliverEvery), so
	// that a slow or hanging receiver never holds up its next step.
	Announce func(job int64)
	// Contended, when set, is told of each lock timeout, deadlock or
	// serialization failure of a chunk, and whether it is retried (metrics).
	Contended func(err error, retry bool)
	// Live, when set (a terminal), gets a progress line redrawn in place.
	Live io.Writer

	ignoreDeferral bool // DryRun: plan as if nothing were deferred; Finish: work a paused job's chunks, leaving out what was written since its plan
	noAbsorb       bool // DryRun: leave the writes to attached tables logged (absorbing would hold their locks for the whole dry run)
}

func (o *Options) defaults() {
	if o.Workers < 1 {
		o.Workers = 1
	}
	if o.ChunkSize < 1 {
		o.ChunkSize = 5000
	}
	if o.Trigger == "" {
		o.Trigger = "run"
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 5 * time.Second
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.FullAbove <= 0 {
		o.FullAbove = 0.5
	}
}

// Report says what a run did: the job it created, resumed or joined. It
// has the shape of the job's completion payload (recalc.job_payload, sent by
// NOTIFY, webhook and email, and printed by `recalc wait`), with units in
// the field names, plus nothing_to_do and deferred when there was no job,
// and paused, chunks_done and deferred when its job paused (status paused):
// share rows are deferred, and `recalc resume` finishes it.
// It never carries a record's field values.
type Report struct {
	Job            int64                `json:"job,omitempty"` // 0 (left out) when there was nothing to do
	Kind           queue.Kind           `json:"kind,omitempty"`
	Trigger        string               `json:"trigger,omitempty"`
	Status         string               `json:"status,omitempty"`
	Nothing        bool                 `json:"nothing_to_do"`
	Deferred       map[string]time.Time `json:"deferred,omitempty"`
	Paused         bool                 `json:"paused,omitempty"`       // the job paused: share rows are deferred
	ChunksDone     int                  `json:"chunks_done,omitempty"`  // a paused job's chunks done
	NotAbsorbed    []string             `json:"not_absorbed,omitempty"` // attached objects whose writes wait (recalc attach --list says why)
	Chunks         int                  `json:"chunks"`
	Records        int64                `json:"records"`
	InvalidRecords int64                `json:"invalid_records"` // records given no access because they are invalid
	RowsAdded      int64                `json:"share_rows_added"`
	RowsRemoved    int64                `json:"share_rows_removed"`
	RowsUpdated    int64                `json:"share_rows_updated"`
	ClosureAdded   int64                `json:"closure_added"`
	ClosureRemoved int64                `json:"closure_removed"`
	DriftFixed     int64                `json:"drift_fixed"`
	Error          string               `json:"error,omitempty"`
	CreatedAt      *time.Time           `json:"created_at,omitempty"`
	FinishedAt     *time.Time           `json:"finished_at,omitempty"`
	DurationMS     int64                `json:"duration_ms"`
	Database       string               `json:"database,omitempty"`
	Host           string               `json:"host,omitempty"`
}

// FailedJobError is the error of a run whose job failed. Report is the
// job's (its kind, status and duration), for the caller's metrics.
type FailedJobError struct {
	Report *Report
	err    error
}

func (e *FailedJobError) Error() string { return e.err.Error() }
func (e *FailedJobError) Unwrap() error { return e.err }

// failedJob returns err, as a FailedJobError when job id failed (rather
// than was interrupted, or could not be read).
func failedJob(ctx context.Context, pool *pgxpool.Pool, id int64, err error) error {
	if ctx.Err() != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if rep, rerr := jobReport(rctx, pool, id); rerr == nil && rep.Status == string(queue.Failed) {
		return &FailedJobError{Report: rep, err: err}
	}
	return err
}

// jobReport reads job id's report from its payload.
func jobReport(ctx context.Context, pool *pgxpool.Pool, id int64) (*Report, error) {
	b, err := queue.Payload(ctx, pool, id)
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	if err := json.Unmarshal(b, rep); err != nil {
		return nil, fmt.Errorf("read report of job %d: %w", id, err)
	}
	return rep, nil
}

// Full recomputes everything from scratch.
func Full(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) (*Report, error) {
	opt.Full = true
	return Run(ctx, pool, opt, log)
}

// Run brings the materialized tables up to date with the stored model and
// returns when they are. If a job is unfinished (running elsewhere, or left
// by a crash or a failure), it joins or resumes that job first.
func Run(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) (*Report, error) {
	opt.defaults()
	start := time.Now()
	var last *queue.Job
	// withStuck adds the attached objects whose writes wait, whichever
	// process's job the report is of.
	withStuck := func(rep *Report, err error) (*Report, error) {
		if err == nil {
			rep.NotAbsorbed, err = changes.Stuck(ctx, pool)
		}
		return rep, err
	}
	redeliver(ctx, pool, opt, log)
	// A job this run did not plan (joined or resumed) may predate changes
	// the run must also cover, so it plans again after it: a job found then
	// was planned after the run began, and covers them. A full run is done
	// only with a full job of its own (joined ones are not, or not of what
	// drifted since they were planned): it plans again after each it joins,
	// maxJoins at most.
	for joined := 0; ; joined++ {
		job, err := queue.Unfinished(ctx, pool)
		if err != nil {
			return nil, err
		}
		if job != nil && job.Paused { // change nothing, not even its heartbeat, and say so
			return withStuck(pausedReport(ctx, pool, job, log))
		}
		created := false
		var org *sharing.Org // the job's configuration, when this run planned it
		if job == nil {
			var pl *Planned
			if job, pl, err = createJob(ctx, pool, opt, log); err != nil {
				return nil, err
			}
			if job == nil && pl != nil {
				if last != nil {
					return withStuck(jobReport(ctx, pool, last.ID))
				}
				rep := &Report{Nothing: true, DurationMS: time.Since(start).Milliseconds(), Deferred: pl.Deferred}
				if len(pl.Deferred) > 0 {
					log.Info().Interface("deferred", pl.Deferred).Msg("calculation is deferred: nothing recalculated (`recalc resume` lifts it)")
				} else {
					log.Info().Msg("nothing to recalculate")
				}
				return withStuck(rep, nil)
			}
			if created = job != nil && pl != nil; created {
				org = pl.org
			}
		}
		if created {
			last, err = runJob(ctx, pool, job, org, opt, log)
		} else {
			last, err = joinJob(ctx, pool, job, opt, log)
		}
		if errors.Is(err, workers.ErrPaused) {
			return withStuck(pausedReport(ctx, pool, last, log))
		}
		if err != nil {
			return nil, failedJob(ctx, pool, job.ID, err)
		}
		if created || !opt.Full && joined+1 == runJoins {
			break
		}
		if joined+1 == maxJoins {
			return nil, fmt.Errorf("run --full: other processes started %d jobs one after another, and this run joined each to its end, "+
				"so its own full recalculation never began: run it again (once `recalc status` shows no job running)", maxJoins)
		}
	}
	return withStuck(jobReport(ctx, pool, last.ID))
}

// runJoins is how many jobs of other processes an incremental run joins,
// one after another, before it returns with the last (the second and
// later were planned after it began), and maxJoins how many a full run
// joins before it gives up (Run).
const (
	runJoins = 3
	maxJoins = 10
)

// Finish works the unfinished job, if there is one, to its end, and plans
// nothing new: an import does so with a job that no process works on any
// more, or that a deferral paused, before it writes anything. A paused
// job's chunks then run despite the deferral, but each that finds share
// rows deferred leaves out the families written since the job's plan,
// which keep their share rows until `recalc resume` (finishing.go), as
// does what the import writes. It returns nil when no job is unfinished.
func Finish(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) (*Report, error) {
	opt.defaults()
	opt.ignoreDeferral = true
	job, err := queue.Unfinished(ctx, pool)
	if err != nil || job == nil {
		return nil, err
	}
	if job, err = joinJob(ctx, pool, job, opt, log); err != nil {
		return nil, err
	}
	return jobReport(ctx, pool, job.ID)
}

// pausedReport is the report of a run that found job paused (queue.Job.Paused,
// workers.ErrPaused): its payload, with status paused, the chunks done, and
// the deferral. It logs that the job waits for the resume.
func pausedReport(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, log zerolog.Logger) (*Report, error) {
	rep, err := jobReport(ctx, pool, job.ID)
	if err != nil {
		return nil, err
	}
	if rep.ChunksDone, _, err = queue.Progress(ctx, pool, job.ID); err != nil {
		return nil, err
	}
	if rep.Deferred, err = store.Deferred(ctx, pool); err != nil {
		return nil, err
	}
	rep.Status, rep.Paused = string(queue.Paused), true
	log.Warn().Int64("job", job.ID).Int("chunks_done", rep.ChunksDone).Int("chunks", rep.Chunks).
		Msg("calculation of share rows is deferred: the job is paused, its chunks left pending and nothing written since; `recalc resume` finishes it")
	return rep, nil
}

// joinJob works an unfinished job that another process planned (running
// elsewhere, interrupted, or failed: resumed) until it ends.
func joinJob(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, opt Options, log zerolog.Logger) (*queue.Job, error) {
	if job.Status == queue.Failed {
		log.Warn().Int64("job", job.ID).Str("error", job.Error).Msg("resuming failed job")
		if err := queue.Resume(ctx, pool, job.ID); err != nil {
			return nil, err
		}
	} else {
		log.Info().Int64("job", job.ID).Str("kind", string(job.Kind)).Msg("joining unfinished job")
	}
	return runJob(ctx, pool, job, nil, opt, log)
}
