package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestDryRunSnapshotProgress: `recalc plan FILE` whose OWD change has the
// dry run snapshot every user's access to the object's records before it
// applies anything reported phase "apply" with no family done for as long
// as that snapshot took: minutes on a large org, as though stuck. Its
// first statement reads recalc.acl_user, which a lock holds up here; the
// progress must say "snapshot".
func TestDryRunSnapshotProgress(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, feedModel); err != nil {
		t.Fatal(err)
	}
	if code, msg := recalcErr(ctx, url, "run"); code != 0 {
		t.Fatalf("run: exit %d: %s", code, msg)
	}
	file := filepath.Join(t.TempDir(), "owd.json")
	if err := os.WriteFile(file, []byte(`{"objects": [{"name": "account", "internal_owd": "public_read_only", "external_owd": "private"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE recalc.acl_user IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var out, errOut lockedBuffer
	app := cli.App(&out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {}
	done := make(chan error, 1)
	go func() {
		done <- testkit.RunApp(ctx, app, []string{"recalc", "--database-url", url, "--log-format", "json", "plan", file})
	}()
	var progress string
	for deadline := time.Now().Add(30 * time.Second); progress == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, line := range strings.Split(errOut.String(), "\n") {
			if strings.Contains(line, `"dry run progress"`) {
				progress = line
				break
			}
		}
	}
	_ = tx.Rollback(ctx)
	if err := <-done; err != nil {
		t.Fatalf("plan %s: %v", file, err)
	}
	if !strings.Contains(progress, `"phase":"snapshot"`) {
		t.Errorf("progress of a dry run held up in its snapshot: %q; want phase snapshot", progress)
	}
	if !strings.Contains(out.String(), "account") {
		t.Errorf("plan printed %q; want the account pairs that gain access", out.String())
	}
}

// TestModelLockWaitIsLogged: `recalc import`, `recalc plan FILE` and
// `recalc run` (planning its job) behind the model lock, which another
// import or a plan's dry run holds for as long as it takes (minutes on a
// large org), waited saying nothing, as if hung. Each must log that it
// waits, while it waits.
func TestModelLockWaitIsLogged(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, feedModel); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(file, []byte(`{"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"import", file}, {"plan", file}, {"run"}} {
		release := holdModelLock(t, pool)
		var out, errOut lockedBuffer
		app := cli.App(&out, &errOut)
		app.ExitErrHandler = func(*ucli.Context, error) {}
		done := make(chan error, 1)
		go func() {
			done <- testkit.RunApp(ctx, app, append([]string{"recalc", "--database-url", url, "--log-format", "json"}, args...))
		}()
		const want = "waiting for the model lock"
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(errOut.String(), want) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		logged := errOut.String()
		release()
		if err := <-done; err != nil {
			t.Errorf("recalc %s: %v", args, err)
		}
		if !strings.Contains(logged, want) {
			t.Errorf("recalc %s behind the model lock logged %q while it waited; want %q", args, logged, want)
		}
	}
}

// TestImportProgress: an import logged nothing until it ended, and one of
// 10,000,000 records takes minutes. Held up here by a lock on
// recalc.record once its file is staged, it must log its phase and the
// entries staged every two seconds.
func TestImportProgress(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, feedModel); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "records.json")
	if err := os.WriteFile(file, []byte(`{"records": [{"id": "a1", "object": "account", "owner": "u2"}, {"id": "a3", "object": "account", "owner": "u1"}],
		"shares": [{"object": "account", "record": "a1", "grantee": "group:g", "access": "read", "cause": "manual"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE recalc.record IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var out, errOut lockedBuffer
	app := cli.App(&out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {}
	done := make(chan error, 1)
	go func() {
		done <- testkit.RunApp(ctx, app, []string{"recalc", "--database-url", url, "--log-format", "json", "import", "--lock-timeout", "1m", file})
	}()
	var progress string
	for deadline := time.Now().Add(30 * time.Second); progress == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, line := range strings.Split(errOut.String(), "\n") {
			if strings.Contains(line, `"import progress"`) {
				progress = line
				break
			}
		}
	}
	_ = tx.Rollback(ctx)
	if err := <-done; err != nil {
		t.Fatalf("import %s: %v", file, err)
	}
	for _, want := range []string{`"phase":"store"`, `"entries_staged":3`, `"elapsed_ms":`} {
		if !strings.Contains(progress, want) {
			t.Errorf("progress of an import held up once staged: %q; want %s", progress, want)
		}
	}
}

// TestAccessBeforeAnyRun: `recalc access` after `recalc import` alone
// printed none, or no row, as though the model gave no access, with no
// hint that nothing had been recalculated. It must warn, and print the
// same; once a run has applied, it must not warn.
func TestAccessBeforeAnyRun(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, feedModel); err != nil {
		t.Fatal(err)
	}
	const warning = "nothing has been recalculated yet, so no one has access: run `recalc run`"
	for _, step := range []struct {
		run  bool // recalc run first
		warn bool
	}{{false, true}, {true, false}} {
		if step.run {
			if code, msg := recalcErr(ctx, url, "run"); code != 0 {
				t.Fatalf("run: exit %d: %s", code, msg)
			}
		}
		for _, tc := range []struct {
			args   []string
			before string // printed before any run
		}{
			{[]string{"access", "--user", "u1", "--record", "a1"}, "none\n"},
			{[]string{"access", "--user", "u1", "--object", "account"}, ""},
			{[]string{"access", "--format", "csv"}, "object,record,user,access\n"},
		} {
			var out, errOut lockedBuffer
			app := cli.App(&out, &errOut)
			app.ExitErrHandler = func(*ucli.Context, error) {}
			if err := testkit.RunApp(ctx, app, append([]string{"recalc", "--database-url", url, "--log-format", "json"}, tc.args...)); err != nil {
				t.Fatalf("recalc %s: %v", tc.args, err)
			}
			if got := strings.Contains(errOut.String(), warning); got != step.warn {
				t.Errorf("recalc %s, run before: %v: logged %q; want the warning: %v", tc.args, step.run, errOut.String(), step.warn)
			}
			if !step.run && out.String() != tc.before {
				t.Errorf("recalc %s before any run printed %q, want %q", tc.args, out.String(), tc.before)
			}
		}
	}
}
