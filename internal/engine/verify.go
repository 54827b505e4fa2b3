package engine

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/workers"
	"github.com/recalc-dev/recalc/schema"
)

// VerifyOptions tune a verification.
type VerifyOptions struct {
	Sample int  // verify this many random families; 0 verifies all
	Repair bool // fix what differs
	// Sources also compares the records mirrored from attached tables with
	// a whole re-read of those tables.
	Sources bool
}

// VerifyReport says how the materialized tables differ from a recomputation.
type VerifyReport struct {
	Families       int                    `json:"families_checked"`
	Skipped        int                    `json:"families_skipped_pending"`
	ShareRows      []sharetable.DiffCount `json:"share_rows"`
	RecordRows     int64                  `json:"record_rows_differing"`
	ClosureMissing int64                  `json:"closure_missing"`
	ClosureExtra   int64                  `json:"closure_extra"`
	// StrayRoots counts the records whose stored family root is not what
	// root fixing computes, with no change pending for them
	// (changes.StrayRoots): each is computed in a family its parent is not
	// in, and fails closed. `recalc run --full`, or a repair, fixes them.
	StrayRoots int64 `json:"stray_roots"`
	// ClosureSkipped is the unfinished job that changes the closure, when
	// one started while verify ran: the closure was not compared.
	ClosureSkipped int64 `json:"closure_skipped_pending_job,omitempty"`
	// Sources are the attached sources compared, when asked to.
	Sources []changes.SourceDrift `json:"attached_sources,omitempty"`
	// Deferred are the sides whose calculation was deferred when verify
	// started, and since when. It compares with what each side was last
	// computed from, and skips the families written since as pending: the
	// changes a deferred side waits for are no drift, and a repair leaves
	// them to `recalc resume`.
	Deferred map[string]time.Time `json:"deferred,omitempty"`
	Repaired bool                 `json:"repaired"`
}

// Drift reports whether anything differed.
func (r *VerifyReport) Drift() bool {
	return len(r.ShareRows) > 0 || r.RecordRows > 0 || r.ClosureMissing > 0 || r.ClosureExtra > 0 || r.SourceDrift() > 0 ||
		r.StrayRoots > 0
}

// Unchecked counts the attached sources that could not be compared.
func (r *VerifyReport) Unchecked() int {
	n := 0
	for _, s := range r.Sources {
		if s.Unchecked != "" {
			n++
		}
	}
	return n
}

// SourceDrift counts the mirrored rows that differed from their attached
// sources.
func (r *VerifyReport) SourceDrift() int64 {
	var n int64
	for _, s := range r.Sources {
		n += s.Differing
	}
	return n
}

// familiesPerChunk bounds one verification transaction.
const familiesPerChunk = 1000

// Verify recomputes families from scratch, from the configuration the
// tables were last computed from, and compares the result with the
// materialized rows, by object and row cause. Families with changes not yet
// recalculated are skipped: they differ by design until the next run. Each
// chunk of families is compared in one snapshot, which tells them apart
// while the application, runs and `recalc watch` write (families). It also
// counts the family roots that are wrong (strayRoots), which no family's
// comparison shows. With Repair it fixes what differs, under the same row
// locks as a job.
func Verify(ctx context.Context, pool *pgxpool.Pool, opt VerifyOptions, log zerolog.Logger) (*VerifyReport, error) {
	if job, err := queue.Unfinished(ctx, pool); err != nil || job != nil {
		switch {
		case err == nil && job.Paused:
			err = fmt.Errorf("job %d is unfinished, paused while share rows are deferred: run `recalc resume` first, then verify", job.ID)
		case err == nil:
			err = fmt.Errorf("job %d is unfinished: run `recalc run` first, then verify", job.ID)
		}
		return nil, err
	}
	var sources []changes.SourceDrift
	if opt.Sources {
		var err error
		if sources, err = compareSources(ctx, pool, opt.Repair, log); err != nil {
			return nil, err
		}
	}
	rep := &VerifyReport{Sources: sources, Repaired: opt.Repair}
	v, err := loadVerification(ctx, pool, opt)
	if err != nil {
		return nil, stopped(rep, err)
	}
	rep.Deferred = v.deferred
	stray, err := v.strayRoots(ctx, pool)
	if err != nil {
		return nil, stopped(rep, fmt.Errorf("verify family roots: %w", err))
	}
	rep.StrayRoots = stray
	var skipped int
	rep.ShareRows, rep.RecordRows, skipped, err = v.families(ctx, pool)
	if err != nil {
		return nil, stopped(rep, fmt.Errorf("verify families: %w", err))
	}
	rep.Families, rep.Skipped = len(v.roots)-skipped, len(v.pending)+skipped
	if rep.ClosureMissing, rep.ClosureExtra, rep.ClosureSkipped, err = v.closure(ctx, pool); err != nil {
		return nil, stopped(rep, fmt.Errorf("verify closure: %w", err))
	}
	log.Info().Int("families", rep.Families).Int("skipped_pending", rep.Skipped).Int64("stray_roots", rep.StrayRoots).Bool("drift", rep.Drift()).
		Bool("repaired", rep.Repaired && rep.Drift()).Msg("verify done")
	return rep, nil
}

