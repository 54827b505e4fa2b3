package sharetable_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestRecordMovedMidChunkIsRetried: LockFamilies locks no recalc.record
// row, so a record's root_id can move between two families while both are
// computed. Writer 1 computes family a1 with a new record x and has not
// committed; x moves to family a2 (the update does not wait for writer 1);
// writer 2 computes a2, and its write of x's rows waits for writer 1's.
// Once writer 1 commits, writer 2 fails with a serialization failure, which
// a chunk retries, instead of writing rows of x beside writer 1's.
func TestRecordMovedMidChunkIsRetried(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	if _, err := testkit.ImportString(ctx, pool, `{"objects": [{"name": "account", "internal_owd": "private"}],
		"roles": [{"id": "r1"}], "users": [{"id": "u1", "role": "r1"}, {"id": "u2", "role": "r1"}],
		"records": [{"object": "account", "id": "a1", "owner": "u1"}, {"object": "account", "id": "a2", "owner": "u2"}]}`); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	doc, err := store.AppliedConfig(ctx, pool, store.SideRules)
	if err != nil {
		t.Fatal(err)
	}
	org, err := sharing.DecodeOrg(doc)
	if err != nil {
		t.Fatal(err)
	}
	dict, err := sharetable.LoadDict(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO recalc.record (id, object, owner, root_id) VALUES ('x', 'account', 'u1', 'a1')`); err != nil {
		t.Fatal(err)
	}
	tx1, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(ctx) //nolint:errcheck // no-op once committed
	if _, err := sharetable.ApplyFamilies(ctx, tx1, org, dict, []string{"a1"}); err != nil {
		t.Fatalf("writer 1: %v", err)
	}
	if _, err := pool.Exec(ctx, `UPDATE recalc.record SET root_id = 'a2' WHERE id = 'x'`); err != nil {
		t.Fatalf("move x while writer 1 holds its family: %v", err)
	}
	tx2, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(ctx) //nolint:errcheck // rolled back either way
	second := make(chan error, 1)
	go func() {
		_, err := sharetable.ApplyFamilies(ctx, tx2, org, dict, []string{"a2"})
		second <- err
	}()
	testkit.WaitBlocked(t, ctx, pool, tx2.Conn().PgConn().PID(), "writer 2 to wait for writer 1's rows of x")
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-second; !pg.IsRetryable(err) || pg.Code(err) != pg.SerializationFailure {
		t.Fatalf("writer 2 after writer 1 committed x's rows: %v, want a serialization failure, retried", err)
	}
}
