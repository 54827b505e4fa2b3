package attach_test

import (
	"context"
	"testing"

	"github.com/recalc-dev/recalc/internal/changes"
)

// stampAndPrints reads, as the engine, the catalog stamp `recalc watch`
// polls and whether a captured table's fingerprint differs from the one
// last absorbed.
func (b *bundle) stampAndPrints(t *testing.T) (stamp string, changed bool) {
	t.Helper()
	if err := b.engine.QueryRow(context.Background(),
		`SELECT recalc.attach_catalog_stamp(), recalc.attach_fingerprints_changed()`).Scan(&stamp, &changed); err != nil {
		t.Fatal(err)
	}
	return stamp, changed
}

// TestChildTableSeenByFingerprints: a child table, whose rows every read of
// the captured table shows and whose writes fire no capture, changes the
// table's fingerprint and the catalog stamp, so that the next absorb finds
// the capture not intact and wait_fresh says so. Once the table had had a
// child, its pg_class row kept relhassubclass, so that the application's
// role could add another with no catalog row the fingerprints or the stamp
// read changing: before version 77 its rows were left out silently, the
// object still intact.
func TestChildTableSeenByFingerprints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		child []string // as the application, once attached
	}{
		{name: "created as a child", child: []string{`CREATE TABLE crm.kid2 () INHERITS (crm.account)`}},
		{name: "an existing table made one", child: []string{
			`CREATE TABLE crm.kid2 (LIKE crm.account INCLUDING DEFAULTS)`,
			`ALTER TABLE crm.kid2 INHERIT crm.account`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t)
			// A child that came and went leaves relhassubclass set.
			b.exec(t, b.app, `CREATE TABLE crm.kid () INHERITS (crm.account)`, `DROP TABLE crm.kid`)
			b.mustAttach(t, crmSpec)
			b.run(t)
			stamp, changed := b.stampAndPrints(t)
			if changed {
				t.Fatal("a fingerprint differs right after the run")
			}
			b.exec(t, b.app, tc.child...)
			b.exec(t, b.app, `INSERT INTO crm.kid2 (id, name, owner_id, industry) VALUES (100, 'Hidden', 'bob', 'tech')`)
			var shown int
			if err := b.app.QueryRow(ctx, `SELECT count(*) FROM crm.account WHERE id = 100`).Scan(&shown); err != nil || shown != 1 {
				t.Fatalf("the child's row in a read of crm.account: %d (%v), want 1", shown, err)
			}
			after, changed := b.stampAndPrints(t)
			if after == stamp || !changed {
				t.Fatalf("after a child table of crm.account got a row: stamp moved %v, fingerprint changed %v; want both", after != stamp, changed)
			}
			b.run(t)
			var code string
			if err := b.admin.QueryRow(ctx, `SELECT coalesce(error_code, 'not intact') FROM recalc.attach_stuck WHERE object = 'account'`).Scan(&code); err != nil || code != "not intact" {
				t.Fatalf("account in attach_stuck after a run: %q (%v), want not intact", code, err)
			}
			token, err := changes.FreshToken(ctx, b.engine)
			if err != nil {
				t.Fatal(err)
			}
			if err := changes.WaitFresh(ctx, b.engine, token, 0); !changes.IsCaptureStuck(err) {
				t.Fatalf("wait_fresh with crm.account's child unseen: %v, want RC002", err)
			}
		})
	}
}

// TestCatalogStampIgnoresOtherRoles: an enum in a session's temporary
// schema, which any role that may connect can create, cannot be the type
// of an attached source's column and does not move the catalog stamp, so
// a loop of them does not make `recalc watch` step (and compute the
// fingerprints) every --catalog-poll. Before version 77 each moved it. An
// enum of the application's schema still does.
func TestCatalogStampIgnoresOtherRoles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		stmts []string // as the application's role, on one connection
		moves bool
	}{
		{name: "temporary enum created", stmts: []string{`CREATE TYPE pg_temp.mood AS ENUM ('sad', 'ok')`}},
		{name: "temporary enum extended", stmts: []string{`CREATE TYPE pg_temp.mood AS ENUM ('sad')`, `ALTER TYPE pg_temp.mood ADD VALUE 'ok'`}},
		{name: "temporary enum dropped", stmts: []string{`CREATE TYPE pg_temp.mood AS ENUM ('sad')`, `DROP TYPE pg_temp.mood`}},
		{name: "enum of the schema created", stmts: []string{`CREATE TYPE crm.mood AS ENUM ('sad', 'ok')`}, moves: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t)
			b.mustAttach(t, crmSpec)
			b.run(t)
			before, _ := b.stampAndPrints(t)
			conn, err := b.app.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Release()
			for _, s := range tc.stmts {
				if _, err := conn.Exec(ctx, s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			after, changed := b.stampAndPrints(t)
			if changed {
				t.Fatal("a fingerprint changed")
			}
			if moved := after != before; moved != tc.moves {
				t.Fatalf("the catalog stamp moved: %v, want %v", moved, tc.moves)
			}
		})
	}
}