// RepairStopped is the error of a repair that stopped after it had fixed
// some of what differed: those fixes are committed, and Repaired says what
// they were.
type RepairStopped struct {
	Repaired *VerifyReport
	Err      error
}

func (e *RepairStopped) Error() string {
	var rows int64
	for _, c := range e.Repaired.ShareRows {
		rows += c.Missing + c.Extra + c.Wrong
	}
	return fmt.Sprintf("verify repaired %d share rows, %d record rows, %d mirrored rows and %d family roots, then stopped: %v",
		rows, e.Repaired.RecordRows, e.Repaired.SourceDrift(), e.Repaired.StrayRoots, e.Err)
}

func (e *RepairStopped) Unwrap() error { return e.Err }

// stopped returns err, as a RepairStopped when rep, a repair's report so
// far, says something was repaired before it.
func stopped(rep *VerifyReport, err error) error {
	if !rep.Repaired || !rep.Drift() {
		return err
	}
	return &RepairStopped{Repaired: rep, Err: err}
}

// compareSources compares each attached source with its mirrored records,
// in a transaction of its own that holds the source's registry lock while
// it reads (absorbs wait, as during a full run's re-read), and keeps what
// the re-read changed only when repair.
func compareSources(ctx context.Context, pool *pgxpool.Pool, repair bool, log zerolog.Logger) ([]changes.SourceDrift, error) {
	objects, err := changes.Attached(ctx, pool)
	if err != nil {
		return nil, err
	}
	out := make([]changes.SourceDrift, 0, len(objects))
	for _, object := range objects {
		d, err := compareSource(ctx, pool, object, repair)
		if err == nil {
			err = changes.Unstick(ctx, pool, object)
		}
		if err != nil {
			return nil, err
		}
		log.Info().Str("object", object).Int64("differing", d.Differing).Str("unchecked", d.Unchecked).Msg("attached source compared")
		out = append(out, d)
	}
	return out, nil
}

// compareSource compares one attached source, and commits the re-read only
// to repair a difference.
func compareSource(ctx context.Context, pool *pgxpool.Pool, object string, repair bool) (changes.SourceDrift, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return changes.SourceDrift{}, err
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	d, err := changes.CompareSource(ctx, tx, object)
	if err != nil || !repair || d.Differing == 0 {
		return d, err
	}
	return d, tx.Commit(ctx)
}

// verification is what Verify compares: the families to check, the
// configurations each side was computed from, and the dictionaries.
type verification struct {
	opt               VerifyOptions
	rules, closureOrg *sharing.Org
	applied           [2][]byte // the configurations rules and closureOrg decode
	dict              *sharetable.Dict
	deferred          map[string]time.Time
	pending, roots    []string // families skipped, and those checked
	job               int64    // the last unfinished job pendingRoots saw, and its families
	jobRoots          map[string]bool
}

// loadVerification reads the applied configurations, the deferral and the
// families with pending changes, then lists the families to check.
func loadVerification(ctx context.Context, pool *pgxpool.Pool, opt VerifyOptions) (*verification, error) {
	v := &verification{opt: opt}
	var applied [2][]byte
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		if applied, err = appliedConfigs(ctx, tx); err != nil {
			return err
		}
		if v.deferred, err = store.Deferred(ctx, tx); err != nil {
			return err
		}
		// The families a job recomputes, which one may have started since,
		// are skipped as each chunk finds them.
		p, err := v.pendingRoots(ctx, tx, nil)
		if err == nil {
			v.pending = p.logged
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read applied state: %w", err)
	}
	if applied[0] == nil {
		return nil, fmt.Errorf("nothing has been recalculated yet: run `recalc run`")
	}
	if applied[1] == nil {
		applied[1] = []byte("{}")
	}
	v.applied = applied
	if v.rules, err = sharing.DecodeOrg(applied[0]); err != nil {
		return nil, err
	}
	if v.closureOrg, err = sharing.DecodeOrg(applied[1]); err != nil {
		return nil, err
	}
	if v.dict, err = sharetable.LoadDict(ctx, pool); err != nil {
		return nil, err
	}
	if v.roots, err = sharetable.FamilyRoots(ctx, pool, v.pending, opt.Sample); err != nil {
		return nil, fmt.Errorf("list families: %w", err)
	}
	return v, nil
}

