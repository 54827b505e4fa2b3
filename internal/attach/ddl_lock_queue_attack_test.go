package attach_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/attach"
)

// TestOpenAppTransactionQueuesNoWritesBehindCaptureDDL: the application's
// role keeps a transaction open on support.case (a write, or only a read),
// and the operator attaches case, attaches it again changed, or detaches
// it: each creates or drops capture triggers on the table, a SHARE ROW
// EXCLUSIVE or ACCESS EXCLUSIVE lock. The command waited for that lock as
// long as the transaction stayed open, under the model lock, and
// PostgreSQL queues every later write of the table behind the waiting
// trigger statement: every other write of the application to
// support.case waited too. Now each try waits 100 ms at most, the other
// write goes through between the tries, and the command fails, naming the
// application's session and changing nothing; once the transaction ends it
// goes through.
func TestOpenAppTransactionQueuesNoWritesBehindCaptureDDL(t *testing.T) {
	t.Parallel()
	withoutCase := crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")] + "\n]}"
	changed := strings.Replace(crmSpec, `"fields": ["priority", "status"]`, `"fields": ["priority"]`, 1)
	cases := []struct {
		name, before, hold, lock string
		run                      func(ctx context.Context, engine *pgxpool.Pool) error
		attached                 bool // case attached after the refused command, as before it
	}{
		{"attach beside a write", withoutCase, `UPDATE support."case" SET status = status WHERE id = 1`, "ShareRowExclusiveLock",
			func(ctx context.Context, engine *pgxpool.Pool) error { return apply(ctx, engine, crmSpec) }, false},
		{"attach again beside a write", crmSpec, `UPDATE support."case" SET status = status WHERE id = 1`, "AccessExclusiveLock",
			func(ctx context.Context, engine *pgxpool.Pool) error { return apply(ctx, engine, changed) }, true},
		{"detach beside a read", crmSpec, `SELECT count(*) FROM support."case"`, "AccessExclusiveLock",
			func(ctx context.Context, engine *pgxpool.Pool) error {
				_, err := attach.Detach(ctx, engine, []string{"case"})
				return err
			}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			b.mustAttach(t, tc.before)
			hostile, err := b.app.Begin(ctx)
			if err != nil {
				t.Fatalf("begin as the application: %v", err)
			}
			defer hostile.Rollback(ctx)
			if _, err := hostile.Exec(ctx, tc.hold); err != nil {
				t.Fatalf("hold support.case as the application: %v", err)
			}
			done := make(chan error, 1)
			go func() { done <- tc.run(ctx, b.engine) }()

			// Hold point: the command waits for its lock on support.case.
			for waiting := false; !waiting; {
				if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = 'support.case'::regclass
					AND mode = $1 AND NOT granted)`, tc.lock).Scan(&waiting); err != nil {
					t.Fatalf("look for the command's lock wait: %v", err)
				}
				select {
				case err := <-done:
					t.Fatalf("the command ended before it waited for the application's transaction: %v", err)
				default:
				}
			}
			// Another write of the application's, while the command tries.
			other, err := b.app.Begin(ctx)
			if err != nil {
				t.Fatalf("begin as the application: %v", err)
			}
			_, err = other.Exec(ctx, `SET LOCAL statement_timeout = '3s';
				INSERT INTO support."case" VALUES (900, 1, 'bob', 2, 'New')`)
			_ = other.Rollback(ctx)
			if err != nil {
				t.Errorf("a write to support.case while the command waits for the application's open transaction: %v, want it through", err)
			}

			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "(role "+b.appRole+")") {
					t.Errorf("the command while the application's transaction stays open: %v, want a refusal naming the application's session", err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("the command still waits for the application's open transaction after a minute")
				_ = hostile.Rollback(ctx)
				<-done
			}
			var attached bool
			if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.attachment WHERE object = 'case')`).Scan(&attached); err != nil || attached != tc.attached {
				t.Errorf("case attached after the refused command: %v (err %v), want %v", attached, err, tc.attached)
			}
			if err := hostile.Rollback(ctx); err != nil {
				t.Fatalf("roll back the application's transaction: %v", err)
			}
			if err := tc.run(ctx, b.engine); err != nil {
				t.Fatalf("the command once the application's transaction ended: %v", err)
			}
		})
	}
}

// apply attaches as spec says.
func apply(ctx context.Context, engine *pgxpool.Pool, spec string) error {
	s, err := attach.Parse(strings.NewReader(spec))
	if err != nil {
		return err
	}
	_, err = attach.Apply(ctx, engine, s)
	return err
}

