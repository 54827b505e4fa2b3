package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/planner"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/schema"
)

// Live keeps the share tables fresh for a long-running process (`recalc
// watch`). It keeps the decoded configuration and the dictionaries in
// memory, reloading them only when recalc.config_version moves, and
// materializes small batches of record changes on a fast path: one
// transaction that reads the change rows, plans, locks the families, writes
// the share difference exactly as an incremental chunk does
// (sharetable.ApplyFamilies), consumes the change rows it read and
// publishes the access changes to the feed (feed.Publish), with no job or
// chunk rows. Everything else goes through Run: a job unfinished, a
// configuration not yet applied, a deferral, a truncate, a large batch, or
// an error on the fast path.
//
// It is exactly as safe as a job: it plans and writes under the model lock
// that job creation takes, and only when no job is unfinished, so it never
// interleaves with a job's chunks or with an import; and it consumes the
// change rows it read by their seqs, so a change that commits meanwhile,
// whatever its seq, stays for the next batch. A Live is not safe for
// concurrent use; any number of processes may each run one.
type Live struct {
	opt Options
	// MaxRecords is the most records a batch may name for the fast path;
	// 0 disables the fast path.
	MaxRecords int

	version     int64 // recalc.config_version the state below was read at
	loaded      bool
	config      []byte
	org         *sharing.Org // the stored configuration, when both sides are current with it
	dict        *sharetable.Dict
	deferred    map[string]time.Time
	idleAt      int64 // the version at which Run last found calculation deferred
	pausedJob   int64 // the job Run last found paused, at version pausedAt: nothing to do until the version moves
	pausedAt    int64
	dirty       int    // change rows consumed since the queue tables were last vacuumed
	notAbsorbed string // the attached objects last warned of
}

// vacuumAfter is how many change rows the fast path consumes before Step
// vacuums the queue tables (recalc.change and recalc.feed_pending); Step
// also vacuums them after every job.
const vacuumAfter = 2000

// NewLive returns a Live with Run's options opt.
func NewLive(opt Options, maxRecords int) *Live {
	opt.defaults()
	// dirty: vacuum after the first fast batch, which may follow a full
	// job's million feed entries.
	return &Live{opt: opt, MaxRecords: maxRecords, idleAt: -1, dirty: vacuumAfter}
}

// LiveReport says what one Step did.
type LiveReport struct {
	Fast        bool                `json:"fast"`     // the fast path did it
	Deferred    bool                `json:"deferred"` // calculation of share rows is deferred: nothing done
	Changes     int                 `json:"changes"`  // change rows consumed by the fast path
	NotAbsorbed []changes.Absorbed  `json:"-"`        // see Planned.NotAbsorbed
	Written     *sharetable.Written `json:"-"`
	more        bool                // the change log held more rows than the batch: step again
	Run         *Report             `json:"run,omitempty"` // what Run did, when it ran
	Duration    time.Duration       `json:"-"`
}

// add adds what batch did to r.
func (r *LiveReport) add(batch *LiveReport) {
	r.Deferred = r.Deferred || batch.Deferred
	r.Changes += batch.Changes
	r.NotAbsorbed = append(r.NotAbsorbed, batch.NotAbsorbed...)
	if w := batch.Written; w != nil {
		if r.Written == nil {
			r.Written = &sharetable.Written{}
		}
		r.Written.Records, r.Written.Added = r.Written.Records+w.Records, r.Written.Added+w.Added
		r.Written.Removed, r.Written.Updated = r.Written.Removed+w.Removed, r.Written.Updated+w.Updated
		r.Written.Invalid = append(r.Written.Invalid, w.Invalid...)
	}
}

// errSlow makes the fast path's transaction roll back and Run take over.
var errSlow = errors.New("not for the fast path")

