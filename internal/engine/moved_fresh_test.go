package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
)

// TestMovedSinceThePlanKeepsTokensWaiting: case c001_0 gets owner u3 and
// commits; a token is taken. A job's chunk (or a step of `recalc watch` on
// its fast path), having fixed the family roots, waits for an application's
// lock on c001_0's materialized row; meanwhile another transaction moves
// the case under a005 and commits. The step then reads the case in a001's
// family (its root is fixed only by the next plan) with its parent outside
// it, so the case fails closed: u3, its owner since before the token, has
// no access. wait_fresh with the token must not say fresh then (it did:
// the change rows of the owner change were consumed, and the move's is
// above the token); once the next step has taken the move, the token is
// fresh, u3 has the owner's access and the tables are the oracle's.
func TestMovedSinceThePlanKeepsTokensWaiting(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"job", "fast"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'c001_0'`)
			token, err := changes.FreshToken(b.ctx, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			stepBesideMove(t, b, mode, "c001_0", `UPDATE recalc.record SET parent = 'a005' WHERE id = 'c001_0'`)
			fresh := changes.WaitFresh(b.ctx, b.pool, token, 100*time.Millisecond)
			if fresh != nil && !changes.IsNotFresh(fresh) {
				t.Fatal(fresh)
			}
			if l := b.level(t, "u3", "c001_0"); fresh == nil && l == "none" {
				t.Errorf("wait_fresh said fresh for a token taken after c001_0's owner change to u3, while u3 on c001_0 was %s", l)
			}
			b.run(t, engine.Options{})
			if err := changes.WaitFresh(b.ctx, b.pool, token, 5*time.Second); err != nil {
				t.Errorf("wait_fresh after the next run: %v", err)
			}
			if l := b.level(t, "u3", "c001_0"); l != "all" {
				t.Errorf("u3 on c001_0 after the next run: %s, want all (its owner)", l)
			}
			b.syncRecords(t)
			b.checkOracle(t, "after the next run")
		})
	}
}

// TestSplitForGoodKeepsNoTokenWaiting: deep102, a case 102 links below the
// top of its parent chain (deep1), is computed apart from its parent, in the
// family of its 100th ancestor, and fails closed for good: root fixing puts
// it there again whatever runs. In each of three rounds its owner changes
// and commits, a token is taken, and a step (a job's chunk, or a `recalc
// watch` step on its fast path) waits for an application's lock on
// deep102's materialized row while another transaction re-parents it
// between deep101 and deepx, two records of one depth, and commits: a move
// that leaves its family root as it was, so the step computed it as root
// fixing will. wait_fresh with the token must then say fresh (before,
// every such step logged a change of deep102 with the oldest transaction
// id it consumed, which the next step consumed and logged again, so a write
// beside each step kept every token waiting for as long as the writes went
// on).
func TestSplitForGoodKeepsNoTokenWaiting(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"job", "fast"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			b.exec(t, `INSERT INTO recalc.record (id, object, owner, parent)
				SELECT 'deep' || g, 'task__c', 'u4', CASE WHEN g > 1 THEN 'deep' || (g - 1) END FROM generate_series(1, 102) g
				UNION ALL SELECT 'deepx', 'task__c', 'u4', 'deep100'`)
			b.run(t, engine.Options{})
			var root string
			if err := b.pool.QueryRow(b.ctx, `SELECT root_id FROM recalc.record WHERE id = 'deep102'`).Scan(&root); err != nil || root != "deep2" {
				t.Fatalf("deep102's root: %q (%v), want deep2, its 100th ancestor", root, err)
			}
			owners, parents := []string{"u1", "u2", "u3"}, []string{"deepx", "deep101", "deepx"}
			for round := range owners {
				b.exec(t, `UPDATE recalc.record SET owner = '`+owners[round]+`' WHERE id = 'deep102'`)
				token, err := changes.FreshToken(b.ctx, b.pool)
				if err != nil {
					t.Fatal(err)
				}
				stepBesideMove(t, b, mode, "deep102", `UPDATE recalc.record SET parent = '`+parents[round]+`' WHERE id = 'deep102'`)
				if err := changes.WaitFresh(b.ctx, b.pool, token, 2*time.Second); err != nil {
					t.Fatalf("round %d: wait_fresh with a token taken after deep102's owner change, once a step has materialized it: %v", round, err)
				}
				if l := b.level(t, owners[round], "deep102"); l != "none" {
					t.Errorf("round %d: %s on deep102, which fails closed for good: %s", round, owners[round], l)
				}
			}
		})
	}
}

// stepBesideMove runs a step of mode ("job": engine.Run; "fast": a watch
// step) and, once it waits for an application's lock on record's
// materialized row, commits move on a connection of its own, then lets the
// step go on to its end.
func stepBesideMove(t *testing.T, b *bundle, mode, record, move string) {
	t.Helper()
	obs := connect(t, b.pool)
	holder, pid := holdWith(t, b, `SELECT FROM recalc.acl_record WHERE id = '`+record+`' FOR UPDATE`)
	done, stepped := make(chan struct{}), make(chan error, 1)
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		defer cancel()
		var err error
		if mode == "job" {
			_, err = engine.Run(ctx, b.pool, engine.Options{Workers: 1, LockTimeout: 20 * time.Second}, zerolog.Nop())
		} else {
			_, err = engine.NewLive(engine.Options{LockTimeout: 20 * time.Second}, 1000).Step(ctx, b.pool, zerolog.Nop())
		}
		stepped <- err
	}()
	waitBlockedBy(t, obs, pid, done, "the step to wait for "+record+"'s materialized row")
	w := connect(t, b.pool)
	mustExec(t, w, `SET statement_timeout = '5s'`)
	mustExec(t, w, move)
	rollback(t, holder, record+"'s row")
	if err := <-stepped; err != nil {
		t.Fatal(err)
	}
}
