package metrics

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recalc-dev/recalc/internal/access"
)

var (
	descUp = prometheus.NewDesc("recalc_database_up",
		"1 when this scrape read the database's figures, 0 when it could not (they are then absent).", nil, nil)
	descJobs = prometheus.NewDesc("recalc_jobs",
		"Jobs stored in recalc.job, by kind and status (interrupted: running, but no process heartbeats it; paused: share rows are deferred with chunks of it left).", []string{"kind", "status"}, nil)
	descLast = prometheus.NewDesc("recalc_last_job_duration_seconds",
		"Duration of the latest finished job of each kind, with its status.", []string{"kind", "status"}, nil)
	descPending = prometheus.NewDesc("recalc_pending_changes",
		"Rows in the change log: changes not yet recalculated.", nil, nil)
	descOldest = prometheus.NewDesc("recalc_pending_oldest_age_seconds",
		"Age of the oldest change not yet recalculated; 0 when none is pending.", nil, nil)
	descLag = prometheus.NewDesc("recalc_freshness_lag_seconds",
		"How far behind the share tables may be: the age of the oldest pending change, or of the unfinished job if older; 0 when up to date.", nil, nil)
	descClosure = prometheus.NewDesc("recalc_closure_rows",
		"Rows of the group closure (recalc.acl_member), as the planner estimates them.", nil, nil)
	descShare = prometheus.NewDesc("recalc_share_rows",
		"Share rows (recalc.acl_share), as the planner estimates them.", nil, nil)
	descKept = prometheus.NewDesc("recalc_notifications_kept",
		"Completion notifications not yet delivered, kept for redelivery (`recalc status` lists them).", nil, nil)
)

// dbCollector reads the database's figures on each scrape, within
// scrapeTimeout. A failed read is reported as recalc_database_up 0, not as
// a failed scrape, so the process's own metrics still arrive.
type dbCollector struct {
	pool *pgxpool.Pool
}

// Describe sends every descriptor the collector may emit.
func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descJobs, descLast, descPending, descOldest, descLag, descClosure, descShare, descKept} {
		ch <- d
	}
}

// Collect reads the figures and sends them.
func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	g, err := access.ReadGauges(ctx, c.pool)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	for _, j := range g.Jobs {
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(j.Jobs), j.Kind, j.Status)
	}
	for _, j := range g.Last {
		ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, j.Duration, j.Kind, j.Status)
	}
	for d, v := range map[*prometheus.Desc]float64{descPending: float64(g.PendingChanges), descOldest: g.OldestChangeAge,
		descLag: g.FreshnessLag, descClosure: float64(g.ClosureRows), descShare: float64(g.ShareRows), descKept: float64(g.KeptNotification)} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
}
