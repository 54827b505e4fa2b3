package attach_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestStubGoesBesideAPlan: the last share naming a deleted user (a stub)
// goes with its record, deleted with plain SQL (an object not attached),
// while a run's plan rebuilds the users section: the plan has read the
// names the shares hold, the delete commits, and only then does the plan
// mark the section built. The users section must still be built again
// without the stub, at the next run or step of `recalc watch`: its
// records then grant nothing.
//
// Before version 57 the section was marked for rebuilding by a flag that
// the delete's trigger left alone when it was already set (by an earlier
// delete, which does not wait for the model lock), and that the plan then
// cleared: the stub stayed for good, every later run skipped the rebuild,
// and the deleted user's account kept granting frank read through the
// "tech" rule.
func TestStubGoesBesideAPlan(t *testing.T) {
	t.Parallel()
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprintf("watch=%v", watch), func(t *testing.T) {
			t.Parallel()
			stubGoesBesideAPlan(t, watch)
		})
	}
}

// stubGoesBesideAPlan is TestStubGoesBesideAPlan, the step after the held
// run a run, or with watch a step of `recalc watch`.
func stubGoesBesideAPlan(t *testing.T, watch bool) {
	ctx := context.Background()
	b, level := setupStub(t, true)
	if l := level(); l != "read" {
		t.Fatalf("tim deleted, a share naming him: frank reads account:60 %s, want read (tim a stub)", l)
	}

	h, done := holdRunBuildingUsers(t, b)
	// The last share naming tim goes with its record, and commits.
	b.exec(t, b.engine, `DELETE FROM recalc.record WHERE id = 'L1'`)
	h.free()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}

	if watch {
		if _, err := engine.NewLive(engine.Options{}, 1000).Step(ctx, b.engine, zerolog.Nop()); err != nil {
			t.Fatalf("watch step: %v", err)
		}
	} else {
		b.run(t)
	}
	var users string
	if err := b.admin.QueryRow(ctx, `SELECT doc::text FROM recalc.model_section WHERE name = 'users'`).Scan(&users); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(users, `"tim"`) {
		t.Errorf("nothing names tim any more, and the users section keeps his stub: %s", users)
	}
	if l := level(); l != "none" {
		t.Errorf("the last share naming tim gone with its record: frank reads account:60 %s, want none (tim no user)", l)
	}
	b.raceCheckFull(t, "after the run")
}

// TestUsersTruncateMarks: a TRUNCATE of recalc.team or recalc.share_input
// (the engine's role may) marks the users section while a users table is
// attached, and the next run takes the mark. Version 57 first tested the
// transition table in the same expression as TG_OP, which a TRUNCATE
// trigger, which has none, failed to parse: every such TRUNCATE failed.
func TestUsersTruncateMarks(t *testing.T) {
	t.Parallel()
	b := setupUsersRun(t)
	for _, table := range []string{"recalc.team", "recalc.share_input"} {
		b.exec(t, b.engine, `TRUNCATE `+table)
		var marks int
		if err := b.admin.QueryRow(context.Background(), `SELECT count(*) FROM recalc.attached_users_mark`).Scan(&marks); err != nil {
			t.Fatal(err)
		}
		if marks != 1 {
			t.Errorf("TRUNCATE %s left %d marks, want 1", table, marks)
		}
		b.run(t)
		if err := b.admin.QueryRow(context.Background(), `SELECT count(*) FROM recalc.attached_users_mark`).Scan(&marks); err != nil {
			t.Fatal(err)
		}
		if marks != 0 {
			t.Errorf("the run after TRUNCATE %s left %d marks", table, marks)
		}
	}
}

