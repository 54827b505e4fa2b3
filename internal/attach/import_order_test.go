package attach_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// setupMerged is setupAttached(t, appStmts...), then the file inputs
// merged and an incremental run: a copy of a template made once per file
// and list of statements (setupPrepared). TestImportBesideAnOwnerChange's
// 10 cases and TestImportBesideAGoneRow's 11 each began with the same
// merge and run in a database of their own.
func setupMerged(t *testing.T, inputs string, appStmts ...string) *bundle {
	t.Helper()
	return setupPrepared(t, "merged\x00"+inputs+"\x00"+strings.Join(appStmts, "\x00"), func(t *testing.T, b *bundle) {
		b.exec(t, b.app, appStmts...)
		b.mustAttach(t, crmSpec)
		b.run(t)
		if _, err := testkit.ImportString(context.Background(), b.engine, inputs); err != nil {
			t.Fatalf("merge %s: %v", inputs, err)
		}
		b.run(t)
	})
}

// holdSQL is a query tracer that holds the first query match accepts at
// its start until release is closed, after closing reached.
type holdSQL struct {
	match            func(sql string) bool
	reached, release chan struct{}
	once, freed      sync.Once
}

func (h *holdSQL) free() { h.freed.Do(func() { close(h.release) }) }

func (h *holdSQL) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if h.match(data.SQL) {
		h.once.Do(func() { close(h.reached); <-h.release })
	}
	return ctx
}

func (h *holdSQL) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// waitLockWait waits until a session of the test's database waits for a
// lock, failing if done is ready first.
func waitLockWait(t *testing.T, obs *pgxpool.Pool, done <-chan error, what string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("ended before %s: %v", what, err)
		default:
		}
		var waiting bool
		if err := obs.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestImportBesideAnOwnerChange: application transaction A changes the
