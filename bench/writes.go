package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// WriteLoad is the application's write latency while something runs
// beside it: writeClients connections together commit writeRate
// single-record updates a second, as plain SQL on recalc.record (the table
// an attached table's capture writes).
type WriteLoad struct {
	During  string  `json:"during"`
	Writes  int     `json:"writes"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	Over100 int     `json:"over_100ms"`
	// RowLockWaits counts the samples, one every 5 ms, that found a writer
	// waiting for a row lock (a tuple or transaction lock): the waits a
	// job's locks would cause, apart from CPU and I/O contention.
	RowLockWaits int `json:"row_lock_wait_samples"`
	// LockWaits counts those that found a writer waiting for any lock,
	// such as the one NOTIFY takes at commit (object 0 of pg_database),
	// which serializes the commits of every notifying transaction.
	LockWaits int     `json:"lock_wait_samples"`
	Seconds   float64 `json:"s"`     // how long the writes ran
	JobS      float64 `json:"job_s"` // how long the job beside them ran
	Achieved  float64 `json:"achieved_per_s"`
}

const (
	writeClients = 4
	writeRate    = 150 // per second, all clients together
)

// writeLatency measures the application's writes with no job running, then
// during a full recalculation swapping in new tables, then during one in
// place, then during an incremental job that removes the ~1% rule the
// incremental cases added (it runs after them). Between
// the phases a `recalc run` consumes the writes' changes, untimed.
func writeLatency(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool, baseline time.Duration) ([]WriteLoad, error) {
	var ids []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(id) FROM (
		SELECT id FROM recalc.record TABLESAMPLE SYSTEM (5) REPEATABLE (3) LIMIT 20000) s`).Scan(&ids); err != nil || len(ids) == 0 {
		return nil, fmt.Errorf("pick records to write: %d: %w", len(ids), err)
	}
	drain := func() error {
		_, err := rc.run(ctx, "run", "--workers", fmt.Sprint(cfg.Workers))
		return err
	}
	phases := []struct {
		during string
		job    func() error // nil: the writes run for baseline
	}{
		{"no job", nil},
		{"full recalculation swapping new tables in (run --full --in-place=false)", func() error {
			_, err := rc.run(ctx, "run", "--full", "--in-place=false", "--workers", fmt.Sprint(cfg.Workers))
			return err
		}},
		{"full recalculation in place (run --full)", func() error {
			_, err := rc.run(ctx, "run", "--full", "--workers", fmt.Sprint(cfg.Workers))
			return err
		}},
		{"rule change job (the ~1% rule removed)", func() error {
			rules, err := loadSection(ctx, pool, "rules")
			if err != nil {
				return err
			}
			kept := slices.DeleteFunc(rules, func(r map[string]any) bool { return r["id"] == "bench_rule" })
			if len(kept) == len(rules) {
				return errSkip("no bench_rule to remove")
			}
			if err := importSections(ctx, rc, cfg.Dir, map[string]section{"rules": kept}); err != nil {
				return err
			}
			return drain()
		}},
	}
	var out []WriteLoad
	for i, ph := range phases {
		if err := drain(); err != nil {
			return nil, err
		}
		cfg.logf("  application writes, %s", ph.during)
		wl, err := writesDuring(ctx, pool, ids, int64(i), baseline, ph.job)
		var skip errSkip
		if errors.As(err, &skip) {
			cfg.logf("  skipped: %v", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("writes during %s: %w", ph.during, err)
		}
		wl.During = ph.during
		out = append(out, *wl)
	}
	return out, drain()
}

// writesDuring paces the clients' updates until job returns (or for d when
// job is nil) and summarizes their latencies.
func writesDuring(ctx context.Context, pool *pgxpool.Pool, ids []string, phase int64, d time.Duration, job func() error) (*WriteLoad, error) {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	errs := make([]error, writeClients+1)
	pids := make([]int32, writeClients)
	var ready sync.WaitGroup
	ready.Add(writeClients)
	start := time.Now()
	for c := range writeClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.ConnectConfig(wctx, pool.Config().ConnConfig)
			if err != nil {
				errs[c] = err
				ready.Done()
				return
			}
			defer conn.Close(ctx)
			pids[c] = int32(conn.PgConn().PID())
			ready.Done()
			tick := time.NewTicker(writeClients * time.Second / writeRate)
			defer tick.Stop()
			for n := c; ; n += writeClients {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
				}
				t := time.Now()
				_, err := conn.Exec(wctx, `UPDATE recalc.record SET fields = fields || jsonb_build_object('bench_touch', $1::bigint) WHERE id = $2`,
					phase<<32|int64(n), ids[n%len(ids)])
				if wctx.Err() != nil {
					return
				}
				if err != nil {
					errs[c] = err
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t))
				mu.Unlock()
			}
		}()
	}
	wl := &WriteLoad{}
	ready.Wait()
	// The clients and the sampler have connections of their own: the job
	// may need the pool's.
	sampler, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	if err != nil {
		stop()
		wg.Wait()
		return nil, err
	}
	defer sampler.Close(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			var rows, all int
			err := sampler.QueryRow(wctx, `SELECT count(*) FILTER (WHERE locktype IN ('tuple', 'transactionid')), count(*)
				FROM pg_locks WHERE NOT granted AND pid = ANY($1)`, pids).Scan(&rows, &all)
			if wctx.Err() != nil {
				return
			}
			if err != nil {
				errs[writeClients] = err
				return
			}
			wl.RowLockWaits += rows
			wl.LockWaits += all
		}
	}()
	var jobErr error
	if job == nil {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	} else {
		jobErr = job()
		wl.JobS = time.Since(start).Seconds()
	}
	stop()
	wg.Wait()
	wl.Seconds = time.Since(start).Seconds()
	if err := errors.Join(append(errs, jobErr, ctx.Err())...); err != nil {
		return nil, err
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("no write completed")
	}
	wl.Writes, wl.Achieved = len(lat), float64(len(lat))/wl.Seconds
	wl.P50ms, wl.P99ms = percentiles(lat)
	wl.MaxMs = float64(lat[len(lat)-1].Microseconds()) / 1000
	for _, l := range lat {
		if l > 100*time.Millisecond {
			wl.Over100++
		}
	}
	return wl, nil
}

// writeTargets: during a job, the writes' p99 is at most twice the no-job
// p99, and none waits over 100 ms.
func writeTargets(w []WriteLoad) []TargetLine {
	if len(w) == 0 || w[0].During != "no job" {
		return nil
	}
	var out []TargetLine
	for _, l := range w[1:] {
		out = append(out, TargetLine{"application writes during " + l.During + ", p99 (max)",
			fmt.Sprintf("%.1f ms (%.0f ms) vs %.1f ms with no job; %d over 100 ms; %d row-lock waits", l.P99ms, l.MaxMs, w[0].P99ms, l.Over100, l.RowLockWaits),
			"≤ 2× no-job p99, none over 100 ms", l.P99ms <= 2*w[0].P99ms && l.Over100 == 0})
	}
	return out
}
