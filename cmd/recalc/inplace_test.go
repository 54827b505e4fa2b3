package main

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestInPlaceJobs: `recalc run --in-place`, without --full, and `recalc
// watch`, by default, materialize a truncate of the records, which the
// planner makes a full job, by an incremental job rewriting the live
// tables; the tables then equal a full run's.
func TestInPlaceJobs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		trigger string
		recalc  func(o *processOrg)
	}{
		{"run --in-place", "run", func(o *processOrg) { o.run("run", "--in-place") }},
		{"watch", "watch", func(o *processOrg) {
			w := o.command("watch", "--poll", "100ms")
			if err := w.Start(); err != nil {
				o.t.Fatal(err)
			}
			defer stopWatch(o.t, w)
			o.waitMaterialized(30 * time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := newProcessOrg(t, 2000)
			o.exec(`TRUNCATE recalc.record`)
			tc.recalc(o)
			var kind, trigger string
			if err := o.pool.QueryRow(context.Background(), `SELECT kind, trigger FROM recalc.job ORDER BY id DESC LIMIT 1`).Scan(&kind, &trigger); err != nil {
				t.Fatal(err)
			}
			if kind != "incremental" || trigger != tc.trigger {
				t.Fatalf("the truncate made a %s job (trigger %q), want an incremental one in place (trigger %q)", kind, trigger, tc.trigger)
			}
			o.checkEqualsFull("after " + tc.name)
		})
	}
}

// waitMaterialized waits until no change is pending and no job unfinished.
func (o *processOrg) waitMaterialized(limit time.Duration) {
	o.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var pending, unfinished int
		_ = o.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM recalc.change), (SELECT count(*) FROM recalc.job WHERE status <> 'done')`).
			Scan(&pending, &unfinished)
		if pending == 0 && unfinished == 0 {
			return
		}
		if time.Now().After(deadline) {
			o.t.Fatalf("nothing materialized within %s: %d changes pending, %d jobs unfinished", limit, pending, unfinished)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopWatch stops a recalc watch with SIGTERM and requires a clean exit.
func stopWatch(t *testing.T, w *exec.Cmd) {
	t.Helper()
	if err := w.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); err != nil {
		t.Fatalf("watch on SIGTERM: %v", err)
	}
}
