package engine

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/planner"
	"github.com/recalc-dev/recalc/internal/sharetable"
)

// LevelChange counts the (user, record) pairs of an object whose access
// goes from one level to another.
type LevelChange struct {
	Before model.Level `json:"before"`
	After  model.Level `json:"after"`
	Pairs  int64       `json:"pairs"`
}

// PairChange is one (user, record) pair whose access changes.
type PairChange = access.PairChange

// DryRunObject is what a change does to one object's access.
type DryRunObject struct {
	Object      string        `json:"object"`
	Gained      int64         `json:"pairs_gaining"`
	Lost        int64         `json:"pairs_losing"`
	Changes     []LevelChange `json:"changes"`
	GainSamples []PairChange  `json:"gain_samples"`
	LossSamples []PairChange  `json:"loss_samples"`
}

// DryRunReport is what applying the stored model would do to access: the plan,
// and the (user, record) pairs that gain and lose access, by object.
type DryRunReport struct {
	Planned *Planned       `json:"plan"`
	Objects []DryRunObject `json:"objects"`
	Gained  int64          `json:"pairs_gaining"`
	Lost    int64          `json:"pairs_losing"`
	// LostWithDeleted counts pairs lost because their record is deleted;
	// they are not in Lost.
	LostWithDeleted int64 `json:"pairs_lost_with_deleted_records"`
	// PairsBefore counts the pairs with access, before, among those the dry
	// run compares (the pairs whose access can change): the blast-radius
	// guard's denominator.
	PairsBefore int64         `json:"pairs_with_access_before"`
	Estimated   time.Duration `json:"estimated_ns"`
	Note        string        `json:"note,omitempty"`
}

// RevokedShare is the share of the touched pairs that would lose access.
func (im *DryRunReport) RevokedShare() float64 {
	if im.PairsBefore == 0 {
		return 0
	}
	return float64(im.Lost) / float64(im.PairsBefore)
}

const samplesPerObject = 5

// DryRun computes, inside tx, what recalculating the stored model would do
// to access, by doing it: it applies the plan in tx, chunk by chunk as a
// job would, and compares the access of the (record, user) pairs whose
// access can change before and after (internal/access explains which). The
// caller must roll tx back. Deferral is ignored: the impact is what the
// change means, whenever it is recalculated. Writes to attached tables not
// yet absorbed are not in it. The time the apply took
// estimates a real run's. A dry run that lasts reports its progress to log
// (or, when opt.Live is set, on a line redrawn in place).
//
// Its cost grows with the pairs compared: every user reached by the share
// rows of a record whose share rows change; every record reached by a user
// whose closure entries, activation or type change; and every user on the
// records that are added, deleted or moved, or whose OWD changes.
func DryRun(ctx context.Context, tx pgx.Tx, opt Options, log zerolog.Logger) (*DryRunReport, error) {
	opt.ignoreDeferral, opt.noAbsorb = true, true
	progress := newDryProgress(log, opt.Live, time.Now())
	progress.begin()
	defer progress.finish()
	pl, err := Plan(ctx, tx, opt)
	if err != nil {
		return nil, err
	}
	im := &DryRunReport{Planned: pl}
	if pl.Plan.Full && pl.Plan.FullReason == planner.NothingYet {
		im.Note = "nothing has been recalculated yet, so no one has access to lose or gain relative to now"
		return im, nil
	}
	if pl.Nothing() {
		return im, nil
	}
	progress.phase("prepare", 0)
	d, err := prepareDryRun(ctx, tx, pl)
	if err != nil {
		return nil, err
	}
	d.progress = progress
	// The snapshot of the records whose OWD changes (every user's access
	// to them) can take minutes on a large org: it was reported as "apply",
	// no family done.
	progress.phase("snapshot", len(d.roots))
	var cc access.ClosureChange
	cc.InsGIDs, cc.InsUIDs, cc.InsBoss = d.closure.Inserted()
	cc.DelGIDs, cc.DelUIDs = d.closure.Deleted()
	if err := access.BeginDryRun(ctx, tx, pl.org, cc); err != nil {
		return nil, err
	}
	progress.phase("apply", len(d.roots))
	if im.Estimated, err = d.apply(ctx, tx, pl); err != nil {
		return nil, err
	}
	progress.phase("compare", len(d.roots))
	return im, summarize(ctx, tx, im)
}

// dryRun is what a dry run applies: the families it recomputes, and the
// closure's difference.
type dryRun struct {
	dict     *sharetable.Dict
	closure  *sharetable.ClosureDiff
	roots    []string
	progress *dryProgress
}