// owner of attached account:1, which has a manual share (carol's), while
// import T merges a manual share for erin on it; A commits at each point
// of T. Carol's share, older than both, goes in every order where A
// commits. Erin's stays when A committed before T's last absorb, just
// before T commits (docs/attach.md): A's wipe comes first, as in a serial
// order where A commits before T, and as the same owner change written to
// recalc.record would (T's lock on the record orders them). T's last
// absorb waits for an owner change written and not yet committed (migration
// 072): A committing while T waits there is absorbed by it, and erin's
// share stays. Before, A could commit between T's last absorb and T's
// commit, and its wipe, absorbed at the next run, took erin's share though
// A committed first. An owner change written once T's last absorb has
// begun waits for T's commit: its wipe then comes after T's share, and
// takes it, as when A commits after T (an owner change written before T
// cannot commit after it any more: T waits for it). Erin's share stays
// when A rolls back. When T's last absorb cannot take A's owner
// change (the table locked), T is refused, as at its first absorb. Before version 58, an owner change committed
// after T's first absorb wiped erin's share at the next absorb, though it
// committed before T.
func TestImportBesideAnOwnerChange(t *testing.T) {
	t.Parallel()
	afterAbsorb := func(sql string) bool { return strings.Contains(sql, "CREATE TEMP TABLE stage (") }
	atCommit := func(sql string) bool { return strings.EqualFold(strings.TrimSpace(sql), "commit") }
	const reown = `UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`
	for _, tc := range []struct {
		name      string
		holdAt    func(string) bool // where T waits while A ends (nil: T is not held)
		writeLate bool              // A writes while T is held, not before T starts
		endBefore bool              // A ends before T starts
		endAfter  bool              // A ends after T commits
		rollback  bool
		lockTable bool // the application locks the table after A ends, until T ends
		// endBlocking: T is not held; A, written before T, ends once T
		// waits for it (its last absorb waits for the owner changes not
		// committed yet: migration 072).
		endBlocking bool
		// writeBlocked: A writes while T is held at its commit, and so
		// waits for T's commit (migration 072), then commits.
		writeBlocked bool
		wantErin     bool
	}{
		{name: "committed before the import", endBefore: true, wantErin: true},
		{name: "committed after the import's first absorb", holdAt: afterAbsorb, wantErin: true},
		{name: "written and committed after the import's first absorb", holdAt: afterAbsorb, writeLate: true, wantErin: true},
		{name: "committed while the import waits for it at its last absorb", endBlocking: true, wantErin: true},
		{name: "written as the import commits, waiting for its commit", holdAt: atCommit, writeBlocked: true, wantErin: false},
		{name: "committed after the import", endAfter: true, writeLate: true, wantErin: false},
		{name: "committed after the import's first absorb, the table locked at its last", holdAt: afterAbsorb, writeLate: true, lockTable: true},
		{name: "rolled back after the import's first absorb", holdAt: afterAbsorb, rollback: true, wantErin: true},
		{name: "rolled back after the import", endAfter: true, writeLate: true, rollback: true, wantErin: true},
		{name: "rolled back while the import waits for it at its last absorb", endBlocking: true, rollback: true, wantErin: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setupMerged(t, `{"shares": [{"object": "account", "record": "account:1", "grantee": "user:carol", "access": "edit", "cause": "manual"}]}`)

			var a pgx.Tx
			if !tc.writeLate && !tc.writeBlocked {
				a, _ = hold(t, b.app, reown)
			}
			end := func() {
				t.Helper()
				if tc.writeLate {
					a, _ = hold(t, b.app, reown)
				}
				var err error
				if tc.rollback {
					err = a.Rollback(ctx)
				} else {
					err = a.Commit(ctx)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if tc.endBefore {
				end()
			}

			h := &holdSQL{match: func(string) bool { return false }, reached: make(chan struct{}), release: make(chan struct{})}
			if tc.holdAt != nil {
				h.match = tc.holdAt
			}
			pool := tracedPool(t, b, h)
			defer h.free()
			done := make(chan error, 1)
			go func() {
				_, err := store.ImportWith(ctx, pool, strings.NewReader(
					`{"shares": [{"object": "account", "record": "account:1", "grantee": "user:erin", "access": "edit", "cause": "manual"}]}`),
					model.DefaultLimits(), zerolog.Nop(), nil, store.Options{Merge: true})
				done <- err
			}()
			var lock pgx.Tx
			if tc.endBlocking {
				waitLockWait(t, b.admin, done, "the import to wait for the owner change at its last absorb")
				end()
			}
			if tc.writeBlocked {
				select {
				case <-h.reached:
				case err := <-done:
					t.Fatalf("the import ended before its hold: %v", err)
				case <-time.After(30 * time.Second):
					t.Fatal("the import never reached its hold")
				}
				written := make(chan error, 1)
				go func() { written <- tx(ctx, b.app, reown) }()
				waitLockWait(t, b.admin, written, "the owner change to wait for the import's commit")
				h.free()
				if err := <-written; err != nil {
					t.Fatal(err)
				}
			}
			if tc.holdAt != nil && !tc.writeBlocked {
				select {
				case <-h.reached:
				case err := <-done:
					t.Fatalf("the import ended before its hold: %v", err)
				case <-time.After(30 * time.Second):
					t.Fatal("the import never reached its hold")
				}
				end()
				if tc.lockTable {
					lock, _ = hold(t, b.app, `LOCK TABLE crm.account IN ACCESS EXCLUSIVE MODE`)
				}
				h.free()
			}
			err := <-done
			switch {
			case tc.lockTable:
				// Its last absorb could not take the owner change: the
				// share would go with it at the next absorb.
				if err == nil || !strings.Contains(err.Error(), "attached object account, whose writes wait") {
					t.Fatalf("import beside a locked table at its last absorb: %v, want refused", err)
				}
				if err := lock.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
				b.exec(t, b.engine, `DELETE FROM recalc.attach_stuck`) // try it at once
			case err != nil:
				t.Fatalf("import: %v", err)
			}
			if tc.endAfter {
				end()
			}

			b.run(t)
			wantOwner := "dave"
			if tc.rollback {
				wantOwner = "bob"
			}
			if _, owner := b.recordOf(t, "account:1"); owner != wantOwner {
				t.Errorf("account:1 owned by %q, want %s", owner, wantOwner)
			}
			var carol, erin bool
			if err := b.admin.QueryRow(ctx, `SELECT
				EXISTS (SELECT FROM recalc.share_input WHERE record = 'account:1' AND grantee = 'user:carol'),
				EXISTS (SELECT FROM recalc.share_input WHERE record = 'account:1' AND grantee = 'user:erin')`).Scan(&carol, &erin); err != nil {
				t.Fatal(err)
			}
			if carol != tc.rollback {
				t.Errorf("carol's manual share, older than the owner change: kept %v, want %v", carol, tc.rollback)
			}
			if erin != tc.wantErin {
				t.Errorf("erin's manual share, imported beside the owner change: kept %v, want %v", erin, tc.wantErin)
			}
			var l string
			if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('erin', 'account:1')`).Scan(&l); err != nil {
				t.Fatal(err)
			}
			if (l == "edit") != tc.wantErin {
				t.Errorf("erin's access to account:1 after the run: %s, want edit exactly when her share stays", l)
			}
		})
	}
}

// TestImportNamesAnOpenOwnerChange: an application transaction that changed
// an owner in an attached table and stays open holds an import with shares
// up at its last absorb (migration 072) only for the import's lock timeout:
// the import then fails, stores nothing, and names the application's
// session, which holds no lock on records, shares or team entries, only on
// the change log its capture wrote.
func TestImportNamesAnOpenOwnerChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	hold(t, b.app, `UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`)
	_, err := store.ImportWith(ctx, b.engine, strings.NewReader(
		`{"shares": [{"object": "account", "record": "account:1", "grantee": "user:erin", "access": "edit", "cause": "manual"}]}`),
		model.DefaultLimits(), zerolog.Nop(), nil, store.Options{Merge: true, LockTimeout: 200 * time.Millisecond})
	locked := new(store.LockedError)
	if !errors.As(err, &locked) {
		t.Fatalf("import beside an open owner change: %v, want a LockedError", err)
	}
	if !slices.ContainsFunc(locked.Holders, func(h string) bool { return strings.HasSuffix(h, "(role "+b.appRole+")") }) {
		t.Fatalf("the import names %v, want the application's session (role %s)", locked.Holders, b.appRole)
	}
	var shares int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.share_input WHERE grantee = 'user:erin'`).Scan(&shares); err != nil {
		t.Fatal(err)
	}
	if shares != 0 {
		t.Fatalf("the refused import stored %d shares for erin", shares)
	}
}
