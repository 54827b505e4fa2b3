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