// strayRoots counts the stray family roots (changes.StrayRoots, which
// leaves out those whose fixing is pending, in the same statement), and
// with Repair fixes them as a full run does, under the model lock: the
// records re-rooted are logged, so the families they left and joined are
// pending (and skipped by the comparison that follows) until the next run
// recalculates them.
func (v *verification) strayRoots(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	n, err := changes.StrayRoots(ctx, pool)
	if err != nil || n == 0 || !v.opt.Repair {
		return n, err
	}
	return n, retried(ctx, verifyAttempts, func() error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := v.lockCurrent(ctx, tx, false); err != nil {
				return err
			}
			if err := locks.SetTimeout(ctx, tx, rootLockTimeout); err != nil {
				return err
			}
			_, err := changes.RepairStrayRoots(ctx, tx)
			return err
		})
	})
}

// families compares the families to check, familiesPerChunk at a time,
// and repairs them when asked to. It returns the share rows that differ, by
// object and cause, the number of record rows that differ, and the number
// of families skipped because a chunk found changes pending for them.
//
// A chunk compares in one snapshot (REPEATABLE READ: compare), in which it
// reads again which families have changes pending, and skips them: a write
// committed after loadVerification read them, or while the chunk reads, is
// then invisible, or pending and skipped, or materialized with its share
// rows. Read statement by statement, a family's records could be read on
// one side of a write, or of its materialization, and its share rows on the
// other, and differ. A repair writes in a READ COMMITTED transaction of its
// own, under the model lock and the families' row locks (repair): a
// snapshot taken before the model lock was granted would not see what its
// last holder wrote. On an error, it returns what the chunks before found,
// and repaired if asked to.
func (v *verification) families(ctx context.Context, pool *pgxpool.Pool) ([]sharetable.DiffCount, int64, int, error) {
	counts := map[[2]string]*sharetable.DiffCount{}
	var recordRows int64
	skipped := 0
	for chunk := range slices.Chunk(v.roots, familiesPerChunk) {
		var diff *sharetable.FamilyDiff
		var roots []string // the chunk's families with no change pending
		err := retried(ctx, verifyAttempts, func() error {
			return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
				var err error
				diff, roots, err = v.compare(ctx, tx, chunk)
				return err
			})
		})
		left := 0 // of roots, the families a write reached before the repair
		if err == nil && v.opt.Repair && !diff.Empty() {
			// A record moved between families by a concurrent writer, or a
			// lock timeout, fails the chunk's transaction: repair it again.
			err = retried(ctx, verifyAttempts, func() error {
				return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					var err error
					left, err = v.repair(ctx, tx, roots)
					return err
				})
			})
		}
		if err != nil {
			return sortedCounts(counts), recordRows, skipped, err
		}
		skipped += len(chunk) - len(roots) + left
		for k, c := range diff.Counts() {
			if counts[k] == nil {
				counts[k] = &sharetable.DiffCount{Object: c.Object, Cause: c.Cause}
			}
			counts[k].Missing += c.Missing
			counts[k].Extra += c.Extra
			counts[k].Wrong += c.Wrong
		}
		recordRows += diff.RecordRowsDiffer
	}
	return sortedCounts(counts), recordRows, skipped, nil
}

// sortedCounts lists counts by object and cause.
func sortedCounts(counts map[[2]string]*sharetable.DiffCount) []sharetable.DiffCount {
	var out []sharetable.DiffCount
	for _, c := range counts {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.Object < b.Object || a.Object == b.Object && a.Cause < b.Cause
	})
	return out
}

// rootLockTimeout bounds each lock wait of a repair's root fixing, which
// locks records the application may hold, as a job's default does.
const rootLockTimeout = 5 * time.Second

// verifyAttempts bounds the tries of one chunk of families.
const verifyAttempts = 3

// retried runs f until it succeeds, fails with an error not worth retrying
// (pg.IsRetryable), or has run attempts times, backing off between tries.
func retried(ctx context.Context, attempts int, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || !pg.IsRetryable(err) || attempt+1 >= attempts || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(workers.Backoff(attempt)):
		}
	}
}

