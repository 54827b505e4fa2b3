package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Capture is the cost of capture on an attached table (docs/attach.md):
// single-row INSERTs and COPYs into two identical application tables, side
// by side, one of them attached with `recalc attach`; then what the engine
// takes to absorb and materialize a captured COPY, and how long a
// read-your-writes wait takes after a single-row write to the attached
// table with `recalc watch` running.
type Capture struct {
	Inserts        int     `json:"inserts"`
	PlainInsert    Latency `json:"insert_plain"`
	CapturedInsert Latency `json:"insert_captured"`
	AddedP50ms     float64 `json:"insert_added_p50_ms"` // captured p50 minus plain p50
	// The COPY of CopyRows rows into each table, CopySamples times each,
	// alternating, each in a transaction rolled back after it (the trigger
	// that captures a COPY runs at the end of the statement, before the
	// commit): the medians.
	CopyRows      int     `json:"copy_rows"`
	CopySamples   int     `json:"copy_samples"`
	PlainCopyS    float64 `json:"copy_plain_s"`
	CapturedCopyS float64 `json:"copy_captured_s"`
	CopyAdded     float64 `json:"copy_added"` // captured over plain, minus 1 (0.4: +40%)
	// Then AbsorbRows rows are copied into the attached table and
	// committed, and `recalc run` absorbs and materializes them.
	AbsorbRows int     `json:"absorb_rows"`
	AbsorbRunS float64 `json:"copy_absorb_run_s"`
	WaitFresh  Latency `json:"wait_fresh_attached"`
}

// copySamples is how many times each table takes the timed COPY.
const copySamples = 3

// captureApp is the application's two lead tables: bench_app.lead is
// attached as object lead, bench_app.lead_plain is not.
const captureApp = `
	DROP SCHEMA IF EXISTS bench_app CASCADE;
	CREATE SCHEMA bench_app;
	CREATE TABLE bench_app.lead (id bigint PRIMARY KEY, owner_id text NOT NULL, status text, region text, revenue numeric);
	CREATE TABLE bench_app.lead_plain (LIKE bench_app.lead INCLUDING ALL)`

