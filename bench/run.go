package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/bench/gen"
	"github.com/recalc-dev/recalc/bench/peer"
	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/dburl"
)

// Config says what to measure.
type Config struct {
	Sizes     []int  // record counts, each measured on its own fresh database
	Seed      int64  // generator seed
	Recalc    string // path of the recalc binary under test
	ServerURL string // a database on the server; the bench creates its own next to it
	Database  string // name of the database the bench creates (dropped first)
	Workers   int    // recalc run --workers
	Samples   int    // access checks timed
	// HeavyMax is the largest size at which the slowest measures, the
	// in-place run and the materialized-view peer, are taken (0: all).
	HeavyMax int
	// FreshFor is how long freshness is measured at each write rate, with
	// `recalc watch` running (0: not measured).
	FreshFor time.Duration
	// PlanMax stops a timed `recalc plan FILE` that runs longer.
	PlanMax time.Duration
	// CopyRows is the size of the timed COPYs into an application table
	// with and without capture.
	CopyRows int
	Dir      string // scratch space for the org file and COPY dumps
	Progress io.Writer
}

// Results is bench/results.json.
type Results struct {
	Date     string       `json:"date"`
	Host     Host         `json:"host"`
	Postgres PGInfo       `json:"postgres"`
	Runs     []*SizeRun   `json:"runs"`
	Scaling  []ScaleRatio `json:"scaling,omitempty"`
}

// Host describes the machine.
type Host struct {
	CPUs int    `json:"cpus"`
	Go   string `json:"go"`
	OS   string `json:"os"`
}

// PGInfo is the server's version and the settings that matter for bulk writes.
type PGInfo struct {
	Version  string            `json:"version"`
	Settings map[string]string `json:"settings"`
}

// ScaleRatio compares the full recalculation time of two sizes.
type ScaleRatio struct {
	From, To int
	Records  float64 `json:"records_ratio"`
	Time     float64 `json:"time_ratio"`
}

// SizeRun is every measure at one org size, all taken in one run.
type SizeRun struct {
	Records     int           `json:"records"`
	Org         OrgInfo       `json:"org"`
	ImportS     float64       `json:"import_s"`
	ImportRSS   int64         `json:"import_peak_rss_bytes"`
	Full        Full          `json:"full"`                    // the first, into empty share tables: every ratio's base
	Nightly     Full          `json:"full_nightly"`            // again over the current tables, counting drift
	InPlace     *Full         `json:"full_in_place,omitempty"` // not taken above Config.HeavyMax
	Copy        CopyLimit     `json:"raw_copy"`
	Peer        *PeerResult   `json:"mv_peer,omitempty"`        // not taken above Config.HeavyMax
	FeedSwap    *FeedSwapDiff `json:"feed_swap_diff,omitempty"` // bench/feed.go; not taken above Config.HeavyMax
	Incremental []Case        `json:"incremental"`
	Writes      []WriteLoad   `json:"app_writes"` // bench/writes.go
	Plan        []PlanCase    `json:"plan_file"`  // bench/plan.go: `recalc plan FILE`
	Access      Latency       `json:"access_check"`
	Visible     Latency       `json:"visible_list"`
	RLS         *RLSResult    `json:"rls,omitempty"`       // bench/rls.go
	Fresh       *Freshness    `json:"freshness,omitempty"` // bench/fresh.go; not taken when Config.FreshFor is 0
	Capture     *Capture      `json:"capture,omitempty"`   // bench/capture.go
	PeakRSS     int64         `json:"peak_rss_bytes"`
	Targets     []TargetLine  `json:"targets"`
}

// OrgInfo describes the generated org.
type OrgInfo struct {
	Users      int     `json:"users"`
	Rules      int     `json:"rules"`
	Shares     int     `json:"shares"`
	Teams      int     `json:"teams"`
	FileBytes  int64   `json:"file_bytes"`
	GenerateS  float64 `json:"generate_s"`
	ClosureLen int64   `json:"closure_rows"`
}

// Full is one full recalculation through `recalc run --full`.
type Full struct {
	Seconds   float64 `json:"s"`
	ShareRows int64   `json:"share_rows"`
	RowsPerS  float64 `json:"share_rows_per_s"`
	PeakRSS   int64   `json:"peak_rss_bytes"`
}

