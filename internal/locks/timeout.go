package locks

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SetTimeout bounds how long each lock wait of tx may take, until tx ends.
func SetTimeout(ctx context.Context, tx pgx.Tx, d time.Duration) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, fmt.Sprintf("%dms", max(d.Milliseconds(), 1))); err != nil {
		return fmt.Errorf("set lock timeout: %w", err)
	}
	return nil
}
