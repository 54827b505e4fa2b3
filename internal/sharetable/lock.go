package sharetable

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/recalc-dev/recalc/internal/pg"
)

// LockFamilies locks the families' record rows, and the materialized rows
// of records last computed in them: the application's concurrent writes to
// those records wait, and two chunks never interleave on one record. It
// returns the ids (rid) of both, sorted: the records whose rows
// DiffFamilies compares.
//
// It never waits for a lock while it holds one, so neither an application
// transaction nor another chunk can deadlock with it, whatever order they
// lock records in. It takes every lock it can without waiting (SKIP LOCKED),
// inside a savepoint; if one was held, it gives them all back, waits for that
// one alone (up to the transaction's lock_timeout), and tries again.
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
		rids, busy, err := tryLockFamilies(ctx, sp, roots)
		if err == nil && busy == nil {
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

// maxLockRounds bounds LockFamilies' rounds of trying and waiting; past it
// the chunk is retried like on a lock timeout.
const maxLockRounds = 50

// busyRow is a row LockFamilies found locked by another transaction.
type busyRow struct {
	table string // "record" or "acl_record"
	rid   int64
}

// tryLockFamilies is one round of LockFamilies: it locks, without waiting,
// the rows the families hold now, and returns them, or the first row that
// another transaction holds.
func tryLockFamilies(ctx context.Context, tx pgx.Tx, roots []string) ([]int64, *busyRow, error) {
	current, err := readColumn[int64](ctx, tx, "family records", `SELECT rid FROM recalc.record WHERE root_id = ANY($1) ORDER BY rid`, roots)
	if err != nil {
		return nil, nil, err
	}
	locked, err := readColumn[int64](ctx, tx, "family records", `SELECT rid FROM recalc.record WHERE rid = ANY($1) AND root_id = ANY($2)
		ORDER BY rid FOR UPDATE SKIP LOCKED`, current, roots)
	if err != nil {
		return nil, nil, err
	}
	if rid, ok := firstMissing(current, locked); ok {
		return nil, &busyRow{"record", rid}, nil
	}
	before, err := readColumn[int64](ctx, tx, "materialized family records", `SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1)`, roots)
	if err != nil {
		return nil, nil, err
	}
	// A record another chunk moved to a family of its own meanwhile drops
	// out: the condition is checked again on the locked row.
	const computedSQL = `SELECT rid FROM recalc.acl_record WHERE rid = ANY($1) AND (root_id = ANY($2) OR rid = ANY($3)) ORDER BY rid`
	candidates := sortedUnion(locked, before)
	computed, err := readColumn[int64](ctx, tx, "materialized family records", computedSQL, candidates, roots, locked)
	if err != nil {
		return nil, nil, err
	}
	lockedComputed, err := readColumn[int64](ctx, tx, "materialized family records", computedSQL+` FOR UPDATE SKIP LOCKED`, computed, roots, locked)
	if err != nil {
		return nil, nil, err
	}
	if rid, ok := firstMissing(computed, lockedComputed); ok {
		return nil, &busyRow{"acl_record", rid}, nil
	}
	return sortedUnion(locked, lockedComputed), nil, nil
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

// waitForRow waits, holding no record lock, until the busy row is free (or
// gone), then lets it go again: the next round locks it with the others.
func waitForRow(ctx context.Context, tx pgx.Tx, b *busyRow) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("lock families: %w", err)
	}
	_, err = sp.Exec(ctx, `SELECT FROM `+pgx.Identifier{"recalc", b.table}.Sanitize()+` WHERE rid = $1 FOR UPDATE`, b.rid)
	if rerr := sp.Rollback(ctx); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("wait for a locked %s row: %w", b.table, err)
	}
	return nil
}

// FamilyRIDs is what LockFamilies returns, read without locks, for readers.
func FamilyRIDs(ctx context.Context, q pg.Querier, roots []string) ([]int64, error) {
	current, err := readColumn[int64](ctx, q, "family records", `SELECT rid FROM recalc.record WHERE root_id = ANY($1) ORDER BY rid`, roots)
	if err != nil {
		return nil, err
	}
	before, err := readColumn[int64](ctx, q, "materialized family records", `SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1)`, roots)
	if err != nil {
		return nil, err
	}
	computed, err := readColumn[int64](ctx, q, "materialized family records", `SELECT rid FROM recalc.acl_record
		WHERE rid = ANY($1) AND (root_id = ANY($2) OR rid = ANY($3)) ORDER BY rid`, sortedUnion(current, before), roots, current)
	if err != nil {
		return nil, err
	}
	return sortedUnion(current, computed), nil
}

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
