package engine_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/store"
)

// TestVerifyRepairWhileDeferred: while calculation is deferred, a repair
// (of a099's owner row, deleted by hand) waits for a row of a099's family
// that another session holds, after it read which families have changes
// pending and before it reads the records; a004 becomes tier 1 meanwhile,
// which shares it with group g1 (u4), and commits. The repair leaves a004's
// family to the resume, as pending, and repairs a099's row: u4 gets no
// access while deferred, and gets it once resumed, as a full run gives it.
func TestVerifyRepairWhileDeferred(t *testing.T) {
	t.Parallel()
	for _, sides := range [][]string{{store.SideRules}, {store.SideRules, store.SideClosure}} {
		t.Run(strings.Join(sides, "+"), func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			if got := b.level(t, "u4", "a004"); got != "none" {
				t.Fatalf("u4's access to a004 before: %s, want none", got)
			}
			b.exec(t, `DELETE FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a099') AND cause = 'owner'`)
			if err := store.Defer(b.ctx, b.pool, sides); err != nil {
				t.Fatal(err)
			}
			row := b.begin(t)
			if _, err := row.Exec(b.ctx, `SELECT FROM recalc.acl_record WHERE id = 'a099' FOR UPDATE`); err != nil {
				t.Fatal(err)
			}
			done := make(chan verifyResult, 1)
			go func() {
				rep, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{Repair: true}, zerolog.Nop())
				done <- verifyResult{rep, err}
			}()
			waitForLockWait(t, b, "query LIKE '%acl_record%FOR UPDATE%'")
			b.exec(t, `UPDATE recalc.record SET fields = '{"tier": 1}' WHERE id = 'a004'`)
			if err := row.Rollback(b.ctx); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil {
				t.Fatalf("verify --repair while deferred: %v", r.err)
			}
			want := []sharetable.DiffCount{{Object: "account", Cause: "owner", Missing: 1}}
			if !slices.Equal(r.rep.ShareRows, want) || r.rep.Families != 99 || r.rep.Skipped != 1 {
				t.Errorf("verify --repair while deferred, a004 written while it repaired: %s; want %v repaired, 99 families checked, a004's skipped",
					driftOf(r.rep), want)
			}
			if got := b.level(t, "u4", "a004"); got != "none" {
				t.Errorf("u4's access to a004 after verify --repair, still deferred: %s, want none until the resume", got)
			}
			rep, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{}, zerolog.Nop())
			if err != nil || rep.Drift() || rep.Skipped != 1 {
				t.Errorf("verify after the repair, still deferred: %v; want no drift, a004's family skipped as pending", err)
			}
			if err := store.Undefer(b.ctx, b.pool, sides); err != nil {
				t.Fatal(err)
			}
			b.run(t, engine.Options{Trigger: "resume"})
			if got := b.level(t, "u4", "a004"); got != "read" {
				t.Errorf("u4's access to a004 after the resume: %s, want read", got)
			}
			checkSettled(t, b.ctx, b.pool)
		})
	}
}

// TestVerifyWhileDeferred: while either side, or both, is deferred, the
// application writes records (an owner change, new records with no root
// yet, deletes, a case moved to another account), and group g1 gains u5 by
// an import. Verify reports none of it as drift: the families written are
// skipped as pending, and the closure is compared with the configuration
// it was computed from. It reports the drift made by hand beside them (a
// share row deleted, a stray family root), and --repair fixes that and
// materializes none of the writes: access stays as it was until the
// resume, which gives what a full run gives.
func TestVerifyWhileDeferred(t *testing.T) {
	t.Parallel()
	for _, sides := range [][]string{{store.SideRules}, {store.SideClosure}, {store.SideRules, store.SideClosure}} {
		t.Run(strings.Join(sides, "+"), func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			// A stray root, written as a root fix is (no change row), and
			// materialized in its wrong family (TestVerifyReportsStrayRoots).
			tx := b.begin(t)
			for _, sql := range []string{`SELECT set_config('recalc.fixing_roots', 'on', true)`, `UPDATE recalc.record SET root_id = 'a007' WHERE id = 'c003_0'`} {
				if _, err := tx.Exec(b.ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(b.ctx); err != nil {
				t.Fatal(err)
			}
			b.exec(t, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'c007_0'`)
			b.run(t, engine.Options{})
			before := b.access(t)
			if got := b.level(t, "u5", "a006"); got != "none" {
				t.Fatalf("u5's access to a006 before: %s, want none", got)
			}

			b.exec(t, `DELETE FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a099') AND cause = 'owner'`)
			if err := store.Defer(b.ctx, b.pool, sides); err != nil {
				t.Fatal(err)
			}
			b.exec(t, `UPDATE recalc.record SET owner = 'u4' WHERE id = 'a001'`,
				`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('n1', 'case', 'u2', 'a003')`,
				`INSERT INTO recalc.record (id, object, owner) VALUES ('n2', 'account', 'u3')`,
				`DELETE FROM recalc.record WHERE id IN ('c004_0', 'a005')`,
				`UPDATE recalc.record SET parent = 'a007' WHERE id = 'c006_0'`)
			b.importFile(t, `{"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`)

			rep, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{}, zerolog.Nop())
			want := []sharetable.DiffCount{{Object: "account", Cause: "owner", Missing: 1}}
			if err != nil || !slices.Equal(rep.ShareRows, want) || rep.RecordRows != 0 || rep.ClosureMissing+rep.ClosureExtra != 0 ||
				rep.StrayRoots != 1 || rep.Families != 96 || rep.Skipped != 4 {
				t.Fatalf("verify while deferred: %+v, %v; want %v and c003_0's root only, a001's, a004's, a005's and a006's families skipped", rep, err, want)
			}
			if _, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{Repair: true}, zerolog.Nop()); err != nil {
				t.Fatalf("verify --repair while deferred: %v", err)
			}
			if got := b.access(t); got != before {
				t.Errorf("verify --repair while deferred materialized writes:\n%s", lineDiff(got, before))
			}
			if rep, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{}, zerolog.Nop()); err != nil || rep.Drift() {
				t.Errorf("verify after the repair, still deferred: %+v, %v; want no drift", rep, err)
			}

			if err := store.Undefer(b.ctx, b.pool, sides); err != nil {
				t.Fatal(err)
			}
			b.run(t, engine.Options{Trigger: "resume"})
			if got := b.level(t, "u5", "a006"); got != "read" {
				t.Errorf("u5's access to a006 after the resume: %s, want read", got)
			}
			checkSettled(t, b.ctx, b.pool)
		})
	}
}
