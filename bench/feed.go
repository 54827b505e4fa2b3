package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/feed"
)

// FeedSwapDiff is the cost of the feed's set-based diff of a full job
// (feed.Diff while staging, feed.Swap at the swap): the live share and
// record tables against staging tables that differ from them in about 1%
// of the records.
type FeedSwapDiff struct {
	Seconds float64 `json:"s"`
	Records int64   `json:"records_told"` // record entries it recorded
	// Ratio is Seconds over the nightly full recalculation's.
	Ratio float64 `json:"ratio_to_nightly_full"`
}

// feedSwapDiff times feed.Diff and feed.Swap in a transaction it rolls back: it builds
// staging tables as a full job leaves them (copies of the live ones,
// indexed like them), changes the level of the share rows of every
// hundredth record, then runs the diff.
func feedSwapDiff(ctx context.Context, pool *pgxpool.Pool, nightlyS float64) (*FeedSwapDiff, error) {
	res := &FeedSwapDiff{}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			SET LOCAL maintenance_work_mem = '256MB';
			DROP TABLE IF EXISTS recalc.acl_share_next, recalc.acl_record_next;
			CREATE TABLE recalc.acl_share_next AS TABLE recalc.acl_share;
			CREATE TABLE recalc.acl_record_next AS TABLE recalc.acl_record;
			UPDATE recalc.acl_share_next SET level = 3 - level WHERE rid % 100 = 0;
			CREATE UNIQUE INDEX ON recalc.acl_share_next (rid, gid, cause);
			CREATE UNIQUE INDEX ON recalc.acl_record_next (rid);
			ANALYZE recalc.acl_share_next, recalc.acl_record_next`); err != nil {
			return fmt.Errorf("build staging copies: %w", err)
		}
		start := time.Now()
		if _, err := feed.Diff(ctx, tx, true); err != nil {
			return err
		}
		if _, err := feed.Swap(ctx, tx, false); err != nil {
			return err
		}
		res.Seconds = time.Since(start).Seconds()
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM recalc.feed_pending WHERE kind = 'record'`).Scan(&res.Records); err != nil {
			return fmt.Errorf("count record entries: %w", err)
		}
		return errRollback
	})
	if err != errRollback {
		return nil, err
	}
	if nightlyS > 0 {
		res.Ratio = res.Seconds / nightlyS
	}
	return res, nil
}

// errRollback ends a measuring transaction without keeping what it did.
var errRollback = errors.New("rolled back on purpose")
