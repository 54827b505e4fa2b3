package adversarial

import (
	"context"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestRLSFromRoleWarnsOfCutRoleNames: under `rls enable --user-from-role`
// a user is the role named like it, and PostgreSQL cuts a role name to 63
// bytes. A user whose id is longer is named by no role, and the role an
// administrator creates for it is cut to its first 63 bytes: when those are
// another user's id, that role reads the other user's rows. The attack: a
// model with the short user and a long user whose id starts with it; the
// long user's role reads the short user's account. `rls enable` now warns,
// naming both.
func TestRLSFromRoleWarnsOfCutRoleNames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	suffix := strings.TrimPrefix(b.readerRole, "recalc_reader_")
	short := "rolecut_" + suffix + strings.Repeat("s", 63-len("rolecut_")-len(suffix))
	long := short + "_the_other_user"
	doc := strings.Replace(baseModel, `"users": [{"id": "u1"},`, `"users": [{"id": "`+short+`"}, {"id": "`+long+`"}, {"id": "u1"},`, 1)
	doc = strings.Replace(doc, `"records": [`, `"records": [{"object": "account", "id": "short1", "owner": "`+short+`"}, {"object": "account", "id": "long1", "owner": "`+long+`"},`, 1)
	b.importJSON(t, doc)
	b.full(t)
	exec(t, b.admin, `CREATE SCHEMA app AUTHORIZATION `+ident(b.engineRole))
	exec(t, b.engine, `CREATE TABLE app.account (id text PRIMARY KEY)`)
	exec(t, b.engine, `INSERT INTO app.account VALUES ('short1'), ('long1')`)

	// The administrator creates the long user's role: PostgreSQL cuts it.
	testdb.DropRoles(t, b.url, short)
	exec(t, b.admin, `CREATE ROLE `+ident(long)+` LOGIN`)
	exec(t, b.admin, `GRANT CONNECT ON DATABASE `+ident(b.db)+` TO `+ident(long))
	b.recalc(t, "grant", "reader", short) // the cut name: `grant` refuses the long one
	exec(t, b.engine, `GRANT USAGE ON SCHEMA app TO `+ident(short))
	exec(t, b.engine, `GRANT SELECT ON app.account TO `+ident(short))

	_, warning := b.recalcWarnings(t, "rls", "enable", "--table", "app.account", "--object", "account", "--user-from-role", "--per-user-plans")

	var got string
	if err := b.connect(t, short).QueryRow(ctx, `SELECT string_agg(id, ' ') FROM app.account`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "short1" {
		t.Fatalf("the role created for the long user reads %q, want short1 (the cut name is the short user)", got)
	}
	for _, want := range []string{"users with ids longer than PostgreSQL's 63-byte role names: 1", `"` + long + `" is cut to "` + short + `"`} {
		if !strings.Contains(warning, want) {
			t.Errorf("rls enable --user-from-role warns %q, want it to contain %q", warning, want)
		}
	}
}
