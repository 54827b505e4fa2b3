package testdb

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestAdminPoolHoldsEveryDrop: the admin pool has a session for each of
// the drops Main runs at once. It had 4 while Main allowed 8, so the
// drops ran 4 wide and a package waited minutes for their checkpoints.
func TestAdminPoolHoldsEveryDrop(t *testing.T) {
	pool, err := adminPool()
	if err != nil {
		t.Fatal(err)
	}
	if got := pool.Config().MaxConns; got < dropParallel {
		t.Fatalf("the admin pool holds %d sessions, Main drops %d databases at once", got, dropParallel)
	}
	if dropParallel < 16 {
		t.Fatalf("Main drops %d databases at once, want at least 16: fewer wait for more checkpoints", dropParallel)
	}
}

// TestSpentDatabasesDroppedWhileTestsRun: under Main, the databases of
// finished tests are dropped in the background once dropParallel of them
// wait, while the other tests run, not only when the package's tests end
// (internal/attach waited 31 s after its last test for them); one that is a
// template now, which later tests may still copy, is left for Main.
func TestSpentDatabasesDroppedWhileTestsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := &spentDBs{main: true}
	var names []string
	t.Cleanup(func() {
		for _, name := range names {
			if err := Drop(context.Background(), name); err != nil {
				t.Error(err)
			}
		}
	})
	for range dropParallel {
		name, err := Create(ctx, "")
		if err != nil {
			t.Fatalf("%v (set DATABASE_URL or run make test)", err)
		}
		names = append(names, name)
	}
	if err := MarkTemplate(ctx, names[0]); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if !s.keep(name) {
			t.Fatalf("keep %s under Main: not kept", name)
		}
	}
	pool, err := adminPool()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(datname::text ORDER BY datname), '{}')
				FROM pg_database WHERE datname = ANY ($1)`, names).Scan(&left); err != nil {
			t.Fatalf("list the kept databases: %v", err)
		}
		if len(left) <= 1 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) != 1 || left[0] != names[0] {
		t.Fatalf("%d kept databases left 2 minutes after the last was kept, while tests run: %v; want only the template %s",
			len(left), left, names[0])
	}
}

// createN creates n empty databases, dropped when the test ends if they
// are still there.
func createN(t *testing.T, ctx context.Context, n int) []string {
	t.Helper()
	var names []string
	t.Cleanup(func() {
		for _, name := range names {
			if err := Drop(context.Background(), name); err != nil {
				t.Error(err)
			}
		}
	})
	for range n {
		name, err := Create(ctx, "")
		if err != nil {
			t.Fatalf("%v (set DATABASE_URL or run make test)", err)
		}
		names = append(names, name)
	}
	return names
}

// TestDropSessionsClosedAfterBatch: the admin sessions of a batch of
// drops are closed as it ends, before another test process's batch opens
// its own, and the last one soon after, not kept for the rest of the test
// process: two packages side by side kept 36 idle of the server's 100,
// and their tests ran out of connections (SQLSTATE 53300).
func TestDropSessionsClosedAfterBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	names := createN(t, ctx, dropParallel)
	if _, err := dropUnlessTemplates(ctx, names); err != nil {
		t.Fatal(err)
	}
	pool, err := adminPool()
	if err != nil {
		t.Fatal(err)
	}
	// The batch closes its sessions before it returns; the pool forgets
	// a closed one in a goroutine of its own (puddle's Destroy), so its
	// count may lag by a moment: allow it a tenth of adminIdle, the time
	// an idle session was kept before.
	var open int32
	for deadline := time.Now().Add(adminIdle / 10); ; time.Sleep(10 * time.Millisecond) {
		if open = pool.Stat().TotalConns(); open <= 1 || time.Now().After(deadline) {
			break
		}
	}
	if open > 1 {
		t.Fatalf("the admin pool holds %d sessions %v after a batch of %d drops, want at most the drop lock's",
			open, adminIdle/10, dropParallel)
	}
	for deadline := time.Now().Add(4 * adminIdle); ; time.Sleep(100 * time.Millisecond) {
		if open = pool.Stat().TotalConns(); open == 0 || time.Now().After(deadline) {
			break
		}
	}
	if open != 0 {
		t.Fatalf("the admin pool holds %d session(s) %v after a batch of drops, want none", open, 4*adminIdle)
	}
}

// TestDropsWaitForAnotherProcessDrops: a batch of drops waits while
// another test process's batch holds the drop lock, so that the packages
// of one go test run drop one batch at a time, each on dropParallel
// sessions, and not all at once.
func TestDropsWaitForAnotherProcessDrops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	other, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("connect to the test server: %v (set DATABASE_URL or run make test)", err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(dropLock)); err != nil {
		t.Fatalf("take the drop lock as another test process: %v", err)
	}
	names := createN(t, ctx, 2)
	done := make(chan error, 1)
	go func() { _, err := dropUnlessTemplates(ctx, names); done <- err }()
	waitLockWaiter(t, ctx, other)
	var left int
	if err := other.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = ANY ($1)`, names).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != len(names) {
		t.Fatalf("%d of %d databases dropped while another test process held the drop lock", len(names)-left, len(names))
	}
	if _, err := other.Exec(ctx, `SELECT pg_advisory_unlock($1)`, int64(dropLock)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := other.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = ANY ($1)`, names).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d of %d databases left after the drop lock was released", left, len(names))
	}
}

// waitLockWaiter waits, up to 20 s, until a session waits for the drop
// lock that c holds.
func waitLockWaiter(t *testing.T, ctx context.Context, c *pgx.Conn) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var waiting bool
		if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
				AND (classid::bigint << 32) | objid::bigint = $1)`, int64(dropLock)).Scan(&waiting); err != nil {
			t.Fatalf("read lock waits: %v", err)
		}
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no drop waited 20 s for the drop lock another test process held")
		}
	}
}

// TestMigratedPoolClosesIdleSessions: a test's pool closes the sessions
// a busy phase opened once they sit idle, where pgxpool kept them for 30
// minutes and tests side by side held up to 60 of a server's 100.
func TestMigratedPoolClosesIdleSessions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := Migrated(t)
	var conns []*pgxpool.Conn
	for range 3 {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	var open int32
	for deadline := time.Now().Add(4 * poolIdle); ; time.Sleep(100 * time.Millisecond) {
		if open = pool.Stat().TotalConns(); open == 0 || time.Now().After(deadline) {
			break
		}
	}
	if open != 0 {
		t.Fatalf("a test's pool holds %d session(s) %v after its busy phase, want none", open, 4*poolIdle)
	}
}

// TestNothingLeftTakesNoDropLock: a test process with no database left
// to drop when its tests end (a test's child process) ends at once, not
// after the batches of drops another test process holds the drop lock for.
func TestNothingLeftTakesNoDropLock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	other, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("connect to the test server: %v (set DATABASE_URL or run make test)", err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(dropLock)); err != nil {
		t.Fatalf("take the drop lock as another test process: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- dropLeft(ctx, nil) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("with no database left to drop, Main waited for the drop lock another test process held")
	}
}
