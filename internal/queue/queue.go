// Package queue stores recalculation jobs and their chunks (recalc.job,
// recalc.chunk) and owns every statement of their life: Create a job and its
// chunks, Claim a chunk (FOR UPDATE SKIP LOCKED), Complete it in the same
// transaction as its rows, MarkStaged a full job's staging tables, Finish or
// Fail the job, and Resume a failed one. Finish and Fail announce the job's
// end with a NOTIFY on Channel. At most one job is unfinished at a time.
package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/pg"
)

// Kind is what a job recomputes.
type Kind string

// Job kinds.
const (
	// Full recomputes every family into staging tables, swapped in at the end.
	Full Kind = "full"
	// Incremental recomputes the affected families in place, under row locks.
	Incremental Kind = "incremental"
)

// Status is where a job is in its life: running (created, resumed or
// staged), then done, or failed and waiting for the next run to resume it.
type Status string

// Job statuses, as recalc.job stores them.
const (
	Running Status = "running"
	Failed  Status = "failed"
	Done    Status = "done"
	// Interrupted is never stored: it is how a running job that no
	// process has heartbeated within LiveWithin reads (status, payload).
	Interrupted Status = "interrupted"
	// Paused is never stored either: it is how an unfinished job with
	// share rows to write and chunks left reads while their calculation is
	// deferred (its chunks claim nothing until `recalc resume`).
	Paused Status = "paused"
)

// Heartbeats: every process working a job marks it every HeartbeatEvery;
// a running job unmarked for LiveWithin (recalc.job_alive) was interrupted.
const (
	HeartbeatEvery = 2 * time.Second
	LiveWithin     = 10 * time.Second
)

// Job is a row of recalc.job.
type Job struct {
	ID        int64
	Kind      Kind
	Trigger   string
	Status    Status
	ChangeSeq int64   // the highest change seq the job planned from
	Consumes  []int64 // the change rows the job planned from, deleted when it is done
	Config    []byte  // configuration sections as one JSON object
	Plan      []byte  // the plan, as JSON
	Chunks    int
	Error     string
	DoRules   bool // the job writes share rows (and OWDs)
	DoClosure bool // the job writes the closure (and the user table)

	Records, InvalidRecords             int64
	RowsAdded, RowsRemoved, RowsUpdated int64
	ClosureAdded, ClosureRemoved        int64
	DriftFixed                          int64 // full jobs: share rows the swap changed
	Staged                              bool  // full jobs: staging tables complete, ready to swap
	Interrupted                         bool  // running, but no process heartbeated it within LiveWithin, and not Paused
	Paused                              bool  // running (a failed job is Failed), with chunks left that claim nothing while share rows are deferred
}

// Heartbeat marks job as worked on by worker now.
func Heartbeat(ctx context.Context, q pg.Querier, job int64, worker string) error {
	if _, err := q.Exec(ctx, `INSERT INTO recalc.job_worker (job_id, worker) VALUES ($1, $2)
		ON CONFLICT (job_id, worker) DO UPDATE SET seen_at = clock_timestamp()`, job, worker); err != nil {
		return fmt.Errorf("heartbeat job %d: %w", job, err)
	}
	return nil
}

// Chunk is one unit of a job: families by root id range (full jobs) or by
// root id list (incremental jobs).
type Chunk struct {
	N      int
	Lo, Hi string
	Roots  []string
}

const jobCols = `id, kind, trigger, status, change_seq, consumes, config::text, plan::text, chunks, coalesce(error, ''),
	do_rules, do_closure, records, invalid_records, rows_added, rows_removed, rows_updated, closure_added, closure_removed,
	coalesce(drift_fixed, 0), staged, status = 'running' AND NOT recalc.job_alive(id) AND NOT recalc.job_paused(id),
	status = 'running' AND recalc.job_paused(id)`

func scan(row pgx.Row) (*Job, error) {
	j := &Job{}
	err := row.Scan(&j.ID, &j.Kind, &j.Trigger, &j.Status, &j.ChangeSeq, &j.Consumes, &j.Config, &j.Plan, &j.Chunks, &j.Error,
		&j.DoRules, &j.DoClosure, &j.Records, &j.InvalidRecords, &j.RowsAdded, &j.RowsRemoved, &j.RowsUpdated,
		&j.ClosureAdded, &j.ClosureRemoved, &j.DriftFixed, &j.Staged, &j.Interrupted, &j.Paused)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return j, err
}

