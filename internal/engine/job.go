package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/workers"
	"github.com/recalc-dev/recalc/schema"
)

// createJob is tryCreateJob, retried with backoff while planning cannot lock
// the records whose family roots it fixes (an application transaction holds
// them).
func createJob(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) (*queue.Job, *Planned, error) {
	for attempt := 0; ; attempt++ {
		job, pl, err := tryCreateJob(ctx, pool, opt, log)
		if err == nil && pl != nil {
			warnNotAbsorbed(log, pl.NotAbsorbed) // once the plan is committed, not at each attempt
		}
		if err == nil || !pg.IsRetryable(err) || ctx.Err() != nil {
			return job, pl, err
		}
		if attempt >= opt.Retries {
			return nil, nil, fmt.Errorf("plan: records whose family roots need fixing stayed locked by other transactions (%d attempts of %s): %w",
				attempt+1, opt.LockTimeout, err)
		}
		wait := workers.Backoff(attempt)
		log.Warn().Int("attempt", attempt+1).Int64("backoff_ms", wait.Milliseconds()).Err(err).Msg("planning retry")
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// oversized is how many times the chunk size a chunk may hold before
// planning warns about it.
const oversized = 10

// tryCreateJob plans and stores a job under the model lock, so that no
// import commits between planning and the job's creation. It returns the
// job (nil when there is nothing to do) and the plan (nil when another
// process created a job meanwhile, which it returns).
func tryCreateJob(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) (*queue.Job, *Planned, error) {
	var job *queue.Job
	var pl *Planned
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := schema.LockModelSaid(ctx, tx, log); err != nil {
			return err
		}
		var err error
		if job, err = queue.Unfinished(ctx, tx); err != nil || job != nil {
			return err
		}
		if pl, err = Plan(ctx, tx, opt); err != nil {
			return err
		}
		if pl.Nothing() { // forget the changes that change nothing
			return changes.Consume(ctx, tx, pl.Consumes)
		}
		job, err = storeJob(ctx, tx, pl, opt.Trigger)
		if err == nil {
			log.Info().Int64("job", job.ID).Str("kind", string(pl.Kind)).Bool("full", pl.Plan.Full).Bool("rules", pl.DoRules).Bool("closure", pl.DoClosure).
				Int("changes", len(pl.Plan.Changes)).Str("full_reason", pl.Plan.FullReason).
				Int("families", pl.Families).Int("chunks", pl.NumChunks).Int64("largest_chunk_records", pl.Largest).Msg("job planned")
			if pl.Largest > oversized*int64(opt.ChunkSize) {
				log.Warn().Int64("job", job.ID).Int64("largest_chunk_records", pl.Largest).Int("chunk_size", opt.ChunkSize).
					Msg("a chunk holds more than ten times the chunk size: one family that big, or families that records moved between, are written in one transaction, which locks their share rows until it commits")
			}
		}
		return err
	})
	return job, pl, err
}

// storeJob stores the planned job and its chunks inside tx, with what they
// need: the dictionary ids of the configuration's users and grantees, and a
// full job's empty staging tables.
func storeJob(ctx context.Context, tx pgx.Tx, pl *Planned, trigger string) (*queue.Job, error) {
	dict, err := sharetable.EnsureDict(ctx, tx, pl.org)
	if err != nil {
		return nil, err
	}
	if pl.Kind == queue.Full {
		if err := sharetable.PrepareFull(ctx, tx, pl.DoClosure); err != nil {
			return nil, err
		}
	}
	// An incremental job's chunks commit one by one, its closure, user
	// table and OWDs with its finish: what it takes away of those goes
	// first, with the job, so that no share or record row a chunk writes
	// meets a membership, an active or internal user or an OWD level that
	// the job removes.
	var closure *sharetable.ClosureDiff // the closure's change, an incremental job's
	var removed int64
	if pl.Kind != queue.Full && pl.DoClosure {
		if closure, err = sharetable.DiffClosureOf(ctx, tx, pl.org, dict); err != nil {
			return nil, err
		}
		if removed, err = closure.ApplyRemovals(ctx, tx); err != nil {
			return nil, err
		}
		if err := sharetable.NarrowUsers(ctx, tx, pl.org); err != nil {
			return nil, err
		}
	}
	if pl.Kind != queue.Full && pl.DoRules {
		if err := sharetable.NarrowObjects(ctx, tx, pl.org); err != nil {
			return nil, err
		}
	}
	planJSON, err := json.Marshal(pl)
	if err != nil {
		return nil, err
	}
	id, err := queue.Create(ctx, tx, &queue.Job{Kind: pl.Kind, Trigger: trigger, ChangeSeq: pl.ChangeSeq, Consumes: pl.Consumes,
		Config: pl.Config, Plan: planJSON, DoRules: pl.DoRules, DoClosure: pl.DoClosure}, pl.Chunks)
	if err != nil {
		return nil, err
	}
	if err := queue.Heartbeat(ctx, tx, id, workers.ID()); err != nil { // alive from its first moment
		return nil, err
	}
	if closure != nil {
		gids, uids, boss := closure.Additions()
		if err := queue.StageClosure(ctx, tx, id, removed, gids, uids, boss); err != nil {
			return nil, err
		}
	}
	return queue.Get(ctx, tx, id)
}

