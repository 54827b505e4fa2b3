package sharetable

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Job is a row of recalc.job.
type Job struct {
	ID        int64
	Kind      string // "full" or "incremental"
	Trigger   string
	Status    string // "running", "failed" or "done"
	ChangeSeq int64
	Config    []byte // configuration sections as one JSON object
	Plan      []byte // the plan, as JSON
	Chunks    int
	Error     string
	DoRules   bool // the job writes share rows (and OWDs)
	DoClosure bool // the job writes the closure (and the user table)

	Records, RowsAdded, RowsRemoved, RowsUpdated int64
	ClosureAdded, ClosureRemoved                 int64
	DriftFixed                                   int64 // full jobs: share rows the swap changed
	Staged                                       bool  // full jobs: staging tables complete, ready to swap
}

// Chunk is one unit of a job: families by root id range (full jobs) or by
// root id list (incremental jobs).
type Chunk struct {
	N      int
	Lo, Hi string
	Roots  []string
}

const jobCols = `id, kind, trigger, status, change_seq, config::text, plan::text, chunks, coalesce(error, ''),
	do_rules, do_closure, records, rows_added, rows_removed, rows_updated, closure_added, closure_removed, coalesce(drift_fixed, 0), staged`

func scanJob(row pgx.Row) (*Job, error) {
	j := &Job{}
	err := row.Scan(&j.ID, &j.Kind, &j.Trigger, &j.Status, &j.ChangeSeq, &j.Config, &j.Plan, &j.Chunks, &j.Error,
		&j.DoRules, &j.DoClosure, &j.Records, &j.RowsAdded, &j.RowsRemoved, &j.RowsUpdated, &j.ClosureAdded, &j.ClosureRemoved, &j.DriftFixed, &j.Staged)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return j, err
}

// UnfinishedJob returns the job that is running or failed, or nil.
func UnfinishedJob(ctx context.Context, q Querier) (*Job, error) {
	j, err := scanJob(q.QueryRow(ctx, `SELECT `+jobCols+` FROM recalc.job WHERE status <> 'done'`))
	if err != nil {
		return nil, fmt.Errorf("read unfinished job: %w", err)
	}
	return j, nil
}

