// Package watch keeps the share tables current without a scheduler: it
// LISTENs for record writes, writes to attached tables and imports and,
// after a short debounce that gathers the commits of a burst (bounded by a
// maximum wait), calls the step that materializes them (engine.Live.Step, in `recalc watch`). It
// steps at start to catch up, polls in case a notification was missed, and
// retries a failed step with backoff. Between steps it also reads the
// attached sources' catalog stamp (changes.CatalogStamp) every
// Options.Catalog, and steps when it moves: a catalog change that alters
// what an attached source shows writes no row and sends no notification. It never dies of a lost connection:
// it reconnects with backoff and steps again, until its context ends; a
// job it interrupts stays resumable, and the next step resumes it.
package watch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/workers"
)

// Options tune the loop.
type Options struct {
	Debounce time.Duration // quiet time after the last change before a step
	MaxWait  time.Duration // longest a change waits while changes keep coming
	Poll     time.Duration // a step at least this often, notification or not
	// FastRecords is the most records a batch may name for the step's fast
	// path (engine.Live); 0 sends every batch through a job.
	FastRecords int
	// Catalog is how often the attached sources' catalog stamp is read
	// between steps: 0 means DefaultCatalog, a negative value never.
	Catalog time.Duration
}

// catalogRest is how many times what a step took the watch waits after it
// before it reads the catalog stamp again (at least Options.Catalog): a
// stamp that keeps moving, such as a loop of GRANTs on an attached table,
// each of which changes its fingerprint and costs a step that reads the
// source again whole, keeps the watch stepping for it at most a fifth of
// the time.
const catalogRest = 4

// DefaultCatalog is the default Options.Catalog: a catalog change reaches
// the share tables in about that, plus the job that reads the source again.
// Each read of the stamp costs the server well under a millisecond with a
// few tables attached (docs/operations.md).
const DefaultCatalog = 250 * time.Millisecond

// ErrStop, wrapped in a step's error, ends the watch: Run returns that
// error. A step returns it when no retry can succeed, such as a schema a
// newer recalc upgraded.
var ErrStop = errors.New("the watch cannot go on")

// Run calls step at start, then after every burst of changes, until ctx
// ends, and then returns nil. A failing step is logged and retried with
// backoff (or at the next change), unless its error wraps ErrStop, which
// Run returns; a lost listening connection is
// reconnected with backoff.
func Run(ctx context.Context, pool *pgxpool.Pool, opt Options, step func(context.Context) error, log zerolog.Logger) error {
	if opt.Catalog == 0 {
		opt.Catalog = DefaultCatalog
	}
	log.Info().Str("channel", changes.Channel).Dur("debounce_ms", opt.Debounce).Dur("max_wait_ms", opt.MaxWait).
		Dur("poll_ms", opt.Poll).Dur("catalog_poll_ms", opt.Catalog).Msg("watching for changes")
	for attempt := 0; ctx.Err() == nil; attempt++ {
		listened, err := session(ctx, pool, opt, step, log, attempt)
		if errors.Is(err, ErrStop) {
			return err
		}
		if ctx.Err() != nil {
			break
		}
		if listened {
			attempt = 0
			// A lost connection usually means they all are (a restart, a
			// network cut): start the next steps on new ones.
			pool.Reset()
		}
		wait := workers.Backoff(attempt)
		ev, msg := Reconnecting(log, err)
		ev.Int("attempt", attempt+1).Dur("backoff_ms", wait).Msg(msg)
		sleep(ctx, wait)
	}
	log.Info().Msg("watch stopped")
	return nil
}

// Reconnecting starts the log entry of a follower (the watch, `recalc
// changes --follow`) about to retry after err: a lost connection at level
// warn, or one the server refuses (pg.ConnectRefused) at level error with
// its SQLSTATE, or one the client refuses for its own settings
// (pg.ConnectMisconfigured) at level error, and msg, the entry's message. A database dropped (or being
// restored), a role's password rotated before ~/.pgpass: a service is
// restarted into the same refusal, so the follower waits, and comes back
// once it is fixed.
func Reconnecting(log zerolog.Logger, err error) (ev *zerolog.Event, msg string) {
	if pe := pg.ConnectRefused(err); pe != nil {
		return log.Error().Err(err).Str("sqlstate", pe.Code),
			"the server refuses the connection: create or restore the database, or fix the role, its password or its CONNECT right; retrying until it accepts"
	}
	if pg.ConnectMisconfigured(err) != nil {
		return log.Error().Err(err),
			"the client refuses the connection for its settings: fix require_auth, channel_binding, sslcertmode or the password; retrying until it connects"
	}
	return log.Warn().Err(err), "lost the database connection; reconnecting"
}

