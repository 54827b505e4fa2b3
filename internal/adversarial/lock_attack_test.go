package adversarial

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/schema"
)

// TestWriterLocksDoNotStallImports: the writer role keeps a transaction
// open that holds a lock an import needs, for as long as it likes: a row
// lock on a record the file's shares name, an uncommitted update of a
// record the file changes, an uncommitted delete of a record whose shares
// the file replaces, or the whole of recalc.record (its DELETE privilege
// lets it LOCK TABLE). The import waited for it without a bound, holding
// the model lock, so every run and `recalc watch` waited behind it too:
// no change of any record, a revocation included, was materialized until
// the writer let go. Now the import waits --lock-timeout, fails naming the
// writer's session and stores nothing; runs go on meanwhile, and the same
// import goes through once the writer's transaction ends.
func TestWriterLocksDoNotStallImports(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		hold string
		runs bool // whether a run goes on while the writer holds (a locked table stops it too)
	}{
		{"row lock on a record the shares name", `SELECT FROM recalc.record WHERE id = 'a1' FOR UPDATE`, true},
		{"uncommitted update of a record the file changes", `UPDATE recalc.record SET fields = '{"priority": 1}' WHERE id = 'hot1'`, true},
		{"uncommitted delete of a record with shares", `DELETE FROM recalc.record WHERE id = 'a2'`, true},
		{"the table locked", `LOCK TABLE recalc.record IN ACCESS EXCLUSIVE MODE`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			file := filepath.Join(t.TempDir(), "org.json")
			if err := os.WriteFile(file, []byte(strings.Replace(baseModel, `"priority": 5`, `"priority": 7`, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			hostile, err := b.connect(t, b.writerRole).Begin(ctx)
			if err != nil {
				t.Fatalf("begin as the writer: %v", err)
			}
			defer hostile.Rollback(ctx)
			exec(t, hostile, c.hold)

			// Without the bound the import waits until the writer lets go:
			// here, until this deadline.
			ictx, cancel := context.WithTimeout(ctx, 20*time.Second)
			_, err = b.recalcCtx(ictx, dburl.WithUser(b.url, b.engineRole), "import", "--lock-timeout", "200ms", file)
			cancel()
			if err == nil || !strings.Contains(err.Error(), "waited more than 200ms for a lock") {
				t.Fatalf("import while the writer holds a lock: %v, want a refusal after --lock-timeout", err)
			}
			if !strings.Contains(err.Error(), "(role "+b.writerRole+")") {
				t.Errorf("import while the writer holds a lock: %v, want the writer's session named", err)
			}
			if strings.Contains(err.Error(), "%q") {
				t.Errorf("import while the writer holds a lock: %v, want no unfilled format verb", err)
			}
			// recalc plan FILE imports the file in a transaction it rolls
			// back: bounded by the default 5 s, naming the writer too.
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			_, err = b.recalcCtx(pctx, dburl.WithUser(b.url, b.engineRole), "plan", file)
			cancel()
			if err == nil || !strings.Contains(err.Error(), "waited more than 5s for a lock") || !strings.Contains(err.Error(), "(role "+b.writerRole+")") {
				t.Errorf("plan while the writer holds a lock: %v, want a refusal after 5 s naming the writer's session", err)
			}
			// plan takes no --lock-timeout, and stores nothing anyway.
			if err != nil && (strings.Contains(err.Error(), "--lock-timeout") || strings.Contains(err.Error(), "%q") || !strings.Contains(err.Error(), "run `recalc plan` again once that transaction ends")) {
				t.Errorf("plan while the writer holds a lock: %v, want it told to plan again, and no flag plan lacks", err)
			}

			if c.runs {
				// The model lock is free: a run materializes another
				// record's change while the writer still holds.
				exec(t, b.writer, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'p1'`)
				b.run(t)
				b.wantAccess(t, map[string]string{"u2 p1": "all", "u1 p1": "none"})
			}

			if err := hostile.Rollback(ctx); err != nil {
				t.Fatalf("roll back the writer's transaction: %v", err)
			}
			if n := b.count(t, `SELECT count(*) FROM recalc.record WHERE id = 'hot1' AND fields ->> 'priority' = '7'`); n != 0 {
				t.Errorf("the refused import stored its records")
			}
			if _, err := b.recalcCtx(ctx, dburl.WithUser(b.url, b.engineRole), "import", "--lock-timeout", "200ms", file); err != nil {
				t.Fatalf("import once the writer let go: %v", err)
			}
			b.run(t)
			b.wantAccess(t, map[string]string{"u4 hot1": "read", "u2 a1": "edit", "u3 a2": "read", "u2 p1": "read"})
		})
	}
}

// TestInitNotStalledByAdvisoryLocks: the schema lock that serializes
// `recalc init` was a PostgreSQL advisory lock, which any role that can
// connect may take and keep: a reader, the writer or an outsider holding
// its key stalled every init, upgrades included, without a word, for as
// long as it held it. Once the schema exists, init locks
// recalc.engine_lock instead, which none of them may lock.
func TestInitNotStalledByAdvisoryLocks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, role := range []string{b.readerRole, b.writerRole, b.outsiderRole} {
		hostile := b.connect(t, role)
		// locks.Schema's key: namespace "rc", scope 1.
		if _, err := hostile.Exec(ctx, `SELECT pg_advisory_lock(29283, 1)`); err != nil {
			t.Fatalf("take the schema lock's advisory key as %s: %v", role, err)
		}
		ictx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := schema.Migrate(ictx, b.engine)
		cancel()
		if err != nil {
			t.Errorf("recalc init while %s holds the schema lock's advisory key: %v, want it through", role, err)
		}
		hostile.Close(ctx)
	}
	for _, p := range []*pgxpool.Pool{b.reader, b.writer, b.outsider} {
		wantState(t, "LOCK TABLE recalc.engine_lock as a role but the engine",
			rolledBack(p, `LOCK TABLE recalc.engine_lock IN SHARE ROW EXCLUSIVE MODE`), insufficientPrivilege)
	}
}