// GetJob returns job id, or nil when there is none.
func GetJob(ctx context.Context, q Querier, id int64) (*Job, error) {
	j, err := scanJob(q.QueryRow(ctx, `SELECT `+jobCols+` FROM recalc.job WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("read job %d: %w", id, err)
	}
	return j, nil
}

// LockJob returns job id locked FOR UPDATE until tx ends.
func LockJob(ctx context.Context, tx pgx.Tx, id int64) (*Job, error) {
	j, err := scanJob(tx.QueryRow(ctx, `SELECT `+jobCols+` FROM recalc.job WHERE id = $1 FOR UPDATE`, id))
	if err != nil || j == nil {
		return nil, fmt.Errorf("lock job %d: %w", id, err)
	}
	return j, nil
}

// CreateJob inserts a running job and its chunks and returns its id.
func CreateJob(ctx context.Context, tx pgx.Tx, j *Job, chunks []Chunk) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `INSERT INTO recalc.job (kind, trigger, status, change_seq, config, plan, chunks, do_rules, do_closure)
		VALUES ($1, $2, 'running', $3, $4::jsonb, $5::jsonb, $6, $7, $8) RETURNING id`,
		j.Kind, j.Trigger, j.ChangeSeq, string(j.Config), string(j.Plan), len(chunks), j.DoRules, j.DoClosure).Scan(&id)
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

// ClaimChunk locks the next pending chunk of job until tx ends, skipping
// chunks other workers hold. It returns nil when none is left to claim.
func ClaimChunk(ctx context.Context, tx pgx.Tx, job int64) (*Chunk, error) {
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

// DoneChunk marks a claimed chunk done with what it did.
func DoneChunk(ctx context.Context, tx pgx.Tx, job int64, n int, st *ChunkStats, worker string) error {
	_, err := tx.Exec(ctx, `UPDATE recalc.chunk SET status = 'done', records = $3, rows_added = $4, rows_removed = $5,
		rows_updated = $6, done_by = $7, done_at = now() WHERE job_id = $1 AND n = $2`,
		job, n, st.Records, st.Added, st.Removed, st.Updated, worker)
	if err != nil {
		return fmt.Errorf("mark chunk %d of job %d done: %w", n, job, err)
	}
	return nil
}

// ChunkProgress returns how many of job's chunks are done, and their records.
func ChunkProgress(ctx context.Context, q Querier, job int64) (done int, records int64, err error) {
	err = q.QueryRow(ctx, `SELECT count(*), coalesce(sum(records), 0) FROM recalc.chunk WHERE job_id = $1 AND status = 'done'`, job).Scan(&done, &records)
	if err != nil {
		err = fmt.Errorf("read progress of job %d: %w", job, err)
	}
	return done, records, err
}

// FinishJob marks job done with the totals of its chunks and, when it wrote
// share rows, clears the changes it covered from the change log.
func FinishJob(ctx context.Context, tx pgx.Tx, j *Job, cl *ClosureStats) error {
	_, err := tx.Exec(ctx, `
		UPDATE recalc.job j SET status = 'done', finished_at = now(), error = NULL,
			records = c.records, rows_added = c.added, rows_removed = c.removed, rows_updated = c.updated,
			closure_added = $2, closure_removed = $3
		FROM (SELECT coalesce(sum(records), 0) records, coalesce(sum(rows_added), 0) added,
		             coalesce(sum(rows_removed), 0) removed, coalesce(sum(rows_updated), 0) updated
		      FROM recalc.chunk WHERE job_id = $1) c
		WHERE j.id = $1`, j.ID, cl.Added, cl.Removed)
	if err != nil {
		return fmt.Errorf("finish job %d: %w", j.ID, err)
	}
	if j.DoRules {
		if _, err := tx.Exec(ctx, `DELETE FROM recalc.change WHERE seq <= $1`, j.ChangeSeq); err != nil {
			return fmt.Errorf("clear change log: %w", err)
		}
	}
	return notifyJob(ctx, tx, j.ID)
}

// JobsChannel is the NOTIFY channel on which every job's end is announced,
// with the job's payload as JSON.
const JobsChannel = "recalc_jobs"

// ChangesChannel is the NOTIFY channel that record writes and imports
// signal, so `recalc watch` wakes up.
const ChangesChannel = "recalc_changes"

// notifyJob announces a job's end; PostgreSQL delivers it when tx commits.
func notifyJob(ctx context.Context, q Querier, id int64) error {
	if _, err := q.Exec(ctx, `SELECT pg_notify($1, recalc.job_payload($2)::text)`, JobsChannel, id); err != nil {
		return fmt.Errorf("notify end of job %d: %w", id, err)
	}
	return nil
}

// JobPayload returns the completion notification of job id, as JSON.
func JobPayload(ctx context.Context, q Querier, id int64) ([]byte, error) {
	var b []byte
	if err := q.QueryRow(ctx, `SELECT recalc.job_payload($1)::text`, id).Scan(&b); err != nil {
		return nil, fmt.Errorf("read payload of job %d: %w", id, err)
	}
	return b, nil
}

// FailJob marks a job failed with its error and announces it.
func FailJob(ctx context.Context, tx pgx.Tx, id int64, msg string) error {
	if _, err := tx.Exec(ctx, `UPDATE recalc.job SET status = 'failed', error = $2, finished_at = now() WHERE id = $1`, id, msg); err != nil {
		return fmt.Errorf("mark job %d failed: %w", id, err)
	}
	return notifyJob(ctx, tx, id)
}

// ResumeJob sets a failed job running again.
func ResumeJob(ctx context.Context, q Querier, id int64) error {
	if _, err := q.Exec(ctx, `UPDATE recalc.job SET status = 'running', error = NULL, finished_at = NULL WHERE id = $1 AND status = 'failed'`, id); err != nil {
		return fmt.Errorf("resume job %d: %w", id, err)
	}
	return nil
}

// LastChange returns the highest change seq, 0 when the log is empty.
func LastChange(ctx context.Context, q Querier) (int64, error) {
	var seq int64
	if err := q.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM recalc.change`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("read change log: %w", err)
	}
	return seq, nil
}

// ChangedRecords returns the distinct ids of the records changed up to seq.
func ChangedRecords(ctx context.Context, q Querier, seq int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT unnest(keys) FROM recalc.change WHERE kind = 'record' AND seq <= $1`, seq)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	return ids, nil
}

// PendingChunks counts the job's chunks not yet done.
func PendingChunks(ctx context.Context, q Querier, job int64) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, `SELECT count(*) FROM recalc.chunk WHERE job_id = $1 AND status = 'pending'`, job).Scan(&n); err != nil {
		return 0, fmt.Errorf("count pending chunks: %w", err)
	}
	return n, nil
}

// SetStaged records that a full job's staging tables are complete.
func SetStaged(ctx context.Context, q Querier, job int64) error {
	if _, err := q.Exec(ctx, `UPDATE recalc.job SET staged = true WHERE id = $1`, job); err != nil {
		return fmt.Errorf("mark job %d staged: %w", job, err)
	}
	return nil
}