func runFull(ctx context.Context, rc recalcCmd, workers int, args ...string) (Full, *report, error) {
	p, err := rc.run(ctx, append([]string{"run", "--full", "--workers", fmt.Sprint(workers)}, args...)...)
	if err != nil {
		return Full{}, nil, err
	}
	rep, err := parseReport(p.Stdout)
	if err != nil {
		return Full{}, nil, err
	}
	return Full{Seconds: p.Elapsed.Seconds(), PeakRSS: p.MaxRSS}, rep, nil
}

// report is the JSON line `recalc run` prints.
type report struct {
	Kind    string `json:"kind"`
	Records int64  `json:"records"`
	Added   int64  `json:"share_rows_added"`
	Removed int64  `json:"share_rows_removed"`
	Updated int64  `json:"share_rows_updated"`
	Closure int64  `json:"closure_added"`
	ClosRem int64  `json:"closure_removed"`
	Drift   int64  `json:"drift_fixed"`
}

func parseReport(out []byte) (*report, error) {
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("read the run's report %q: %w", out, err)
	}
	return &r, nil
}

// Run measures every size in cfg and returns the results.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	res := &Results{Date: time.Now().UTC().Format(time.RFC3339),
		Host: Host{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}}
	admin, err := pgx.Connect(ctx, cfg.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (set DATABASE_URL): %w", cfg.ServerURL, err)
	}
	defer admin.Close(ctx)
	if res.Postgres, err = pgInfo(ctx, admin); err != nil {
		return nil, err
	}
	for _, n := range cfg.Sizes {
		r, err := runSize(ctx, cfg, admin, n)
		if err != nil {
			return nil, fmt.Errorf("%d records: %w", n, err)
		}
		res.Runs = append(res.Runs, r)
	}
	for i := 1; i < len(res.Runs); i++ {
		a, b := res.Runs[i-1], res.Runs[i]
		res.Scaling = append(res.Scaling, ScaleRatio{From: a.Records, To: b.Records,
			Records: float64(b.Records) / float64(a.Records), Time: b.Full.Seconds / a.Full.Seconds})
	}
	return res, nil
}

func pgInfo(ctx context.Context, c *pgx.Conn) (PGInfo, error) {
	info := PGInfo{Settings: map[string]string{}}
	if err := c.QueryRow(ctx, `SHOW server_version`).Scan(&info.Version); err != nil {
		return info, fmt.Errorf("read server version: %w", err)
	}
	rows, err := c.Query(ctx, `SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings WHERE name = ANY($1)`,
		[]string{"shared_buffers", "work_mem", "maintenance_work_mem", "max_wal_size", "wal_level", "synchronous_commit",
			"fsync", "full_page_writes", "max_parallel_maintenance_workers", "max_parallel_workers_per_gather", "checkpoint_timeout"})
	if err != nil {
		return info, fmt.Errorf("read server settings: %w", err)
	}
	var k, v string
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error { info.Settings[k] = v; return nil })
	return info, err
}

func (cfg Config) logf(format string, args ...any) {
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "bench: "+format+"\n", args...)
	}
}

func runSize(ctx context.Context, cfg Config, admin *pgx.Conn, n int) (*SizeRun, error) {
	r := &SizeRun{Records: n}
	db := pgx.Identifier{cfg.Database}.Sanitize()
	if _, err := admin.Exec(ctx, `DROP DATABASE IF EXISTS `+db+` WITH (FORCE)`); err != nil {
		return nil, fmt.Errorf("drop the bench database: %w", err)
	}
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+db); err != nil {
		return nil, fmt.Errorf("create the bench database: %w", err)
	}
	url := dburl.WithDatabase(cfg.ServerURL, cfg.Database)
	rc := recalcCmd{bin: cfg.Recalc, url: url}

	if err := generateAndImport(ctx, cfg, rc, r); err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if err := measure(ctx, cfg, rc, pool, r); err != nil {
		return nil, err
	}
	pool.Close()
	if _, err := admin.Exec(ctx, `DROP DATABASE IF EXISTS `+db+` WITH (FORCE)`); err != nil {
		return nil, fmt.Errorf("drop the bench database: %w", err)
	}
	return r, nil
}