// Unfinished returns the job that is running or failed, or nil.
func Unfinished(ctx context.Context, q pg.Querier) (*Job, error) {
	j, err := scan(q.QueryRow(ctx, `SELECT `+jobCols+` FROM recalc.job WHERE status <> 'done'`))
	if err != nil {
		return nil, fmt.Errorf("read unfinished job: %w", err)
	}
	return j, nil
}

// AnyDone reports whether any job is done.
func AnyDone(ctx context.Context, q pg.Querier) (bool, error) {
	var done bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.job WHERE status = 'done')`).Scan(&done); err != nil {
		return false, fmt.Errorf("find a done job: %w", err)
	}
	return done, nil
}

// UnfinishedOrLatest returns the id of the unfinished job, else of the
// latest job, 0 when there is no job at all.
func UnfinishedOrLatest(ctx context.Context, q pg.Querier) (int64, error) {
	var id int64
	if err := q.QueryRow(ctx, `SELECT coalesce((SELECT id FROM recalc.job WHERE status <> 'done'), (SELECT max(id) FROM recalc.job), 0)`).Scan(&id); err != nil {
		return 0, fmt.Errorf("find job: %w", err)
	}
	return id, nil
}

// Get returns job id, or nil when there is none.
func Get(ctx context.Context, q pg.Querier, id int64) (*Job, error) {
	j, err := scan(q.QueryRow(ctx, `SELECT `+jobCols+` FROM recalc.job WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("read job %d: %w", id, err)
	}
	return j, nil
}

// Lock returns job id locked FOR UPDATE until tx ends.
func Lock(ctx context.Context, tx pgx.Tx, id int64) (*Job, error) {
	j, err := scan(tx.QueryRow(ctx, `SELECT `+jobCols+` FROM recalc.job WHERE id = $1 FOR UPDATE`, id))
	switch {
	case err != nil:
		return nil, fmt.Errorf("lock job %d: %w", id, err)
	case j == nil:
		return nil, fmt.Errorf("lock job %d: it does not exist", id)
	}
	return j, nil
}

// Create inserts a running job and its chunks and returns its id.
func Create(ctx context.Context, tx pgx.Tx, j *Job, chunks []Chunk) (int64, error) {
	var id int64
	consumes := j.Consumes
	if consumes == nil {
		consumes = []int64{}
	}
	err := tx.QueryRow(ctx, `INSERT INTO recalc.job (kind, trigger, status, change_seq, consumes, config, plan, chunks, do_rules, do_closure)
		VALUES ($1, $2, 'running', $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9) RETURNING id`,
		j.Kind, j.Trigger, j.ChangeSeq, consumes, string(j.Config), string(j.Plan), len(chunks), j.DoRules, j.DoClosure).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("create job: %w", err)
	}
	i := 0
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"recalc", "chunk"}, []string{"job_id", "n", "lo", "hi", "roots"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == len(chunks) {
				return nil, nil
			}
			c := chunks[i]
			i++
			row := []any{id, c.N, nil, nil, nil}
			if c.Roots != nil {
				row[4] = c.Roots
			} else {
				row[2], row[3] = c.Lo, c.Hi
			}
			return row, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("create chunks of job %d: %w", id, err)
	}
	return id, nil
}

// Claim locks the next pending chunk of job until tx ends, skipping
// chunks other workers hold. It returns nil when none is left to claim.
func Claim(ctx context.Context, tx pgx.Tx, job int64) (*Chunk, error) {
	c := &Chunk{}
	var lo, hi *string
	err := tx.QueryRow(ctx, `SELECT n, lo, hi, roots FROM recalc.chunk
		WHERE job_id = $1 AND status = 'pending' ORDER BY n LIMIT 1 FOR UPDATE SKIP LOCKED`, job).Scan(&c.N, &lo, &hi, &c.Roots)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim chunk of job %d: %w", job, err)
	}
	if lo != nil {
		c.Lo, c.Hi = *lo, *hi
	}
	return c, nil
}

