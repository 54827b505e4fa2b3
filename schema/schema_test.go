package schema_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/schema"
)

// TestMigrateConcurrentAndIdempotent runs init from several connections at
// once, then again: every call succeeds and each migration applies once.
func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ms, err := schema.Migrations()
	if err != nil || len(ms) == 0 {
		t.Fatalf("migrations: %v (%d)", err, len(ms))
	}
	if err := schema.Check(ctx, pool); err == nil {
		t.Fatal("Check passed on an empty database")
	}
	var wg sync.WaitGroup
	applied := make([]int, 4)
	errs := make([]error, 4)
	for i := range applied {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied[i], errs[i] = schema.Migrate(ctx, pool)
		}()
	}
	wg.Wait()
	total := 0
	for i := range applied {
		if errs[i] != nil {
			t.Fatalf("concurrent init %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if total != len(ms) {
		t.Errorf("concurrent inits applied %d migrations in all, want %d", total, len(ms))
	}
	if n, err := schema.Migrate(ctx, pool); err != nil || n != 0 {
		t.Errorf("second init applied %d (err %v), want 0", n, err)
	}
	if err := schema.Check(ctx, pool); err != nil {
		t.Errorf("Check after init: %v", err)
	}
}

// TestMigrateIgnoresCallerSearchPath: functions a role created on the
// migrating session's search_path, closer matches than pg_catalog's, are
// not bound into the SQL-standard bodies of migration 018.
func TestMigrateIgnoresCallerSearchPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.New(t)
	setupPool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer setupPool.Close()
	if _, err := setupPool.Exec(ctx, `CREATE SCHEMA evil;
		CREATE FUNCTION evil.unnest(text[]) RETURNS SETOF text LANGUAGE sql AS $$ SELECT 'PWNED' $$`); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = "evil, pg_catalog"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := pool.QueryRow(ctx, `SELECT recalc.rls_text_ids(ARRAY['o:a', 'o:b'], 'o:')::text`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "{a,b}" {
		t.Errorf("rls_text_ids after a migration under search_path evil: %s, want {a,b}", got)
	}
}

// TestChangeKeysCompression: the ids array of a change row is compressed
// with lz4 on a server that has it (migration 030), and a server without
// lz4 keeps its default.
func TestChangeKeysCompression(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Migrated(t)
	want := "l"
	if _, err := pool.Exec(ctx, `CREATE TEMP TABLE probe (x text COMPRESSION lz4)`); err != nil {
		if pg.Code(err) != pg.FeatureNotSupported {
			t.Fatal(err)
		}
		want = "" // the server's default_toast_compression
	}
	var got string
	if err := pool.QueryRow(ctx, `SELECT attcompression::text FROM pg_attribute
		WHERE attrelid = 'recalc.change'::regclass AND attname = 'keys'`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("recalc.change.keys compression %q, want %q", got, want)
	}
}
