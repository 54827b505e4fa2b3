package attach_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestInterleavedAttachedRekeys: application transaction A, begun before a
// run, changes the ids of cases 1 and 2 (frank's manual share is on case
// 2), taking case 2's id from its row, while B's committed owner change of
// case 10 (alice's manual share on it goes) gives the run an absorb with
// effects. A swaps two ids and commits while that absorb's effects wait
// (after it took the change log, before it reads the rows: the read then
// sees A's rows, whose marks it did not take); or A moves both onto the
// next id in one statement and commits while a `recalc watch` step's
// absorb waits to write a record (after it read the rows). Once the runs
// that follow have absorbed A, the records mirror the rows, frank's share
// on case 2 is gone as it would be for the same writes to recalc.record,
// nothing is left logged, verify finds no drift, and a full run changes
// nothing. (An id changed away, changed and back, or changed in a
// subtransaction rolled back, at these points and at every point of
// TestRaceAttachedWrite, run and watch: 72 schedules held when tried; this
// is a sample that runs fast. The engine's own steps under id changes are
// TestInterleavedKeyMoves's.)
func TestInterleavedAttachedRekeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		stmts  []string
		holder string
		live   bool
	}{
		{"two ids swapped, the absorb's effects wait", []string{`UPDATE support."case" SET id = 30 WHERE id = 1`,
			`UPDATE support."case" SET id = 1 WHERE id = 2`, `UPDATE support."case" SET id = 2 WHERE id = 30`},
			`SELECT FROM recalc.share_input WHERE record = 'case:10' FOR UPDATE`, false},
		{"a chain in one statement, a watch step's record write waits", []string{`UPDATE support."case" SET owner_id = 'bob' WHERE id = 1`,
			`SET LOCAL enable_indexscan = off`, `SET LOCAL enable_bitmapscan = off`, `UPDATE support."case" SET id = id + 1 WHERE id < 3`},
			`SELECT FROM recalc.record WHERE id = 'case:10' FOR UPDATE`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			interleavedAttachedRekey(t, tc.stmts, tc.holder, tc.live)
		})
	}
}

func interleavedAttachedRekey(t *testing.T, stmts []string, point string, live bool) {
	ctx := context.Background()
	b := setupSharedCase(t)
	b.exec(t, b.app, `INSERT INTO support."case" VALUES (10, 1, 'erin', 2, 'New')`)
	b.run(t)
	if _, err := testkit.ImportString(ctx, b.engine,
		`{"shares": [{"object": "case", "record": "case:2", "grantee": "user:frank", "access": "edit", "cause": "manual"},
		             {"object": "case", "record": "case:10", "grantee": "user:alice", "access": "edit", "cause": "manual"}]}`); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	a, _ := hold(t, b.app, "")
	for _, s := range stmts {
		if _, err := a.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	b.exec(t, b.app, `UPDATE support."case" SET owner_id = 'carol' WHERE id = 10`) // B
	holder, pid := hold(t, b.admin, point)
	done := make(chan struct{})
	var runErr error
	lv := engine.NewLive(engine.Options{ChunkSize: 1, LockTimeout: 20 * time.Second}, 100)
	go func() {
		defer close(done)
		if live {
			var rep *engine.LiveReport
			if rep, runErr = lv.Step(ctx, b.engine, zerolog.Nop()); runErr == nil && !rep.Fast {
				t.Errorf("the watch step went through a run: %+v", rep)
			}
			return
		}
		_, runErr = engine.Run(ctx, b.engine, engine.Options{Workers: 2, ChunkSize: 1, LockTimeout: 20 * time.Second}, zerolog.Nop())
	}()
	waitBlocked(t, b.admin, pid, done, "the absorb to wait")
	commit(t, a)
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	if live {
		for range 3 {
			if _, err := lv.Step(ctx, b.engine, zerolog.Nop()); err != nil {
				t.Fatalf("watch step: %v", err)
			}
		}
	}
	b.run(t)
	if b.waiting(t, "case") {
		t.Errorf("writes to case still logged after the runs")
	}
	b.checkMirror(t, "after the runs")
	var shares []string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(array_agg(record || ' ' || grantee ORDER BY record), '{}') FROM recalc.share_input
		WHERE object = 'case' AND cause = 'manual'`).Scan(&shares); err != nil {
		t.Fatal(err)
	}
	if len(shares) != 0 {
		t.Errorf("manual shares on cases after the runs: %v, want none (frank's went with case 2's id, alice's with case 10's owner)", shares)
	}
	if got := levelOf(t, b, "frank", "case:2"); got != "none" {
		t.Errorf("frank has %s on case:2, want none", got)
	}
	if out, err := b.recalc("verify"); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
	incremental := testdb.Materialized(t, b.admin)
	b.full(t)
	if got := testdb.Materialized(t, b.admin); got != incremental {
		t.Errorf("the incremental runs differ from a full run")
	}
}