// runJob works job until it is done, also covering peers that died, and
// returns its final row. org is the job's configuration, nil to decode it.
// A failed job is an error. A job whose chunks found share rows deferred
// returns workers.ErrPaused with its row: it stays running, no failure, for
// `recalc resume` to finish. Each round works the chunks left to claim,
// stages a full job's tables once every chunk is complete, and finishes
// the job; whichever process sees the last step possible takes it.
func runJob(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, org *sharing.Org, opt Options, log zerolog.Logger) (*queue.Job, error) {
	if org == nil {
		var err error
		if org, err = sharing.DecodeOrg(job.Config); err != nil {
			return nil, fmt.Errorf("job %d configuration: %w", job.ID, err)
		}
	}
	dict, err := sharetable.LoadDict(ctx, pool)
	if err != nil {
		return nil, err
	}
	stopBeat := workers.Heartbeat(ctx, pool, job.ID, log)
	defer stopBeat()
	stop := sync.OnceFunc(workers.Progress(ctx, pool, job.ID, job.Chunks, log, opt.Live))
	defer stop()
	for {
		err := workChunks(ctx, pool, job, org, dict, opt, log)
		if errors.Is(err, workers.ErrPaused) {
			cur, gerr := queue.Get(ctx, pool, job.ID)
			if gerr != nil {
				return nil, gerr
			}
			return cur, err
		}
		if err == nil && job.Kind == queue.Full && job.DoRules {
			err = stage(ctx, pool, job, org, dict, opt)
		}
		finished, finishing := false, err == nil
		if finishing {
			finished, err = finish(ctx, pool, job, org, dict, opt)
		}
		if err != nil {
			if err = failJob(ctx, pool, job, err, opt, log); err != nil {
				return nil, err
			}
			// The job ended after all. If this finish's commit lost its
			// answer, nobody told the webhook and email: tell them (once
			// more, at worst). Otherwise whoever ended it did.
			finished = finishing
		}
		if finished {
			stop() // the job is over: no more progress lines while its notification is delivered
			announce(ctx, pool, job.ID, opt, log)
		}
		cur, err := queue.Get(ctx, pool, job.ID)
		if err != nil {
			return nil, err
		}
		switch cur.Status {
		case queue.Done:
			log.Info().Int64("job", cur.ID).Str("kind", string(cur.Kind)).Int64("records", cur.Records).
				Int64("share_rows_added", cur.RowsAdded).Int64("share_rows_removed", cur.RowsRemoved).
				Int64("share_rows_updated", cur.RowsUpdated).Int64("closure_added", cur.ClosureAdded).
				Int64("closure_removed", cur.ClosureRemoved).Msg("job done")
			return cur, nil
		case queue.Failed:
			return nil, fmt.Errorf("job %d failed: %s (run `recalc run` to resume it)", cur.ID, cur.Error)
		}
		// Other workers hold the remaining chunks; wait, then pick up any
		// that a dead worker released.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// failJob marks job failed with err and announces it, unless ctx ended: an
// interrupted job stays running for the next run to resume. It returns the
// error to report, or nil when the job has ended after all (its finish
// committed though the commit's answer was lost, or another process ended
// it): the caller reads how.
func failJob(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, err error, opt Options, log zerolog.Logger) error {
	if ctx.Err() != nil {
		return fmt.Errorf("job %d interrupted; the next `recalc run` or `recalc watch` resumes it: %w", job.ID, err)
	}
	msg := err.Error()
	ctx = context.WithoutCancel(ctx)
	var marked bool
	if ferr := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (ferr error) {
		if marked, ferr = queue.Fail(ctx, tx, job.ID, msg); ferr != nil || !marked {
			return ferr
		}
		return opt.Notify.Reserve(ctx, tx, job.ID) // as finish does
	}); ferr != nil {
		// The database is gone (a restart, a full disk, a lost connection):
		// the job stays running, and reads as interrupted once no process
		// heartbeats it.
		log.Error().Int64("job", job.ID).Err(ferr).Msg("could not mark job failed")
		return fmt.Errorf("job %d stopped, and could not be marked failed (is the database reachable?): %w; "+
			"it stays unfinished: the next `recalc run` or `recalc watch` step resumes it", job.ID, err)
	}
	if !marked {
		log.Warn().Int64("job", job.ID).Err(err).Msg("the job ended after all, though its last step reported an error")
		return nil
	}
	announce(ctx, pool, job.ID, opt, log)
	return fmt.Errorf("job %d: %w", job.ID, err)
}

// workChunks claims, computes and completes the job's chunks until none is
// left to claim, or, for a job that writes share rows, until a chunk finds
// their calculation deferred (workers.ErrPaused): each chunk reads records
// as it runs, and one that read the deferral committed would give access to
// records written after `recalc defer` returned (store.AwaitChunks). Under
// Finish, a chunk that finds share rows deferred works instead, leaving out
// the families written since the job's plan (finishingChunk). A job
// of the closure alone has no chunks, and its finish reads nothing written
// since its plan (its captured configuration, j.Config, holds the users
// section built then, the attached users table's too): deferring the
// closure leaves it to end.
func workChunks(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, org *sharing.Org, dict *sharetable.Dict, opt Options, log zerolog.Logger) error {
	repair, err := inPlaceFull(job)
	if err != nil {
		return err
	}
	wopt := workers.Options{Workers: opt.Workers, Chunks: job.Chunks, LockTimeout: opt.LockTimeout, Retries: opt.Retries, Nice: opt.Nice, Contended: opt.Contended}
	var since *written // Finish's: what was written since the plan
	switch {
	case job.DoRules && opt.ignoreDeferral:
		since = newWritten(job)
	case job.DoRules:
		wopt.Paused = store.RulesDeferredForChunk
	}
	return workers.Run(ctx, pool, job.ID, wopt,
		func(ctx context.Context, tx pgx.Tx, c *queue.Chunk) (*queue.ChunkStats, error) {
			if err := schema.Check(ctx, tx); err != nil { // the job fails, for the newer recalc to resume
				return nil, err
			}
			st, err := finishingChunk(ctx, tx, since, job, org, dict, c, log)
			if st == nil && err == nil {
				st, err = workChunk(ctx, tx, job, org, dict, c, repair)
			}
			if err == nil && len(st.Invalid) > 0 {
				log.Warn().Int64("job", job.ID).Int("chunk", c.N).Int("records", len(st.Invalid)).Strs("first", st.Invalid[:min(10, len(st.Invalid))]).
					Msg("invalid records get no access (see recalc.invalid_record): fix their rows (an attached table's, or recalc.record with SQL), or import")
			}
			return st, err
		}, log)
}

// finishingChunk works chunk c of a job that Finish works, when share rows
// are deferred (read as a paused job's chunk reads it, under the deferral
// lock, so that `recalc defer` waits for a chunk that read none): it leaves
// out the families written since the job's plan (written.workChunk). It
// returns nil stats, and does nothing, for a chunk of another run, or when
// nothing is deferred.
func finishingChunk(ctx context.Context, tx pgx.Tx, since *written, job *queue.Job, org *sharing.Org, dict *sharetable.Dict,
	c *queue.Chunk, log zerolog.Logger) (*queue.ChunkStats, error) {
	if since == nil {
		return nil, nil
	}
	if deferred, err := store.RulesDeferredForChunk(ctx, tx); err != nil || !deferred {
		return nil, err
	}
	st, left, err := since.workChunk(ctx, tx, job, org, dict, c)
	if err == nil && len(left) > 0 {
		log.Info().Int64("job", job.ID).Int("chunk", c.N).Int("families_left_out", len(left)).
			Msg("calculation of share rows is deferred: the chunk left out the families written since the job was planned; they keep their share rows until `recalc resume` recalculates them")
	}
	return st, err
}

// inPlaceFull reports whether job is a full recalculation in place: an
// incremental job over every family, planned full.
func inPlaceFull(job *queue.Job) (bool, error) {
	if job.Kind == queue.Full {
		return false, nil
	}
	var pl struct {
		Plan struct {
			Full bool `json:"full"`
		} `json:"plan"`
	}
	if err := json.Unmarshal(job.Plan, &pl); err != nil {
		return false, fmt.Errorf("job %d plan: %w", job.ID, err)
	}
	return pl.Plan.Full, nil
}

// workChunk computes one claimed chunk: an incremental job's families are
// diffed and written in place (with repair, a full job in place's, locked
// only where they differ), a full job's copied into the staging tables.
func workChunk(ctx context.Context, tx pgx.Tx, job *queue.Job, org *sharing.Org, dict *sharetable.Dict, c *queue.Chunk, repair bool) (*queue.ChunkStats, error) {
	if job.Kind != queue.Full {
		apply := sharetable.ApplyFamilies
		if repair {
			apply = sharetable.RepairFamilies
		}
		w, err := apply(ctx, tx, org, dict, c.Roots)
		if err != nil {
			return nil, err
		}
		st := queue.ChunkStats(*w)
		return &st, changes.KeepMovedWaiting(ctx, tx, st.Invalid, job.Consumes)
	}
	in, err := sharetable.LoadFamilies(ctx, tx, org, c.Lo, c.Hi)
	if err != nil {
		return nil, err
	}
	rows := org.Compute(in)
	added, err := sharetable.CopyRows(ctx, tx, rows, dict)
	if err != nil {
		return nil, err
	}
	return &queue.ChunkStats{Records: int64(len(in.Records)), Added: added, Invalid: rows.Invalid},
		changes.KeepMovedWaiting(ctx, tx, rows.Invalid, job.Consumes)
}

// stage completes a full job's staging tables once its last chunk is
// complete, before the swap, so that the swap's transaction is short: it
// builds the indexes, writes the closure and counts the drift (except on
// the first computation, which repairs nothing), side by side, then marks
// the job staged. One process does it; the others wait, then find it done.
func stage(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, org *sharing.Org, dict *sharetable.Dict, opt Options) error {
	release, err := locks.Hold(ctx, pool, locks.Staging)
	if err != nil {
		return err
	}
	defer release()
	j, err := queue.Get(ctx, pool, job.ID)
	if err != nil {
		return err
	}
	pending, err := queue.Pending(ctx, pool, job.ID)
	if err != nil || j.Status != queue.Running || pending > 0 || j.Staged {
		return err
	}
	applied, err := store.AppliedConfig(ctx, pool, store.SideRules)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(2, opt.Workers))
	for _, task := range sharetable.StagingTasks(pool, org, dict, job.ID, j.DoClosure, string(applied) != "{}") {
		g.Go(func() error { return task(gctx) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return queue.MarkStaged(ctx, pool, job.ID)
}

// finish ends the job if all its chunks are complete (and a full job's
// tables staged), in one transaction: for share rows, swap in a full job's
// staging tables and write the OWD table; for the closure, write it (whole
// for a full job, the difference otherwise) and the user table; record
// each side's configuration as applied; consume the change rows planned
// from (a full job in place also records the rows it rewrote as its
// drift); mark the job done. It reports whether it did. Whichever worker
// sees the last chunk complete does it.
func finish(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, org *sharing.Org, dict *sharetable.Dict, opt Options) (finished bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		j, err := queue.Lock(ctx, tx, job.ID)
		if err != nil || j.Status != queue.Running {
			return err
		}
		if err := schema.Check(ctx, tx); err != nil { // the job fails, for the newer recalc to resume
			return err
		}
		if pending, err := queue.Pending(ctx, tx, j.ID); err != nil || pending > 0 {
			return err
		}
		if j.Kind == queue.Full && j.DoRules && !j.Staged {
			return nil // another process is still staging the tables
		}
		every := false // the first computation's swap: every record's access changed
		if j.DoRules {
			if every, err = finishRules(ctx, tx, j, org, opt.SwapWait); err != nil {
				return err
			}
		}
		cl := &sharetable.ClosureStats{}
		if j.DoClosure {
			if cl, err = finishClosure(ctx, tx, j, org, dict); err != nil {
				return err
			}
		}
		// The changes it planned from, and only those; record changes only
		// with the share rows.
		consume := changes.Consume
		if !j.DoRules {
			consume = changes.ConsumeSections
		}
		if err := consume(ctx, tx, j.Consumes); err != nil {
			return err
		}
		full, err := inPlaceFull(j)
		if err != nil {
			return err
		}
		if full && j.DoRules { // a full job in place counts its drift as a swap does
			if err := queue.SetDriftFromChunks(ctx, tx, j.ID); err != nil {
				return err
			}
		}
		// The access changes its chunks and finish recorded, and any other
		// writer's: last, since it holds the feed lock until the commit.
		if every {
			if err := feed.PublishEvery(ctx, tx, j.ID); err != nil {
				return err
			}
		}
		if _, err := feed.Publish(ctx, tx, j.ID); err != nil {
			return err
		}
		if err := queue.Finish(ctx, tx, j, cl.Added, cl.Removed); err != nil {
			return err
		}
		// Kept with the job's end, not after it: a process killed between
		// this commit and announce would lose it.
		finished = true
		return opt.Notify.Reserve(ctx, tx, j.ID)
	})
	return finished && err == nil, err
}

// finishRules is finish's share-row side: the swap of a full job's staging
// tables (waiting up to swapWait for readers), the OWD table and the
// configuration applied. It reports whether the swap changed every
// record's access (sharetable.SwapFull).
func finishRules(ctx context.Context, tx pgx.Tx, j *queue.Job, org *sharing.Org, swapWait time.Duration) (every bool, err error) {
	if j.Kind == queue.Full {
		if every, err = sharetable.SwapFull(ctx, tx, j.DoClosure, swapWait); err != nil {
			return false, err
		}
	}
	if err := sharetable.WriteObjects(ctx, tx, org); err != nil {
		return false, err
	}
	return every, store.SetApplied(ctx, tx, store.SideRules, j.Config)
}

// finishClosure is finish's closure side: the closure, unless it came in
// with a full job's swap (the entries an incremental job kept to add since
// its creation, or, for a job that kept none, the whole difference), the
// user table and the configuration applied.
func finishClosure(ctx context.Context, tx pgx.Tx, j *queue.Job, org *sharing.Org, dict *sharetable.Dict) (*sharetable.ClosureStats, error) {
	cl := &sharetable.ClosureStats{}
	if j.Kind != queue.Full { // a full job's closure came in with the swap
		gids, uids, boss, staged, err := queue.ClosureAdditions(ctx, tx, j.ID)
		if err != nil {
			return nil, err
		}
		c := sharetable.ClosureAdditions(gids, uids, boss)
		if !staged {
			if c, err = sharetable.DiffClosureOf(ctx, tx, org, dict); err != nil {
				return nil, err
			}
		}
		if cl, err = c.Apply(ctx, tx); err != nil {
			return nil, err
		}
	}
	if err := sharetable.WriteUsers(ctx, tx, org, dict); err != nil {
		return nil, err
	}
	return cl, store.SetApplied(ctx, tx, store.SideClosure, j.Config)
}

// announce sends the job's completion notification to the webhook and email
// targets. The NOTIFY went out with the job's end; a failed delivery is
// kept for the next run or watch to retry, and is not fatal: the job itself
// is done.
func announce(ctx context.Context, pool *pgxpool.Pool, id int64, opt Options, log zerolog.Logger) {
	if opt.Announce != nil {
		opt.Announce(id)
		return
	}
	opt.Notify.Announce(ctx, pool, id, log)
}

// redeliver retries the kept notifications of this run's targets that are
// due; it never fails the run.
func redeliver(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) {
	if opt.Announce != nil {
		return // the caller redelivers beside its loop
	}
	if _, err := opt.Notify.Redeliver(ctx, pool, log); err != nil && ctx.Err() == nil {
		log.Warn().Err(err).Msg("kept notifications not redelivered; the next run tries again")
	}
}

// warnNotAbsorbed says which attached objects' writes wait, and why.
func warnNotAbsorbed(log zerolog.Logger, left []changes.Absorbed) {
	for _, a := range left {
		switch a.Code {
		case "":
		case changes.SandboxUnsafe:
			log.Warn().Str("object", a.Object).Str("sqlstate", a.Code).Msg("the sandbox role recalc reads attached tables as, or its reader, " +
				"is missing or changed (SECURITY.md, \"The sandbox role\"): the object's writes wait, logged, until it is fixed and `recalc attach` runs again")
			continue
		case changes.SessionTampered:
			log.Error().Str("object", a.Object).Str("sqlstate", a.Code).Msg("code that ran in the read of this attached object (an index or " +
				"statistics function of its table's owner) changed the session's prepared statements; recalc dropped them. " +
				"Its writes wait, logged: look at the table's indexes (SECURITY.md, \"The sandbox role\")")
			continue
		default:
			log.Warn().Str("object", a.Object).Str("sqlstate", a.Code).Msg("absorbing the writes to this attached object failed " +
				"(a lock not granted in 2 s, a right revoked, row-level security the engine's role does not bypass, a read over 5 minutes?): they wait, logged")
			continue
		}
		log.Warn().Str("object", a.Object).Msg("the capture of this attached object is not intact (a trigger dropped or disabled, " +
			"a column or the table changed): its writes wait, logged, until `recalc attach` is run again with its spec")
	}
}
