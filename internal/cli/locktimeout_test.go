package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestSessionLockTimeoutHonoured: `recalc attach` and `recalc rls enable`
// tried their locks on the application's table 100 ms at a time for 10 s,
// whatever the session's lock_timeout, where `recalc init` waits the
// session's lock_timeout for each lock: an operator whose application
// keeps the table locked for longer could not have them wait. With
// options=-c lock_timeout=15s in the connection string, each waits for a
// lock held for 11 s and succeeds; without it, each fails after about 10
// s, as before, naming the session that holds it. There the lock is held
// until the command ends: released at 11 s, it was granted to a command
// whose work before its lock tries took over 1 s (a loaded machine, the
// race detector), which then succeeded.
func TestSessionLockTimeoutHonoured(t *testing.T) {
	ctx := context.Background()
	const held = 11 * time.Second
	for _, tc := range []struct {
		name string
		args []string
		hold string // the lock the application's transaction holds on app_account
	}{
		{"attach", []string{"attach", "SPEC"}, `LOCK TABLE public.app_account IN ROW EXCLUSIVE MODE`},
		{"rls enable", []string{"rls", "enable", "--table", "public.app_account", "--object", "account", "--user-setting", "app.user_id"},
			`LOCK TABLE public.app_account IN ACCESS SHARE MODE`},
	} {
		for _, timeout := range []string{"15s", ""} {
			t.Run(tc.name+" lock_timeout "+timeout, func(t *testing.T) {
				t.Parallel()
				pool := testdb.Migrated(t)
				url := pool.Config().ConnString()
				if _, err := testkit.ImportString(ctx, pool, feedModel); err != nil {
					t.Fatal(err)
				}
				if _, err := pool.Exec(ctx, `CREATE TABLE public.app_account (id text PRIMARY KEY, owner_id text NOT NULL)`); err != nil {
					t.Fatal(err)
				}
				spec := filepath.Join(t.TempDir(), "spec.json")
				if err := os.WriteFile(spec, []byte(`{"objects": [{"object": "account", "table": "public.app_account", "id": "id", "owner": "owner_id"}]}`), 0o600); err != nil {
					t.Fatal(err)
				}
				args := append([]string(nil), tc.args...)
				for i, a := range args {
					if a == "SPEC" {
						args[i] = spec
					}
				}
				if timeout != "" {
					url += "&options=-c%20lock_timeout%3D" + timeout
				}
				holder, err := pool.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var once sync.Once
				release := func() { once.Do(func() { _ = holder.Rollback(ctx) }) }
				defer release()
				if _, err := holder.Exec(ctx, tc.hold); err != nil {
					t.Fatal(err)
				}
				if timeout != "" {
					timer := time.AfterFunc(held, release)
					defer timer.Stop()
				}
				start := time.Now()
				code, msg := recalcErr(ctx, url, args...)
				took := time.Since(start)
				switch {
				case timeout != "" && (code != 0 || took < held):
					t.Errorf("recalc %s with lock_timeout %s beside a lock held %s: exit %d after %s, %q; want it to wait for the lock and succeed",
						tc.name, timeout, held, code, took.Round(100*time.Millisecond), msg)
				case timeout == "" && (code != 1 || took < 10*time.Second || took > 20*time.Second || !strings.Contains(msg, "pid ")):
					t.Errorf("recalc %s beside a lock held throughout: exit %d after %s, %q; want exit 1 after about 10 s naming the holder",
						tc.name, code, took.Round(100*time.Millisecond), msg)
				}
			})
		}
	}
}

// TestAttachLockWaitInAll: `recalc attach` tried each of its locks for 10
// s (or a session lock_timeout) of its own, so an attach of two objects
// whose first table the application held for 5 s past the attach's first
// try and whose second it held throughout waited 10 s more for the second,
// 15 s in all, where docs/operations.md says 10 s in all. The locks' waits
// now share the 10 s: the second gets what the first left, about 5 s, with
// a session lock_timeout shorter than the 10 s too. The error's figure
// (the second lock's wait) is what is measured: the command's time beside
// it is the work of a loaded machine.
func TestAttachLockWaitInAll(t *testing.T) {
	ctx := context.Background()
	const model = `{"version": 1, "objects": [{"name": "account", "internal_owd": "private", "external_owd": "private"},
		{"name": "contact", "internal_owd": "private", "external_owd": "private"}], "users": [{"id": "u1"}]}`
	const spec = `{"objects": [{"object": "account", "table": "public.app_account", "id": "id", "owner": "owner_id"},
		{"object": "contact", "table": "public.app_contact", "id": "id", "owner": "owner_id"}]}`
	waited := regexp.MustCompile(`install the capture of contact: other transactions kept its tables locked for ([0-9.]+s) \(sessions (?:blocking its lock waits|holding locks on them): pid `)
	for _, timeout := range []string{"", "4s"} {
		t.Run("lock_timeout "+timeout, func(t *testing.T) {
			// Not in parallel: beside the other subtest's attach, in another
			// database, the backfill here (lock_timeout 4 s) failed once in
			// three runs with a lock timeout (55P03), most likely on the
			// shared catalog rows of the sandbox role that the other
			// attach's transaction readies while it waits for its tables.
			pool := testdb.Migrated(t)
			url := pool.Config().ConnString()
			if timeout != "" {
				url += "&options=-c%20lock_timeout%3D" + timeout
			}
			if _, err := testkit.ImportString(ctx, pool, model); err != nil {
				t.Fatal(err)
			}
			for _, table := range []string{"app_account", "app_contact"} {
				if _, err := pool.Exec(ctx, `CREATE TABLE public.`+table+` (id text PRIMARY KEY, owner_id text NOT NULL)`); err != nil {
					t.Fatal(err)
				}
			}
			file := filepath.Join(t.TempDir(), "spec.json")
			if err := os.WriteFile(file, []byte(spec), 0o600); err != nil {
				t.Fatal(err)
			}
			var releaseFirst func()
			for _, table := range []string{"app_account", "app_contact"} {
				holder, err := pool.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var once sync.Once
				release := func() { once.Do(func() { _ = holder.Rollback(ctx) }) }
				t.Cleanup(release)
				if _, err := holder.Exec(ctx, `LOCK TABLE public.`+table+` IN ROW EXCLUSIVE MODE`); err != nil {
					t.Fatal(err)
				}
				if releaseFirst == nil {
					releaseFirst = release
				}
			}
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			go func() { // app_account released 5 s after the attach first waits for it
				for cctx.Err() == nil {
					var waiting bool
					if err := pool.QueryRow(cctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted AND relation = 'public.app_account'::regclass)`).Scan(&waiting); err == nil && waiting {
						time.Sleep(5 * time.Second)
						releaseFirst()
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			code, msg := recalcErr(cctx, url, "attach", file)
			m := waited.FindStringSubmatch(msg)
			var second time.Duration
			if m != nil {
				second, _ = time.ParseDuration(m[1])
			}
			if code != 1 || m == nil || second > 7*time.Second {
				t.Errorf("recalc attach beside app_account held 5 s and app_contact held throughout: exit %d, %q; "+
					"want exit 1 naming app_contact's holder after waiting for it what the first lock left of the 10 s, about 5 s", code, msg)
			}
			t.Logf("exit %d: %s", code, msg)
		})
	}
}
