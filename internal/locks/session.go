package locks

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Hold takes the scope's lock as a session lock on a connection of its own
// and returns the function that releases it. It waits while another holder
// runs.
func Hold(ctx context.Context, pool *pgxpool.Pool, s Scope) (release func(), err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection for %s lock: %w", s, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, int32(namespace), int32(s)); err != nil {
		conn.Release()
		return nil, fmt.Errorf("take %s lock: %w", s, err)
	}
	return func() {
		// A failed unlock leaves the lock with the session; closing the
		// connection ends the session and frees it.
		if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1, $2)`, int32(namespace), int32(s)); err != nil {
			_ = conn.Conn().Close(context.Background())
		}
		conn.Release()
	}, nil
}
