package locks

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Hold takes the scope's lock in a transaction of its own, beside the
// caller's work on other connections, and returns the function that ends it,
// releasing the lock. It waits while another holder runs. The transaction
// only holds the lock: it keeps no snapshot between its statements.
func Hold(ctx context.Context, pool *pgxpool.Pool, s Scope) (release func(), err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin a transaction for the %s lock: %w", s, err)
	}
	if err := XactLock(ctx, tx, s); err != nil {
		_ = tx.Rollback(context.Background())
		return nil, err
	}
	// A failed rollback closes the connection, which ends the transaction.
	return func() { _ = tx.Rollback(context.Background()) }, nil
}