// prepareDryRun gets the dictionary ids of the planned configuration, its
// closure's difference from the stored one, and the families to recompute:
// every one for a full plan.
func prepareDryRun(ctx context.Context, tx pgx.Tx, pl *Planned) (*dryRun, error) {
	if _, err := sharetable.EnsureDict(ctx, tx, pl.org); err != nil {
		return nil, err
	}
	d := &dryRun{roots: pl.Roots}
	var err error
	if d.dict, err = sharetable.LoadDict(ctx, tx); err != nil {
		return nil, err
	}
	if d.closure, err = sharetable.DiffClosureOf(ctx, tx, pl.org, d.dict); err != nil {
		return nil, err
	}
	if pl.Plan.Full && pl.Roots == nil { // planned in place, a full plan lists them already
		if d.roots, err = sharetable.FamilyRoots(ctx, tx, nil, 0); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// apply writes in tx what a job of the plan would: its families' rows,
// chunk by chunk, each scoped for comparison just before it is written;
// then the OWD table, the closure and the user table. It returns the time
// the writes and their computation took.
func (d *dryRun) apply(ctx context.Context, tx pgx.Tx, pl *Planned) (time.Duration, error) {
	var spent time.Duration
	if pl.DoRules {
		for roots := range slices.Chunk(d.roots, familiesPerChunk) {
			start := time.Now()
			rids, err := sharetable.LockFamilies(ctx, tx, roots)
			if err != nil {
				return 0, err
			}
			diff, err := sharetable.DiffFamilies(ctx, tx, pl.org, d.dict, roots, rids)
			if err != nil {
				return 0, err
			}
			spent += time.Since(start)
			var whole []int64 // a record row changes: compare every user
			if diff.RecordRowsDiffer > 0 {
				whole = rids
			}
			grantRIDs, grantGIDs := diff.Grants()
			if err := access.ScopeFamilies(ctx, tx, grantRIDs, grantGIDs, whole); err != nil {
				return 0, err
			}
			start = time.Now()
			if _, err := diff.Apply(ctx, tx); err != nil {
				return 0, err
			}
			spent += time.Since(start)
			d.progress.families(len(roots))
		}
		if err := sharetable.WriteObjects(ctx, tx, pl.org); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	if pl.DoClosure {
		if _, err := d.closure.Apply(ctx, tx); err != nil {
			return 0, err
		}
		if err := sharetable.WriteUsers(ctx, tx, pl.org, d.dict); err != nil {
			return 0, err
		}
	}
	return spent + time.Since(start), nil
}

// dryProgress reports a dry run's progress once it has lasted two seconds,
// whatever phase it is in (plan, prepare, snapshot: the access before of
// the records whose OWD changes, apply: families being applied, compare:
// access compared): a log line every two seconds, or, on a
// terminal (live), a line redrawn in place. A ticker reports while one long
// statement runs.
type dryProgress struct {
	log   zerolog.Logger
	live  io.Writer
	start time.Time
	stop  chan struct{}
	ended chan struct{} // nil until begin

	mu          sync.Mutex
	last        time.Time
	step        string
	done, total int  // families applied, and to apply
	drawn       bool // a live line is on screen
}

// newDryProgress is the progress of a dry run that started at start;
// begin starts its reports.
func newDryProgress(log zerolog.Logger, live io.Writer, start time.Time) *dryProgress {
	return &dryProgress{log: log, live: live, start: start, last: start, step: "plan", stop: make(chan struct{})}
}

// begin reports, when due, every quarter of a second until finish.
func (p *dryProgress) begin() {
	p.ended = make(chan struct{})
	go func() {
		defer close(p.ended)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case now := <-t.C:
				p.report(now)
			}
		}
	}()
}

// phase starts a phase over total families.
func (p *dryProgress) phase(step string, total int) {
	p.mu.Lock()
	p.step, p.total = step, total
	p.mu.Unlock()
}

// families counts n more families applied.
func (p *dryProgress) families(n int) {
	p.mu.Lock()
	p.done += n
	p.mu.Unlock()
}

// report says where the dry run is at now, when a report is due.
func (p *dryProgress) report(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	every := 2 * time.Second
	if p.live != nil {
		every = 500 * time.Millisecond
	}
	if now.Sub(p.start) < 2*time.Second || now.Sub(p.last) < every {
		return
	}
	p.last = now
	pct := 0.0 // planning and preparing: none applied yet
	switch {
	case p.step == "compare" || p.step == "apply" && p.total == 0:
		pct = 100
	case p.step == "apply":
		pct = 100 * float64(p.done) / float64(p.total)
	}
	elapsed := now.Sub(p.start)
	if p.live != nil {
		fmt.Fprintf(p.live, "\rdry run: %s, %3.0f%%  %d/%d families  %s   ", p.step, pct, p.done, p.total, elapsed.Round(time.Second))
		p.drawn = true
		return
	}
	p.log.Info().Str("phase", p.step).Int("families_done", p.done).Int("families", p.total).
		Float64("percent", math.Round(pct)).Int64("elapsed_ms", elapsed.Milliseconds()).Msg("dry run progress")
}

// finish stops the reports and ends a live line.
func (p *dryProgress) finish() {
	if p.ended != nil {
		close(p.stop)
		<-p.ended
	}
	if p.drawn {
		fmt.Fprintln(p.live)
	}
}

// summarize compares the two snapshots: pairs gaining and losing access,
// by object and levels, with samples.
func summarize(ctx context.Context, tx pgx.Tx, im *DryRunReport) error {
	var err error
	if im.PairsBefore, err = access.CompareSnapshots(ctx, tx); err != nil {
		return err
	}
	counts, err := access.LevelChanges(ctx, tx)
	if err != nil {
		return err
	}
	byObject := map[string]*DryRunObject{}
	var order []string
	for _, c := range counts {
		if c.Deleted {
			im.LostWithDeleted += c.Pairs
			continue
		}
		oi := byObject[c.Object]
		if oi == nil {
			oi = &DryRunObject{Object: c.Object}
			byObject[c.Object] = oi
			order = append(order, c.Object)
		}
		oi.Changes = append(oi.Changes, LevelChange{Before: c.Before, After: c.After, Pairs: c.Pairs})
		if c.After > c.Before {
			oi.Gained += c.Pairs
			im.Gained += c.Pairs
		} else {
			oi.Lost += c.Pairs
			im.Lost += c.Pairs
		}
	}
	for _, o := range order {
		oi := byObject[o]
		if oi.GainSamples, err = access.PairChanges(ctx, tx, o, true, samplesPerObject); err != nil {
			return err
		}
		if oi.LossSamples, err = access.PairChanges(ctx, tx, o, false, samplesPerObject); err != nil {
			return err
		}
		im.Objects = append(im.Objects, *oi)
	}
	return nil
}
