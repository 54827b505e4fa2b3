// Package workers works the chunks of a job: a bounded pool of goroutines
// (an errgroup with a limit) claims chunks from recalc.chunk with FOR UPDATE
// SKIP LOCKED, each in its own transaction with a lock timeout, and retries
// a chunk with capped, jittered backoff when it cannot get its row locks.
// Any number of processes can run a pool on the same job. It also logs
// progress.
package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Options tune a pool.
type Options struct {
	Workers     int           // chunks worked at once by this process
	LockTimeout time.Duration // how long a chunk waits for a row lock
	Retries     int           // retries of a chunk on lock timeout, deadlock or serialization failure
	// Chunks is the job's number of chunks, when known: no more workers
	// start than that, so a small job does not open a connection for each.
	Chunks int
	// Nice makes a worker rest after each chunk Nice times as long as the
	// chunk took, leaving the CPUs and the disk to the application
	// meanwhile: a job then takes about 1+Nice times as long (gh-ost's
	// nice ratio). 0: no rest.
	Nice float64
	// Contended, when set, is told of each lock timeout, deadlock or
	// serialization failure of a chunk, and whether the chunk is retried.
	Contended func(err error, retry bool)
	// Paused, when set, is asked in each chunk's transaction, once the
	// chunk is claimed and before it is worked, whether the job is paused:
	// then the chunk is let go and the worker stops (Run: ErrPaused).
	Paused func(ctx context.Context, tx pgx.Tx) (bool, error)
}

// ErrPaused is Run's report that its workers stopped because the job is
// paused (Options.Paused), the chunks left pending: no failure.
var ErrPaused = errors.New("the job is paused while calculation is deferred")

// Do computes and writes one claimed chunk inside tx.
type Do func(ctx context.Context, tx pgx.Tx, c *queue.Chunk) (*queue.ChunkStats, error)

