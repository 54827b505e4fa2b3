// Package engine runs recalculations: it loads the stored configuration,
// rebuilds the group closure, splits the records into family chunks, computes
// each chunk's share rows on a worker pool and writes them with COPY.
package engine

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/grants"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/workers"
)

// Options tune a run.
type Options struct {
	Workers   int // chunks computed at once
	ChunkSize int // records per chunk, whole families kept together
}

// Report says what a run did.
type Report struct {
	Records   int64         `json:"records"`
	ShareRows int64         `json:"share_rows"`
	Chunks    int           `json:"chunks"`
	Duration  time.Duration `json:"duration_ns"`
}

// Full recomputes every materialized table from the stored model and swaps
// the result in atomically: readers see the old access until it commits.
// It holds the model lock throughout, so imports wait for it.
func Full(ctx context.Context, pool *pgxpool.Pool, opt Options, log zerolog.Logger) (*Report, error) {
	start := time.Now()
	release, err := locks.Hold(ctx, pool, locks.Model)
	if err != nil {
		return nil, err
	}
	defer release()

	cfg, err := sharetable.LoadConfig(ctx, pool, "model_section")
	if err != nil {
		return nil, err
	}
	ix, err := cfg.Validate()
	if err != nil {
		return nil, fmt.Errorf("stored model is invalid (re-import it): %w", err)
	}
	org := grants.NewOrg(ix)
	var highWater int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM recalc.change`).Scan(&highWater); err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	var dict *sharetable.Dict
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		users := make([]string, len(ix.Config.Users))
		for i, u := range ix.Config.Users {
			users[i] = u.ID
		}
		var keys []string
		for _, g := range org.Grantees() {
			keys = append(keys, g.String())
		}
		dict, err = sharetable.EnsureDict(ctx, tx, users, keys)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := sharetable.PrepareFull(ctx, pool); err != nil {
		return nil, err
	}
	ranges, err := sharetable.RootRanges(ctx, pool, opt.ChunkSize)
	if err != nil {
		return nil, err
	}
	log.Info().Int("chunks", len(ranges)).Int("workers", opt.Workers).Msg("full recalculation started")
	var records, shareRows atomic.Int64
	lastLog := time.Now()
	err = workers.Run(ctx, opt.Workers, len(ranges), func(ctx context.Context, i int) error {
		in, err := sharetable.LoadFamilies(ctx, pool, org, ranges[i][0], ranges[i][1])
		if err != nil {
			return err
		}
		rows := org.Compute(in)
		n, err := sharetable.CopyRows(ctx, pool, rows, dict)
		if err != nil {
			return fmt.Errorf("chunk %d (roots %q..%q): %w", i, ranges[i][0], ranges[i][1], err)
		}
		records.Add(int64(len(in.Records)))
		shareRows.Add(n)
		return nil
	}, func(done, total int) {
		if time.Since(lastLog) > 2*time.Second || done == total {
			lastLog = time.Now()
			el := time.Since(start).Seconds()
			log.Info().Int("chunks_done", done).Int("chunks", total).
				Str("percent", fmt.Sprintf("%.0f", 100*float64(done)/float64(total))).
				Int64("records", records.Load()).Int64("share_rows", shareRows.Load()).
				Float64("records_per_s", float64(records.Load())/max(el, 1e-9)).Msg("progress")
		}
	})
	if err != nil {
		return nil, err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := sharetable.WriteConfig(ctx, tx, org, dict); err != nil {
			return err
		}
		if err := sharetable.SwapFull(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM recalc.change WHERE seq <= $1`, highWater); err != nil {
			return fmt.Errorf("clear change log: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep := &Report{Records: records.Load(), ShareRows: shareRows.Load(), Chunks: len(ranges), Duration: time.Since(start)}
	log.Info().Int64("records", rep.Records).Int64("share_rows", rep.ShareRows).Dur("duration", rep.Duration).
		Msg("full recalculation done")
	return rep, nil
}
