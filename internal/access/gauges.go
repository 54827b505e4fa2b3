package access

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/pg"
)

// JobCount is how many jobs of a kind have a status (interrupted for a
// running job no process heartbeats, paused for one whose chunks wait for
// share rows to be resumed).
type JobCount struct {
	Kind   string
	Status string
	Jobs   int64
}

// LastJob is the latest finished job of a kind: its status and duration.
type LastJob struct {
	Kind     string
	Status   string
	Duration float64 // seconds
}

// Gauges are the database-derived figures the metrics endpoint serves.
type Gauges struct {
	Jobs             []JobCount
	Last             []LastJob
	PendingChanges   int64
	OldestChangeAge  float64 // seconds; 0 when nothing is pending
	FreshnessLag     float64 // seconds the share tables may be behind: the oldest pending change, or the unfinished job's start
	ClosureRows      int64   // estimate (pg_class.reltuples)
	ShareRows        int64   // estimate (pg_class.reltuples)
	KeptNotification int64   // notifications kept for redelivery (recalc.notification)
}

// ReadGauges reads the metrics' database-derived figures, in a few cheap
// statements: row counts of the big tables are the planner's estimates.
func ReadGauges(ctx context.Context, q pg.Querier) (*Gauges, error) {
	g := &Gauges{}
	err := q.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM recalc.change),
		       coalesce((SELECT extract(epoch FROM now() - min(at)) FROM recalc.change), 0),
		       greatest(coalesce((SELECT extract(epoch FROM now() - min(at)) FROM recalc.change), 0),
		                coalesce((SELECT extract(epoch FROM now() - min(created_at)) FROM recalc.job WHERE status <> 'done'), 0)),
		       (SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'recalc.acl_member'::regclass),
		       (SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'recalc.acl_share'::regclass),
		       (SELECT count(*) FROM recalc.notification)`).
		Scan(&g.PendingChanges, &g.OldestChangeAge, &g.FreshnessLag, &g.ClosureRows, &g.ShareRows, &g.KeptNotification)
	if err != nil {
		return nil, fmt.Errorf("read gauges: %w", err)
	}
	rows, err := q.Query(ctx, `
		SELECT kind, CASE WHEN status = 'running' AND recalc.job_paused(id) THEN 'paused'
		                  WHEN status = 'running' AND NOT recalc.job_alive(id) THEN 'interrupted' ELSE status END s, count(*)
		FROM recalc.job GROUP BY 1, 2 ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	if g.Jobs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[JobCount]); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	rows, err = q.Query(ctx, `
		SELECT DISTINCT ON (kind) kind, status, extract(epoch FROM finished_at - created_at)::float8
		FROM recalc.job WHERE finished_at IS NOT NULL ORDER BY kind, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("read last jobs: %w", err)
	}
	if g.Last, err = pgx.CollectRows(rows, pgx.RowToStructByPos[LastJob]); err != nil {
		return nil, fmt.Errorf("read last jobs: %w", err)
	}
	return g, nil
}