// Step brings the materialized tables up to date with what is committed
// now: on the fast path when it can, one batch of at most MaxRecords
// records after another, else with Run.
func (l *Live) Step(ctx context.Context, pool *pgxpool.Pool, log zerolog.Logger) (*LiveReport, error) {
	start := time.Now()
	rep := &LiveReport{}
	if held, err := l.pauseHeld(ctx, pool); err != nil || held {
		if err != nil {
			return nil, err
		}
		rep.Deferred, rep.Duration = true, time.Since(start)
		return rep, nil
	}
	for l.MaxRecords > 0 {
		batch := &LiveReport{}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return l.fast(ctx, tx, batch) })
		if err == nil {
			rep.add(batch)
			if l.dirty += batch.Changes; l.dirty >= vacuumAfter {
				l.vacuum(ctx, pool, log)
			}
			if batch.more && ctx.Err() == nil {
				continue // the next batch, at once
			}
			// Once, not at every try: steps between tries leave the object
			// alone (changes.StuckRetry) and report nothing.
			if n := fmt.Sprint(rep.NotAbsorbed); len(rep.NotAbsorbed) > 0 && n != l.notAbsorbed {
				warnNotAbsorbed(log, rep.NotAbsorbed)
				l.notAbsorbed = n
			}
			rep.Fast, rep.Duration = !rep.Deferred, time.Since(start)
			return rep, nil
		}
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.As(err, new(*schema.VersionError)):
			return nil, err
		case !errors.Is(err, errSlow):
			log.Warn().Err(err).Msg("fast path failed; recalculating with a job")
			l.loaded = false // reload everything next time
		}
		break
	}
	// Read before Run reads the deferral: a change of it after moves it.
	seen, err := changes.ConfigVersion(ctx, pool)
	if err != nil {
		return nil, err
	}
	run, err := Run(ctx, pool, l.opt, log)
	if err != nil {
		return nil, err
	}
	if _, deferred := run.Deferred[store.SideRules]; run.Nothing && deferred {
		l.idleAt = l.version // nothing to do until the deferral changes
	}
	if run.Paused {
		l.pausedJob, l.pausedAt = run.Job, seen // once a pause: no Run, nor its log line, at every step
	}
	if !run.Nothing && !run.Paused {
		l.vacuum(ctx, pool, log)
	}
	rep.Run, rep.Duration = run, time.Since(start)
	return rep, nil
}

// pauseHeld reports whether the job Run last found paused by a deferral
// still is: nothing is done beside it until the deferral changes, or the
// job ends, which moves the configuration version. With or without the
// fast path (--fast-records 0), no Run, nor its log line, at every step.
func (l *Live) pauseHeld(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	if l.pausedJob == 0 {
		return false, nil
	}
	if err := schema.Check(ctx, pool); err != nil {
		return false, err
	}
	v, err := changes.ConfigVersion(ctx, pool)
	if err != nil || v == l.pausedAt {
		return err == nil, err
	}
	l.pausedJob = 0
	return false, nil
}

// fast is the fast path's transaction; errSlow hands the batch to Run.
func (l *Live) fast(ctx context.Context, tx pgx.Tx, rep *LiveReport) error {
	// An idle step (a poll with nothing new) reads and writes nothing else:
	// the model lock is a row lock, which would make it a writing transaction.
	if l.loaded {
		var waiting []string // what a deferred closure keeps in the log (keepWaiting)
		if _, ok := l.deferred[store.SideClosure]; ok {
			waiting = planner.ClosureSections()
		}
		if idle, err := changes.Idle(ctx, tx, l.version, waiting, schema.Latest()); err != nil || idle {
			return err
		}
	}
	if err := schema.LockModel(ctx, tx); err != nil {
		return err
	}
	if job, err := queue.Unfinished(ctx, tx); err != nil || job != nil {
		return errors.Join(err, errSlow)
	}
	// The users section is marked for rebuilding: Run's plan does it.
	if marked, err := changes.UsersMarked(ctx, tx); err != nil || marked {
		return errors.Join(err, errSlow)
	}
	if err := l.refresh(ctx, tx); err != nil {
		return err
	}
	if _, ok := l.deferred[store.SideRules]; ok && l.idleAt == l.version {
		rep.Deferred = true
		return nil
	}
	if l.org == nil || len(l.deferred) > 0 {
		return errSlow
	}
	absorbed, ok, err := changes.Absorb(ctx, tx, l.MaxRecords)
	switch {
	case err != nil:
		return err
	case !ok:
		return errSlow
	}
	rep.NotAbsorbed = notAbsorbed(absorbed)
	b, err := changes.ReadBatch(ctx, tx, l.MaxRecords)
	switch {
	case err != nil:
		return err
	case len(b.Seqs) == 0 && b.More: // one statement named more records than a batch may
		return errSlow
	case len(b.Seqs) == 0:
		return nil
	case !b.OnlyRecords:
		return errSlow
	}
	w, err := l.apply(ctx, tx, b.Seqs)
	if err != nil {
		return err
	}
	rep.Changes, rep.Written, rep.more = len(b.Seqs), w, b.More
	if err := changes.Consume(ctx, tx, b.Seqs); err != nil {
		return err
	}
	// Last: it holds the feed lock until the commit.
	_, err = feed.Publish(ctx, tx, 0)
	return err
}

