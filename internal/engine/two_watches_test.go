package engine_test

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
)

// TestTwoWatchStepsBesideWrites: two watch processes (two engine.Live) step
// on one database. Write W1 commits, watch A's fast step stops at a point,
// W2 commits and watch B steps, waiting for A's model lock; then A goes on.
// Whichever step takes W2 (A, when it reads the change log after W2's
// commit; B otherwise), recalc.wait_fresh returns for W2's token once both
// steps end, both owner changes are visible, and the share tables are a
// full recalculation's.
func TestTwoWatchStepsBesideWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, at string // the statement A stops before
		aTakesW2 bool   // A's batch holds W2, else B's does
	}{
		{"A stops before reading the change log", `FROM recalc.change WHERE kind NOT IN ('attached', 'attached_all') ORDER BY seq LIMIT`, true},
		{"A stops before consuming its batch", `DELETE FROM recalc.change WHERE seq = ANY`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, liveOrg(6), engine.Options{})
			opt := engine.Options{Trigger: "watch", LockTimeout: 5 * time.Second}
			a, bw := engine.NewLive(opt, 1000), engine.NewLive(opt, 1000)
			g := &gate{}
			poolA := gatedPool(t, b.pool, g)
			for _, l := range []*engine.Live{a, bw} { // load both
				b.step(t, l)
			}
			b.exec(t, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'a000'`) // W1
			p := g.arm(tc.at)
			aDone := make(chan error, 1)
			var aRep *engine.LiveReport
			go func() {
				var err error
				aRep, err = a.Step(b.ctx, poolA, zerolog.Nop())
				aDone <- err
			}()
			pid := waitReached(t, p, tc.name)
			b.exec(t, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'a001'`) // W2
			token, err := changes.FreshToken(b.ctx, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			bDone := make(chan struct{})
			var bErr error
			var bRep *engine.LiveReport
			go func() {
				defer close(bDone)
				bRep, bErr = bw.Step(b.ctx, b.pool, zerolog.Nop())
			}()
			obs := connect(t, b.pool)
			waitBlockedBy(t, obs, pid, bDone, "watch B's step to wait for A's")
			close(p.release)
			if err := <-aDone; err != nil {
				t.Fatalf("watch A's step: %v", err)
			}
			<-bDone
			if bErr != nil {
				t.Fatalf("watch B's step: %v", bErr)
			}
			want := [2]int{1, 1} // the change rows A's and B's fast steps consumed
			if tc.aTakesW2 {
				want = [2]int{2, 0}
			}
			if got := [2]int{aRep.Changes, bRep.Changes}; got != want || !aRep.Fast || !bRep.Fast {
				t.Errorf("fast steps consumed %v change rows (A, B), want %v (fast: %v, %v)", got, want, aRep.Fast, bRep.Fast)
			}
			if err := changes.WaitFresh(b.ctx, b.pool, token, 0); err != nil {
				t.Fatalf("after both steps: %v", err)
			}
			for _, c := range []struct{ user, record string }{{"u2", "a000"}, {"u1", "a001"}} {
				if l := b.level(t, c.user, c.record); l != "all" {
					t.Errorf("fresh, but %s's new owner %s has %s", c.record, c.user, l)
				}
			}
			checkFull(t, b, "after both steps")
		})
	}
}
