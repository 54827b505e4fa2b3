package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
)

// TestSwapBesideWrites: a full job that swaps new tables in (`run --full
// --in-place=false`) is held at a chunk's read (its records read, its
// shares not yet), at the staging of its indexes, and at its swap; at each,
// the application changes two accounts' tiers, which the rule reads (a003
// leaves group g1's reach, a002 enters it), moves a case to another
// account and inserts one (a family root to fix), and commits. After the swap,
// a token taken after the write is fresh only once the write is
// materialized, and the next step of `recalc watch` materializes it as a
// full run from scratch does: no write is lost to the swap.
func TestSwapBesideWrites(t *testing.T) {
	t.Parallel()
	for _, at := range []string{
		`FROM recalc.share_input s JOIN recalc.record r`,
		`CREATE UNIQUE INDEX IF NOT EXISTS acl_share_next_pkey`,
		`ALTER TABLE recalc.acl_share_next ADD CONSTRAINT`,
	} {
		t.Run(at[:24], func(t *testing.T) {
			b := setupOrg(t, swapCopyOrg(), engine.Options{})
			if a3, a2 := b.level(t, "u1", "a003"), b.level(t, "u1", "a002"); a3 != "read" || a2 != "none" {
				t.Fatalf("before: u1 reads a003 %s, a002 %s; want read, none", a3, a2)
			}
			g := &gate{}
			p := g.arm(at)
			pool := gatedPool(t, b.pool, g)
			ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := engine.Full(ctx, pool, engine.Options{}, zerolog.Nop())
				done <- err
			}()
			waitReached(t, p, at)
			b.exec(t, `UPDATE recalc.record SET fields = jsonb_set(fields, '{tier}', '1') WHERE id = 'a003'`,
				`UPDATE recalc.record SET fields = jsonb_set(fields, '{tier}', '5') WHERE id = 'a002'`,
				`UPDATE recalc.record SET parent = 'a003' WHERE id = 'c001_0'`,
				`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c002_9', 'case', 'u4', 'a002')`)
			token, err := changes.FreshToken(b.ctx, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			close(p.release)
			if err := <-done; err != nil {
				t.Fatalf("full run: %v", err)
			}
			switch err := changes.WaitFresh(b.ctx, b.pool, token, 0); {
			case changes.IsNotFresh(err):
			case err != nil:
				t.Fatal(err)
			default:
				if a3, a2 := b.level(t, "u1", "a003"), b.level(t, "u1", "a002"); a3 != "none" || a2 != "read" {
					t.Errorf("fresh after the swap: u1 reads a003 %s, a002 %s; want none, read", a3, a2)
				}
			}
			if _, err := engine.NewLive(engine.Options{}, 1000).Step(b.ctx, b.pool, zerolog.Nop()); err != nil {
				t.Fatalf("watch step: %v", err)
			}
			if err := changes.WaitFresh(b.ctx, b.pool, token, 5*time.Second); err != nil {
				t.Fatalf("wait_fresh after the step: %v", err)
			}
			if a3, a2 := b.level(t, "u1", "a003"), b.level(t, "u1", "a002"); a3 != "none" || a2 != "read" {
				t.Errorf("after the step: u1 reads a003 %s, a002 %s; want none, read", a3, a2)
			}
			checkSettled(t, b.ctx, b.pool)
		})
	}
}

// TestFullRunFinishBesideWrites: a full job, in place and swapping, is held
// inside its finish, after the swap or the last chunk and before it
// consumes the change rows it planned from (an application holds one of
// them locked, which the finish deletes), and the application changes two
// accounts' tiers, moves a case and inserts one, and commits there. The
// finish consumes only what it planned from: the writes stay pending, a
// token taken after them is not fresh until a step of `recalc watch`
// materializes them, and then access is a full run's.
func TestFullRunFinishBesideWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opt  engine.Options
	}{{"in place", engine.Options{Full: true, InPlace: true}}, {"swapping", engine.Options{Full: true}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, swapCopyOrg(), engine.Options{})
			b.exec(t, `UPDATE recalc.record SET fields = jsonb_set(fields, '{tier}', '2') WHERE id = 'a004'`)
			obs := connect(t, b.pool)
			holder, pid := holdWith(t, b, `SELECT FROM recalc.change FOR UPDATE`)
			ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := engine.Run(ctx, b.pool, tc.opt, zerolog.Nop())
				done <- err
			}()
			waitBlockedBy(t, obs, pid, nil, "the job's finish to wait to consume its change rows")
			var pending int
			if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.chunk c JOIN recalc.job j ON j.id = c.job_id
				WHERE j.status = 'running' AND c.status <> 'done'`).Scan(&pending); err != nil || pending != 0 {
				t.Fatalf("held: %d chunks of the running job not done (%v), want the job at its finish", pending, err)
			}
			b.exec(t, `UPDATE recalc.record SET fields = jsonb_set(fields, '{tier}', '1') WHERE id = 'a003'`,
				`UPDATE recalc.record SET fields = jsonb_set(fields, '{tier}', '5') WHERE id = 'a002'`,
				`UPDATE recalc.record SET parent = 'a003' WHERE id = 'c001_0'`,
				`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c002_9', 'case', 'u4', 'a002')`)
			token, err := changes.FreshToken(b.ctx, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			rollback(t, holder, "the planned change row")
			if err := <-done; err != nil {
				t.Fatalf("full run: %v", err)
			}
			if err := changes.WaitFresh(b.ctx, b.pool, token, 0); !changes.IsNotFresh(err) {
				t.Fatalf("wait_fresh after the full job, the writes committed inside its finish: %v, want not fresh", err)
			}
			if _, err := engine.NewLive(engine.Options{}, 1000).Step(b.ctx, b.pool, zerolog.Nop()); err != nil {
				t.Fatalf("watch step: %v", err)
			}
			if err := changes.WaitFresh(b.ctx, b.pool, token, 5*time.Second); err != nil {
				t.Fatalf("wait_fresh after the step: %v", err)
			}
			if a3, a2 := b.level(t, "u1", "a003"), b.level(t, "u1", "a002"); a3 != "none" || a2 != "read" {
				t.Errorf("after the step: u1 reads a003 %s, a002 %s; want none, read", a3, a2)
			}
			checkSettled(t, b.ctx, b.pool)
		})
	}
}
