package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/schema"
)

// Deferred returns the deferred sides and since when.
func Deferred(ctx context.Context, q pg.Querier) (map[string]time.Time, error) {
	rows, err := q.Query(ctx, `SELECT side, since FROM recalc.deferral`)
	if err != nil {
		return nil, fmt.Errorf("read deferral: %w", err)
	}
	out := map[string]time.Time{}
	var side string
	var since time.Time
	if _, err := pgx.ForEachRow(rows, []any{&side, &since}, func() error { out[side] = since; return nil }); err != nil {
		return nil, fmt.Errorf("read deferral: %w", err)
	}
	return out, nil
}

// Defer suspends calculation of the given sides (keeping an earlier start).
func Defer(ctx context.Context, q pg.Querier, sides []string) error {
	if _, err := q.Exec(ctx, `INSERT INTO recalc.deferral (side) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, sides); err != nil {
		return fmt.Errorf("defer %v: %w", sides, err)
	}
	return nil
}

// AwaitInFlight returns once every transaction holding the model lock when
// it was called has ended: a `recalc watch` step or a plan that read the
// deferral before a deferral committed goes on absorbing, in READ
// COMMITTED, what commits while it runs. `recalc defer` waits for them, so
// that a write committed after it returns waits for the resume. It takes
// the lock and lets it go at once.
func AwaitInFlight(ctx context.Context, pool *pgxpool.Pool) error {
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return schema.LockModel(ctx, tx) }); err != nil {
		return fmt.Errorf("wait for the steps in flight: %w", err)
	}
	return nil
}

// RulesDeferredForChunk reports, for a chunk about to read records, whether
// share rows are deferred: it first takes the deferral lock shared, held
// until tx ends, so that `recalc defer` (AwaitChunks) waits for a chunk
// that read no deferral. Read after the lock, in a snapshot of its own, the
// deferral is the one committed before any AwaitChunks that came first.
func RulesDeferredForChunk(ctx context.Context, tx pgx.Tx) (bool, error) {
	if err := locks.XactShare(ctx, tx, locks.Deferral); err != nil {
		return false, err
	}
	var deferred bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.deferral WHERE side = $1)`, SideRules).Scan(&deferred); err != nil {
		return false, fmt.Errorf("read deferral: %w", err)
	}
	return deferred, nil
}

// AwaitChunks returns once every chunk transaction that read the deferral
// before it was called (RulesDeferredForChunk) has ended: a chunk that read
// none reads records as it runs. `recalc defer` calls it after committing
// the deferral; chunks that begin after read it, and claim nothing.
func AwaitChunks(ctx context.Context, pool *pgxpool.Pool) error {
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return locks.XactLock(ctx, tx, locks.Deferral) }); err != nil {
		return fmt.Errorf("wait for the chunks in flight: %w", err)
	}
	return nil
}

// Undefer lifts the suspension of the given sides.
func Undefer(ctx context.Context, q pg.Querier, sides []string) error {
	if _, err := q.Exec(ctx, `DELETE FROM recalc.deferral WHERE side = ANY($1)`, sides); err != nil {
		return fmt.Errorf("resume %v: %w", sides, err)
	}
	return nil
}
