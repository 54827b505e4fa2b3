package engine

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
)

// VerifyOptions tune a verification.
type VerifyOptions struct {
	Sample int  // verify this many random families; 0 verifies all
	Repair bool // fix what differs
}

// VerifyReport says how the materialized tables differ from a recomputation.
type VerifyReport struct {
	Families       int                    `json:"families_checked"`
	Skipped        int                    `json:"families_skipped_pending"`
	ShareRows      []sharetable.DiffCount `json:"share_rows"`
	RecordRows     int64                  `json:"record_rows_differing"`
	ClosureMissing int64                  `json:"closure_missing"`
	ClosureExtra   int64                  `json:"closure_extra"`
	Repaired       bool                   `json:"repaired"`
}

// Drift reports whether anything differed.
func (r *VerifyReport) Drift() bool {
	return len(r.ShareRows) > 0 || r.RecordRows > 0 || r.ClosureMissing > 0 || r.ClosureExtra > 0
}

// familiesPerChunk bounds one verification transaction.
const familiesPerChunk = 1000

// Verify recomputes families from scratch, from the configuration the
// tables were last computed from, and compares the result with the
// materialized rows, by object and row cause. Families with changes not yet
// recalculated are skipped: they differ by design until the next run. With
// Repair it fixes what differs, under the same row locks as a job.
func Verify(ctx context.Context, pool *pgxpool.Pool, opt VerifyOptions, log zerolog.Logger) (*VerifyReport, error) {
	if job, err := queue.Unfinished(ctx, pool); err != nil || job != nil {
		if err == nil {
			err = fmt.Errorf("job %d is unfinished: run `recalc run` first, then verify", job.ID)
		}
		return nil, err
	}
	var rules, closure []byte
	var pending []string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		if rules, err = store.AppliedConfig(ctx, tx, store.SideRules); err != nil {
			return err
		}
		if closure, err = store.AppliedConfig(ctx, tx, store.SideClosure); err != nil {
			return err
		}
		seen, err := changes.Read(ctx, tx)
		if err != nil {
			return err
		}
		ids, err := changes.Records(ctx, tx, seen.Seqs)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT root_id FROM recalc.record WHERE id = ANY($1) AND root_id IS NOT NULL
			UNION SELECT root_id FROM recalc.acl_record WHERE id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		pending, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read applied state: %w", err)
	}
	if string(rules) == "{}" {
		return nil, fmt.Errorf("nothing has been recalculated yet: run `recalc run`")
	}
	rulesOrg, err := sharing.DecodeOrg(rules)
	if err != nil {
		return nil, err
	}
	closureOrg, err := sharing.DecodeOrg(closure)
	if err != nil {
		return nil, err
	}
	dict, err := sharetable.LoadDict(ctx, pool)
	if err != nil {
		return nil, err
	}
	order, limit := "root_id", "ALL"
	if opt.Sample > 0 {
		order, limit = "random()", fmt.Sprint(opt.Sample)
	}
	rows, err := pool.Query(ctx, `SELECT root_id FROM (SELECT root_id FROM recalc.record UNION SELECT root_id FROM recalc.acl_record) r
		WHERE root_id IS NOT NULL AND root_id <> ALL($1) ORDER BY `+order+` LIMIT `+limit, pending)
	if err != nil {
		return nil, fmt.Errorf("list families: %w", err)
	}
	roots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list families: %w", err)
	}
	rep := &VerifyReport{Families: len(roots), Skipped: len(pending), Repaired: opt.Repair}
	counts := map[[2]string]*sharetable.DiffCount{}
	for lo := 0; lo < len(roots); lo += familiesPerChunk {
		chunk := roots[lo:min(lo+familiesPerChunk, len(roots))]
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var rids []int64
			var err error
			if opt.Repair {
				if err := locks.XactLock(ctx, tx, locks.Model); err != nil {
					return err
				}
				rids, err = sharetable.LockFamilies(ctx, tx, chunk)
			} else {
				rids, err = sharetable.FamilyRIDs(ctx, tx, chunk)
			}
			if err != nil {
				return err
			}
			diff, err := sharetable.DiffFamilies(ctx, tx, rulesOrg, dict, chunk, rids)
			if err != nil {
				return err
			}
			for k, c := range diff.Counts() {
				if counts[k] == nil {
					counts[k] = &sharetable.DiffCount{Object: c.Object, Cause: c.Cause}
				}
				counts[k].Missing += c.Missing
				counts[k].Extra += c.Extra
				counts[k].Wrong += c.Wrong
			}
			rep.RecordRows += diff.RecordRowsDiffer
			if opt.Repair && !diff.Empty() {
				_, err = diff.Apply(ctx, tx)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("verify families: %w", err)
		}
	}
	for _, c := range counts {
		rep.ShareRows = append(rep.ShareRows, *c)
	}
	sort.Slice(rep.ShareRows, func(i, j int) bool {
		a, b := rep.ShareRows[i], rep.ShareRows[j]
		return a.Object < b.Object || a.Object == b.Object && a.Cause < b.Cause
	})
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		diff, err := sharetable.DiffClosureOf(ctx, tx, closureOrg, dict)
		if err != nil {
			return err
		}
		rep.ClosureMissing, rep.ClosureExtra = diff.Missing(), diff.Extra()
		if opt.Repair && rep.ClosureMissing+rep.ClosureExtra > 0 {
			if err := locks.XactLock(ctx, tx, locks.Model); err != nil {
				return err
			}
			_, err = diff.Apply(ctx, tx)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("verify closure: %w", err)
	}
	log.Info().Int("families", rep.Families).Int("skipped_pending", rep.Skipped).Bool("drift", rep.Drift()).
		Bool("repaired", rep.Repaired && rep.Drift()).Msg("verify done")
	return rep, nil
}