// TestUsersMarkWakesIdleWatch: a mark left with no change row (the plan
// that read the names consumed the one its delete logged, as in
// TestStubGoesBesideAPlan) keeps a loaded, idle `recalc watch` from
// staying idle: its next step hands the mark to a run, which takes it.
func TestUsersMarkWakesIdleWatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsersRun(t)
	live := engine.NewLive(engine.Options{}, 1000)
	for range 2 { // the first step loads, the second finds nothing to do
		if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	}
	b.exec(t, b.admin, `INSERT INTO recalc.attached_users_mark DEFAULT VALUES`)
	rep, err := live.Step(ctx, b.engine, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var marks int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.attached_users_mark`).Scan(&marks); err != nil {
		t.Fatal(err)
	}
	if rep.Run == nil || marks != 0 {
		t.Errorf("an idle watch's step with a mark left: run %v, %d marks left; want a run that takes it", rep.Run != nil, marks)
	}
}

// TestUsersRemovalKeepsFastPath: with a users table attached, a record
// deleted with a share that names an attached user leaves the users
// section as it is, so `recalc watch` writes it on the fast path and drops
// the mark; one whose share names a stub (a user the table no longer
// holds) hands the step to a run, which builds the section without the
// stub.
func TestUsersRemovalKeepsFastPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		grantee string
		fast    bool
	}{
		{"bob", true},
		{"tim", false}, // deleted from the users table: a stub while the share names him
	} {
		t.Run(tc.grantee, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setupUsers(t)
			b.exec(t, b.app, `INSERT INTO crm.app_user (id, name, role_id) VALUES ('tim', 'Tim', 'east')`)
			if _, err := b.recalc("import", "--merge", tempFile(t, `{"objects": [{"name": "lead", "internal_owd": "private"}]}`)); err != nil {
				t.Fatal(err)
			}
			b.exec(t, b.engine, `INSERT INTO recalc.record (id, object, owner) VALUES ('L1', 'lead', 'alice')`)
			b.run(t)
			if _, err := b.recalc("import", "--merge", tempFile(t, `{"shares": [{"object": "lead", "record": "L1", "grantee": "user:`+tc.grantee+`", "access": "read", "cause": "manual"}]}`)); err != nil {
				t.Fatal(err)
			}
			b.exec(t, b.app, `DELETE FROM crm.app_user WHERE id = 'tim'`)
			b.run(t)
			live := engine.NewLive(engine.Options{}, 1000)
			if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil { // loads the configuration
				t.Fatal(err)
			}
			b.exec(t, b.engine, `DELETE FROM recalc.record WHERE id = 'L1'`)
			rep, err := live.Step(ctx, b.engine, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			var marks int
			var users string
			if err := b.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.attached_users_mark), (SELECT doc::text FROM recalc.model_section WHERE name = 'users')`).Scan(&marks, &users); err != nil {
				t.Fatal(err)
			}
			if rep.Fast != tc.fast || marks != 0 || strings.Contains(users, `"tim"`) {
				t.Errorf("L1 deleted with its share to %s: fast path %v (want %v), %d marks left, tim in the users section %v; want no mark and no tim",
					tc.grantee, rep.Fast, tc.fast, marks, strings.Contains(users, `"tim"`))
			}
			b.raceCheckFull(t, "after the step")
		})
	}
}

// setupStub is the users bundle of the stub tests: tim, a user of the
// users table, owns account 60 in industry "tech", which the "tech" rule
// shares with frank; leads L1 and L2 (written with SQL: the engine's role
// stands for a writer) are shared with tim and bob; then tim leaves the
// users table, and with run a run absorbs that (tim a stub while L1's
// share names him). level reads frank's access to account 60.
func setupStub(t *testing.T, run bool) (*bundle, func() string) {
	t.Helper()
	ctx := context.Background()
	b := setupUsers(t)
	b.exec(t, b.app, `ALTER TABLE crm.account DROP CONSTRAINT account_owner_id_fkey`,
		`INSERT INTO crm.app_user (id, name, role_id) VALUES ('tim', 'Tim', 'east')`,
		`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (60, 'Tim''s', 'tim', 'tech')`)
	merge := func(doc string) {
		t.Helper()
		if out, err := b.recalcFile(t, doc, "import", "--merge"); err != nil {
			t.Fatalf("import --merge %s: %v\n%s", doc, err, out)
		}
	}
	merge(`{"objects": [{"name": "lead", "internal_owd": "private"}]}`)
	b.exec(t, b.engine, `INSERT INTO recalc.record (id, object, owner) VALUES ('L1', 'lead', 'alice'), ('L2', 'lead', 'alice')`)
	b.run(t)
	merge(`{"shares": [{"object": "lead", "record": "L1", "grantee": "user:tim", "access": "read", "cause": "manual"},
	                   {"object": "lead", "record": "L2", "grantee": "user:bob", "access": "read", "cause": "manual"}]}`)
	b.run(t)
	b.exec(t, b.app, `DELETE FROM crm.app_user WHERE id = 'tim'`)
	if run {
		b.run(t)
	}
	return b, func() string {
		t.Helper()
		var l string
		if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('frank', 'account:60')`).Scan(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
}

// holdRunBuildingUsers deletes lead L2 (its share named bob: the delete
// marks the users section, so the next plan builds it), then starts a run
// and holds it as its plan is about to mark the section built. It returns
// the hold, to free, and where the run's error comes.
func holdRunBuildingUsers(t *testing.T, b *bundle) (*holdAt, <-chan error) {
	t.Helper()
	ctx := context.Background()
	b.exec(t, b.engine, `DELETE FROM recalc.record WHERE id = 'L2'`)
	h := &holdAt{text: "UPDATE recalc.attached_users_state SET dirty = false", reached: make(chan struct{}), release: make(chan struct{})}
	held := tracedPool(t, b, h)
	t.Cleanup(h.free) // before the pool closes
	done := make(chan error, 1)
	go func() {
		_, err := engine.Run(ctx, held, engine.Options{}, zerolog.Nop())
		done <- err
	}()
	select {
	case <-h.reached:
	case err := <-done:
		t.Fatalf("the run ended before its plan built the users section: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the run never built the users section")
	}
	return h, done
}
