package attach_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestInterleavedUsersAndReparentsFullRun is TestInterleavedUsersAndRecords
// for `recalc run --full` by staging tables, with a record moving between
// families: A, begun before the run, deactivates carol and moves case 2
// under her account, and commits while the swap of the staging tables
// waits (the job's chunks done). (Three such writes at every point of
// TestInterleavedUsersAndRecords, in place and by staging tables, held
// when tried: 33 schedules; only this one is kept.) The runs that follow
// leave nothing logged, recalc.record mirrors the rows and access is the
// oracle's for the users the table gives.
func TestInterleavedUsersAndReparentsFullRun(t *testing.T) {
	t.Parallel()
	stmts := []string{`UPDATE crm.app_user SET active = false WHERE id = 'carol'`, `UPDATE support."case" SET account_id = 3 WHERE id = 2`}
	for _, tc := range []struct {
		name, holder string
		inPlace      bool
	}{
		{"staging/the swap waits", `LOCK TABLE recalc.acl_record IN ACCESS SHARE MODE`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			interleavedUsersFull(t, stmts, tc.holder, tc.inPlace)
		})
	}
}

func interleavedUsersFull(t *testing.T, stmts []string, point string, inPlace bool) {
	ctx := context.Background()
	b := setupUsersRun(t)
	a, _ := hold(t, b.app, "")
	for _, s := range stmts {
		if _, err := a.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	b.exec(t, b.app, `UPDATE support."case" SET priority = 5 WHERE id = 1`,
		`INSERT INTO crm.account (id, name, owner_id) VALUES (4, 'Hooli', 'erin')`, `UPDATE crm.app_user SET role_id = 'east' WHERE id = 'dave'`) // B
	holder, pid := hold(t, b.admin, point)
	done := make(chan struct{})
	var rep *engine.Report
	var runErr error
	go func() {
		defer close(done)
		rep, runErr = engine.Run(ctx, b.engine, engine.Options{Full: true, InPlace: inPlace, Workers: 2, ChunkSize: 1, LockTimeout: 20 * time.Second}, zerolog.Nop())
	}()
	waitBlocked(t, b.admin, pid, done, "the run to wait")
	commit(t, a)
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	if !inPlace && rep.Kind != "full" || rep.Status != "done" {
		t.Errorf("job %+v, want a full one", rep)
	}
	b.run(t)
	for _, o := range []string{"account", "case", "users"} {
		if b.waiting(t, o) {
			t.Errorf("writes to %s still logged after two runs", o)
		}
	}
	b.checkMirror(t, "after the runs")
	b.checkUsers(t, "after the runs")
	if out, err := b.recalc("verify"); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