// Run works the job's chunks until none is left to claim. The first error
// stops the pool and is returned. A worker that finds the job paused stops
// and lets the others end their chunks; Run then returns ErrPaused.
func Run(ctx context.Context, pool *pgxpool.Pool, job int64, opt Options, do Do, log zerolog.Logger) error {
	n := max(opt.Workers, 1)
	if opt.Chunks > 0 {
		n = min(n, opt.Chunks)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(n)
	c := &crew{}
	c.working.Store(int32(n))
	for i := 0; i < n; i++ {
		g.Go(func() error { return work(gctx, pool, job, opt, do, log, c) })
	}
	if err := g.Wait(); err != nil || !c.paused.Load() {
		return err
	}
	return ErrPaused
}

// crew is what a job's workers in this process share.
type crew struct {
	working atomic.Int32 // workers not yet returned
	refused atomic.Bool  // a worker was refused a connection, and said so
	paused  atomic.Bool  // a worker found the job paused
}

// work runs chunks until none is left to claim. A worker that the server
// refuses a connection (too many clients: --workers past what
// max_connections or the role's CONNECTION LIMIT leaves, or a burst of
// workers connecting at once, each attempt counting) stops and leaves the
// chunks to the others. The last one tries again with backoff, --retries
// times, then fails the job saying what to do.
func work(ctx context.Context, pool *pgxpool.Pool, job int64, opt Options, do Do, log zerolog.Logger, c *crew) error {
	refusals := 0
	for {
		start := time.Now()
		claimed, err := runChunk(ctx, pool, job, opt, do, log)
		if errors.Is(err, ErrPaused) {
			c.paused.Store(true)
			c.working.Add(-1)
			return nil
		}
		if err != nil && pg.IsTooManyConnections(err) && ctx.Err() == nil {
			if !c.refused.Swap(true) { // once a job: each refused worker would say the same
				log.Warn().Int64("job", job).Err(err).Msg("the server refused a worker a connection: the others go on (lower --workers, or raise max_connections)")
			}
			if c.working.Add(-1) > 0 {
				return nil
			}
			if refusals >= opt.Retries {
				return fmt.Errorf("%w: the server takes no more connections: lower --workers or free connections (max_connections), then `recalc run` resumes the job", err)
			}
			c.working.Add(1) // the last: it goes on after a pause
			select {
			case <-ctx.Done():
				c.working.Add(-1)
				return ctx.Err()
			case <-time.After(Backoff(refusals + 2)):
			}
			refusals++
			continue
		}
		if err != nil || !claimed {
			c.working.Add(-1)
			return err
		}
		if opt.Nice > 0 {
			select {
			case <-ctx.Done():
				c.working.Add(-1)
				return ctx.Err()
			case <-time.After(time.Duration(opt.Nice * float64(time.Since(start)))):
			}
		}
	}
}

// ID names this process on the chunks it completes and the jobs it
// heartbeats: host:pid.
func ID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// runChunk claims one chunk and completes it in one transaction: claim, do,
// mark done. It retries with capped, jittered backoff when the chunk cannot
// get its row locks. A paused job's chunk is let go: ErrPaused.
func runChunk(ctx context.Context, pool *pgxpool.Pool, job int64, opt Options, do Do, log zerolog.Logger) (bool, error) {
	for attempt := 0; ; attempt++ {
		claimed, n := false, -1
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := locks.SetTimeout(ctx, tx, opt.LockTimeout); err != nil {
				return err
			}
			c, err := queue.Claim(ctx, tx, job)
			if err != nil || c == nil {
				return err
			}
			claimed, n = true, c.N
			if opt.Paused != nil {
				paused, err := opt.Paused(ctx, tx)
				if err != nil {
					return err
				}
				if paused {
					return ErrPaused
				}
			}
			st, err := do(ctx, tx, c)
			if err != nil {
				return err
			}
			return queue.Complete(ctx, tx, job, c.N, st, ID())
		})
		if err == nil || errors.Is(err, ErrPaused) {
			return claimed, err
		}
		if !pg.IsRetryable(err) || ctx.Err() != nil {
			if n < 0 { // no chunk claimed: the claim, or the connection, failed
				return false, fmt.Errorf("claim a chunk: %w", err)
			}
			return false, fmt.Errorf("chunk %d: %w", n, err)
		}
		if opt.Contended != nil {
			opt.Contended(err, attempt < opt.Retries)
		}
		if attempt >= opt.Retries {
			return false, fmt.Errorf("chunk %d: UNABLE_TO_LOCK_ROW: could not lock the rows of its families within %s, %d attempts: %w",
				n, opt.LockTimeout, attempt+1, err)
		}
		wait := Backoff(attempt)
		log.Warn().Int64("job", job).Int("chunk", n).Int("attempt", attempt+1).Int64("backoff_ms", wait.Milliseconds()).Err(err).Msg("chunk retry")
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Backoff is how long to wait before retry attempt+1: doubling from 50 ms,
// capped at 2 s, jittered over its upper half. Any count of attempts is
// fine: a watch that fails for hours keeps counting.
func Backoff(attempt int) time.Duration {
	wait := min(50*time.Millisecond<<min(max(attempt, 0), 6), 2*time.Second)
	return wait/2 + rand.N(wait/2+1)
}

// Heartbeat marks job as worked on by this process now, before it
// returns, and every queue.HeartbeatEvery until stopped, so `recalc status`
// can tell a job that no process works on (interrupted) from a running one.
// The first beat's connection is back in the pool when the workers start.
func Heartbeat(ctx context.Context, pool *pgxpool.Pool, job int64, log zerolog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	beat := func() {
		if err := queue.Heartbeat(ctx, pool, job, ID()); err != nil && ctx.Err() == nil {
			log.Warn().Int64("job", job).Err(err).Msg("heartbeat")
		}
	}
	beat()
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(queue.HeartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			beat()
		}
	}()
	return func() { cancel(); <-finished }
}

// Progress reports the job's progress until stopped: a JSON log line
// every two seconds, and, when live is set (a terminal), a line redrawn in
// place every half second with percent, rate and ETA.
func Progress(ctx context.Context, pool *pgxpool.Pool, job int64, chunks int, log zerolog.Logger, live io.Writer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		every := 2 * time.Second
		if live != nil {
			every = 500 * time.Millisecond
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			done, records, err := queue.Progress(ctx, pool, job)
			if err != nil || chunks == 0 {
				continue
			}
			el := time.Since(start).Seconds()
			pct := 100 * float64(done) / float64(chunks)
			rate := float64(records) / max(el, 1e-9)
			var eta time.Duration
			if done > 0 {
				eta = time.Duration(el / float64(done) * float64(chunks-done) * float64(time.Second)).Round(time.Second)
			}
			if live != nil {
				fmt.Fprintf(live, "\rjob %d: %3.0f%%  %d/%d chunks  %d records  %.0f records/s  ETA %s   ", job, pct, done, chunks, records, rate, eta)
				continue
			}
			log.Info().Int64("job", job).Int("chunks_done", done).Int("chunks", chunks).Int("percent", int(pct+0.5)).
				Int64("records", records).Float64("records_per_s", rate).Int64("eta_ms", eta.Milliseconds()).Msg("progress")
		}
	}()
	return func() {
		cancel()
		<-finished
		if live != nil && chunks > 0 {
			fmt.Fprintln(live)
		}
	}
}
