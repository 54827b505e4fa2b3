// Package testdb gives each test its own fresh PostgreSQL database on the
// server named by DATABASE_URL (the Makefile sets it, starting a throwaway
// cluster when none is given). Tests never mock the database.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/schema"
)

// AdminURL is the server tests create their databases on.
func AdminURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// New creates an empty database, drops it when the test ends, and returns a
// connection string for it. The test fails at once if no server is reachable.
func New(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("connect to test server (set DATABASE_URL or run make test): %v", err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "recalc_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, AdminURL())
		if err != nil {
			t.Errorf("drop test database: %v", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return WithDatabase(AdminURL(), name)
}

// Migrated creates a fresh database with recalc's schema and returns a pool
// on it, closed when the test ends.
func Migrated(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := schema.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool
}

// Materialized renders every materialized table with natural keys, sorted,
// so two renderings are equal exactly when the tables mean the same.
func Materialized(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	var out strings.Builder
	for _, q := range []string{
		`SELECT 'share ' || r.id || ' ' || g.key || ' ' || s.cause || ' ' || s.level || ' ' || s.boss_ok
		 FROM recalc.acl_share s JOIN recalc.acl_record r USING (rid) JOIN recalc.grantee g USING (gid)`,
		`SELECT 'member ' || g.key || ' ' || p.id || ' ' || m.boss
		 FROM recalc.acl_member m JOIN recalc.grantee g USING (gid) JOIN recalc.principal p USING (uid)`,
		`SELECT 'record ' || r.id || ' ' || r.object || ' ' || coalesce(a.id, '-') || ' ' || r.root_id
		 FROM recalc.acl_record r LEFT JOIN recalc.acl_record a ON a.rid = r.access_root`,
		`SELECT 'object ' || name || ' ' || internal_level || ' ' || external_level || ' ' || cbp FROM recalc.acl_object`,
		`SELECT 'user ' || id || ' ' || internal FROM recalc.acl_user`,
	} {
		var body string
		if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(l, E'\n' ORDER BY l COLLATE "C"), '') FROM (`+q+`) x (l)`).Scan(&body); err != nil {
			t.Fatal(err)
		}
		out.WriteString(body + "\n")
	}
	return out.String()
}
