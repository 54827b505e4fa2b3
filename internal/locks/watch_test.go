package locks_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestWatchOutlivesItsSession: Watch's session of its own, once ended
// (pg_terminate_backend, a network blip), was read from again and again,
// failing each time, so that a wait that came after it was never seen and
// the command named the holders instead. Watch now opens another.
func TestWatchOutlivesItsSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE watched (id int)`); err != nil {
		t.Fatal(err)
	}
	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, `LOCK TABLE watched IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	stop := locks.Watch(ctx, conn.Conn())
	defer stop()
	var side int
	for deadline := time.Now().Add(10 * time.Second); side == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Watch opened no session of its own in 10 s")
		}
		_ = pool.QueryRow(ctx, `SELECT coalesce(max(pid), 0) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%pg_blocking_pids%'`).Scan(&side)
	}
	var ended bool
	if err := pool.QueryRow(ctx, `SELECT pg_terminate_backend($1, 5000)`, side).Scan(&ended); err != nil || !ended {
		t.Fatalf("end Watch's session, pid %d: %t, %v", side, ended, err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '1s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE watched IN ACCESS EXCLUSIVE MODE`); err == nil {
		t.Fatal("LOCK TABLE beside the holder's lock: granted, want a lock timeout")
	}
	blocker := fmt.Sprintf("pid %d ", holder.Conn().PgConn().PID())
	if got := stop(); !strings.Contains(strings.Join(got, ", "), blocker) {
		t.Errorf("Watch, its session ended before the wait: %q; want the holder, %s", got, blocker)
	}
}