// generateAndImport generates an org of r.Records records and imports it
// into a fresh schema, timing both.
func generateAndImport(ctx context.Context, cfg Config, rc recalcCmd, r *SizeRun) error {
	n := r.Records
	cfg.logf("%d records: generating the org", n)
	path := filepath.Join(cfg.Dir, "org.json")
	start := time.Now()
	sum, err := gen.WriteFile(path, gen.NewOptions(n, cfg.Seed))
	if err != nil {
		return err
	}
	defer os.Remove(path)
	r.Org = OrgInfo{Users: sum.Users, Rules: sum.Rules, Shares: sum.Shares, Teams: sum.Teams, FileBytes: sum.Bytes,
		GenerateS: time.Since(start).Seconds()}

	cfg.logf("%d records: import (%.0f MB)", n, float64(sum.Bytes)/1e6)
	if _, err := rc.run(ctx, "init"); err != nil {
		return err
	}
	p, err := rc.run(ctx, "import", path)
	if err != nil {
		return err
	}
	r.ImportS, r.ImportRSS = p.Elapsed.Seconds(), p.MaxRSS
	return nil
}

// measure takes every measure of the imported org, in an order that keeps
// each from disturbing the next: the full runs, reads, the in-place run,
// the raw COPY, the peer, the incremental cases, freshness, dry runs, and
// last capture, which replaces the org's leads with an attached table's.
func measure(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool, r *SizeRun) error {
	if err := measureFull(ctx, cfg, rc, pool, r); err != nil {
		return err
	}
	if err := measureChanges(ctx, cfg, rc, pool, r); err != nil {
		return err
	}
	r.PeakRSS = max(r.ImportRSS, r.Full.PeakRSS, r.Nightly.PeakRSS)
	if r.InPlace != nil {
		r.PeakRSS = max(r.PeakRSS, r.InPlace.PeakRSS)
	}
	for _, c := range r.Incremental {
		r.PeakRSS = max(r.PeakRSS, c.PeakRSS)
	}
	r.Targets = slices.Concat(targets(r), freshTargets(r.Fresh), writeTargets(r.Writes), captureTargets(r.Capture), planTargets(r.Records, r.Plan))
	return nil
}

// measureFull times the full recalculations, the reads on the tables they
// made, and the anchors they are compared with: raw COPY and the peer.
func measureFull(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool, r *SizeRun) error {
	n := r.Records
	var err error
	cfg.logf("%d records: full recalculation", n)
	if r.Full, _, err = runFull(ctx, rc, cfg.Workers); err != nil {
		return err
	}
	cfg.logf("%d records: nightly full recalculation, over the current tables", n)
	if r.Nightly, _, err = runFull(ctx, rc, cfg.Workers, "--in-place=false"); err != nil {
		return err
	}
	if err := timeReads(ctx, cfg, pool, r); err != nil {
		return err
	}
	cfg.logf("%d records: the read path through row-level security", n)
	if r.RLS, err = measureRLS(ctx, pool, cfg.Samples); err != nil {
		return err
	}
	heavy := cfg.HeavyMax == 0 || n <= cfg.HeavyMax
	st, err := access.ReadStats(ctx, pool)
	if err != nil {
		return err
	}
	rows := st.ShareRows
	r.Org.ClosureLen = st.Closure
	for _, f := range []*Full{&r.Full, &r.Nightly} {
		f.ShareRows, f.RowsPerS = rows, float64(rows)/f.Seconds
	}
	if heavy {
		if r.InPlace, err = inPlace(ctx, cfg, rc, pool, rows); err != nil {
			return err
		}
	}

	if heavy {
		cfg.logf("%d records: the feed's diff at a full job's swap", n)
		if r.FeedSwap, err = feedSwapDiff(ctx, pool, r.Nightly.Seconds); err != nil {
			return err
		}
	}

	cfg.logf("%d records: raw COPY of the same rows", n)
	if r.Copy, err = rawCopy(ctx, pool, cfg.Dir); err != nil {
		return err
	}
	r.Copy.Ratio = r.Copy.Seconds / r.Full.Seconds

	if heavy {
		cfg.logf("%d records: materialized-view peer", n)
		if r.Peer, err = runPeer(ctx, pool, r.Full.Seconds); err != nil {
			return err
		}
	}
	return nil
}

