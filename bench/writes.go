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
// job is nil) and summarizes their latencies. The clients and the lock
// sampler have connections of their own: the job may need the pool's.
func writesDuring(ctx context.Context, pool *pgxpool.Pool, ids []string, phase int64, d time.Duration, job func() error) (*WriteLoad, error) {
	conns := make([]*pgx.Conn, writeClients+1) // the clients', then the sampler's
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(ctx)
			}
		}
	}()
	pids := make([]int32, writeClients)
	for i := range conns {
		c, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
		if err != nil {
			return nil, err
		}
		conns[i] = c
		if i < writeClients {
			pids[i] = int32(c.PgConn().PID())
		}
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	lats := make([][]time.Duration, writeClients)
	errs := make([]error, writeClients+2)
	wl := &WriteLoad{}
	var wg sync.WaitGroup
	start := time.Now()
	for c := range writeClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats[c], errs[c] = writeLoop(wctx, conns[c], ids, phase, c)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		wl.RowLockWaits, wl.LockWaits, errs[writeClients] = sampleLockWaits(wctx, conns[writeClients], pids)
	}()
	if job == nil {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	} else {
		errs[writeClients+1] = job()
		wl.JobS = time.Since(start).Seconds()
	}
	stop()
	wg.Wait()
	wl.Seconds = time.Since(start).Seconds()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return nil, err
	}
	return wl, wl.summarize(slices.Concat(lats...))
}

// writeLoop is client c of writesDuring: one update every writeClients
// ticks of the shared rate, until ctx ends. It returns the latencies.
func writeLoop(ctx context.Context, conn *pgx.Conn, ids []string, phase int64, c int) ([]time.Duration, error) {
	var lat []time.Duration
	tick := time.NewTicker(writeClients * time.Second / writeRate)
	defer tick.Stop()
	for n := c; ; n += writeClients {
		select {
		case <-ctx.Done():
			return lat, nil
		case <-tick.C:
		}
		t := time.Now()
		_, err := conn.Exec(ctx, `UPDATE recalc.record SET fields = fields || jsonb_build_object('bench_touch', $1::bigint) WHERE id = $2`,
			phase<<32|int64(n), ids[n%len(ids)])
		if ctx.Err() != nil {
			return lat, nil
		}
		if err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t))
	}
}

// sampleLockWaits counts, every 5 ms until ctx ends, the samples that find
// one of pids waiting for a row lock, and those that find one waiting for
// any lock.
func sampleLockWaits(ctx context.Context, conn *pgx.Conn, pids []int32) (rowWaits, waits int, err error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return rowWaits, waits, nil
		case <-tick.C:
		}
		var rows, all int
		err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE locktype IN ('tuple', 'transactionid')), count(*)
			FROM pg_locks WHERE NOT granted AND pid = ANY($1)`, pids).Scan(&rows, &all)
		if ctx.Err() != nil {
			return rowWaits, waits, nil
		}
		if err != nil {
			return 0, 0, err
		}
		rowWaits += rows
		waits += all
	}
}

// summarize fills in the counts and percentiles of the writes' latencies.
func (wl *WriteLoad) summarize(lat []time.Duration) error {
	if len(lat) == 0 {
		return fmt.Errorf("no write completed")
	}
	wl.Writes, wl.Achieved = len(lat), float64(len(lat))/wl.Seconds
	wl.P50ms, wl.P99ms = percentiles(lat)
	wl.MaxMs = float64(lat[len(lat)-1].Microseconds()) / 1000
	for _, l := range lat {
		if l > 100*time.Millisecond {
			wl.Over100++
		}
	}
	return nil
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
