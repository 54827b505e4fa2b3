package attach_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/attach"
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
	b := setupUsersRun(t)
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
	b := setupUsersRun(t)
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

// TestDetachUsersBesideAUsersWrite: the application writes its users
// table, and commits, while `recalc detach users` has absorbed the writes
// logged before it and is about to drop the capture. Its change row must
// not go unread with the capture: the detach finds it once the capture is
// dropped, and absorbs again; the users section has the write.
func TestDetachUsersBesideAUsersWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsersRun(t)
	h := &holdAt{text: "SELECT recalc.attach_drop_capture", reached: make(chan struct{}), release: make(chan struct{})}
	held := tracedPool(t, b, h)
	t.Cleanup(h.free)
	detached := make(chan error, 1)
	go func() {
		_, err := attach.Detach(ctx, held, []string{"users"})
		detached <- err
	}()
	select {
	case <-h.reached:
	case err := <-detached:
		t.Fatalf("detach ended before dropping the capture: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("detach never reached dropping the capture")
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := b.app.Exec(ctx, `UPDATE crm.app_user SET active = false WHERE id = 'carol'`)
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the users-table write waited for the detach, which held no lock against it yet")
	}
	h.free()
	if err := <-detached; err != nil {
		t.Fatalf("detach: %v", err)
	}
	b.run(t)
	var active bool
	if err := b.engine.QueryRow(ctx, `SELECT coalesce((u->>'active')::boolean, true) FROM recalc.model_section s, jsonb_array_elements(s.doc) u
		WHERE s.name = 'users' AND u->>'id' = 'carol'`).Scan(&active); err != nil {
		t.Fatal(err)
	}
	if active {
		t.Errorf("carol's deactivation committed before the detach did, and the users section keeps her active")
	}
	var logged int
	if err := b.engine.QueryRow(ctx, `SELECT count(*) FROM recalc.change WHERE object = 'users'`).Scan(&logged); err != nil {
		t.Fatal(err)
	}
	if logged != 0 {
		t.Errorf("%d change rows of the detached users table left", logged)
	}
}

// TestDetachUsersWhileChunkWaits: a job's chunk waits for a row lock while
// `recalc detach users` absorbs a users-table write and rebuilds the users
// section (the stored model changes under the running job, which computes
// from the one it planned); the job ends, and the next run applies the
// section as built: access is the oracle's for it.
func TestDetachUsersWhileChunkWaits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsersRun(t)
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`)
	holder, pid := hold(t, b.engine, `SELECT FROM recalc.acl_record WHERE id = 'account:1' FOR UPDATE`)
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		_, runErr = engine.Run(ctx, b.engine, engine.Options{Workers: 1, ChunkSize: 1, LockTimeout: 20 * time.Second}, zerolog.Nop())
	}()
	waitBlocked(t, b.admin, pid, done, "the run's chunk to wait")
	b.exec(t, b.app, `UPDATE crm.app_user SET active = false WHERE id = 'carol'`)
	want := withUsers(t, b.expectedUsers(t))
	if _, err := b.recalc("detach", "users"); err != nil {
		t.Fatalf("detach users while a chunk waits: %v", err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	b.run(t)
	b.checkOracleOf(t, want, "after detaching the users while a chunk waited")
}

// TestDetachUsersWithABrokenCapture: the application writes its users
// table, then renames or drops it before any run absorbs the write: the capture is
// not intact, so the logged write cannot be read, and `recalc detach users`
// drops it with the capture (docs/attach.md: detach, then attach again).
// The detach must succeed: it once took the logged write it had just left
// unread for one committed after its absorb, tried three times, and failed
// every time with "writes to the users table kept committing", so a users
// table renamed or dropped with a write pending could never be detached.
func TestDetachUsersWithABrokenCapture(t *testing.T) {
	t.Parallel()
	for name, broken := range map[string]string{
		"renamed": `ALTER TABLE crm.app_user RENAME TO app_user_renamed`,
		"dropped": `DROP TABLE crm.app_user CASCADE`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setupUsersRun(t)
			b.exec(t, b.app, `UPDATE crm.app_user SET active = false WHERE id = 'carol'`, broken)
			var logged bool
			if err := b.engine.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.change WHERE kind IN ('attached', 'attached_all') AND object = 'users')`).Scan(&logged); err != nil {
				t.Fatal(err)
			}
			if !logged {
				t.Fatal("the users write logged no change row")
			}
			out, err := b.recalc("detach", "users")
			if err != nil {
				t.Fatalf("detach users with its capture broken and a write logged: %v\n%s", err, out)
			}
			if err := b.engine.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.attachment WHERE object = 'users')`).Scan(&logged); err != nil || logged {
				t.Fatalf("users still attached after the detach: %v %v", logged, err)
			}
		})
	}
}
