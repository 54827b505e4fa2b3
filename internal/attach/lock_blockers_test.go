package attach_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/dburl"
)

// TestAttachLockFailureNamesBlockers: an attach whose lock budget runs out
// named every session holding a lock on the tables it locks: beside the
// application's open write that kept its capture triggers (SHARE ROW
// EXCLUSIVE on support.case) or its lock of the records (SHARE ROW
// EXCLUSIVE on recalc.record) from being had, it named a reader of
// support.case and a writer holding a row lock on another record too,
// whose locks its own did not conflict with. Now it names the sessions
// seen blocking its waits (pg_blocking_pids), and those alone.
func TestAttachLockFailureNamesBlockers(t *testing.T) {
	t.Parallel()
	withoutCase := crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")] + "\n]}"
	for _, tc := range []struct {
		name              string
		byWriter          bool   // the sessions are the writer role's, else the application's
		block, beside     string // the blocker's statement, and the bystander's, each left open
		relation, waitFor string // the lock the attach waits for
	}{
		{"capture beside a reader", false, `UPDATE support."case" SET status = status WHERE id = 1`, `SELECT count(*) FROM support."case"`,
			"support.case", "ShareRowExclusiveLock"},
		{"records beside a row lock", true, `UPDATE recalc.record SET owner = owner WHERE id = 'case:900'`,
			`SELECT id FROM recalc.record WHERE id = 'case:901' FOR UPDATE`, "recalc.record", "ShareRowExclusiveLock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			b.mustAttach(t, withoutCase)
			sessions, role := b.app, b.appRole
			if tc.byWriter {
				sessions, role = b.writerPool(t)
				b.exec(t, sessions, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('case:900', 'case', 'bob', 'account:1'), ('case:901', 'case', 'bob', 'account:1')`)
			}
			var pids [2]uint32
			for i, sql := range []string{tc.block, tc.beside} {
				tx, err := sessions.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback(ctx)
				if _, err := tx.Exec(ctx, sql); err != nil {
					t.Fatalf("%s as %s: %v", sql, role, err)
				}
				pids[i] = tx.Conn().PgConn().PID()
			}
			done := make(chan error, 1)
			go func() { done <- apply(ctx, b.engine, crmSpec) }()
			b.waitLockWait(t, tc.relation, tc.waitFor, done)
			err := <-done
			blocker, bystander := fmt.Sprintf("pid %d (role %s)", pids[0], role), fmt.Sprintf("pid %d ", pids[1])
			if err == nil || !strings.Contains(err.Error(), blocker) || !strings.Contains(err.Error(), "sessions blocking its lock waits") {
				t.Errorf("attach beside %s: %v; want a refusal naming the blocker, %s", tc.block, err, blocker)
			}
			if err != nil && strings.Contains(err.Error(), bystander) {
				t.Errorf("attach beside %s: %v; names %s, whose %s blocked nothing", tc.block, err, bystander, tc.beside)
			}
		})
	}
}

// TestRLSLockFailureNamesBlockers: `recalc rls enable` or `disable` whose
// tries ran out named every session holding a lock on the table once they
// had: with a session lock_timeout past the commands' 10 s (one try), beside
// the application's open write, a reader that came while the command
// waited, queued behind it and got its lock once the try let go, was named
// too, though it blocked nothing. Now the command names the sessions seen
// blocking its wait, and those alone.
func TestRLSLockFailureNamesBlockers(t *testing.T) {
	t.Parallel()
	enable := []string{"rls", "enable", "--table", "support.case", "--object", "case", "--user-setting", "app.user_id"}
	for _, tc := range []struct {
		name    string
		enabled bool // policies on the table before the command
		args    []string
	}{
		{"enable", false, enable},
		{"disable", true, []string{"rls", "disable", "--table", "support.case"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			if tc.enabled {
				if out, err := b.recalcAsAdmin(enable...); err != nil {
					t.Fatalf("rls enable: %v\n%s", err, out)
				}
			}
			holder, err := b.app.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Rollback(ctx)
			if _, err := holder.Exec(ctx, `UPDATE support."case" SET status = status WHERE id = 1`); err != nil {
				t.Fatalf("write support.case as the application: %v", err)
			}
			reader, err := b.app.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer reader.Rollback(ctx)
			long := *b // one try of 11 s, past the command's 10 s
			long.url = dburl.WithParam(b.url, "options", "--lock_timeout=11s")
			done := make(chan error, 1)
			go func() { _, err := long.recalcAsAdmin(tc.args...); done <- err }()
			b.waitLockWait(t, "support.case", "AccessExclusiveLock", done)
			read := make(chan error, 1) // queued behind the command's wait, granted once it lets go
			go func() { _, err := reader.Exec(ctx, `SELECT count(*) FROM support."case"`); read <- err }()
			err = <-done
			if rerr := <-read; rerr != nil {
				t.Fatalf("the reader's read: %v", rerr)
			}
			blocker := fmt.Sprintf("pid %d (role %s)", holder.Conn().PgConn().PID(), b.appRole)
			bystander := fmt.Sprintf("pid %d ", reader.Conn().PgConn().PID())
			if err == nil || !strings.Contains(err.Error(), blocker) || !strings.Contains(err.Error(), "sessions blocking its lock waits") {
				t.Errorf("rls %s beside the application's write: %v; want a refusal naming the blocker, %s", tc.name, err, blocker)
			}
			if err != nil && strings.Contains(err.Error(), bystander) {
				t.Errorf("rls %s beside the application's write: %v; names %s, the reader queued behind it", tc.name, err, bystander)
			}
		})
	}
}

// waitLockWait waits until a session waits for a lock of mode on relation,
// failing the test if done reports first.
func (b *bundle) waitLockWait(t *testing.T, relation, mode string, done chan error) {
	t.Helper()
	ctx := context.Background()
	for waiting := false; !waiting; time.Sleep(10 * time.Millisecond) {
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND relation = $1::regclass AND mode = $2 AND NOT granted)`, relation, mode).Scan(&waiting); err != nil {
			t.Fatalf("look for the lock wait: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("the command ended before it waited for %s on %s: %v", mode, relation, err)
		default:
		}
	}
}
