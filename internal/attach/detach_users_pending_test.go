package attach_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestDetachUsersKeepsWritesCommittedBefore: the application deactivates a
// user and moves another to a new role in its users table, and commits;
// before any run absorbs it, `recalc detach users` runs. The users section
// stays as last built from the table (docs/attach.md), so it must be built
// from what the table held when the detach committed: the detach once
// dropped the logged writes unread, the section kept carol active and bob
// in his old role for good, and recalc.wait_fresh with a token taken after
// the write returned, the deactivated user still reading what her role
// and groups gave her.
func TestDetachUsersKeepsWritesCommittedBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsers(t)
	b.run(t)
	b.checkUsers(t, "after attaching the users")

	b.exec(t, b.app, `UPDATE crm.app_user SET active = false WHERE id = 'carol'`,
		`UPDATE crm.app_user SET role_id = 'west' WHERE id = 'bob'`)
	var token int64
	if err := b.engine.QueryRow(ctx, `SELECT recalc.fresh_token()`).Scan(&token); err != nil {
		t.Fatal(err)
	}
	want := withUsers(t, b.expectedUsers(t)) // what the table holds as the detach commits
	if _, err := b.recalc("detach", "users"); err != nil {
		t.Fatalf("detach users: %v", err)
	}
	b.run(t)
	if _, err := b.engine.Exec(ctx, `SELECT recalc.wait_fresh($1, interval '2 s')`, token); err != nil {
		t.Fatalf("wait_fresh after the detach and a run: %v", err)
	}
	b.checkOracleOf(t, want, "after detaching the users with their writes logged, not absorbed")
	var active bool
	if err := b.engine.QueryRow(ctx, `SELECT coalesce((u->>'active')::boolean, true) FROM recalc.model_section s, jsonb_array_elements(s.doc) u
		WHERE s.name = 'users' AND u->>'id' = 'carol'`).Scan(&active); err != nil {
		t.Fatal(err)
	}
	if active {
		t.Errorf("carol, deactivated before the detach, is active in the users section after it")
	}
}

// TestDetachUsersAfterASourceRepair: `recalc verify --sources --repair`
// mirrors a users-table write its capture missed (made with triggers off)
// and marks the users section for rebuilding; `recalc detach users` runs
// before any run. The section must still be built from the repaired rows:
// the detach once cleared the mark with the rows, and carol kept her
// access for good.
func TestDetachUsersAfterASourceRepair(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsers(t)
	b.run(t)
	tx, err := b.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, s := range []string{`SET LOCAL session_replication_role = replica`, `UPDATE crm.app_user SET active = false WHERE id = 'carol'`} {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := engine.Verify(ctx, b.engine, engine.VerifyOptions{Sources: true, Repair: true}, zerolog.Nop())
	if err != nil {
		t.Fatalf("verify --sources --repair: %v", err)
	}
	if rep.SourceDrift() == 0 {
		t.Fatalf("verify --sources found no drift in the users table after a write its capture missed")
	}
	want := withUsers(t, b.expectedUsers(t))
	if _, err := b.recalc("detach", "users"); err != nil {
		t.Fatalf("detach users: %v", err)
	}
	b.run(t)
	b.checkOracleOf(t, want, "after repairing the users' mirror and detaching them")
}
