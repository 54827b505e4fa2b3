package testdb

import (
	"context"
	"testing"
	"time"
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
