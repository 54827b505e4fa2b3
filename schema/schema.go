// Package schema holds recalc's numbered SQL migrations, embedded in the
// binary, and applies them. Migrations run in one transaction that holds an
// advisory lock, so concurrent `recalc init` calls are safe and idempotent.
package schema

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/pg"
)

//go:embed *.up.sql
var migrations embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrations, "*.up.sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, n := range names {
		num, _, ok := strings.Cut(n, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %q: name must start with a number and _", n)
		}
		b, err := migrations.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: n, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Migrate applies the migrations not yet applied and returns how many it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (applied int, err error) {
	ms, err := Migrations()
	if err != nil {
		return 0, err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := locks.XactLock(ctx, tx, locks.Schema); err != nil {
			return err
		}
		// CREATE SCHEMA IF NOT EXISTS would need CREATE on the database even
		// when the schema exists, which a least-privilege role lacks.
		if _, err := tx.Exec(ctx, `DO $$ BEGIN
			IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'recalc') THEN CREATE SCHEMA recalc; END IF;
			END $$`); err != nil {
			return fmt.Errorf("create schema recalc: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS recalc.schema_version (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create version table: %w", err)
		}
		// Migrations name every object with its schema; builtins are found
		// in pg_catalog only: a function a role created in a schema on the
		// caller's search_path (say public.unnest(text[]), a closer match)
		// would otherwise be bound into SQL-standard function bodies,
		// which are resolved once, when created.
		if _, err := tx.Exec(ctx, `SET LOCAL search_path = pg_catalog, pg_temp`); err != nil {
			return fmt.Errorf("pin search_path: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM recalc.schema_version`).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		for _, m := range ms {
			if m.Version <= current {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO recalc.schema_version (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Name, err)
			}
			applied++
		}
		return nil
	})
	return applied, err
}

// NeedsInitError is Check's error: the schema is missing or older than
// this binary, and `recalc init` creates or upgrades it.
type NeedsInitError struct {
	Current, Want int // Current is 0 when there is no schema
}

func (e *NeedsInitError) Error() string {
	if e.Current == 0 {
		return "it has no recalc schema: run `recalc init` first (with this DATABASE_URL)"
	}
	return fmt.Sprintf("its recalc schema is at version %d, this recalc needs %d: run `recalc init` to upgrade", e.Current, e.Want)
}

// Latest is the version of the newest migration: the schema this binary needs.
func Latest() int {
	ms, err := Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// Check fails with a *NeedsInitError when the schema is missing or older
// than this binary.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	var current int
	err := pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM recalc.schema_version`).Scan(&current)
	switch {
	case pg.IsNoSchema(err):
		return &NeedsInitError{Want: Latest()}
	case pg.IsInsufficientPrivilege(err):
		return fmt.Errorf("read schema version: %w: this role may not read recalc's tables; connect as recalc's engine role (SECURITY.md, \"Roles\")", err)
	case err != nil:
		return fmt.Errorf("read schema version: %w", err)
	case current < Latest():
		return &NeedsInitError{Current: current, Want: Latest()}
	}
	return nil
}
