// Package watch keeps the share tables current without a scheduler: it
// LISTENs for record writes and imports, waits until they go quiet
// (debounce, bounded by a maximum wait), and runs an incremental
// recalculation. It polls as well, in case a notification was missed, and
// stops gracefully when its context ends; a job it interrupts stays
// resumable, and the next start resumes it.
package watch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/rs/zerolog"
)

// Options tune the loop.
type Options struct {
	Debounce time.Duration // quiet time after the last change before a run
	MaxWait  time.Duration // longest a change waits while changes keep coming
	Poll     time.Duration // a run at least this often, notification or not
}

// Run calls run once at start (resuming any unfinished job and catching
// up), then after every burst of changes, until ctx ends. A failing run is
// logged and retried at the next change or poll.
func Run(ctx context.Context, pool *pgxpool.Pool, opt Options, run func(context.Context) error, log zerolog.Logger) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listening connection: %w", err)
	}
	defer conn.Release()
	if err := pg.Listen(ctx, conn, changes.Channel); err != nil {
		return err
	}
	log.Info().Str("channel", changes.Channel).Dur("debounce", opt.Debounce).Dur("max_wait", opt.MaxWait).
		Dur("poll", opt.Poll).Msg("watching for changes")
	for {
		if err := run(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			log.Error().Err(err).Msg("recalculation failed; retrying at the next change or poll")
		}
		// Wait for a change, or the poll interval.
		if err := wait(ctx, conn.Conn().WaitForNotification, opt.Poll); err != nil {
			if ctx.Err() != nil {
				break
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("wait for changes: %w", err)
			}
			continue // poll
		}
		// Debounce: until quiet for Debounce, at most MaxWait.
		deadline := time.Now().Add(opt.MaxWait)
		for time.Now().Before(deadline) {
			err := wait(ctx, conn.Conn().WaitForNotification, min(opt.Debounce, time.Until(deadline)))
			if err != nil {
				break
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	log.Info().Msg("watch stopped")
	return nil
}

func wait[N any](ctx context.Context, next func(context.Context) (N, error), d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := next(ctx)
	return err
}