// TestDetachUsersBoundedBesideCommittingWrites: the application's role
// keeps writing its users table, each write in a transaction it holds open
// for 4 s and commits, the next one under way before (commitBehindDrops).
// `recalc detach
// users` absorbs the users' writes, then drops their capture, which waits
// for the open write; that write then commits after the absorb, and the
// detach starts again. It did so three times, each drop waiting up to 10
// s, holding the model lock (every run and `recalc watch` waited behind
// it) for three of the application's transactions, and then failed
// without naming them. Now the three drops wait 10 s in all, as any other
// capture's DDL does (onCaptured), and the refusal names the application's
// session; once the writes stop the detach goes through.
func TestDetachUsersBoundedBesideCommittingWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsersRun(t)
	// The writes stop once the detach has returned: the one under way then
	// is rolled back rather than waited for (up to its 4 s).
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	written := make(chan error, 1)
	go func() { written <- b.commitBehindDrops(wctx, 4*time.Second, "zed", "frank") }()
	// Hold point: the application's first write is under way.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var open bool
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = 'crm.app_user'::regclass
			AND mode = 'RowExclusiveLock' AND granted)`).Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the application's write never began")
		}
	}
	start := time.Now()
	_, err := attach.Detach(ctx, b.engine, []string{"users"})
	took := time.Since(start)
	stop()
	if werr := <-written; werr != nil {
		t.Fatalf("the application's writes: %v", werr)
	}
	t.Logf("detach users beside writes that keep committing: after %s: %v", took.Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "(role "+b.appRole+")") {
		t.Errorf("detach users beside writes that keep committing: %v, want a refusal naming the application's session", err)
	}
	if took > 13*time.Second {
		t.Errorf("detach users beside writes that keep committing took %s, want about 10 s at most", took.Round(time.Millisecond))
	}
	var attached bool
	if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.attachment WHERE object = 'users')`).Scan(&attached); err != nil || !attached {
		t.Errorf("users attached after the refused detach: %v (err %v), want still attached", attached, err)
	}
	if _, err := attach.Detach(ctx, b.engine, []string{"users"}); err != nil {
		t.Fatalf("detach users once the writes stopped: %v", err)
	}
}

// commitBehindDrops is the application's side of
// TestDetachUsersBoundedBesideCommittingWrites: it updates the users ids
// names in turn, each in a transaction held open for hold and then until a
// drop of the users' capture waits for it; it then begins the next write,
// which queues behind that drop, and commits. The drop is granted with a
// write committed after its absorb, and the detach starts again, with the
// next write under way. One write after another, as before, left a moment
// between a commit and the next UPDATE where a drop could find the table
// free and go through (once in 15 runs). Should a drop's try end before
// the next write queues, that write is granted first and the commit
// follows all the same. It returns nil once ctx is done, rolling back the
// write open, and any other error.
func (b *bundle) commitBehindDrops(ctx context.Context, hold time.Duration, ids ...string) error {
	var open pgx.Tx
	defer func() {
		if open != nil {
			_ = open.Rollback(context.Background())
		}
	}()
	quiet := func(err error) error {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	write := func(id string) (pgx.Tx, <-chan error) {
		done := make(chan error, 1)
		tx, err := b.app.Begin(ctx)
		if err != nil {
			done <- err
			return nil, done
		}
		go func() {
			_, err := tx.Exec(ctx, `UPDATE crm.app_user SET active = NOT active WHERE id = $1`, id)
			done <- err
		}()
		return tx, done
	}
	open, done := write(ids[0])
	for i := 1; ; i++ {
		if err := <-done; err != nil {
			return quiet(err)
		}
		if err := b.sleepThenAwaitWait(ctx, hold, "AccessExclusiveLock", nil); err != nil {
			return quiet(err)
		}
		next, nextDone := write(ids[i%len(ids)])
		if next == nil {
			return quiet(<-nextDone)
		}
		if err := b.sleepThenAwaitWait(ctx, 0, "RowExclusiveLock", nextDone); err != nil {
			_ = next.Rollback(context.Background())
			return quiet(err)
		}
		err := open.Commit(ctx)
		open, done = next, nextDone
		if err != nil {
			return quiet(err)
		}
	}
}

// sleepThenAwaitWait waits for hold, then until a session waits for a lock
// of mode on crm.app_user, or until done (left unread) is ready.
func (b *bundle) sleepThenAwaitWait(ctx context.Context, hold time.Duration, mode string, done <-chan error) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(hold):
	}
	for {
		var waiting bool
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND relation = 'crm.app_user'::regclass AND mode = $1 AND NOT granted)`, mode).Scan(&waiting); err != nil || waiting {
			return err
		}
		if len(done) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
