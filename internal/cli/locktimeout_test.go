package cli_test

import (
	"context"
	"os"
	"path/filepath"
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
