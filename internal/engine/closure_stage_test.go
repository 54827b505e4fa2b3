package engine_test

import (
	"testing"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestClosureAdditionsKeptFromCreation: an incremental job that moves u4
// from group g1 to group g3 (and changes a rule, so that it has chunks)
// deletes the entries under g1 (u4, and boss, above u4 in the role
// hierarchy) as it is created and adds u4's under g3 (boss is there, as
// u5's boss) at its finish, from the additions it kept since its creation;
// a job that kept none (created by a binary before schema version 56)
// computes them at its finish. Either way the job counts one entry added
// and two removed, and the tables end as a full run leaves them.
func TestClosureAdditionsKeptFromCreation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		drop bool // the job kept no additions
	}{
		{"kept at creation", false},
		{"kept none: computed at the finish", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			b.importFile(t, groupsAndRuleChange(`"user:u5","user:u4"`))
			run, release := startHeldRun(t, b)
			var kept int
			if err := b.pool.QueryRow(b.ctx, `SELECT coalesce(cardinality(closure_add_gid), -1) FROM recalc.job WHERE status = 'running'`).Scan(&kept); err != nil {
				t.Fatal(err)
			}
			if kept != 1 {
				t.Errorf("the running job kept %d closure entries to add, want 1 (u4 under g3)", kept)
			}
			if tc.drop {
				b.exec(t, `UPDATE recalc.job SET closure_add_gid = NULL, closure_add_uid = NULL, closure_add_boss = NULL WHERE status = 'running'`)
			}
			release()
			rep := run.wait(t)
			if rep.ClosureAdded != 1 || rep.ClosureRemoved != 2 {
				t.Errorf("the job reports %d closure entries added and %d removed, want 1 and 2", rep.ClosureAdded, rep.ClosureRemoved)
			}
			var left int
			if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.job WHERE closure_add_gid IS NOT NULL`).Scan(&left); err != nil {
				t.Fatal(err)
			}
			if left != 0 {
				t.Errorf("%d finished jobs still keep closure entries to add, want none", left)
			}
			checkSettled(t, b.ctx, b.pool)
		})
	}
}
