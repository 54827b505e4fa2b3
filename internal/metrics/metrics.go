// Package metrics serves the long-running process's Prometheus metrics and
// its health endpoint (`recalc watch --metrics-addr`). It has its own
// registry, never the global default one. The database-derived figures
// (jobs by kind and status, pending changes, freshness lag, closure and
// share rows, kept notifications) are read on each scrape, with a timeout,
// by a Collector; the process's own events (its jobs' durations, chunk
// retries, lock timeouts, runs) are counted as they happen.
//
// /healthz answers 200 when the database answers and the watch loop is
// alive (it ran within its expected interval, or its run works on a job
// that a process heartbeats) and not failing at every run, else 503.
package metrics

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
)

// scrapeTimeout bounds the database reads of one scrape or health check.
const scrapeTimeout = 5 * time.Second

// Metrics holds the registry and the process's own metrics. A nil
// *Metrics records nothing.
type Metrics struct {
	reg          *prometheus.Registry
	pool         *pgxpool.Pool
	jobDuration  *prometheus.HistogramVec
	runs         *prometheus.CounterVec
	chunkRetries prometheus.Counter
	lockTimeouts prometheus.Counter

	within  time.Duration // the loop is alive if it ran within this
	mu      sync.Mutex
	running int
	beat    time.Time
	begun   time.Time // when the run in progress, or the last one, began
	failed  time.Time // when the first of the failed runs since the last run without an error ended; zero if the last run had none
}

// New returns the metrics of a process whose loop runs at least every
// within, reading the database through pool.
func New(pool *pgxpool.Pool, within time.Duration) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), pool: pool, within: within, beat: time.Now(),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "recalc_job_duration_seconds",
			Help:    "Duration of the jobs this process ran or joined, from the job's creation to its end, by kind and final status.",
			Buckets: prometheus.ExponentialBuckets(0.05, 3, 10), // 50 ms .. ~16 min
		}, []string{"kind", "status"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recalc_runs_total",
			Help: "Recalculation runs of this process, by result: job (a job ended), no_job (the fast path, nothing to do, or deferred), error.",
		}, []string{"result"}),
		chunkRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "recalc_chunk_retries_total",
			Help: "Chunks this process retried after a lock timeout, deadlock or serialization failure.",
		}),
		lockTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "recalc_lock_timeouts_total",
			Help: "Lock timeouts of this process's chunks (SQLSTATE 55P03), retried or not.",
		}),
	}
	m.reg.MustRegister(m.jobDuration, m.runs, m.chunkRetries, m.lockTimeouts, &dbCollector{pool: pool})
	return m
}

// Registry is m's registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Contended counts a chunk's lock timeout, deadlock or serialization
// failure (engine.Options.Contended).
func (m *Metrics) Contended(err error, retry bool) {
	if m == nil {
		return
	}
	if retry {
		m.chunkRetries.Inc()
	}
	if pg.Code(err) == pg.LockNotAvailable {
		m.lockTimeouts.Inc()
	}
}

// Begin marks the start of one turn of the loop: a run.
func (m *Metrics) Begin() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running++
	m.beat = time.Now()
	m.begun = m.beat
}

// End marks the end of a run, with what it reported.
func (m *Metrics) End(rep *engine.Report, err error) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.running--
	m.beat = time.Now()
	switch {
	case err == nil:
		m.failed = time.Time{}
	case m.failed.IsZero(): // the first failure since a run without one
		m.failed = m.beat
	}
	m.mu.Unlock()
	switch {
	case err != nil:
		m.runs.WithLabelValues("error").Inc()
		if f := (*engine.FailedJobError)(nil); errors.As(err, &f) { // the job ended, failed
			m.jobDuration.WithLabelValues(string(f.Report.Kind), f.Report.Status).Observe(float64(f.Report.DurationMS) / 1000)
		}
	case rep == nil || rep.Job == 0:
		m.runs.WithLabelValues("no_job").Inc()
	default:
		m.runs.WithLabelValues("job").Inc()
		m.jobDuration.WithLabelValues(string(rep.Kind), rep.Status).Observe(float64(rep.DurationMS) / 1000)
	}
}

// loop reports whether the loop is in a run, whether that run, or the
// last one, began or ended within m.within, and whether its runs have all
// failed for longer than that.
func (m *Metrics) loop(now time.Time) (running, recent, failing bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	running = m.running > 0
	// Failing from the end of the first failed run, not from the last run
	// without an error: one failed run after a long one (a full job) is no
	// failing loop. A run in progress past m.within is judged as any long
	// run is (its job must be heartbeated), not by the failures before it.
	failing = !m.failed.IsZero() && now.Sub(m.failed) > m.within && !(running && now.Sub(m.begun) > m.within)
	return running, now.Sub(m.beat) <= m.within, failing
}

// Healthy says why the process is unhealthy, or nil: the database must
// answer within the scrape timeout, and the loop must be alive: a run began
// or ended within m.within, or the run in progress, begun earlier, works on
// a job that a process heartbeats (a long full job). A run past m.within
// with no live job is stuck. A loop whose runs have all failed for longer
// than m.within (a plan that times out at every step, say) is unhealthy
// too: it keeps nothing fresh.
func (m *Metrics) Healthy(ctx context.Context) error {
	running, recent, failing := m.loop(time.Now())
	if !running && !recent {
		return errors.New("the watch loop has not run within " + m.within.String())
	}
	if failing {
		return errors.New("the watch loop's runs have all failed for over " + m.within.String() + " (its log says why)")
	}
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	if err := m.pool.Ping(ctx); err != nil {
		return errors.New("the database does not answer")
	}
	if recent {
		return nil
	}
	job, err := queue.Unfinished(ctx, m.pool)
	switch {
	case err != nil:
		return errors.New("the database does not answer")
	case job == nil || job.Status != queue.Running || job.Interrupted:
		return errors.New("the watch loop's run has gone on for over " + m.within.String() + " with no job being worked on")
	}
	return nil
}
