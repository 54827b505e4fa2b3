package testdb

import "testing"

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
