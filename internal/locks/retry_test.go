package locks_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestMain drops the tests' databases when they have all run (testdb.Main).
func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// TestRetrySessionEndsWithinWait: RetrySession's tries each waited the
// session's whole lock_timeout, the last one starting just before wait
// ran out, so with lock_timeout 3s and wait 4s beside a table held
// throughout it gave up after two full tries, 6 s (and with 9s and the
// commands' 10 s, after 18 s), the application's reads and writes of the
// table queued behind the last one. The tries after the first now wait
// what is left of wait, so it gives up after about wait; a lock_timeout
// past wait is still one try of it, and no lock_timeout still tries 100 ms
// at a time.
func TestRetrySessionEndsWithinWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.New(t)
	for _, tc := range []struct {
		name, table   string
		lockTimeout   string // the session's, "" for none
		wait          time.Duration
		atLeast, upTo time.Duration
	}{
		{"lock_timeout shorter than wait", "held_short", "3s", 4 * time.Second, 4 * time.Second, 5500 * time.Millisecond},
		{"lock_timeout past wait", "held_long", "3s", time.Second, 3 * time.Second, 4500 * time.Millisecond},
		{"no lock_timeout", "held_none", "", 2 * time.Second, 2 * time.Second, 3500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := pgxpool.ParseConfig(url)
			if err != nil {
				t.Fatal(err)
			}
			if tc.lockTimeout != "" {
				cfg.ConnConfig.RuntimeParams["lock_timeout"] = tc.lockTimeout
			}
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			table := pgx.Identifier{tc.table}
			if _, err := pool.Exec(ctx, `CREATE TABLE `+table.Sanitize()+` (id int)`); err != nil {
				t.Fatal(err)
			}
			holder, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = holder.Rollback(ctx) }()
			if _, err := holder.Exec(ctx, `LOCK TABLE `+table.Sanitize()+` IN ACCESS SHARE MODE`); err != nil {
				t.Fatal(err)
			}
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			start := time.Now()
			took, _, err := locks.RetrySession(ctx, tx, tc.wait, func(sp pgx.Tx) error {
				_, err := sp.Exec(ctx, `LOCK TABLE `+table.Sanitize()+` IN ACCESS EXCLUSIVE MODE`)
				return err
			})
			elapsed := time.Since(start)
			if err != nil || took || elapsed < tc.atLeast || elapsed > tc.upTo {
				t.Errorf("RetrySession for %s with the session's lock_timeout %q beside a table held throughout: %t, %v after %s; want false after %s to %s",
					tc.wait, tc.lockTimeout, took, err, elapsed.Round(100*time.Millisecond), tc.atLeast, tc.upTo)
			}
		})
	}
}
