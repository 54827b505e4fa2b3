package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/pg"
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

// Undefer lifts the suspension of the given sides.
func Undefer(ctx context.Context, q pg.Querier, sides []string) error {
	if _, err := q.Exec(ctx, `DELETE FROM recalc.deferral WHERE side = ANY($1)`, sides); err != nil {
		return fmt.Errorf("resume %v: %w", sides, err)
	}
	return nil
}