// compare compares the families of roots that have no change pending, in
// tx, a REPEATABLE READ transaction: the change log, the records and the
// share rows all as of its one snapshot. It returns the difference and the
// roots compared.
func (v *verification) compare(ctx context.Context, tx pgx.Tx, roots []string) (*sharetable.FamilyDiff, []string, error) {
	if err := v.snapshot(ctx, tx, false); err != nil {
		return nil, nil, err
	}
	roots, _, err := v.settled(ctx, tx, roots, nil)
	if err != nil {
		return nil, nil, err
	}
	rids, err := sharetable.FamilyRIDs(ctx, tx, roots)
	if err != nil {
		return nil, nil, err
	}
	diff, err := sharetable.DiffFamilies(ctx, tx, v.rules, v.dict, roots, rids)
	return diff, roots, err
}

// repair writes the difference of the families of roots that still have no
// change pending, in tx, under the same row locks as a job, and returns how
// many of roots it left out: the families with a change pending by then.
// The application's writes do not wait for it. One that commits before the
// diff reads its records is left to the next run with its family: its
// change row commits with it, so the pending changes read after the diff
// name it (repairFamilies). Repaired, its family would get the access it
// gives while calculation is deferred. One that commits after is
// recomputed by the next run, from its change row, as it is after a job's
// chunk.
func (v *verification) repair(ctx context.Context, tx pgx.Tx, roots []string) (int, error) {
	if err := v.lockCurrent(ctx, tx, false); err != nil {
		return 0, err
	}
	todo, seqs, err := v.settled(ctx, tx, roots, nil)
	for done := false; err == nil && !done; {
		var still []string
		still, seqs, err = v.repairFamilies(ctx, tx, todo, seqs)
		done, todo = len(still) == len(todo), still
	}
	return len(roots) - len(todo), err
}

// repairFamilies diffs the families of roots under their row locks, then
// reads again which of them have changes pending, and writes the
// difference when none has. It returns those that have none (when fewer
// than roots, the caller diffs them again, without the others), and the
// change rows read. The families of the change rows of known, which an
// earlier read in tx left out of roots, are not looked up again: under the
// model lock, no run consumes them, and a record moves between families
// only by a write that logs a change row of its own.
func (v *verification) repairFamilies(ctx context.Context, tx pgx.Tx, roots []string, known []int64) ([]string, []int64, error) {
	if len(roots) == 0 {
		return nil, known, nil
	}
	rids, err := sharetable.LockFamilies(ctx, tx, roots)
	if err != nil {
		return nil, nil, err
	}
	diff, err := sharetable.DiffFamilies(ctx, tx, v.rules, v.dict, roots, rids)
	if err != nil {
		return nil, nil, err
	}
	still, seqs, err := v.settled(ctx, tx, roots, known)
	if err != nil || len(still) < len(roots) || diff.Empty() {
		return still, seqs, err
	}
	_, err = diff.Apply(ctx, tx)
	return still, seqs, err
}

// pending is what pendingRoots found of the families that have changes
// not yet materialized.
type pending struct {
	logged  []string        // the roots of the records the change rows name
	planned map[string]bool // the families an unfinished job recomputes
	all     bool            // every family is pending
	seqs    []int64         // the change rows read, those of known included
}

// pendingRoots returns the families that have changes not yet
// materialized, as tx sees them: logged, the roots of the records the change
// log names, but for its rows of known, and planned, those an unfinished
// job recomputes (its plan fixed the roots of records no change row names,
// such as the children of a deleted parent, and its chunks write them one
// by one). all is true when every family is pending: a full job is
// unfinished, or the log holds a truncate of recalc.record.
func (v *verification) pendingRoots(ctx context.Context, tx pgx.Tx, known []int64) (*pending, error) {
	job, err := queue.Unfinished(ctx, tx)
	if err != nil {
		return nil, err
	}
	p := &pending{}
	if job != nil {
		if full, err := inPlaceFull(job); err != nil || full || job.Kind == queue.Full {
			return &pending{all: true}, err
		}
		if v.job != job.ID { // a job's families never change: read them once
			roots, err := queue.Roots(ctx, tx, job.ID)
			if err != nil {
				return nil, err
			}
			v.job, v.jobRoots = job.ID, make(map[string]bool, len(roots))
			for _, r := range roots {
				v.jobRoots[r] = true
			}
		}
		p.planned = v.jobRoots
	}
	seen, err := changes.Read(ctx, tx)
	switch {
	case err != nil:
		return nil, err
	case seen.Truncated:
		return &pending{all: true}, nil
	}
	p.seqs = seen.Seqs
	ids, err := changes.Records(ctx, tx, without(seen.Seqs, known))
	if err != nil {
		return nil, err
	}
	p.logged, err = sharetable.RootsOfRecords(ctx, tx, ids)
	return p, err
}