// session listens on a connection of its own and steps after changes until
// ctx ends or the connection fails. It reports whether it got to listen.
// tries counts the attempts to connect since the connection was lost (0 at
// the start).
func session(ctx context.Context, pool *pgxpool.Pool, opt Options, step func(context.Context) error, log zerolog.Logger, tries int) (bool, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire listening connection: %w", err)
	}
	defer conn.Release()
	if err := pg.Listen(ctx, conn, changes.Channel); err != nil {
		_ = conn.Conn().Close(context.Background()) // the pool then drops it
		return false, err
	}
	if tries > 0 {
		log.Info().Int("attempts", tries).Msg("reconnected: listening for changes again")
	}
	next := func(ctx context.Context, d time.Duration) error {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		_, err := conn.Conn().WaitForNotification(ctx)
		return err
	}
	cat := &catalog{every: opt.Catalog, q: pool, log: log}
	cat.moved(ctx) // the stamp the first step starts from
	failures := 0
	for {
		began := time.Now()
		serr := step(ctx)
		cat.stepped(time.Since(began))
		switch {
		case errors.Is(serr, ErrStop):
			return true, serr
		case serr != nil && ctx.Err() != nil:
			log.Info().Err(serr).Msg("step interrupted") // says which job, if one was left unfinished
		case serr != nil:
			failures++
			log.Error().Err(serr).Int("failures", failures).Msg("recalculation failed; retrying")
		default:
			failures = 0
		}
		wait := opt.Poll
		if failures > 0 {
			wait = min(wait, workers.Backoff(failures-1))
		}
		err := cat.wait(ctx, wait, next)
		switch {
		case ctx.Err() != nil:
			return true, nil
		case errors.Is(err, context.DeadlineExceeded):
			continue // poll or retry
		case err != nil || conn.Conn().IsClosed():
			_ = conn.Conn().Close(context.Background())
			return true, fmt.Errorf("wait for changes: %w", err)
		}
		debounce(ctx, opt, next)
	}
}

// catalog reads the attached sources' catalog stamp (changes.CatalogStamp)
// between steps, on a connection of the pool: the listening one stays
// idle in its LISTEN, as pg_stat_activity shows it.
type catalog struct {
	every  time.Duration // how often; negative: never
	q      pg.Querier
	log    zerolog.Logger
	stamp  string    // the stamp last read
	failed bool      // the last read failed (and was logged)
	rest   time.Time // no read before: catalogRest times the last step after it
}

// stepped records that a step, which took took, just ended.
func (c *catalog) stepped(took time.Duration) { c.rest = time.Now().Add(catalogRest * took) }

// wait waits up to d for a notification with next, reading the stamp
// every c.every meanwhile, the first time not before c.rest (so after a
// long step the stamp waits for the poll, d, at most). It returns nil, as
// for a notification, as soon as the stamp moved, and next's
// context.DeadlineExceeded once d passed.
func (c *catalog) wait(ctx context.Context, d time.Duration, next func(context.Context, time.Duration) error) error {
	if c.every < 0 {
		return next(ctx, d)
	}
	deadline := time.Now().Add(d)
	for {
		err := next(ctx, min(time.Until(deadline), max(c.every, time.Until(c.rest))))
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || time.Until(deadline) <= 0 {
			return err
		}
		if c.moved(ctx) {
			return nil
		}
	}
}

// moved reads the stamp and reports whether it differs from the last one
// read. A failed read is no move: it is logged once, and the poll still
// steps (a lost connection then shows at the next wait).
func (c *catalog) moved(ctx context.Context) bool {
	s, err := changes.CatalogStamp(ctx, c.q)
	switch {
	case err != nil && ctx.Err() == nil:
		if !c.failed {
			c.log.Warn().Err(err).Msg("could not read the attached sources' catalog stamp: catalog changes wait for --poll")
		}
		c.failed = true
		return false
	case err != nil:
		return false
	}
	c.failed = false
	if s == c.stamp {
		return false
	}
	c.stamp = s
	return true
}

// debounce waits until no notification came for opt.Debounce, at most
// opt.MaxWait. A lost connection ends it early: the step runs, and the
// next wait reports the loss.
func debounce(ctx context.Context, opt Options, next func(context.Context, time.Duration) error) {
	deadline := time.Now().Add(opt.MaxWait)
	for left := time.Until(deadline); left > 0 && ctx.Err() == nil; left = time.Until(deadline) {
		if err := next(ctx, min(opt.Debounce, left)); err != nil {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
