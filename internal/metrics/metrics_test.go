package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/metrics"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

const org = `{"objects":[{"name":"account","internal_owd":"private"}],
	"roles":[{"id":"ceo"},{"id":"rep","parent":"ceo"}],
	"users":[{"id":"u1","role":"rep"},{"id":"u2","role":"ceo"}],
	"groups":[{"id":"g1","members":["user:u1","user:u2"]}],
	"rules":[{"id":"r1","object":"account","type":"owner","source":"role:rep","target":"group:g1","access":"read"}],
	"records":[{"object":"account","id":"a1","owner":"u1"},{"object":"account","id":"a2","owner":"u2"}]}`

// bundle is a recalculated database and a metrics server on it.
type bundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
	m    *metrics.Metrics
	addr string
}

// setup imports org, runs once, and serves the metrics on a free port
// while a loop that only waits runs.
func setup(t *testing.T) *bundle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &bundle{ctx: ctx, pool: testdb.Migrated(t)}
	if _, err := testkit.ImportString(ctx, b.pool, org); err != nil {
		t.Fatal(err)
	}
	b.m = metrics.New(b.pool, time.Minute)
	b.m.Begin()
	rep, err := engine.Run(ctx, b.pool, engine.Options{Contended: b.m.Contended}, zerolog.Nop())
	b.m.End(rep, err)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	ln.Close()
	served := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		served <- metrics.Serve(ctx, b.addr, b.m, zerolog.Nop(), func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-served:
		t.Fatalf("serve: %v", err)
	}
	return b
}

// scrape GETs /metrics and parses it with Prometheus's text parser.
func (b *bundle) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + b.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

// value is the value of the family's metric with labels (name, value
// pairs), or an error saying what is missing.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, error) {
	f, ok := fams[name]
	if !ok {
		return 0, fmt.Errorf("no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if got[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), nil
		case m.Counter != nil:
			return m.GetCounter().GetValue(), nil
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), nil
		}
	}
	return 0, fmt.Errorf("no metric %s%v", name, labels)
}

// TestScrape: a real scrape of the endpoint has the database's figures and
// the process's own, and they follow what happens.
func TestScrape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lock := &pgconn.PgError{Code: "55P03"}
	b.m.Contended(lock, true)
	b.m.Contended(lock, false)
	b.m.Contended(&pgconn.PgError{Code: "40P01"}, true)
	if _, err := b.pool.Exec(b.ctx, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'a1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(b.ctx, `ANALYZE recalc.acl_share, recalc.acl_member`); err != nil {
		t.Fatal(err)
	}
	fams := b.scrape(t)
	for _, tc := range []struct {
		name   string
		labels []string
		check  func(v float64) bool
		want   string
	}{
		{"recalc_database_up", nil, func(v float64) bool { return v == 1 }, "1"},
		{"recalc_jobs", []string{"kind", "full", "status", "done"}, func(v float64) bool { return v == 1 }, "1"},
		{"recalc_last_job_duration_seconds", []string{"kind", "full", "status", "done"}, func(v float64) bool { return v > 0 && v < 60 }, "seconds of the run"},
		{"recalc_job_duration_seconds", []string{"kind", "full", "status", "done"}, func(v float64) bool { return v == 1 }, "1 observation"},
		{"recalc_runs_total", []string{"result", "job"}, func(v float64) bool { return v == 1 }, "1"},
		{"recalc_pending_changes", nil, func(v float64) bool { return v >= 1 }, "the update pending"},
		{"recalc_pending_oldest_age_seconds", nil, func(v float64) bool { return v >= 0 && v < 60 }, "a young change"},
		{"recalc_freshness_lag_seconds", nil, func(v float64) bool { return v >= 0 && v < 60 }, "a small lag"},
		{"recalc_closure_rows", nil, func(v float64) bool { return v > 0 }, "closure rows"},
		{"recalc_share_rows", nil, func(v float64) bool { return v > 0 }, "share rows"},
		{"recalc_notifications_kept", nil, func(v float64) bool { return v == 0 }, "0"},
		{"recalc_chunk_retries_total", nil, func(v float64) bool { return v == 2 }, "2"},
		{"recalc_lock_timeouts_total", nil, func(v float64) bool { return v == 2 }, "2"},
	} {
		v, err := value(fams, tc.name, tc.labels...)
		if err != nil || !tc.check(v) {
			t.Errorf("%s%v = %v (%v), want %s", tc.name, tc.labels, v, err, tc.want)
		}
	}
	if _, ok := fams["go_goroutines"]; ok {
		t.Error("the scrape has the default registry's Go collector: a global registry leaked in")
	}
}

