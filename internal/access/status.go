package access

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/outbox"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/store"
)

// JobSummary is a job as `recalc status` shows it.
type JobSummary struct {
	ID          int64        `json:"job"`
	Kind        queue.Kind   `json:"kind"`
	Trigger     string       `json:"trigger"`
	Status      queue.Status `json:"status"`
	Rules       bool         `json:"rules"`
	Closure     bool         `json:"closure"`
	Chunks      int          `json:"chunks"`
	ChunksDone  int          `json:"chunks_done"`
	Records     int64        `json:"records"`
	Invalid     int64        `json:"invalid_records"`
	RowsAdded   int64        `json:"share_rows_added"`
	RowsRemoved int64        `json:"share_rows_removed"`
	RowsUpdated int64        `json:"share_rows_updated"`
	DriftFixed  int64        `json:"drift_fixed"`
	Error       string       `json:"error,omitempty"`
	CreatedAt   time.Time    `json:"created_at"`
	FinishedAt  *time.Time   `json:"finished_at,omitempty"`
	// Running jobs: progress figures, from chunks done so far.
	RecordsPerSecond float64        `json:"records_per_s,omitempty"`
	ETA              *time.Duration `json:"-"`
	ETAMS            *int64         `json:"eta_ms,omitempty"`
}

// Status is what `recalc status` reports.
type Status struct {
	Deferred       map[string]time.Time `json:"deferred"`
	PendingChanges int64                `json:"pending_changes"`
	PendingRecords int64                `json:"pending_records"`
	PendingConfig  []string             `json:"pending_sections"`
	Jobs           []JobSummary         `json:"jobs"` // the unfinished job first, then the most recent ones
	// Invalid records get no access (recalc.invalid_record): how many, and
	// the first few by id.
	InvalidRecords int64           `json:"invalid_records"`
	Invalid        []InvalidRecord `json:"invalid"`
	// Completion notifications not delivered yet, kept for redelivery
	// (internal/outbox): how many, and the oldest few.
	NotificationsKept int64          `json:"notifications_kept"`
	Notifications     []outbox.Entry `json:"notifications"`
	// Attached objects whose writes the last absorb left logged
	// (recalc.attach_stuck), by name.
	Unabsorbed []Unabsorbed `json:"unabsorbed_objects"`
}

// Unabsorbed is an attached object whose writes wait: its capture is not
// intact (Code "") or reading its source failed with SQLSTATE Code.
type Unabsorbed struct {
	Object string    `json:"object"`
	Code   string    `json:"error_code"`
	Since  time.Time `json:"since"`
}

// InvalidRecord is a record the last run gave no access because it is
// invalid, and why.
type InvalidRecord struct {
	Record string `json:"record"`
	Object string `json:"object"`
	Reason string `json:"reason"`
}

// ReadStatus gathers deferral, pending changes and the recent jobs.
func ReadStatus(ctx context.Context, q pg.Querier, recent int) (*Status, error) {
	st := &Status{PendingConfig: []string{}}
	var err error
	if st.Deferred, err = store.Deferred(ctx, q); err != nil {
		return nil, err
	}
	err = q.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.change),
		(SELECT count(DISTINCT CASE kind WHEN 'record' THEN k ELSE object || ':' || k END)
		 FROM recalc.change, unnest(keys) k WHERE kind IN ('record', 'attached')),
		(SELECT coalesce(array_agg(DISTINCT k), '{}') FROM recalc.change, unnest(keys) k WHERE kind = 'section')`).
		Scan(&st.PendingChanges, &st.PendingRecords, &st.PendingConfig)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	if err := q.QueryRow(ctx, `SELECT count(*) FROM recalc.acl_record WHERE invalid IS NOT NULL`).Scan(&st.InvalidRecords); err != nil {
		return nil, fmt.Errorf("count invalid records: %w", err)
	}
	if st.Notifications, st.NotificationsKept, err = outbox.List(ctx, q, 10); err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT id, object, invalid FROM recalc.acl_record WHERE invalid IS NOT NULL ORDER BY id LIMIT 10`)
	if err != nil {
		return nil, fmt.Errorf("list invalid records: %w", err)
	}
	if st.Invalid, err = pgx.CollectRows(rows, pgx.RowToStructByPos[InvalidRecord]); err != nil {
		return nil, fmt.Errorf("list invalid records: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT object, coalesce(error_code, ''), since FROM recalc.attach_stuck ORDER BY object`)
	if err != nil {
		return nil, fmt.Errorf("list unabsorbed objects: %w", err)
	}
	if st.Unabsorbed, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Unabsorbed]); err != nil {
		return nil, fmt.Errorf("list unabsorbed objects: %w", err)
	}
	rows, err = q.Query(ctx, `
		SELECT j.id, j.kind, j.trigger,
		       CASE WHEN j.status = 'running' AND recalc.job_paused(j.id) THEN 'paused'
		            WHEN j.status = 'running' AND NOT recalc.job_alive(j.id) THEN 'interrupted' ELSE j.status END,
		       j.do_rules, j.do_closure, j.chunks,
		       (SELECT count(*) FROM recalc.chunk c WHERE c.job_id = j.id AND c.status = 'done'),
		       CASE WHEN j.status = 'done' THEN j.records ELSE (SELECT coalesce(sum(records), 0) FROM recalc.chunk c WHERE c.job_id = j.id) END,
		       CASE WHEN j.status = 'done' THEN j.invalid_records ELSE (SELECT coalesce(sum(invalid), 0) FROM recalc.chunk c WHERE c.job_id = j.id) END,
		       j.rows_added, j.rows_removed, j.rows_updated, coalesce(j.drift_fixed, 0), coalesce(j.error, ''), j.created_at, j.finished_at,
		       extract(epoch FROM now() - j.created_at)
		FROM recalc.job j ORDER BY j.status = 'done', j.id DESC LIMIT $1`, recent)
	if err != nil {
		return nil, fmt.Errorf("read jobs: %w", err)
	}
	var j JobSummary
	var elapsed float64
	_, err = pgx.ForEachRow(rows, []any{&j.ID, &j.Kind, &j.Trigger, &j.Status, &j.Rules, &j.Closure, &j.Chunks, &j.ChunksDone,
		&j.Records, &j.Invalid, &j.RowsAdded, &j.RowsRemoved, &j.RowsUpdated, &j.DriftFixed, &j.Error, &j.CreatedAt, &j.FinishedAt, &elapsed}, func() error {
		if j.Status == queue.Running && elapsed > 0 {
			j.RecordsPerSecond = float64(j.Records) / elapsed
			if j.ChunksDone > 0 {
				eta := time.Duration(elapsed / float64(j.ChunksDone) * float64(j.Chunks-j.ChunksDone) * float64(time.Second)).Round(time.Second)
				ms := eta.Milliseconds()
				j.ETA, j.ETAMS = &eta, &ms
			}
		}
		st.Jobs = append(st.Jobs, j)
		j = JobSummary{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read jobs: %w", err)
	}
	return st, nil
}