// Roots returns the family roots that job's chunks list, without repeats:
// every family an incremental job recomputes (a full job's chunks are root
// id ranges, and list none).
func Roots(ctx context.Context, q pg.Querier, job int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT unnest(roots) FROM recalc.chunk WHERE job_id = $1`, job)
	if err != nil {
		return nil, fmt.Errorf("read families of job %d: %w", job, err)
	}
	roots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read families of job %d: %w", job, err)
	}
	return roots, nil
}

// Complete marks a claimed chunk done with what it did.
func Complete(ctx context.Context, tx pgx.Tx, job int64, n int, st *ChunkStats, worker string) error {
	_, err := tx.Exec(ctx, `UPDATE recalc.chunk SET status = 'done', records = $3, rows_added = $4, rows_removed = $5,
		rows_updated = $6, invalid = $7, done_by = $8, done_at = now() WHERE job_id = $1 AND n = $2`,
		job, n, st.Records, st.Added, st.Removed, st.Updated, len(st.Invalid), worker)
	if err != nil {
		return fmt.Errorf("mark chunk %d of job %d done: %w", n, job, err)
	}
	return nil
}

// Progress returns how many of job's chunks are done, and their records.
func Progress(ctx context.Context, q pg.Querier, job int64) (done int, records int64, err error) {
	err = q.QueryRow(ctx, `SELECT count(*), coalesce(sum(records), 0) FROM recalc.chunk WHERE job_id = $1 AND status = 'done'`, job).Scan(&done, &records)
	if err != nil {
		err = fmt.Errorf("read progress of job %d: %w", job, err)
	}
	return done, records, err
}

// StageClosure records what an incremental job that changes the closure
// did to it as it was created: the entries it removed, and keeps the
// entries (gids, uids, boss) its finish adds (ClosureAdditions).
func StageClosure(ctx context.Context, tx pgx.Tx, id, removed int64, gids, uids []int32, boss []bool) error {
	if _, err := tx.Exec(ctx, `UPDATE recalc.job SET closure_removed = $2,
		closure_add_gid = $3::int[], closure_add_uid = $4::int[], closure_add_boss = $5::boolean[] WHERE id = $1`,
		id, removed, nonNil(gids), nonNil(uids), nonNil(boss)); err != nil {
		return fmt.Errorf("record job %d's closure change: %w", id, err)
	}
	return nil
}

// nonNil makes an empty slice of a nil one: pgx sends nil as NULL, which
// ClosureAdditions reads as nothing staged.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ClosureAdditions returns the closure entries StageClosure kept for job
// id's finish; staged is false for a job that kept none (created before
// schema version 56, or changing no closure).
func ClosureAdditions(ctx context.Context, q pg.Querier, id int64) (gids, uids []int32, boss []bool, staged bool, err error) {
	err = q.QueryRow(ctx, `SELECT closure_add_gid, closure_add_uid, closure_add_boss, closure_add_gid IS NOT NULL
		FROM recalc.job WHERE id = $1`, id).Scan(&gids, &uids, &boss, &staged)
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("read job %d's closure additions: %w", id, err)
	}
	return gids, uids, boss, staged, nil
}

// Finish marks job done with the totals of its chunks and the closure
// entries it added and removed (besides those StageClosure recorded), and
// announces it when tx commits.
func Finish(ctx context.Context, tx pgx.Tx, j *Job, closureAdded, closureRemoved int64) error {
	_, err := tx.Exec(ctx, `
		UPDATE recalc.job j SET status = 'done', finished_at = now(), error = NULL,
			records = c.records, invalid_records = c.invalid, rows_added = c.added, rows_removed = c.removed,
			rows_updated = c.updated, closure_added = $2, closure_removed = j.closure_removed + $3,
			closure_add_gid = NULL, closure_add_uid = NULL, closure_add_boss = NULL
		FROM (SELECT coalesce(sum(records), 0) records, coalesce(sum(invalid), 0) invalid, coalesce(sum(rows_added), 0) added,
		             coalesce(sum(rows_removed), 0) removed, coalesce(sum(rows_updated), 0) updated
		      FROM recalc.chunk WHERE job_id = $1) c
		WHERE j.id = $1`, j.ID, closureAdded, closureRemoved)
	if err != nil {
		return fmt.Errorf("finish job %d: %w", j.ID, err)
	}
	return notify(ctx, tx, j.ID)
}

// Channel is the NOTIFY channel on which every job's end is announced,
// with the job's payload as JSON.
const Channel = "recalc_jobs"

// notify announces a job's end; PostgreSQL delivers it when tx commits.
func notify(ctx context.Context, q pg.Querier, id int64) error {
	if _, err := q.Exec(ctx, `SELECT pg_notify($1, recalc.job_payload($2)::text)`, Channel, id); err != nil {
		return fmt.Errorf("notify end of job %d: %w", id, err)
	}
	return nil
}

// Payload returns the completion notification of job id, as JSON.
func Payload(ctx context.Context, q pg.Querier, id int64) ([]byte, error) {
	var b []byte
	if err := q.QueryRow(ctx, `SELECT recalc.job_payload($1)::text`, id).Scan(&b); err != nil {
		return nil, fmt.Errorf("read payload of job %d: %w", id, err)
	}
	return b, nil
}

// MaxErrorBytes is the most a failed job's error takes in its NOTIFY
// payload, as JSON: PostgreSQL refuses a payload from 8,000 bytes on, and a
// refused NOTIFY would leave the job running. A longer error keeps its
// start, cut between characters, and ends with ErrorCut.
const MaxErrorBytes = 2000

// ErrorCut ends a failed job's error cut at MaxErrorBytes.
const ErrorCut = " [cut]"

// Fail marks a running job failed with its error (see clipError) and
// announces it. It returns false, and changes nothing, when the job has
// ended already: a finish whose commit's answer was lost did commit, and a
// done job stays done.
func Fail(ctx context.Context, tx pgx.Tx, id int64, msg string) (bool, error) {
	msg = clipError(msg)
	tag, err := tx.Exec(ctx, `UPDATE recalc.job SET status = 'failed', error = $2, finished_at = now() WHERE id = $1 AND status = 'running'`, id, msg)
	if err != nil {
		return false, fmt.Errorf("mark job %d failed: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, notify(ctx, tx, id)
}

// clipError makes msg text PostgreSQL takes (bytes that are not UTF-8, and
// NULs, become U+FFFD) and cuts it to at most MaxErrorBytes as JSON, where
// a control character takes up to six bytes (\u0001) and a quote or a
// backslash two.
func clipError(msg string) string {
	msg = strings.ReplaceAll(strings.ToValidUTF8(msg, "\uFFFD"), "\x00", "\uFFFD")
	size := 0
	for i, r := range msg {
		switch {
		case r < 0x20:
			size += 6
		case r == '"' || r == '\\':
			size += 2
		default:
			size += utf8.RuneLen(r)
		}
		if size > MaxErrorBytes {
			return msg[:i] + ErrorCut
		}
	}
	return msg
}

// Resume sets a failed job running again.
func Resume(ctx context.Context, q pg.Querier, id int64) error {
	if _, err := q.Exec(ctx, `UPDATE recalc.job SET status = 'running', error = NULL, finished_at = NULL WHERE id = $1 AND status = 'failed'`, id); err != nil {
		return fmt.Errorf("resume job %d: %w", id, err)
	}
	return nil
}

// Pending counts the job's chunks not yet done.
func Pending(ctx context.Context, q pg.Querier, job int64) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, `SELECT count(*) FROM recalc.chunk WHERE job_id = $1 AND status = 'pending'`, job).Scan(&n); err != nil {
		return 0, fmt.Errorf("count pending chunks: %w", err)
	}
	return n, nil
}

// MarkStaged records that a full job's staging tables are complete.
func MarkStaged(ctx context.Context, q pg.Querier, job int64) error {
	if _, err := q.Exec(ctx, `UPDATE recalc.job SET staged = true WHERE id = $1`, job); err != nil {
		return fmt.Errorf("mark job %d staged: %w", job, err)
	}
	return nil
}

// SetDriftFixed records on a full job the number of share rows its swap
// changes: the drift it repairs.
func SetDriftFixed(ctx context.Context, q pg.Querier, job, n int64) error {
	if _, err := q.Exec(ctx, `UPDATE recalc.job SET drift_fixed = $2 WHERE id = $1`, job, n); err != nil {
		return fmt.Errorf("record drift of job %d: %w", job, err)
	}
	return nil
}

// SetDriftFromChunks records on a full job in place, before it finishes,
// the share rows its chunks changed as its drift: it diffs every family and
// writes only what differs, as a swap's drift count counts.
func SetDriftFromChunks(ctx context.Context, q pg.Querier, job int64) error {
	if _, err := q.Exec(ctx, `UPDATE recalc.job SET drift_fixed = (
		SELECT coalesce(sum(rows_added + rows_removed + rows_updated), 0) FROM recalc.chunk WHERE job_id = $1) WHERE id = $1`, job); err != nil {
		return fmt.Errorf("record drift of job %d: %w", job, err)
	}
	return nil
}

// ChunkStats counts what applying one chunk did.
type ChunkStats struct {
	Records                 int64
	Added, Removed, Updated int64
	Invalid                 []string // records given no access: see sharing.Rows.Invalid
}