// TestHealthz: 200 while the database answers and the loop is alive; 503
// when the loop has not run within its interval, or the database is gone.
func TestHealthz(t *testing.T) {
	t.Parallel()
	b := setup(t)
	get := func() int {
		t.Helper()
		resp, err := http.Get("http://" + b.addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("healthy process: %d", code)
	}
	for _, tc := range []struct {
		name string
		m    func() *metrics.Metrics
	}{
		{"loop stalled", func() *metrics.Metrics { return metrics.New(b.pool, -time.Second) }},
		{"database gone", func() *metrics.Metrics {
			pool, err := pgxpool.New(b.ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			return metrics.New(pool, time.Minute)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.m().Handler())
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(string(body), "unhealthy: ") {
				t.Errorf("/healthz: %d %q, want 503 saying why", resp.StatusCode, body)
			}
		})
	}
	// A loop whose runs have all failed for longer than its interval keeps
	// nothing fresh: unhealthy until a run ends without an error.
	failing := metrics.New(b.pool, time.Second)
	failing.Begin()
	failing.End(nil, errors.New("plan: canceling statement due to statement timeout"))
	time.Sleep(1100 * time.Millisecond)
	failing.Begin()
	failing.End(nil, errors.New("plan: canceling statement due to statement timeout"))
	if err := failing.Healthy(b.ctx); err == nil || !strings.Contains(err.Error(), "have all failed") {
		t.Errorf("a loop whose runs have failed for over its interval: %v, want unhealthy, saying so", err)
	}
	failing.Begin()
	failing.End(&engine.Report{}, nil)
	if err := failing.Healthy(b.ctx); err != nil {
		t.Errorf("after a run without an error: %v, want healthy", err)
	}
	// One failed run is no failing loop, even when it ended more than the
	// interval after the last run without an error (it was long: a full
	// job): the loop retries it. Only failures for longer than the
	// interval are.
	long := metrics.New(b.pool, time.Second)
	long.Begin()
	time.Sleep(1100 * time.Millisecond)
	long.End(nil, errors.New("a chunk: deadlock detected"))
	if err := long.Healthy(b.ctx); err != nil {
		t.Errorf("one failed run, just now, after a long one: %v, want healthy", err)
	}
	time.Sleep(1100 * time.Millisecond)
	long.Begin()
	long.End(nil, errors.New("a chunk: deadlock detected"))
	if err := long.Healthy(b.ctx); err == nil || !strings.Contains(err.Error(), "have all failed") {
		t.Errorf("runs failing for over the interval: %v, want unhealthy, saying so", err)
	}
	// A run in progress past the interval is alive only while it works on
	// a job that a process heartbeats.
	m := metrics.New(b.pool, -time.Second)
	m.Begin()
	if err := m.Healthy(b.ctx); err == nil {
		t.Error("a run stuck past its interval with no job reads healthy")
	}
	var job int64
	if err := b.pool.QueryRow(b.ctx, `INSERT INTO recalc.job (kind, trigger, status, change_seq, config, plan, chunks)
		VALUES ('incremental', 'test', 'running', 0, '{}', '{}', 0) RETURNING id`).Scan(&job); err != nil {
		t.Fatal(err)
	}
	if err := queue.Heartbeat(b.ctx, b.pool, job, "test"); err != nil {
		t.Fatal(err)
	}
	if err := m.Healthy(b.ctx); err != nil {
		t.Errorf("a long run working on a live job: %v", err)
	}
	// A long retry after failed runs, working on a live job: judged as any
	// long run, not by the failures before it.
	retry := metrics.New(b.pool, -time.Second)
	retry.Begin()
	retry.End(nil, errors.New("a chunk: deadlock detected"))
	retry.Begin()
	if err := retry.Healthy(b.ctx); err != nil {
		t.Errorf("a long retry working on a live job, after a failed run: %v, want healthy", err)
	}
	if _, err := b.pool.Exec(b.ctx, `UPDATE recalc.job_worker SET seen_at = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	if err := m.Healthy(b.ctx); err == nil {
		t.Error("a long run whose job no process heartbeats reads healthy")
	}
	if _, err := b.pool.Exec(b.ctx, `DELETE FROM recalc.job WHERE id = $1`, job); err != nil {
		t.Fatal(err)
	}
	m.End(nil, errors.New("failed"))
	if err := m.Healthy(b.ctx); err == nil {
		t.Error("a loop past its interval reads healthy")
	}
}

// TestFailedJobObserved: a job that fails in this process's run counts in
// recalc_job_duration_seconds{status="failed"}, which the documented
// RecalcJobFailed alert watches (docs/operations.md), besides the run's
// error.
func TestFailedJobObserved(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Every write of a share row fails, as a full disk or a broken index would.
	if _, err := b.pool.Exec(b.ctx, `
		CREATE FUNCTION recalc.test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
		CREATE TRIGGER test_refuse BEFORE INSERT OR UPDATE OR DELETE ON recalc.acl_share
		FOR EACH ROW EXECUTE FUNCTION recalc.test_refuse();
		UPDATE recalc.record SET owner = 'u2' WHERE id = 'a1';`); err != nil {
		t.Fatal(err)
	}
	b.m.Begin()
	rep, err := engine.Run(b.ctx, b.pool, engine.Options{Contended: b.m.Contended}, zerolog.Nop())
	b.m.End(rep, err)
	if err == nil {
		t.Fatal("the run succeeded though every share row write fails")
	}
	var status string
	if qerr := b.pool.QueryRow(b.ctx, `SELECT status FROM recalc.job ORDER BY id DESC LIMIT 1`).Scan(&status); qerr != nil || status != "failed" {
		t.Fatalf("the job reads %q (%v), want failed; the run: %v", status, qerr, err)
	}
	fams := b.scrape(t)
	if v, verr := value(fams, "recalc_job_duration_seconds", "status", "failed"); verr != nil || v != 1 {
		t.Errorf(`recalc_job_duration_seconds{status="failed"} = %v (%v), want 1 observation: the RecalcJobFailed alert never fires`, v, verr)
	}
	if v, verr := value(fams, "recalc_runs_total", "result", "error"); verr != nil || v != 1 {
		t.Errorf(`recalc_runs_total{result="error"} = %v (%v), want 1`, v, verr)
	}
}
