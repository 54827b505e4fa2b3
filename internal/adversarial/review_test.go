package adversarial

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/rs/zerolog"
)

// The findings of an attack review of the hardening, each replayed as its
// role would.

// A writer renames a record so that records it did not touch now name it as
// parent (or no longer do). Their families must follow, or a full run finds
// a parent in another family: before the fix it built a duplicate share row
// and failed for good, and incremental runs kept a revoked owner's access.
func TestRenamedParentMovesChildren(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, model string
		steps       []string // as the writer, each followed by a run
		want        map[string]string
	}{
		{
			name: "orphans adopted by a renamed account",
			model: `{"objects": [{"name": "region__c", "internal_owd": "private"},
				{"name": "account", "parent": "region__c", "internal_owd": "private"},
				{"name": "opportunity", "parent": "account", "internal_owd": "private"}],
			"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}],
			"records": [{"object": "region__c", "id": "R1", "owner": "u1"}, {"object": "account", "id": "A1", "owner": "u1", "parent": "R1"}],
			"shares": [], "teams": [], "rules": [], "groups": [], "territories": []}`,
			steps: []string{
				`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('O2', 'opportunity', 'u2', 'A9')`,
				`UPDATE recalc.record SET id = 'A9' WHERE id = 'A1'`,
				`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('O1', 'opportunity', 'u2', 'A9')`,
			},
			want: map[string]string{"u2 O1": "all", "u2 O2": "all", "u2 A9": "read", "u1 A9": "all"},
		},
		{
			name: "a renamed contact adopts an orphan controlled by it",
			model: `{"objects": [{"name": "account", "internal_owd": "private"},
				{"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"},
				{"name": "sub__c", "parent": "contact", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}],
			"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}],
			"records": [{"object": "account", "id": "A1", "owner": "u1"}, {"object": "contact", "id": "K1", "owner": "u2", "parent": "A1"}],
			"shares": [], "teams": [], "rules": [], "groups": [], "territories": []}`,
			steps: []string{
				`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('S', 'sub__c', 'u1', 'K9')`,
				`UPDATE recalc.record SET id = 'K9' WHERE id = 'K1'`,
				`UPDATE recalc.record SET owner = 'u3' WHERE id = 'K9'`, // revokes u2
			},
			want: map[string]string{"u2 S": "none", "u3 S": "all", "u1 S": "all"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.importJSON(t, tc.model)
			b.run(t)
			for _, sql := range tc.steps {
				exec(t, b.writer, sql)
				b.run(t)
				b.full(t) // the nightly run: must not fail
				b.run(t)
			}
			b.wantAccess(t, tc.want)
			if out, err := b.recalcErr("verify"); err != nil {
				t.Errorf("verify after the renames: %v\n%s", err, out)
			}
			b.sameAsFull(t)
		})
	}
}

