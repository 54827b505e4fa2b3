package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestRLSEnableSaysWhatItInstalled checks that `recalc rls enable` names
// every policy it installed: the insert role's and the owner column's too,
// which give rows without recalc's access.
func TestRLSEnableSaysWhatItInstalled(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, feedModel); err != nil {
		t.Fatal(err)
	}
	role := "rls_says_" + strings.ReplaceAll(pool.Config().ConnConfig.Database, "recalc_test_", "")
	testdb.DropRoles(t, url, role)
	if _, err := pool.Exec(ctx, `CREATE ROLE `+role+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE app_account (id text PRIMARY KEY, owner_id text)`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flags     []string
		want, not []string
	}{
		{[]string{"--write"}, []string{"policy recalc_read shows the rows of account", "UPDATE and DELETE reach the rows it may edit"},
			[]string{"INSERT", "owner_id"}},
		{[]string{"--insert-role", role, "--owner-column", "owner_id"},
			[]string{"role " + role + " may INSERT any row", "the rows whose owner_id is its id"}, []string{"UPDATE and DELETE"}},
	} {
		args := append([]string{"rls", "enable", "--table", "app_account", "--object", "account", "--user-setting", "app.user_id", "--force"}, tc.flags...)
		out, code := recalc(ctx, url, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s", tc.flags, code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: %q does not say %q", tc.flags, out, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(out, n) {
				t.Errorf("%v: %q says %q, which it did not install", tc.flags, out, n)
			}
		}
	}
}

// TestImportWarnsOfALargeClosure checks that `recalc import` and `recalc
// plan FILE` warn when the closure the stored configuration may make passes
// --closure-warn, from the estimate the import computed, and only then.
func TestImportWarnsOfALargeClosure(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	file := filepath.Join(t.TempDir(), "model.json")
	if err := os.WriteFile(file, []byte(feedModel), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"import", "--closure-warn", "1", file}, true},
		{[]string{"import", "--closure-warn", "1000", file}, false},
		{[]string{"plan", "--closure-warn", "1", file}, true},
		{[]string{"plan", "--closure-warn", "1000", file}, false},
	} {
		var out, errOut bytes.Buffer
		app := cli.App(&out, &errOut)
		app.ExitErrHandler = func(*ucli.Context, error) {}
		if err := testkit.RunApp(ctx, app, append([]string{"recalc", "--database-url", url, "--log-format", "json"}, tc.args...)); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, errOut.String())
		}
		if got := strings.Contains(errOut.String(), `"closure_estimate"`); got != tc.warn {
			t.Errorf("%v: warned %v, want %v:\n%s", tc.args, got, tc.warn, errOut.String())
		}
	}
}
