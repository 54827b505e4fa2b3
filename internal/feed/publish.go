package feed

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/pg"
)

// moveCTE moves every pending entry the statement sees to the feed, once
// per (kind, key, object), under new cursors in a stable order, with the
// publishing job ($1, NULL outside a job); ins returns the new cursors.
const moveCTE = `
	moved AS (DELETE FROM recalc.feed_pending RETURNING kind, key, object),
	one AS (SELECT DISTINCT kind, key, object FROM moved ORDER BY kind, object, key),
	ins AS (
		INSERT INTO recalc.feed (cursor, kind, key, object, job)
		SELECT nextval('recalc.feed_cursor'), kind, key, object, $1::bigint FROM one
		RETURNING cursor)`

// pruneCTE deletes the oldest entries, those published at or before the
// last one older than the retention: always a prefix of the feed, so that
// pruned_through says exactly which cursors a reader can no longer get.
// gone returns the deleted cursors.
const pruneCTE = `
	cut AS (
		SELECT max(f.cursor) AS upto FROM recalc.feed f, recalc.feed_state s WHERE f.at < now() - s.retention),
	gone AS (DELETE FROM recalc.feed f USING cut WHERE f.cursor <= cut.upto RETURNING f.cursor),
	mark AS (
		UPDATE recalc.feed_state SET pruned_through = greatest(pruned_through, (SELECT max(cursor) FROM gone))
		WHERE EXISTS (SELECT 1 FROM gone))`

// publish moves and prunes in one statement: one round trip.
const publish = `WITH ` + moveCTE + `,` + pruneCTE + `
	SELECT (SELECT count(*) FROM ins)`

// prune only prunes.
const prune = `WITH ` + pruneCTE + `
	SELECT count(*) FROM gone`

// Publish moves the committed pending entries, and tx's own, to the feed
// under new cursors, in tx. job is the publishing job, 0 outside one.
//
// Every writer of the materialized tables calls it in the transaction that
// writes them, as late as possible: a job's finish does, and so must a
// fast path that writes share rows outside jobs (after sharetable's writes,
// which record the pending entries themselves). It locks the row of
// recalc.feed_state until tx ends, so publishers serialize and cursor order
// is commit order; it is a row lock, not an advisory lock, because any role
// that can connect could hold an advisory lock and stall every publisher.
// Take it last, after every row and table lock tx needs. tx must be
// READ COMMITTED (pgx's default), so that the move, a statement after the
// lock, sees what the previous publisher committed. Entries pending in
// transactions that have not committed yet wait for the next publisher.
// In the same statement it prunes the entries older than the retention
// (as Prune does): an index probe when there is none.
func Publish(ctx context.Context, tx pgx.Tx, job int64) (int64, error) {
	if _, err := tx.Exec(ctx, `SELECT FROM recalc.feed_state FOR UPDATE`); err != nil {
		return 0, fmt.Errorf("lock the access-change feed: %w", err)
	}
	var publisher *int64
	if job > 0 {
		publisher = &job
	}
	var n int64
	if err := tx.QueryRow(ctx, publish, publisher).Scan(&n); err != nil {
		return 0, fmt.Errorf("publish access changes: %w", err)
	}
	return n, nil
}

// PublishEvery publishes a record entry for every record of
// recalc.acl_record, in tx, under the feed lock, as job: the first
// computation's swap, after which Swap reports that every record's access
// changed. Written straight to the feed, not through feed_pending: a
// million entries need no deduplication. Call it just before Publish.
func PublishEvery(ctx context.Context, tx pgx.Tx, job int64) error {
	if _, err := tx.Exec(ctx, `SELECT FROM recalc.feed_state FOR UPDATE`); err != nil {
		return fmt.Errorf("lock the access-change feed: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.feed (cursor, kind, key, object, job)
		SELECT nextval('recalc.feed_cursor'), 'record', id, object, $1 FROM recalc.acl_record`, job); err != nil {
		return fmt.Errorf("publish every record: %w", err)
	}
	return nil
}

// Prune deletes the entries older than the retention, in tx, as Publish
// does. A reader whose cursor is below the last pruned one is told to
// resync.
func Prune(ctx context.Context, tx pgx.Tx) (int64, error) {
	var n int64
	if err := tx.QueryRow(ctx, prune).Scan(&n); err != nil {
		return 0, fmt.Errorf("prune access changes: %w", err)
	}
	return n, nil
}

// VacuumPending vacuums recalc.feed_pending, skipping it when another
// session holds a conflicting lock. Every entry passes through it once, and
// a full job's can number a million, after which each Publish would scan
// the dead rows of them all until the table is vacuumed. Only the engine
// writes it, in the transactions that publish, so the exclusive lock that
// gives the emptied pages back is rarely contended. It cannot run in a
// transaction.
func VacuumPending(ctx context.Context, q pg.Querier) error {
	if _, err := q.Exec(ctx, `VACUUM (SKIP_LOCKED) recalc.feed_pending`); err != nil {
		return fmt.Errorf("vacuum the pending access changes: %w", err)
	}
	return nil
}