// An import that adds shares or team entries on a record that a writer
// deletes or renames at the same time leaves none behind on a record that
// does not exist, in either commit order. Before the fix such an orphan gave
// its grantee access to a new record of that id, or failed every import.
func TestImportRacesDelete(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, write, file string }{
		{"share, delete", `DELETE FROM recalc.record WHERE id = 'a3'`,
			`{"shares": [{"object": "account", "record": "a3", "grantee": "user:u2", "access": "edit", "cause": "manual"}]}`},
		{"team, rename", `UPDATE recalc.record SET id = 'a3renamed' WHERE id = 'a3'`,
			`{"teams": [{"record": "a3", "user": "u2", "access": "edit"}]}`},
		{"share, object change", `UPDATE recalc.record SET object = 'project__c' WHERE id = 'a3'`,
			`{"shares": [{"object": "account", "record": "a3", "grantee": "user:u2", "access": "edit", "cause": "manual"}]}`},
		{"team, object change", `UPDATE recalc.record SET object = 'project__c' WHERE id = 'a3'`,
			`{"teams": [{"record": "a3", "user": "u2", "access": "edit"}]}`},
	} {
		for _, writerFirst := range []bool{true, false} {
			name := tc.name + ", import first"
			if writerFirst {
				name = tc.name + ", writer first"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				b := setup(t)
				writer := b.connect(t, b.writerRole)
				conn, err := b.engine.Acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Release()
				importTx := func() error {
					tx, err := conn.Begin(ctx)
					if err != nil {
						return err
					}
					if _, err := store.ImportTx(ctx, tx, strings.NewReader(tc.file), model.DefaultLimits(), zerolog.Nop()); err != nil {
						_ = tx.Rollback(ctx)
						return err
					}
					return tx.Commit(ctx)
				}
				wtx, err := writer.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				if writerFirst {
					exec(t, wtx, tc.write)
					go func() { done <- importTx() }()
					waitBlocked(t, b, writer.PgConn().PID())
					if err := wtx.Commit(ctx); err != nil {
						t.Fatal(err)
					}
					if err := <-done; err == nil {
						t.Fatal("the import went through after the writer's commit, though the record it names is gone or changed")
					}
				} else {
					itx, err := conn.Begin(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := store.ImportTx(ctx, itx, strings.NewReader(tc.file), model.DefaultLimits(), zerolog.Nop()); err != nil {
						t.Fatalf("import: %v", err)
					}
					go func() { _, err := wtx.Exec(ctx, tc.write); done <- err }()
					waitBlocked(t, b, conn.Conn().PgConn().PID())
					if err := itx.Commit(ctx); err != nil {
						t.Fatal(err)
					}
					if err := <-done; err != nil {
						t.Fatalf("the writer's change after the import: %v", err)
					}
					if err := wtx.Commit(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if n := b.count(t, `SELECT count(*) FROM (SELECT record, object FROM recalc.share_input
					UNION ALL SELECT record, NULL FROM recalc.team) x
					WHERE NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = x.record AND r.object = coalesce(x.object, r.object))`); n != 0 {
					t.Fatalf("%d shares or team entries name a record that does not exist or is of another object", n)
				}
				if n := b.count(t, `SELECT count(*) FROM recalc.team WHERE record = 'a3'`); n != 0 {
					t.Fatalf("a team entry on a3 survived its record's delete, rename or object change")
				}
				b.importJSON(t, `{"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}, {"id": "u4"}, {"id": "u5"}]}`)
				exec(t, b.writer, `DELETE FROM recalc.record WHERE id = 'a3'`) // what the object change left
				exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner) VALUES ('a3', 'account', 'u4')`)
				b.run(t)
				b.wantAccess(t, map[string]string{"u2 a3": "none", "u4 a3": "all"})
			})
		}
	}
}

// waitBlocked waits until some backend other than pid waits for a lock held
// by pid, for at most 10 s.
func waitBlocked(t *testing.T, b *bundle, pid uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := b.admin.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, int32(pid)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("nothing waited for the writer's transaction")
}

// A row stored before migration 007's constraints that breaks them must
// not stop root fixing, so the writer's valid write (the parent it names now
// exists) cannot freeze every run; the row fails closed.
func TestLegacyRowDoesNotStopRootFixing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec(t, b.admin, `ALTER TABLE recalc.record DROP CONSTRAINT record_fields_scalar`)
	exec(t, b.admin, `INSERT INTO recalc.record (id, object, owner, parent, fields) VALUES ('k9', 'contact', 'u1', 'a9', '{"a": {"b": 1}}')`)
	exec(t, b.admin, `ALTER TABLE recalc.record ADD CONSTRAINT record_fields_scalar CHECK (
        jsonb_typeof(fields) = 'object'
        AND NOT jsonb_path_exists(fields, 'strict $.* ? (@.type() == "object" || @.type() == "array"
            || (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308)))')
        AND octet_length(fields::text) <= 1048576) NOT VALID`) // as migration 007 has it
	b.run(t)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner) VALUES ('a9', 'account', 'u2')`)
	exec(t, b.writer, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'a1'`) // an unrelated revocation of u1
	b.run(t)
	b.wantAccess(t, map[string]string{"u1 a1": "none", "u2 a1": "all", "u2 a9": "all", "u1 k9": "none", "u2 k9": "none"})
	if !strings.Contains(b.recalc(t, "status"), "Calculation: active") {
		t.Error("status does not say calculation is active")
	}
}
