package changes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/recalc-dev/recalc/internal/pg"
)

// NotFresh is the SQLSTATE recalc.wait_fresh raises when its timeout ends
// before the changes it waits for are materialized (migration 011).
const NotFresh = "RC001"

// IsNotFresh reports whether err is recalc.wait_fresh's timeout.
func IsNotFresh(err error) bool { return pg.Code(err) == NotFresh }

// Batch is the head of the change log as one statement saw it, for the
// fast path of `recalc watch`.
type Batch struct {
	Seqs        []int64 // the rows read, in order: consume exactly these (one more than the limit when More)
	OnlyRecords bool    // every row is a record change (no section, no truncate)
	Keys        int64   // record ids the rows name, repeats counted
	More        bool    // the log holds more than the rows read
}

// ReadBatch reads the first rows of the change log committed now, at most
// limit of them (and one more, to tell whether there are more). Rows that commit later, even with lower seqs, are left
// for the next batch.
func ReadBatch(ctx context.Context, q pg.Querier, limit int) (*Batch, error) {
	b := &Batch{}
	var n int
	err := q.QueryRow(ctx, `SELECT coalesce(array_agg(seq ORDER BY seq), '{}'), coalesce(bool_and(kind = 'record'), true),
		coalesce(sum(cardinality(keys)), 0), count(*)
		FROM (SELECT seq, kind, keys FROM recalc.change ORDER BY seq LIMIT $1::int + 1) x`, limit).Scan(&b.Seqs, &b.OnlyRecords, &b.Keys, &n)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	b.More = n > limit
	return b, nil
}

// ConfigVersion returns the counter of writes to the configuration, the
// applied configuration and the deferral: while it stays the same, so do
// they (migration 011).
func ConfigVersion(ctx context.Context, q pg.Querier) (int64, error) {
	var v int64
	if err := q.QueryRow(ctx, `SELECT version FROM recalc.config_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read configuration version: %w", err)
	}
	return v, nil
}

// FreshToken returns recalc.fresh_token(): a token covering every
// transaction committed before the call.
func FreshToken(ctx context.Context, q pg.Querier) (int64, error) {
	var t int64
	if err := q.QueryRow(ctx, `SELECT recalc.fresh_token()`).Scan(&t); err != nil {
		return 0, fmt.Errorf("take freshness token: %w", err)
	}
	return t, nil
}

// WaitFresh calls recalc.wait_fresh(token, timeout), or the form without
// a token when token is 0. Its error is IsNotFresh on timeout.
func WaitFresh(ctx context.Context, q pg.Querier, token int64, timeout time.Duration) error {
	var err error
	if token == 0 {
		_, err = q.Exec(ctx, `SELECT recalc.wait_fresh($1::interval)`, timeout)
	} else {
		_, err = q.Exec(ctx, `SELECT recalc.wait_fresh($1::bigint, $2::interval)`, token, timeout)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Hint != "" {
		return fmt.Errorf("wait until fresh: %w (%s)", err, pgErr.Hint)
	}
	if err != nil {
		return fmt.Errorf("wait until fresh: %w", err)
	}
	return nil
}
