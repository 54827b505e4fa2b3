// Package engine runs recalculations as persistent jobs. A run plans from
// what the share tables were last computed from to what is stored now
// (internal/planner), stores the job and its chunks, and then works the
// chunks on a pool of workers. Any number of `recalc run` processes, on any
// hosts, work one job together: each claims chunks with FOR UPDATE SKIP
// LOCKED, and a chunk's rows and its "done" mark commit in one transaction.
// Killing a process at any moment leaves the job resumable; the next run
// finishes it.
//
// A full job computes every family into staging tables and swaps them in
// atomically at the end. An incremental job recomputes only the affected
// families and writes the difference in place, under row locks.
package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/notify"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/planner"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/workers"
)

// Options tune a run.
type Options struct {
	Workers   int  // chunks worked at once by this process
	ChunkSize int  // records per chunk, whole families kept together
	Full      bool // recompute everything
	// InPlace makes a full run rewrite the live tables family by family,
	// under row locks, like an incremental job over every family, instead
	// of building new tables and swapping them in. It needs no second copy
	// of the tables on disk; it is slower (see bench/).
	InPlace     bool
	Trigger     string        // what started the run, recorded on the job
	LockTimeout time.Duration // how long a chunk waits for a row lock
	Retries     int           // retries of a chunk on lock timeout, deadlock or serialization failure
	// FullAbove switches an incremental plan to a full job when it would
	// recompute more than this share of all families (0 means 0.5).
	FullAbove float64
	// Notify receives the completion notification of a job this process
	// ends (done or failed), besides the NOTIFY every job sends.
	Notify *notify.Notifier
	// Live, when set (a terminal), gets a progress line redrawn in place.
	Live io.Writer

	ignoreDeferral bool // DryRun: plan as if nothing were deferred
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

// Report says what a run did: the job it created, resumed or joined.
type Report struct {
	Job            int64                `json:"job"`
	Kind           queue.Kind           `json:"kind"`
	Nothing        bool                 `json:"nothing_to_do"`
	Deferred       map[string]time.Time `json:"deferred,omitempty"`
	DriftFixed     int64                `json:"drift_fixed,omitempty"`
	Chunks         int                  `json:"chunks"`
	Records        int64                `json:"records"`
	InvalidRecords int64                `json:"invalid_records"` // records given no access because they are invalid
	RowsAdded      int64                `json:"share_rows_added"`
	RowsRemoved    int64                `json:"share_rows_removed"`
	RowsUpdated    int64                `json:"share_rows_updated"`
	ClosureAdded   int64                `json:"closure_added"`
	ClosureRemoved int64                `json:"closure_removed"`
	Duration       time.Duration        `json:"duration_ns"`
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
	report := func(j *queue.Job) *Report {
		return &Report{Job: j.ID, Kind: j.Kind, Chunks: j.Chunks, Records: j.Records, InvalidRecords: j.InvalidRecords,
			RowsAdded: j.RowsAdded, RowsRemoved: j.RowsRemoved, RowsUpdated: j.RowsUpdated,
			ClosureAdded: j.ClosureAdded, ClosureRemoved: j.ClosureRemoved, DriftFixed: j.DriftFixed, Duration: time.Since(start)}
	}
	// At most three rounds: a job this run did not plan (joined or resumed)
	// may predate changes the run must also cover, so plan again after it.
	for round := 0; round < 3; round++ {
		job, err := queue.Unfinished(ctx, pool)
		if err != nil {
			return nil, err
		}
		created := false
		var org *sharing.Org // the job's configuration, when this run planned it
		switch {
		case job == nil:
			var pl *Planned
			if job, pl, err = planJob(ctx, pool, opt, log); err != nil {
				return nil, err
			}
			if job == nil && pl != nil {
				if last != nil {
					return report(last), nil
				}
				rep := &Report{Nothing: true, Duration: time.Since(start), Deferred: pl.Deferred}
				if len(pl.Deferred) > 0 {
					log.Info().Interface("deferred", pl.Deferred).Msg("calculation is deferred: nothing recalculated (`recalc resume` lifts it)")
				} else {
					log.Info().Msg("nothing to recalculate")
				}
				return rep, nil
			}
			if created = job != nil && pl != nil; created {
				org = pl.org
			}
		case job.Status == queue.Failed:
			log.Warn().Int64("job", job.ID).Str("error", job.Error).Msg("resuming failed job")
			if err := queue.Resume(ctx, pool, job.ID); err != nil {
				return nil, err
			}
		default:
			log.Info().Int64("job", job.ID).Str("kind", string(job.Kind)).Msg("joining unfinished job")
		}
		if last, err = finish(ctx, pool, job, org, opt, log); err != nil {
			return nil, err
		}
		if created && (!opt.Full || opt.InPlace || last.Kind == queue.Full) {
			break
		}
	}
	return report(last), nil
}

// Planned is a plan resolved against the stored data, before it becomes a job.
type Planned struct {
	Plan      *planner.Plan        `json:"plan"`
	Kind      queue.Kind           `json:"kind"`
	DoRules   bool                 `json:"rules"`   // share rows are recalculated
	DoClosure bool                 `json:"closure"` // group membership is recalculated
	Deferred  map[string]time.Time `json:"deferred,omitempty"`
	Roots     []string             `json:"-"`
	Families  int                  `json:"families"`
	Records   map[string]int64     `json:"records_by_object"`
	Chunks    []queue.Chunk        `json:"-"`
	NumChunks int                  `json:"chunks"`
	ChangeSeq int64                `json:"-"`
	Consumes  []int64              `json:"-"` // the change rows planned from
	Config    []byte               `json:"-"`
	org       *sharing.Org
}

// Nothing reports whether there is nothing to recalculate now (perhaps
// because calculation is deferred).
func (pl *Planned) Nothing() bool { return !pl.DoRules && !pl.DoClosure }

// Plan computes what a run would do now, inside tx. It writes nothing but
// the family roots of records the application inserted or re-parented with
// plain SQL; roll tx back to leave no trace.
func Plan(ctx context.Context, tx pgx.Tx, opt Options) (*Planned, error) {
	opt.defaults()
	cfgJSON, err := store.StoredConfig(ctx, tx)
	if err != nil {
		return nil, err
	}
	cur, err := sharing.DecodeOrg(cfgJSON)
	if err != nil {
		return nil, fmt.Errorf("stored model is invalid (re-import it): %w", err)
	}
	deferred, err := store.Deferred(ctx, tx)
	if err != nil {
		return nil, err
	}
	if opt.ignoreDeferral {
		deferred = nil
	}
	oldRules, oldClosure, err := appliedOrgs(ctx, tx)
	if err != nil {
		return nil, err
	}
	// The change rows committed now are what the job plans from and, once
	// done, consumes. Read them first: every record they name is then
	// visible to the root fixing that follows.
	seen, err := changes.Read(ctx, tx)
	if err != nil {
		return nil, err
	}
	// Root fixing locks records the application may hold: wait a bounded time.
	if err := locks.SetTimeout(ctx, tx, opt.LockTimeout); err != nil {
		return nil, err
	}
	fixed, err := changes.FixRoots(ctx, tx, seen.Seqs)
	if err != nil {
		return nil, err
	}
	var ids []string
	if !opt.Full && oldRules != nil { // a full plan needs no list of changes
		if ids, err = changes.Records(ctx, tx, seen.Seqs); err != nil {
			return nil, err
		}
		ids = append(ids, fixed...)
	}
	p := planner.Diff(oldRules, cur, ids)
	switch {
	case p.Full:
	case opt.Full:
		p.Full, p.FullReason = true, "requested with --full"
	case seen.Truncated && oldRules != nil:
		p.Full, p.FullReason = true, "recalc.record was truncated"
	}
	_, rulesDeferred := deferred[store.SideRules]
	_, closureDeferred := deferred[store.SideClosure]
	closureChanged := oldClosure == nil || p.Full
	switch {
	case closureChanged:
	case oldClosure == oldRules: // one applied configuration: p says it
		closureChanged = p.Closure
	default:
		closureChanged = planner.Diff(oldClosure, cur, nil).Closure
	}
	pl := &Planned{Plan: p, Kind: queue.Incremental, ChangeSeq: seen.Last(), Consumes: seen.Seqs, Config: cfgJSON, org: cur, Deferred: deferred,
		DoRules: !rulesDeferred && !p.Empty(), DoClosure: !closureDeferred && closureChanged}
	if !pl.DoRules {
		pl.Records = map[string]int64{}
		return pl, nil
	}
	switch {
	case p.Full && opt.InPlace:
		if pl.Roots, err = sharetable.AllRoots(ctx, tx); err != nil {
			return nil, err
		}
	case !p.Full:
		if pl.Roots, err = sharetable.ResolveRoots(ctx, tx, p); err != nil {
			return nil, err
		}
		// Counting every family costs a scan of the records: only when the
		// estimate, low by up to half, leaves the switch in doubt.
		if len(pl.Roots) > 1000 {
			estimate, err := sharetable.EstimateFamilies(ctx, tx)
			if err != nil {
				return nil, err
			}
			families := int64(estimate)
			if float64(len(pl.Roots)) > opt.FullAbove*estimate/4 {
				if families, err = sharetable.CountFamilies(ctx, tx); err != nil {
					return nil, err
				}
			}
			if float64(len(pl.Roots)) > opt.FullAbove*float64(families) {
				p.Full, p.FullReason = true, fmt.Sprintf("the changes touch %d of %d record families: rebuilding is cheaper", len(pl.Roots), families)
			}
		}
	}
	if p.Full && !opt.InPlace {
		pl.Kind, pl.Roots = queue.Full, nil
		ranges, families, err := sharetable.RootRanges(ctx, tx, opt.ChunkSize)
		if err != nil {
			return nil, err
		}
		for i, r := range ranges {
			pl.Chunks = append(pl.Chunks, queue.Chunk{N: i, Lo: r[0], Hi: r[1]})
		}
		pl.Families = families
	} else {
		sizes, byObject, err := sharetable.FamilySizes(ctx, tx, pl.Roots)
		if err != nil {
			return nil, err
		}
		pl.Records = byObject
		var n int64
		for i, root := range pl.Roots {
			if len(pl.Chunks) == 0 || n >= int64(opt.ChunkSize) {
				pl.Chunks = append(pl.Chunks, queue.Chunk{N: len(pl.Chunks), Roots: []string{}})
				n = 0
			}
			c := &pl.Chunks[len(pl.Chunks)-1]
			c.Roots = append(c.Roots, root)
			n += max(sizes[i], 1)
		}
		pl.Families = len(pl.Roots)
	}
	pl.NumChunks = len(pl.Chunks)
	if pl.Records == nil {
		if pl.Records, err = sharetable.RecordsByObject(ctx, tx); err != nil {
			return nil, err
		}
	}
	return pl, nil
}

// appliedOrgs returns the configurations the rules and the closure sides
// were last computed from (nil when never). Usually both sides were computed
// from the same one, which is then decoded once and returned twice.
func appliedOrgs(ctx context.Context, tx pgx.Tx) (rules, closure *sharing.Org, err error) {
	var docs [2][]byte
	for i, side := range []string{store.SideRules, store.SideClosure} {
		if docs[i], err = store.AppliedConfig(ctx, tx, side); err != nil {
			return nil, nil, err
		}
	}
	orgs := [2]*sharing.Org{}
	for i, doc := range docs {
		switch {
		case string(doc) == "{}":
		case i == 1 && bytes.Equal(doc, docs[0]):
			orgs[1] = orgs[0]
		default:
			if orgs[i], err = sharing.DecodeOrg(doc); err != nil {
				return nil, nil, fmt.Errorf("applied configuration: %w", err)
			}
		}
	}
	return orgs[0], orgs[1], nil
}

// planJob is createJob, retried with backoff while planning cannot lock the
// records whose family roots it fixes (an application transaction holds them).
func planJob(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) (*queue.Job, *Planned, error) {
	for attempt := 0; ; attempt++ {
		job, pl, err := createJob(ctx, pool, opt, log)
		if err == nil || !pg.IsRetryable(err) || ctx.Err() != nil {
			return job, pl, err
		}
		if attempt >= opt.Retries {
			return nil, nil, fmt.Errorf("plan: records whose family roots need fixing stayed locked by other transactions (%d attempts of %s): %w",
				attempt+1, opt.LockTimeout, err)
		}
		wait := workers.Backoff(attempt)
		log.Warn().Int("attempt", attempt+1).Dur("backoff", wait).Err(err).Msg("planning retry")
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// createJob plans and stores a job under the model lock, so that no import
// commits between planning and the job's creation. It returns the job (nil
// when there is nothing to do) and the plan (nil when another process
// created a job meanwhile, which it returns).
func createJob(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) (*queue.Job, *Planned, error) {
	var job *queue.Job
	var pl *Planned
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := locks.XactLock(ctx, tx, locks.Model); err != nil {
			return err
		}
		var err error
		if job, err = queue.Unfinished(ctx, tx); err != nil || job != nil {
			return err
		}
		if pl, err = Plan(ctx, tx, opt); err != nil {
			return err
		}
		if pl.Nothing() {
			if len(pl.Deferred) == 0 { // nothing changed: forget the no-op changes
				return changes.Consume(ctx, tx, pl.Consumes)
			}
			return nil
		}
		ix := pl.org.Index()
		users := make([]string, len(ix.Config.Users))
		for i, u := range ix.Config.Users {
			users[i] = u.ID
		}
		var keys []string
		for _, g := range pl.org.Grantees() {
			keys = append(keys, g.String())
		}
		if _, err := sharetable.EnsureDict(ctx, tx, users, keys); err != nil {
			return err
		}
		if pl.Kind == queue.Full {
			if err := sharetable.PrepareFull(ctx, tx, pl.DoClosure); err != nil {
				return err
			}
		}
		planJSON, err := json.Marshal(pl)
		if err != nil {
			return err
		}
		id, err := queue.Create(ctx, tx, &queue.Job{Kind: pl.Kind, Trigger: opt.Trigger, ChangeSeq: pl.ChangeSeq, Consumes: pl.Consumes,
			Config: pl.Config, Plan: planJSON, DoRules: pl.DoRules, DoClosure: pl.DoClosure}, pl.Chunks)
		if err != nil {
			return err
		}
		job, err = queue.Get(ctx, tx, id)
		log.Info().Int64("job", id).Str("kind", string(pl.Kind)).Bool("rules", pl.DoRules).Bool("closure", pl.DoClosure).
			Int("changes", len(pl.Plan.Changes)).Str("full_reason", pl.Plan.FullReason).
			Int("families", pl.Families).Int("chunks", pl.NumChunks).Msg("job planned")
		return err
	})
	return job, pl, err
}

// finish works job until it is done, also covering peers that died, and
// returns its final row. org is the job's configuration, nil to decode it. A failed job is an error.
func finish(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, org *sharing.Org, opt Options, log zerolog.Logger) (*queue.Job, error) {
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
	stop := workers.Progress(ctx, pool, job.ID, job.Chunks, log, opt.Live)
	defer stop()
	for {
		ended, err := work(ctx, pool, job, org, dict, opt, log)
		if err != nil {
			if ctx.Err() != nil { // interrupted: the job stays running for the next run
				return nil, fmt.Errorf("job %d interrupted; the next `recalc run` resumes it: %w", job.ID, err)
			}
			msg := err.Error()
			ctx := context.WithoutCancel(ctx)
			if ferr := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return queue.Fail(ctx, tx, job.ID, msg) }); ferr != nil {
				log.Error().Err(ferr).Msg("could not mark job failed")
			} else {
				announce(ctx, pool, job.ID, opt, log)
			}
			return nil, fmt.Errorf("job %d: %w", job.ID, err)
		}
		if ended {
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

// work claims and computes chunks until none is left to claim, then
// finalizes the job if every chunk is done, reporting whether it did.
func work(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, org *sharing.Org, dict *sharetable.Dict, opt Options, log zerolog.Logger) (ended bool, err error) {
	err = workers.Run(ctx, pool, job.ID, workers.Options{Workers: opt.Workers, LockTimeout: opt.LockTimeout, Retries: opt.Retries},
		func(ctx context.Context, tx pgx.Tx, c *queue.Chunk) (*queue.ChunkStats, error) {
			st, err := workChunk(ctx, tx, job, org, dict, c)
			if err == nil && len(st.Invalid) > 0 {
				log.Warn().Int64("job", job.ID).Int("chunk", c.N).Int("records", len(st.Invalid)).Strs("first", st.Invalid[:min(10, len(st.Invalid))]).
					Msg("invalid records get no access (see recalc.invalid_record): fix them with SQL or import")
			}
			return st, err
		}, log)
	if err != nil {
		return false, err
	}
	if job.Kind == queue.Full && job.DoRules {
		if err := finishStaging(ctx, pool, job, org, dict, opt); err != nil {
			return false, err
		}
	}
	return finalize(ctx, pool, job, org, dict)
}

// workChunk computes one claimed chunk: an incremental job's families are
// diffed and written in place, a full job's copied into the staging tables.
func workChunk(ctx context.Context, tx pgx.Tx, job *queue.Job, org *sharing.Org, dict *sharetable.Dict, c *queue.Chunk) (*queue.ChunkStats, error) {
	if job.Kind != queue.Full {
		w, err := sharetable.ApplyFamilies(ctx, tx, org, dict, c.Roots)
		if err != nil {
			return nil, err
		}
		st := queue.ChunkStats(*w)
		return &st, nil
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
	return &queue.ChunkStats{Records: int64(len(in.Records)), Added: added, Invalid: rows.Invalid}, nil
}

// finishStaging completes a full job's staging tables once its last chunk is
// done, before the swap, so that the swap's transaction is short: it builds
// the indexes, writes the closure and counts the drift (except on the first
// computation, which repairs nothing), side by side. One process does it;
// the others wait, then find it done.
func finishStaging(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, org *sharing.Org, dict *sharetable.Dict, opt Options) error {
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

// finalize ends the job if all its chunks are done, in one transaction:
// for share rows, swap in a full job's staging tables and write the OWD
// table; for the closure, write it (whole for a full job, the difference
// otherwise) and the user table; record each side's configuration as
// applied; mark the job done. Whichever worker sees the last chunk done
// does it.
func finalize(ctx context.Context, pool *pgxpool.Pool, job *queue.Job, org *sharing.Org, dict *sharetable.Dict) (ended bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		j, err := queue.Lock(ctx, tx, job.ID)
		if err != nil || j.Status != queue.Running {
			return err
		}
		if pending, err := queue.Pending(ctx, tx, j.ID); err != nil || pending > 0 {
			return err
		}
		if j.Kind == queue.Full && j.DoRules && !j.Staged {
			return nil // another process is still finishing the staging tables
		}
		if j.DoRules {
			if j.Kind == queue.Full {
				if err := sharetable.SwapFull(ctx, tx, j.DoClosure); err != nil {
					return err
				}
			}
			if err := sharetable.WriteObjects(ctx, tx, org); err != nil {
				return err
			}
			if err := store.SetApplied(ctx, tx, store.SideRules, j.Config); err != nil {
				return err
			}
		}
		cl := &sharetable.ClosureStats{}
		if j.DoClosure {
			if j.Kind == queue.Full { // the closure came in with the swap
				err = sharetable.WriteUsers(ctx, tx, org, dict)
			} else {
				cl, err = sharetable.DiffClosure(ctx, tx, org, dict)
			}
			if err != nil {
				return err
			}
			if err := store.SetApplied(ctx, tx, store.SideClosure, j.Config); err != nil {
				return err
			}
		}
		if j.DoRules { // the changes it planned from, and only those
			if err := changes.Consume(ctx, tx, j.Consumes); err != nil {
				return err
			}
		}
		ended = true
		return queue.Finish(ctx, tx, j, cl.Added, cl.Removed)
	})
	return ended && err == nil, err
}

// announce sends the job's completion notification to the webhook and email
// targets. The NOTIFY went out with the job's end; a failed delivery is
// logged, not fatal: the job itself is done.
func announce(ctx context.Context, pool *pgxpool.Pool, id int64, opt Options, log zerolog.Logger) {
	if !opt.Notify.Enabled() {
		return
	}
	payload, err := queue.Payload(ctx, pool, id)
	if err == nil {
		err = opt.Notify.Send(ctx, payload)
	}
	if err != nil {
		log.Error().Int64("job", id).Err(err).Msg("completion notification not delivered")
		return
	}
	log.Info().Int64("job", id).Msg("completion notification sent")
}
