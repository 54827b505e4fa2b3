package sharetable

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Job is a row of recalc.job.
type Job struct {
	ID        int64
	Kind      string // "full" or "incremental"
	Trigger   string
	Status    string  // "running", "failed" or "done"
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
	coalesce(drift_fixed, 0), staged`

func scanJob(row pgx.Row) (*Job, error) {
	j := &Job{}
	err := row.Scan(&j.ID, &j.Kind, &j.Trigger, &j.Status, &j.ChangeSeq, &j.Consumes, &j.Config, &j.Plan, &j.Chunks, &j.Error,
		&j.DoRules, &j.DoClosure, &j.Records, &j.InvalidRecords, &j.RowsAdded, &j.RowsRemoved, &j.RowsUpdated,
		&j.ClosureAdded, &j.ClosureRemoved, &j.DriftFixed, &j.Staged)
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
		rows_updated = $6, invalid = $7, done_by = $8, done_at = now() WHERE job_id = $1 AND n = $2`,
		job, n, st.Records, st.Added, st.Removed, st.Updated, len(st.Invalid), worker)
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
// share rows, deletes the change rows it planned from, and only those: a
// change that committed meanwhile, whatever its seq, stays for the next run.
func FinishJob(ctx context.Context, tx pgx.Tx, j *Job, cl *ClosureStats) error {
	_, err := tx.Exec(ctx, `
		UPDATE recalc.job j SET status = 'done', finished_at = now(), error = NULL,
			records = c.records, invalid_records = c.invalid, rows_added = c.added, rows_removed = c.removed,
			rows_updated = c.updated, closure_added = $2, closure_removed = $3
		FROM (SELECT coalesce(sum(records), 0) records, coalesce(sum(invalid), 0) invalid, coalesce(sum(rows_added), 0) added,
		             coalesce(sum(rows_removed), 0) removed, coalesce(sum(rows_updated), 0) updated
		      FROM recalc.chunk WHERE job_id = $1) c
		WHERE j.id = $1`, j.ID, cl.Added, cl.Removed)
	if err != nil {
		return fmt.Errorf("finish job %d: %w", j.ID, err)
	}
	if j.DoRules {
		if err := ConsumeChanges(ctx, tx, j.Consumes); err != nil {
			return err
		}
	}
	return notifyJob(ctx, tx, j.ID)
}

// ConsumeChanges deletes the listed change rows.
func ConsumeChanges(ctx context.Context, tx pgx.Tx, seqs []int64) error {
	if _, err := tx.Exec(ctx, `DELETE FROM recalc.change WHERE seq = ANY($1)`, seqs); err != nil {
		return fmt.Errorf("clear change log: %w", err)
	}
	return nil
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

// Changes is the change log as one statement saw it.
type Changes struct {
	Seqs      []int64 // the rows seen, in order: a job plans from and consumes exactly these
	Truncated bool    // recalc.record was truncated
}

// Last is the highest seq seen, 0 when none.
func (c *Changes) Last() int64 {
	if len(c.Seqs) == 0 {
		return 0
	}
	return c.Seqs[len(c.Seqs)-1]
}

// ReadChanges reads which change rows are committed now, in one statement:
// rows that commit later, even with lower seqs, are left for the next job.
func ReadChanges(ctx context.Context, q Querier) (*Changes, error) {
	c := &Changes{}
	err := q.QueryRow(ctx, `SELECT coalesce(array_agg(seq ORDER BY seq), '{}'), coalesce(bool_or(kind = 'truncate'), false)
		FROM recalc.change`).Scan(&c.Seqs, &c.Truncated)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	return c, nil
}

// ChangedRecords returns the distinct ids of the records changed by the
// listed change rows.
func ChangedRecords(ctx context.Context, q Querier, seqs []int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT unnest(keys) FROM recalc.change WHERE kind = 'record' AND seq = ANY($1)`, seqs)
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

// SetLockTimeout bounds how long each lock wait of tx may take, until tx ends.
func SetLockTimeout(ctx context.Context, tx pgx.Tx, d time.Duration) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, fmt.Sprintf("%dms", max(d.Milliseconds(), 1))); err != nil {
		return fmt.Errorf("set lock timeout: %w", err)
	}
	return nil
}
