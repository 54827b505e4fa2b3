package attach_test

import (
	"context"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/rs/zerolog"
)

// TestDeferWaitsForStepInFlight: a `recalc watch` step that read the
// deferral before `recalc defer` committed goes on absorbing, in READ
// COMMITTED, whatever commits while it runs. `recalc defer` must return
// only once such a step has ended, so that a write committed after it
// returns (README, "Bulk loads": defer, then load) waits for the resume.
// The step is stopped inside its absorb by a lock on the attached
// account table; the write goes to the opportunity table. Seen as
// TestLiveUsersDefer seed 2, "phase 1: access moved while both sides were
// deferred", under load.
//
// The absorb waits 2 s at most for a lock on an application's table (its
// lock_timeout: attach_absorb_one's SET clause, migrations 019 and 054),
// then leaves the object's writes logged (attach_stuck, 55P03), and the
// step goes on and ends: on a loaded machine that started `recalc defer`
// more than 2 s after the step began waiting, nothing was in flight any
// more, `recalc defer` returned at once, and account:21, never absorbed,
// rightly waited for the resume ("alice on account:21 ...: none"). The
// test's database lets the absorb wait a minute, so the step stays in
// flight as long as the test holds the lock, however slow the machine;
// and the first step must have absorbed the account.
func TestDeferWaitsForStepInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		sides []string
	}{
		{"both sides", nil},
		{"rules", []string{"--rules"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setupTiny(t, uSpec)
			b.exec(t, b.engine, `ALTER FUNCTION recalc.attach_absorb_one(text) SET lock_timeout = '1min'`)
			live := engine.NewLive(engine.Options{LockTimeout: time.Minute}, 1000)
			// Writes committed before the deferral, which the step absorbs:
			// the account's first, where the lock stops it, then the
			// opportunity's, in a statement of its own.
			b.exec(t, b.app, `INSERT INTO app.account (id, name, owner_id) VALUES (21, 'a', 'alice')`,
				`INSERT INTO app.opportunity (id, name, owner_id, account_id) VALUES ('o29', 'o', 'alice', 21)`)
			hold, err := b.app.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = hold.Rollback(ctx) }()
			if _, err := hold.Exec(ctx, `LOCK TABLE app.account IN ACCESS EXCLUSIVE MODE`); err != nil {
				t.Fatal(err)
			}
			type stepResult struct {
				rep *engine.LiveReport
				err error
			}
			stepped := make(chan stepResult, 1)
			go func() {
				rep, err := live.Step(ctx, b.engine, zerolog.Nop())
				stepped <- stepResult{rep, err}
			}()
			waitLock(t, b, `relation = 'app.account'::regclass`, "the step to wait for the account table")
			deferred := make(chan error, 1)
			go func() {
				_, err := b.recalc(append([]string{"defer"}, tc.sides...)...)
				deferred <- err
			}()
			// Either `recalc defer` returns while the step is in flight (the
			// write then commits before the step reads it), or it waits for
			// the step (the write then commits after the step ended).
			select {
			case err := <-deferred:
				t.Log("recalc defer returned while the step was in flight")
				if err != nil {
					t.Fatal(err)
				}
				b.exec(t, b.app, `INSERT INTO app.opportunity (id, name, owner_id, account_id) VALUES ('o30', 'o', 'bob', 21)`)
				if err := hold.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			case <-waitLockCh(t, b, `locktype IN ('transactionid', 'tuple')`):
				if err := hold.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				if err := <-deferred; err != nil {
					t.Fatal(err)
				}
				b.exec(t, b.app, `INSERT INTO app.opportunity (id, name, owner_id, account_id) VALUES ('o30', 'o', 'bob', 21)`)
			}
			if r := <-stepped; r.err != nil {
				t.Fatal(r.err)
			} else if len(r.rep.NotAbsorbed) > 0 {
				t.Fatalf("the step in flight gave up absorbing %+v: it was not in flight while the test held the account table", r.rep.NotAbsorbed)
			}
			if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
				t.Fatal(err)
			}
			if l := levelOf(t, b, "alice", "account:21"); l != "all" {
				t.Errorf("alice on account:21, written before the deferral: %s, want all", l)
			}
			if l := levelOf(t, b, "bob", "opportunity:o30"); l != "none" {
				t.Errorf("bob on opportunity:o30, written after `recalc defer %v` returned: %s, want none until the resume", tc.sides, l)
			}
			if out, err := b.recalc("resume"); err != nil {
				t.Fatal(err, out)
			}
			if l := levelOf(t, b, "bob", "opportunity:o30"); l != "all" {
				t.Errorf("bob on opportunity:o30 after the resume: %s, want all", l)
			}
		})
	}
}

// waitLock waits until a lock of this database matching cond is awaited.
func waitLock(t *testing.T, b *bundle, cond, what string) {
	t.Helper()
	select {
	case <-waitLockCh(t, b, cond):
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// waitLockCh is closed once a lock of this database matching cond is
// awaited (polled every 5 ms, for at most 30 s).
func waitLockCh(t *testing.T, b *bundle, cond string) <-chan struct{} {
	t.Helper()
	ch := make(chan struct{})
	go func() {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			var waiting bool
			if err := b.admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted
				AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database()) AND `+cond+`)`).Scan(&waiting); err == nil && waiting {
				close(ch)
				return
			}
		}
	}()
	return ch
}