// measureChanges times what follows a change: incremental jobs, the
// application's writes beside jobs, freshness, dry runs and capture.
func measureChanges(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool, r *SizeRun) error {
	n := r.Records
	var err error
	cfg.logf("%d records: incremental cases", n)
	if r.Incremental, err = incrementalCases(ctx, cfg, rc, pool, r.Full.Seconds); err != nil {
		return err
	}
	cfg.logf("%d records: application writes beside jobs", n)
	if r.Writes, err = writeLatency(ctx, cfg, rc, pool, min(max(cfg.FreshFor, 3*time.Second), 15*time.Second)); err != nil {
		return err
	}
	if cfg.FreshFor > 0 {
		if r.Fresh, err = freshness(ctx, cfg, rc, pool, n); err != nil {
			return err
		}
	}
	cfg.logf("%d records: dry runs of a change (recalc plan FILE)", n)
	if r.Plan, err = planCases(ctx, cfg, rc, pool); err != nil {
		return err
	}
	cfg.logf("%d records: capture on an attached table", n)
	if r.Capture, err = captureCost(ctx, cfg, rc, pool, 500, min(max(n/10, 1000), 100000)); err != nil {
		return err
	}
	return nil
}

// timeReads times access checks and visible-record lists on the tables the
// nightly run swapped in, before the in-place run, the raw COPY and the
// peer write gigabytes beside them. Bulk writes leave autovacuum and the
// checkpointer busy for a while, and their work lands in whatever is timed
// next: latencies are the settled database's, as readers see it most of
// the time.
func timeReads(ctx context.Context, cfg Config, pool *pgxpool.Pool, r *SizeRun) error {
	n := r.Records
	cfg.logf("%d records: vacuum and checkpoint before timing reads", n)
	if _, err := pool.Exec(ctx, `VACUUM (ANALYZE) recalc.acl_share, recalc.acl_record, recalc.acl_member, recalc.acl_user`); err != nil {
		return fmt.Errorf("vacuum the share tables: %w", err)
	}
	if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
		return fmt.Errorf("checkpoint (the bench's role needs pg_checkpoint): %w", err)
	}
	cfg.logf("%d records: access checks", n)
	var err error
	if r.Access, err = accessChecks(ctx, pool, cfg.Samples, cfg.Seed); err != nil {
		return err
	}
	r.Visible, err = visibleLists(ctx, pool, 10)
	return err
}

// inPlace times a full run in place over empty share tables, so that it
// writes every row as the blue/green runs do (over current tables it would
// write nothing).
func inPlace(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool, rows int64) (*Full, error) {
	cfg.logf("full recalculation in place")
	if _, err := pool.Exec(ctx, `TRUNCATE recalc.acl_share, recalc.acl_record`); err != nil {
		return nil, err
	}
	f, rep, err := runFull(ctx, rc, cfg.Workers, "--in-place")
	if err != nil {
		return nil, err
	}
	if rep.Added != rows {
		return nil, fmt.Errorf("the in-place run wrote %d share rows, not %d", rep.Added, rows)
	}
	f.ShareRows, f.RowsPerS = rows, float64(rows)/f.Seconds
	return &f, nil
}

// PeerResult is the pure-SQL materialized-view peer's refresh.
type PeerResult struct {
	Seconds  float64 `json:"s"`
	SameRows bool    `json:"same_access"`
	Ratio    float64 `json:"time_vs_full"` // peer time / full time: how many times faster recalc is
}

func runPeer(ctx context.Context, pool *pgxpool.Pool, fullS float64) (*PeerResult, error) {
	if err := peer.Create(ctx, pool); err != nil {
		return nil, err
	}
	d, err := peer.Refresh(ctx, pool)
	if err != nil {
		return nil, err
	}
	if err := peer.Check(ctx, pool); err != nil {
		return nil, fmt.Errorf("the materialized-view peer disagrees with recalc: %w", err)
	}
	if err := peer.Drop(ctx, pool); err != nil {
		return nil, err
	}
	return &PeerResult{Seconds: d.Seconds(), SameRows: true, Ratio: d.Seconds() / fullS}, nil
}