// without returns the seqs of all that are not in known, both sorted.
func without(all, known []int64) []int64 {
	out := make([]int64, 0, len(all))
	for _, seq := range all {
		if _, found := slices.BinarySearch(known, seq); !found {
			out = append(out, seq)
		}
	}
	return out
}

// settled returns roots without those of families with changes pending
// (pendingRoots, but for the change rows of known), as tx sees them, and
// the change rows it read.
func (v *verification) settled(ctx context.Context, tx pgx.Tx, roots []string, known []int64) ([]string, []int64, error) {
	p, err := v.pendingRoots(ctx, tx, known)
	if err != nil || p.all {
		return nil, nil, err
	}
	skip := make(map[string]bool, len(p.logged))
	for _, r := range p.logged {
		skip[r] = true
	}
	return slices.DeleteFunc(slices.Clone(roots), func(r string) bool { return skip[r] || p.planned[r] }), p.seqs, nil
}

// closure compares the stored closure with the applied configuration's,
// and repairs it when asked to. It returns the entries missing and extra,
// or the job it skipped the comparison for.
//
// It compares in one snapshot (REPEATABLE READ), in which the closure's
// configuration is still the one v loaded: a job that changed the closure
// since then fails it, as it fails a chunk of families, rather than show
// its new closure as drift from the old configuration (one that changed
// only rules or OWDs does not). An unfinished job
// that changes the closure has deleted the entries it removes already
// (storeJob), so the closure is not compared beside one. A repair writes
// under the model lock, where no job is unfinished, as a chunk's repair
// does.
func (v *verification) closure(ctx context.Context, pool *pgxpool.Pool) (missing, extra, skipped int64, err error) {
	opts, check := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, v.snapshot
	if v.opt.Repair {
		opts, check = pgx.TxOptions{}, v.lockCurrent
	}
	err = pgx.BeginTxFunc(ctx, pool, opts, func(tx pgx.Tx) error {
		if err := check(ctx, tx, true); err != nil {
			return err
		}
		if job, err := queue.Unfinished(ctx, tx); err != nil || job != nil && job.DoClosure {
			if job != nil {
				skipped = job.ID
			}
			return err
		}
		diff, err := sharetable.DiffClosureOf(ctx, tx, v.closureOrg, v.dict)
		if err != nil {
			return err
		}
		missing, extra = diff.Missing(), diff.Extra()
		if v.opt.Repair && missing+extra > 0 {
			_, err = diff.Apply(ctx, tx)
		}
		return err
	})
	return missing, extra, skipped, err
}

// lockCurrent takes the model lock for a repair in tx and checks that what
// v compares with still holds: no job is unfinished (none can start until
// tx ends), and the applied configurations are those v loaded. A repair
// computed from a configuration a job has since replaced would write back
// the share rows that job removed.
func (v *verification) lockCurrent(ctx context.Context, tx pgx.Tx, closureOnly bool) error {
	if err := schema.LockModel(ctx, tx); err != nil {
		return err
	}
	job, err := queue.Unfinished(ctx, tx)
	if err != nil {
		return err
	}
	if job != nil {
		return fmt.Errorf("job %d started while verify ran, so nothing more is repaired: run `recalc verify --repair` again once it has finished", job.ID)
	}
	return v.current(ctx, tx, closureOnly)
}

// snapshot begins a comparison in tx, a REPEATABLE READ transaction: it
// holds the tables read (sharetable.HoldForSnapshot), then takes the
// snapshot, in which the applied configurations must still be those v
// loaded (current).
func (v *verification) snapshot(ctx context.Context, tx pgx.Tx, closureOnly bool) error {
	if err := sharetable.HoldForSnapshot(ctx, tx); err != nil {
		return err
	}
	return v.current(ctx, tx, closureOnly)
}

// current checks that the applied configurations are still those v
// compares with: the share rows of a family no job has pending were
// computed from them. closureOnly checks only the closure's, which is all
// the closure depends on: a job that changed only rules or OWDs meanwhile
// leaves its comparison valid.
func (v *verification) current(ctx context.Context, tx pgx.Tx, closureOnly bool) error {
	for i, side := range []string{store.SideRules, store.SideClosure} {
		if closureOnly && side != store.SideClosure {
			continue
		}
		cfg, err := store.AppliedConfig(ctx, tx, side)
		if err != nil {
			return err
		}
		switch {
		case bytes.Equal(cfg, v.applied[i]):
		case v.opt.Repair:
			return fmt.Errorf("a job applied a new configuration while verify ran, so nothing more is repaired: run `recalc verify --repair` again")
		default:
			return fmt.Errorf("a job applied a new configuration while verify ran, so nothing more is compared: run `recalc verify` again")
		}
	}
	return nil
}
