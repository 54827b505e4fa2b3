package engine_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/store"
)

// TestFinishBesideDeferralKeepsTokensWaiting: a job planned from owner
// changes to a001 (to u3) and a005 (to u1), one chunk of both families, is
// stopped inside its chunk; a token is taken after those writes committed;
// share rows are deferred, and a001's case gets a new owner (after the
// token); an import finishes the job, whose chunk leaves a001's family out
// (written since the plan) and consumes the job's change rows. a001's owner
// change committed before the token and is not materialized until the
// resume, so wait_fresh with that token must not say fresh before it: it
// did, because the change row naming the family left out (changes.Recompute)
// was logged with the finishing chunk's transaction id, above the token.
// After the resume the token is fresh and u3 has a001's owner access.
func TestFinishBesideDeferralKeepsTokensWaiting(t *testing.T) {
	t.Parallel()
	for _, sides := range [][]string{{store.SideRules}, {store.SideClosure, store.SideRules}} {
		t.Run(strings.Join(sides, "+"), func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			before := b.level(t, "u3", "a001")
			stopOneChunk(t, b)
			token, err := changes.FreshToken(b.ctx, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
			if err := cli.DeferCmd(b.ctx, env, sides); err != nil {
				t.Fatal(err)
			}
			b.exec(t, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'c001_1'`)
			if err := <-importInBackground(t, b, env); err != nil {
				t.Fatalf("the import beside the paused job: %v", err)
			}
			fresh := changes.WaitFresh(b.ctx, b.pool, token, 100*time.Millisecond)
			if fresh != nil && !changes.IsNotFresh(fresh) {
				t.Fatal(fresh)
			}
			deferred := b.level(t, "u3", "a001")
			if err := cli.ResumeCmd(b.ctx, env, sides, engine.Options{}); err != nil {
				t.Fatal(err)
			}
			after := b.level(t, "u3", "a001")
			if after == before {
				t.Fatalf("u3 on a001 is %s before and after its owner change: the test shows nothing", after)
			}
			if fresh == nil && deferred != after {
				t.Errorf("wait_fresh said fresh for a token taken after a001's owner change to u3, while u3 on a001 was %s; "+
					"the change is materialized (%s) only by the resume", deferred, after)
			}
			if err := changes.WaitFresh(b.ctx, b.pool, token, 20*time.Second); err != nil {
				t.Errorf("wait_fresh after the resume: %v", err)
			}
			checkDeferRace(t, b, "after the resume")
		})
	}
}
