package attach_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/schema"
)

// TestAttackWriterReadsNoAttachedParentByRoot: a writer role with no right
// on the application's schemas gives a record of its own an attached
// record as parent (case 1, or the contact a3c...: ids a writer guesses or
// is told); the next run sets the record's root_id to the top of that
// parent's chain, the account the case or the contact is under, which the
// application's tables alone say (support.case.account_id,
// crm.contact_account). Reading its own record's root_id, or filtering on
// it, the writer learned an attached record's parent, which migration 082
// hides (found by helper-213). The writer reads and filters on every column
// it writes, and rid; root_id, which only the engine writes, it may not read.
//
// "granted before 84": a writer granted SELECT on the whole table, as
// `recalc grant writer` did before version 84, is given the column grant
// by migration 084, run twice.
func TestAttackWriterReadsNoAttachedParentByRoot(t *testing.T) {
	t.Parallel()
	for _, before84 := range []bool{false, true} {
		t.Run(map[bool]string{false: "granted now", true: "granted before 84"}[before84], func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t)
			w, writer := b.writerPool(t)
			if before84 {
				b.exec(t, b.engine, `GRANT SELECT ON recalc.record TO `+ident(writer))
				b.exec(t, b.engine, migration84(t), migration84(t))
			}
			attackRootAsWriter(t, b, w, writer)
		})
	}
}

// migration84 is the SQL of migration 084.
func migration84(t *testing.T) string {
	t.Helper()
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Version == 84 {
			return m.SQL
		}
	}
	t.Fatal("no migration 084")
	return ""
}

// attackRootAsWriter is TestAttackWriterReadsNoAttachedParentByRoot's
// attack by the writer w.
func attackRootAsWriter(t *testing.T, b *bundle, w *pgxpool.Pool, writer string) {
	t.Helper()
	ctx := context.Background()
	if _, err := w.Exec(ctx, `SELECT 1 FROM support."case"`); sqlState(err) != "42501" {
		t.Fatalf("the writer %s reads support.case: %v, want no right on it", writer, err)
	}
	b.exec(t, w, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('task:1', 'task', 'bob', 'case:1'), ('task:2', 'task', 'bob', 'case:2')`)
	b.run(t)
	var root string
	if err := b.engine.QueryRow(ctx, `SELECT root_id FROM recalc.record WHERE id = 'task:2'`).Scan(&root); err != nil || root != "account:2" {
		t.Fatalf("task:2's root as the engine reads it: %q (%v), want account:2, case 2's account", root, err)
	}
	for _, tc := range []struct{ name, sql string }{
		{"select root_id", `SELECT root_id FROM recalc.record WHERE id = 'task:2'`},
		{"select *", `SELECT * FROM recalc.record WHERE id = 'task:2'`},
		{"filter on root_id", `SELECT id FROM recalc.record WHERE root_id = 'account:2'`},
		{"order by root_id", `SELECT id FROM recalc.record ORDER BY root_id LIMIT 1`},
		{"update returning root_id", `UPDATE recalc.record SET fields = '{}' WHERE id = 'task:2' RETURNING root_id`},
		{"delete where root_id", `DELETE FROM recalc.record WHERE id = 'task:2' AND root_id = 'account:2'`},
		{"whole row", `SELECT r::text FROM recalc.record r WHERE id = 'task:2'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := w.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck // read only, or undone
			if _, err := tx.Exec(ctx, tc.sql); sqlState(err) != "42501" {
				t.Errorf("the writer's %q: %v, want permission denied (42501)", tc.sql, err)
			}
		})
	}
	// What the writer still may do with its records, root_id aside.
	var n int
	if err := w.QueryRow(ctx, `SELECT count(*) FROM recalc.record WHERE id IN ('task:1', 'task:2') AND rid > 0
		AND object = 'task' AND owner = 'bob' AND parent LIKE 'case:%' AND fields = '{}' AND territories IS NOT DISTINCT FROM territories`).Scan(&n); err != nil || n != 2 {
		t.Errorf("the writer reads %d of its two tasks (%v), want both", n, err)
	}
	b.exec(t, w, `UPDATE recalc.record SET fields = '{"x": 1}', parent = 'case:2' WHERE id = 'task:1' RETURNING id, rid, object, owner, parent, fields, territories`,
		`DELETE FROM recalc.record WHERE id = 'task:2' RETURNING id`)
}
