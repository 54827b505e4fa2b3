package workers_test

import (
	"context"
	"math"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/workers"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// TestNiceRests: with Nice, a worker rests after each chunk Nice times as
// long as the chunk took, so a job of chunks that each take 20 ms takes at
// least (1+Nice) x 20 ms a chunk; every chunk is still done once.
func TestNiceRests(t *testing.T) {
	t.Parallel()
	const chunks, work = 4, 20 * time.Millisecond
	for _, nice := range []float64{0, 1.5} {
		pool := testdb.Migrated(t)
		ctx := context.Background()
		var job int64
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			cs := make([]queue.Chunk, chunks)
			for i := range cs {
				cs[i] = queue.Chunk{N: i, Roots: []string{"r"}}
			}
			var err error
			job, err = queue.Create(ctx, tx, &queue.Job{Kind: queue.Incremental, Trigger: "test", Config: []byte("{}"), Plan: []byte("{}")}, cs)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var done atomic.Int32
		do := func(ctx context.Context, tx pgx.Tx, c *queue.Chunk) (*queue.ChunkStats, error) {
			time.Sleep(work)
			done.Add(1)
			return &queue.ChunkStats{}, nil
		}
		start := time.Now()
		if err := workers.Run(ctx, pool, job, workers.Options{Workers: 1, LockTimeout: time.Second, Nice: nice}, do, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if done.Load() != chunks {
			t.Fatalf("nice %v: %d chunks done, want %d", nice, done.Load(), chunks)
		}
		if least := time.Duration(float64(chunks) * (1 + nice) * float64(work)); took < least {
			t.Fatalf("nice %v: %d chunks of %v took %v, less than the %v their rests need", nice, chunks, work, took, least)
		}
	}
}

// TestNoMoreWorkersThanChunks: a job of one chunk is worked by one worker,
// on the pool's idle connection, however many workers are allowed: a small
// job opens no connection for workers that would find nothing to claim.
func TestNoMoreWorkersThanChunks(t *testing.T) {
	t.Parallel()
	pool := testdb.Migrated(t)
	ctx := context.Background()
	var job int64
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
		job, err = queue.Create(ctx, tx, &queue.Job{Kind: queue.Incremental, Trigger: "test", Config: []byte("{}"), Plan: []byte("{}")},
			[]queue.Chunk{{N: 0, Roots: []string{"r"}}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var done atomic.Int32
	do := func(ctx context.Context, tx pgx.Tx, c *queue.Chunk) (*queue.ChunkStats, error) {
		done.Add(1)
		return &queue.ChunkStats{}, nil
	}
	opened := pool.Stat().NewConnsCount()
	if err := workers.Run(ctx, pool, job, workers.Options{Workers: 4, Chunks: 1, LockTimeout: time.Second}, do, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if n := pool.Stat().NewConnsCount() - opened; done.Load() != 1 || n != 0 {
		t.Fatalf("a job of one chunk, 4 workers allowed: %d chunks done, %d connections opened; want 1 done on the idle connection", done.Load(), n)
	}
}

// TestBackoffBounded: the wait before a retry stays between 25 ms and 2 s
// for every count of attempts, however large (a count of 38 or more
// overflowed the shift, and rand.N panicked on the negative wait).
func TestBackoffBounded(t *testing.T) {
	t.Parallel()
	for _, attempt := range []int{-1, 0, 1, 5, 6, 7, 37, 38, 63, 64, 1 << 20, math.MaxInt} {
		for range 20 {
			if w := workers.Backoff(attempt); w < 25*time.Millisecond || w > 2*time.Second {
				t.Fatalf("Backoff(%d) = %v, want between 25ms and 2s", attempt, w)
			}
		}
	}
}

// TestFailEndsOnlyARunningJob: queue.Fail marks a running job failed, and
// leaves a done job done (a finish whose commit's answer was lost did
// commit: marking it failed made the next run finish it again).
func TestFailEndsOnlyARunningJob(t *testing.T) {
	t.Parallel()
	pool := testdb.Migrated(t)
	ctx := context.Background()
	var job int64
	fail := func() bool {
		var marked bool
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) { marked, err = queue.Fail(ctx, tx, job, "boom"); return err }); err != nil {
			t.Fatal(err)
		}
		return marked
	}
	status := func() queue.Status {
		j, err := queue.Get(ctx, pool, job)
		if err != nil {
			t.Fatal(err)
		}
		return j.Status
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
		job, err = queue.Create(ctx, tx, &queue.Job{Kind: queue.Incremental, Trigger: "test", Config: []byte("{}"), Plan: []byte("{}")}, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !fail() || status() != queue.Failed {
		t.Fatalf("Fail of a running job: status %s, want it marked failed", status())
	}
	if err := queue.Resume(ctx, pool, job); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		j, err := queue.Lock(ctx, tx, job)
		if err != nil {
			return err
		}
		return queue.Finish(ctx, tx, j, 0, 0)
	}); err != nil {
		t.Fatal(err)
	}
	if fail() || status() != queue.Done {
		t.Fatalf("Fail of a done job: status %s, want it left done and reported unmarked", status())
	}
}
