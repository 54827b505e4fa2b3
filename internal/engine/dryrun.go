package engine

import (
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

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
	// PairsBefore counts the pairs with access, before, on the records the
	// change touches: the blast-radius guard's denominator.
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
// to access, by doing it: it snapshots the access of the records the plan
// touches, applies the plan in tx, and snapshots again. The caller must roll
// tx back. Deferral is ignored: the impact is what the change means, whenever
// it is recalculated. The time the apply took estimates a real run's.
func DryRun(ctx context.Context, tx pgx.Tx, opt Options) (*DryRunReport, error) {
	opt.ignoreDeferral = true
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
	d, err := prepareDryRun(ctx, tx, pl)
	if err != nil {
		return nil, err
	}
	// The records whose access can change: the recomputed families, records
	// with rows for grantees whose members change, and records whose OWD
	// (or whose users' OWD) changes.
	if err := access.ScopeDryRun(ctx, tx, pl.org, d.roots, d.closure.Grantees()); err != nil {
		return nil, err
	}
	if err := access.SnapshotBefore(ctx, tx); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := d.apply(ctx, tx, pl); err != nil {
		return nil, err
	}
	im.Estimated = time.Since(start)
	// New records join the scope once they have materialized rows.
	if err := access.WidenScope(ctx, tx, d.roots); err != nil {
		return nil, err
	}
	if err := access.SnapshotAfter(ctx, tx); err != nil {
		return nil, err
	}
	return im, summarize(ctx, tx, im)
}

// dryRun is what a dry run applies: the families it recomputes, and the
// closure's difference.
type dryRun struct {
	dict    *sharetable.Dict
	closure *sharetable.ClosureDiff
	roots   []string
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
	if pl.Plan.Full {
		if d.roots, err = sharetable.FamilyRoots(ctx, tx, nil, 0); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// apply writes in tx what a job of the plan would: its families' rows and
// the OWD table, and the closure and the user table.
func (d *dryRun) apply(ctx context.Context, tx pgx.Tx, pl *Planned) error {
	if pl.DoRules {
		for roots := range slices.Chunk(d.roots, familiesPerChunk) {
			if _, err := sharetable.ApplyFamilies(ctx, tx, pl.org, d.dict, roots); err != nil {
				return err
			}
		}
		if err := sharetable.WriteObjects(ctx, tx, pl.org); err != nil {
			return err
		}
	}
	if pl.DoClosure {
		if _, err := d.closure.Apply(ctx, tx); err != nil {
			return err
		}
		if err := sharetable.WriteUsers(ctx, tx, pl.org, d.dict); err != nil {
			return err
		}
	}
	return nil
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