// apply plans the record changes of the change rows seqs as Plan does
// (family roots fixed, the changed records' families selected) and writes
// their families' difference as an incremental chunk does.
func (l *Live) apply(ctx context.Context, tx pgx.Tx, seqs []int64) (*sharetable.Written, error) {
	in := &inputs{rules: l.org, closure: l.org, log: &changes.Log{Seqs: seqs}}
	ids, err := changedRecords(ctx, tx, l.opt, in, true)
	if err != nil {
		return nil, err
	}
	if len(ids) > l.MaxRecords {
		return nil, errSlow
	}
	roots, err := lookUp(ctx, tx, &planner.Selector{Kind: planner.ByRecords, IDs: ids})
	if err != nil {
		return nil, err
	}
	if len(roots) == 0 {
		return &sharetable.Written{}, nil
	}
	// With them, the families records moved to or from theirs since they
	// were materialized, transitively, as a job's chunk takes them
	// (familyGroups). An import sets the roots of the records it moves with
	// its writes, and its change rows may fall into different batches: a
	// batch that wrote the family a record moved into, and not the one it
	// left, wrote the record's new share rows while the records left there,
	// controlled by it, kept their rows: access neither data gives.
	if roots, _, err = familyGroups(ctx, tx, roots, false); err != nil {
		return nil, err
	}
	if len(roots) > l.MaxRecords { // the moves reach too far for one batch: a job chunks them
		return nil, errSlow
	}
	w, err := sharetable.ApplyFamilies(ctx, tx, l.org, l.dict, roots)
	if err != nil {
		return nil, err
	}
	return w, changes.KeepMovedWaiting(ctx, tx, w.Invalid, seqs)
}

// refresh reloads the configuration, the applied configurations, the
// deferral and the dictionaries when recalc.config_version moved. The
// fast path may use the configuration (org set) only when the share rows
// were computed from exactly the stored one, and the closure from one with
// the same closure (closureCurrent).
func (l *Live) refresh(ctx context.Context, tx pgx.Tx) error {
	v, err := changes.ConfigVersion(ctx, tx)
	if err != nil || (l.loaded && v == l.version) {
		return err
	}
	cfg, err := store.StoredConfig(ctx, tx)
	if err != nil {
		return err
	}
	applied, err := appliedConfigs(ctx, tx)
	if err != nil {
		return err
	}
	if l.deferred, err = store.Deferred(ctx, tx); err != nil {
		return err
	}
	prev := l.org
	l.org = nil
	if bytes.Equal(cfg, applied[0]) {
		org, err := l.decode(ctx, tx, cfg, prev)
		if err != nil {
			return err
		}
		if closureCurrent(cfg, applied[1], org) {
			l.org = org
		}
	}
	l.version, l.loaded = v, true
	return nil
}

// closureCurrent reports whether the closure side, computed from the
// configuration applied, is what the stored one cfg (decoded: org) computes.
// A job that changes no closure leaves the side's applied configuration as
// it was, as Plan decides (decideSides): after a rule or OWD change alone it
// differs from the stored one, and is current all the same.
func closureCurrent(cfg, applied []byte, org *sharing.Org) bool {
	if bytes.Equal(cfg, applied) {
		return true
	}
	if applied == nil { // never computed
		return false
	}
	old, err := sharing.DecodeOrg(applied)
	if err != nil {
		return false // Run says why
	}
	p := planner.Diff(old, org, nil)
	return !p.Full && !p.Closure
}

// decode decodes cfg, unless it is the configuration prev was decoded
// from, and reads the dictionaries, which the job that applied cfg
// completed.
func (l *Live) decode(ctx context.Context, tx pgx.Tx, cfg []byte, prev *sharing.Org) (*sharing.Org, error) {
	org := prev
	if org == nil || !bytes.Equal(cfg, l.config) {
		var err error
		if org, err = sharing.DecodeOrg(cfg); err != nil {
			return nil, err
		}
	}
	dict, err := sharetable.LoadDict(ctx, tx)
	if err != nil {
		return nil, err
	}
	l.config, l.dict = cfg, dict
	return org, nil
}

// vacuum vacuums the queue tables that Step empties, so that reading them
// stays a scan of the rows pending, not of every row they ever held, even
// where autovacuum is off or slow to come by. A failure is only logged.
func (l *Live) vacuum(ctx context.Context, pool *pgxpool.Pool, log zerolog.Logger) {
	l.dirty = 0
	if err := errors.Join(changes.Vacuum(ctx, pool), feed.VacuumPending(ctx, pool)); err != nil && ctx.Err() == nil {
		log.Warn().Err(err).Msg("could not vacuum the queue tables")
	}
}
