package adversarial

import (
	"bytes"
	"context"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestRLSWarnsOfViewsThatBypass: PostgreSQL reads a view's tables with the
// view owner's rights unless the view is security_invoker, and row-level
// security judges that owner: the table's owner (without --force) sees
// every row, so every reader of its view does; a materialized view holds
// what its refresh read. The attack: the application's list view and a
// materialized view of the protected table, owned by its owner and granted
// to the reader, read as a user who may read nothing: every row. `rls
// enable` now warns, naming both, and neither a security_invoker view nor
// recalc's own read view.
func TestRLSWarnsOfViewsThatBypass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec(t, b.admin, `CREATE SCHEMA app AUTHORIZATION `+ident(b.engineRole))
	for _, sql := range []string{
		`CREATE TABLE app.account (id text PRIMARY KEY, name text)`,
		`INSERT INTO app.account SELECT id, 'Account ' || id FROM recalc.record WHERE object = 'account'`,
		`CREATE VIEW app.account_list AS SELECT id, name FROM app.account`,
		`CREATE MATERIALIZED VIEW app.account_names AS SELECT id, name FROM app.account`,
		`CREATE VIEW app.account_own WITH (security_invoker = on) AS SELECT id FROM app.account`,
		// As recalc's read view of an attached table: only the sandbox reads it.
		`CREATE VIEW recalc.attach_0123456789abcdef_src AS SELECT id FROM app.account`,
		`GRANT USAGE ON SCHEMA app TO ` + ident(b.readerRole),
		`GRANT SELECT ON ALL TABLES IN SCHEMA app TO ` + ident(b.readerRole),
	} {
		exec(t, b.engine, sql)
	}
	_, warning := b.recalcWarnings(t, "rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id")
	for _, view := range []string{"app.account_list", "app.account_names"} {
		if got := b.asReader(t, "nobody", `SELECT id FROM `+view); got != "a1 a2 a3 a4 hot1" {
			t.Errorf("nobody reads %q through %s: the attack needs every row", got, view)
		}
	}
	if got := b.asReader(t, "nobody", `SELECT id FROM app.account_own`); got != "" {
		t.Errorf("nobody reads %q through the security_invoker view", got)
	}
	if want := "views over app.account show its rows without these policies (app.account_list, app.account_names)"; !strings.Contains(warning, want) {
		t.Errorf("rls enable warns %q, want it to contain %q", warning, want)
	}
	// Forced on the owner, the plain view judges its readers (as its
	// owner's user setting: the session's); the materialized view still
	// holds every row.
	_, warning = b.recalcWarnings(t, "rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id", "--force")
	if want := "(app.account_names)"; !strings.Contains(warning, want) {
		t.Errorf("rls enable --force warns %q, want it to contain %q", warning, want)
	}
}

// recalcWarnings runs the command line as the engine and returns its
// standard output and standard error.
func (b *bundle) recalcWarnings(t *testing.T, args ...string) (string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := cli.App(&out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {}
	err := testkit.RunApp(context.Background(), app, append([]string{"recalc", "--database-url", dburl.WithUser(b.url, b.engineRole), "--log-format", "json"}, args...))
	if err != nil {
		t.Fatalf("recalc %s: %v (stderr: %s)", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), errOut.String()
}
