package sharetable

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/recalc-dev/recalc/internal/pg"
)

// LockFamilies locks the materialized rows (recalc.acl_record) of the
// families' records and of the records last computed in them, so that two
// writers (a job's chunks, the fast path, verify --repair) never interleave
// on one record. It returns the ids (rid) of both, sorted: the records whose
// rows DiffFamilies compares.
//
// It locks no recalc.record row, so the application's writes never wait
// for a job. A write that commits while a chunk computes is logged in
// recalc.change, and the job consumes only the change rows it planned from:
// the write's own change row makes a later run or the fast path recompute
// the family, and that one waits for these locks, so it writes after this
// chunk. A record new since its family was last computed has no row to
// lock; only a root_id moved between two families' reads lets two writers
// compute it, and DiffFamilies and Apply then make the second retry
// (errMoved).
//
// It never waits for a lock while it holds one, so no other writer can
// deadlock with it, whatever order it locks rows in. It takes every lock it
// can without waiting (SKIP LOCKED), inside a savepoint; if one was held, it
// gives them all back, waits for that one alone (up to the transaction's
// lock_timeout), and tries again.
//
// Every later read of the chunk looks rows up by these ids, in the
// tables' primary keys. Looking them up by root id instead joins on
// root_id, whose statistics big families skew: the planner then scans
// whole share tables for a few thousand records.
func LockFamilies(ctx context.Context, tx pgx.Tx, roots []string) ([]int64, error) {
	for attempt := 0; attempt < maxLockRounds; attempt++ {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("lock families: %w", err)
		}
		rids, busy, err := familyRIDs(ctx, sp, roots, true)
		if err == nil && busy == 0 {
			if err := sp.Commit(ctx); err != nil { // releases the savepoint, keeps the locks
				return nil, fmt.Errorf("lock families: %w", err)
			}
			return rids, nil
		}
		if rerr := sp.Rollback(ctx); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			return nil, fmt.Errorf("lock families: %w", err)
		}
		if err := waitForRow(ctx, tx, busy); err != nil {
			return nil, err
		}
	}
	return nil, &pgconn.PgError{Code: pg.LockNotAvailable, Message: fmt.Sprintf("could not lock the families' rows in %d rounds", maxLockRounds)}
}

// HoldForSnapshot takes the locks that keep recalc.record, the share
// tables and the closure from being truncated, or swapped by a full job,
// until tx ends.
// Neither is visible to a snapshot: a table truncated or swapped in after
// it was taken reads empty, or as rows committed after it. Called first in
// a REPEATABLE READ transaction, it takes them before its snapshot, which
// LOCK TABLE does not take; its next statement does. Writers of rows do not
// wait for them.
func HoldForSnapshot(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `LOCK TABLE recalc.record, recalc.acl_record, recalc.acl_share, recalc.acl_member IN ACCESS SHARE MODE`); err != nil {
		return fmt.Errorf("lock the tables read: %w", err)
	}
	return nil
}

// maxLockRounds bounds LockFamilies' rounds of trying and waiting; past it
// the chunk is retried like on a lock timeout.
const maxLockRounds = 50

// FamilyRIDs is what LockFamilies returns, read without locks, for readers.
func FamilyRIDs(ctx context.Context, q pg.Querier, roots []string) ([]int64, error) {
	rids, _, err := familyRIDs(ctx, q, roots, false)
	return rids, err
}

// familyRIDs reads the ids of the families' records and of the records
// last computed in them. With lock, it locks the materialized rows of those
// without waiting, and returns instead the first that another transaction
// holds (busy), if any.
func familyRIDs(ctx context.Context, q pg.Querier, roots []string, lock bool) (rids []int64, busy int64, err error) {
	current, err := readColumn[int64](ctx, q, "family records", `SELECT rid FROM recalc.record WHERE root_id = ANY($1) ORDER BY rid`, roots)
	if err != nil {
		return nil, 0, err
	}
	before, err := readColumn[int64](ctx, q, "materialized family records", `SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1)`, roots)
	if err != nil {
		return nil, 0, err
	}
	// A record another writer moved to a family of its own meanwhile drops
	// out: the condition is checked again on the locked row.
	const computedSQL = `SELECT rid FROM recalc.acl_record WHERE rid = ANY($1) AND (root_id = ANY($2) OR rid = ANY($3)) ORDER BY rid`
	computed, err := readColumn[int64](ctx, q, "materialized family records", computedSQL, sortedUnion(current, before), roots, current)
	if err != nil || !lock {
		return sortedUnion(current, computed), 0, err
	}
	locked, err := readColumn[int64](ctx, q, "materialized family records", computedSQL+` FOR UPDATE SKIP LOCKED`, computed, roots, current)
	if err != nil {
		return nil, 0, err
	}
	if rid, ok := firstMissing(computed, locked); ok {
		return nil, rid, nil
	}
	return sortedUnion(current, locked), 0, nil
}

// firstMissing returns the first of want, sorted, that got lacks.
func firstMissing(want, got []int64) (int64, bool) {
	for i, j := 0, 0; i < len(want); i++ {
		for j < len(got) && got[j] < want[i] {
			j++
		}
		if j == len(got) || got[j] != want[i] {
			return want[i], true
		}
	}
	return 0, false
}

// waitForRow waits, holding no lock of LockFamilies, until the materialized
// row of record rid is free (or gone), then lets it go again: the next round
// locks it with the others.
func waitForRow(ctx context.Context, tx pgx.Tx, rid int64) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("lock families: %w", err)
	}
	_, err = sp.Exec(ctx, `SELECT FROM recalc.acl_record WHERE rid = $1 FOR UPDATE`, rid)
	if rerr := sp.Rollback(ctx); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("wait for a locked acl_record row: %w", err)
	}
	return nil
}

// errMoved says that a record entered the families after LockFamilies read
// them, or that another writer wrote rows of a record new to them: only a
// root_id moved between families meanwhile does that. It is a serialization
// failure, so the chunk is retried and reads the families again.
func errMoved(what string) error {
	return fmt.Errorf("%w: %w", errFamiliesMoved, &pgconn.PgError{Severity: "ERROR", Code: pg.SerializationFailure, Message: "a record moved between families while they were computed: " + what})
}

// errFamiliesMoved marks errMoved's errors: raised in Go, they leave the
// transaction usable, where a server's error aborts it.
var errFamiliesMoved = errors.New("families moved")

// readColumn runs a query of one column and returns its values; what
// names them in the error.
func readColumn[T any](ctx context.Context, q pg.Querier, what, sql string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[T])
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return out, nil
}

func sortedUnion(a, b []int64) []int64 {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}