// captureCost attaches object lead to an application table (its records
// are then that table's rows: the org's leads are gone, so it runs last),
// then times inserts single rows, alternating between the attached and the
// plain table, and COPYs of cfg.CopyRows rows into each (timeCopies); then
// commits a COPY of absorbRows rows into the attached table and times the
// run that absorbs them.
func captureCost(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool, inserts, absorbRows int) (*Capture, error) {
	if _, err := pool.Exec(ctx, captureApp); err != nil {
		return nil, fmt.Errorf("create the application tables: %w", err)
	}
	spec := filepath.Join(cfg.Dir, "attach.json")
	if err := os.WriteFile(spec, []byte(`{"objects": [{"object": "lead", "table": "bench_app.lead", "id": "id",
		"owner": "owner_id", "fields": ["status", "region", "revenue"]}]}`), 0o600); err != nil {
		return nil, err
	}
	defer os.Remove(spec)
	if _, err := rc.run(ctx, "attach", spec); err != nil {
		return nil, err
	}
	var owners []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(id) FROM (SELECT id FROM recalc.acl_user ORDER BY id LIMIT 100) u`).Scan(&owners); err != nil || len(owners) == 0 {
		return nil, fmt.Errorf("read owners: %d: %w", len(owners), err)
	}
	c := &Capture{Inserts: inserts, CopyRows: cfg.CopyRows, CopySamples: copySamples, AbsorbRows: absorbRows}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	var plain, captured []time.Duration
	for i := range inserts {
		for _, t := range []struct {
			table string
			into  *[]time.Duration
		}{{"bench_app.lead", &captured}, {"bench_app.lead_plain", &plain}} {
			start := time.Now()
			if _, err := conn.Exec(ctx, `INSERT INTO `+t.table+` VALUES ($1, $2, 'open', 'emea', 1000)`, int64(i+1), owners[i%len(owners)]); err != nil {
				return nil, fmt.Errorf("insert into %s: %w", t.table, err)
			}
			*t.into = append(*t.into, time.Since(start))
		}
	}
	c.PlainInsert = Latency{Query: "INSERT INTO bench_app.lead_plain VALUES (...)", Samples: inserts}
	c.PlainInsert.P50ms, c.PlainInsert.P99ms = percentiles(plain)
	c.CapturedInsert = Latency{Query: "INSERT INTO bench_app.lead VALUES (...) (attached)", Samples: inserts}
	c.CapturedInsert.P50ms, c.CapturedInsert.P99ms = percentiles(captured)
	c.AddedP50ms = c.CapturedInsert.P50ms - c.PlainInsert.P50ms
	if err := timeCopies(ctx, conn, c, owners, inserts+1); err != nil {
		return nil, err
	}
	cfg.logf("capture: INSERT p50 %.3f ms plain, %.3f ms captured; COPY of %d rows (median of %d) %.2f s plain, %.2f s captured",
		c.PlainInsert.P50ms, c.CapturedInsert.P50ms, c.CopyRows, c.CopySamples, c.PlainCopyS, c.CapturedCopyS)
	if _, err := copyLeads(ctx, conn.Conn(), "lead", c.AbsorbRows, inserts+1, owners); err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := rc.run(ctx, "run"); err != nil {
		return nil, err
	}
	c.AbsorbRunS = time.Since(start).Seconds()
	if c.WaitFresh, err = attachedWaitFresh(ctx, rc, pool, owners, inserts); err != nil {
		return nil, err
	}
	cfg.logf("capture: run after the COPY %.2f s; wait_fresh after an attached write p50 %.1f ms, p99 %.1f ms",
		c.AbsorbRunS, c.WaitFresh.P50ms, c.WaitFresh.P99ms)
	return c, nil
}

// timeCopies times COPYs of c.CopyRows rows into the plain and the attached
// lead tables, copySamples each, in the order plain, attached, attached,
// plain, ... so that neither always goes first, each rolled back and
// vacuumed away.
func timeCopies(ctx context.Context, conn *pgxpool.Conn, c *Capture, owners []string, firstID int) error {
	var plain, captured []time.Duration
	for i := range 2 * copySamples {
		table, into := "lead_plain", &plain
		if (i+1)%4 >= 2 {
			table, into = "lead", &captured
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		_, err = copyLeads(ctx, tx.Conn(), table, c.CopyRows, firstID, owners)
		*into = append(*into, time.Since(start))
		if rerr := tx.Rollback(ctx); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		// Else the next COPY's keys would be checked against the rolled
		// back rows in the primary key.
		if _, err := conn.Exec(ctx, `VACUUM bench_app.`+table); err != nil {
			return fmt.Errorf("vacuum bench_app.%s: %w", table, err)
		}
	}
	p50, _ := percentiles(plain)
	c.PlainCopyS = p50 / 1000
	p50, _ = percentiles(captured)
	c.CapturedCopyS = p50 / 1000
	c.CopyAdded = c.CapturedCopyS/c.PlainCopyS - 1
	return nil
}

// copyLeads copies n leads with ids from firstID into bench_app.table.
func copyLeads(ctx context.Context, conn *pgx.Conn, table string, n, firstID int, owners []string) (int64, error) {
	m, err := conn.CopyFrom(ctx, pgx.Identifier{"bench_app", table}, []string{"id", "owner_id", "status", "region", "revenue"},
		pgx.CopyFromSlice(n, func(i int) ([]any, error) {
			return []any{int64(firstID + i), owners[i%len(owners)], "open", "apac", int64(i)}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("copy into bench_app.%s: %w", table, err)
	}
	return m, nil
}

// attachedWaitFresh times recalc.wait_fresh(token) right after each of
// inserts single-row owner changes of bench_app.lead, with `recalc watch`
// running.
func attachedWaitFresh(ctx context.Context, rc recalcCmd, pool *pgxpool.Pool, owners []string, inserts int) (Latency, error) {
	stop, err := startWatch(ctx, rc)
	if err != nil {
		return Latency{}, err
	}
	defer stop()
	return timeWaitFresh(ctx, pool, "SELECT recalc.wait_fresh(recalc.fresh_token()) after UPDATE bench_app.lead SET owner_id (attached)", 200,
		func(i int) error {
			_, err := pool.Exec(ctx, `UPDATE bench_app.lead SET owner_id = $1 WHERE id = $2`, owners[(i+1)%len(owners)], int64(i%inserts+1))
			return err
		})
}

// captureTargets are issue 12's goals for capture.
func captureTargets(c *Capture) []TargetLine {
	if c == nil {
		return nil
	}
	return []TargetLine{
		{"capture: single-row INSERT, added p50", fmt.Sprintf("+%.2f ms (%.2f vs %.2f ms)", c.AddedP50ms, c.CapturedInsert.P50ms, c.PlainInsert.P50ms),
			"≤ +0.2 ms", c.AddedP50ms <= 0.2},
		{fmt.Sprintf("capture: COPY of %d rows, added", c.CopyRows), fmt.Sprintf("+%.0f%% (%.2f vs %.2f s)", 100*c.CopyAdded, c.CapturedCopyS, c.PlainCopyS),
			"≤ +40%", c.CopyAdded <= 0.4},
		{"capture: read-your-writes wait after a single-row write to the attached table, p99 (p50)",
			fmt.Sprintf("%.1f ms (%.1f)", c.WaitFresh.P99ms, c.WaitFresh.P50ms), "≤ 100 ms", c.WaitFresh.P99ms <= 100},
	}
}
