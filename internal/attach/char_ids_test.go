package attach_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// charIDSpec attaches account and case to tables keyed by char(36), as
// SuiteCRM's and SugarCRM's are; the owner and parent columns are char too.
const charIDSpec = `{"objects": [
  {"object": "account", "table": "crm.s_account", "id": "id", "owner": "assigned_user_id", "parent": null, "fields": ["industry", "vip"]},
  {"object": "case", "table": "crm.s_case", "id": "id", "owner": "assigned_user_id", "parent": "account_id", "fields": ["priority"]}]}`

// setupCharIDs attaches charIDSpec's tables, holding the CRM's accounts 1
// to 3 as a1, a uuid, and a3, and two cases: c1 (erin's, under a1) and c2
// (bob's, under the uuid account).
func setupCharIDs(t *testing.T) *bundle {
	t.Helper()
	b := setupOwnRoles(t)
	b.exec(t, b.app,
		`CREATE TABLE crm.s_account (id char(36) PRIMARY KEY, assigned_user_id char(36) NOT NULL, industry text, vip boolean)`,
		`CREATE TABLE crm.s_case (id char(36) PRIMARY KEY, assigned_user_id char(36), account_id char(36) REFERENCES crm.s_account, priority integer)`,
		`INSERT INTO crm.s_account VALUES ('a1', 'bob', 'tech', false), ('`+charUUID+`', 'dave', 'energy', true),
		     ('a3', 'carol', NULL, NULL)`,
		`INSERT INTO crm.s_case VALUES ('c1', 'erin', 'a1', 4), ('c2', 'bob', '`+charUUID+`', 1)`,
		`GRANT SELECT, TRIGGER ON crm.s_account, crm.s_case TO `+ident(b.engineRole))
	b.mustAttach(t, charIDSpec)
	b.run(t)
	return b
}

// charUUID is the id of setupCharIDs' second account, which fills its
// char(36) column.
const charUUID = "5f0c2a8e-1b7c-4c0e-9d3a-000000000002"

// TestCharIDsWriteGuard: the write guard reads a char id or parent
// column's value as the record's key, without its padding. It used to ask
// about the padded id, of which recalc holds no record, and so let an
// editor take a record (found by an attack helper), and refused a move
// under a char parent the user may read. Under --write, bob may edit case
// c1 (his role's case access on his account a1), which erin owns; erin
// reads account a4 (rule tech: vip) and not a3.
func TestCharIDsWriteGuard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCharIDs(t)
	b.exec(t, b.app, `INSERT INTO crm.s_account VALUES ('a4', 'dave', 'energy', true)`)
	b.run(t)
	for _, p := range []struct{ user, key, level string }{
		{"bob", "case:c1", "edit"}, {"erin", "case:c1", "all"}, {"erin", "account:a4", "read"}, {"erin", "account:a3", "none"},
	} {
		if got := levelOf(t, b, p.user, p.key); got != p.level {
			t.Fatalf("premise: %s has %s on %s, want %s", p.user, got, p.key, p.level)
		}
	}
	role := "attach_writer_" + b.appRole[len("attach_app_"):]
	testdb.DropRoles(t, b.url, role)
	b.exec(t, b.admin, `ALTER ROLE `+ident(b.engineRole)+` BYPASSRLS`,
		`CREATE ROLE `+ident(role)+` NOLOGIN NOSUPERUSER`, `GRANT USAGE ON SCHEMA crm TO `+ident(role),
		`GRANT SELECT, INSERT, UPDATE ON crm.s_account, crm.s_case TO `+ident(role))
	if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error { return access.Grant(ctx, tx, access.Reader, role) }); err != nil {
		t.Fatal(err)
	}
	b.enablePolicies(t, protectedTable{name: "crm.s_case", object: "case"}, access.RLS{Write: true})
	tests := []struct {
		name, user, stmt string
		refused          bool
	}{
		{"an editor changes the owner", "bob", `UPDATE crm.s_case SET assigned_user_id = 'bob' WHERE id = 'c1'`, true},
		{"an editor changes the id", "bob", `UPDATE crm.s_case SET id = 'c9' WHERE id = 'c1'`, true},
		{"the owner changes the owner", "erin", `UPDATE crm.s_case SET assigned_user_id = 'bob' WHERE id = 'c1'`, false},
		{"the owner moves it under an account she reads", "erin", `UPDATE crm.s_case SET account_id = 'a4' WHERE id = 'c1'`, false},
		{"the owner moves it under an account she cannot read", "erin", `UPDATE crm.s_case SET account_id = 'a3' WHERE id = 'c1'`, true},
	}
	for _, tc := range tests {
		got, err := b.asPolicyUser(t, role, &tc.user, nil, tc.stmt+` RETURNING id::text`, "")
		switch {
		case tc.refused && !pg.IsInsufficientPrivilege(err):
			t.Errorf("%s: %v (rows %q), want refused with 42501", tc.name, err, got)
		case !tc.refused && (err != nil || len(got) != 1):
			t.Errorf("%s: %v (rows %q), want one row written", tc.name, err, got)
		}
	}
}

// TestCharIDs: an object attached to a char(n)-keyed table works as one
// keyed by text: its ids (blank-padded in the column) are their text
// without trailing blanks, its char owners and parents name users and
// records the same way, writes are absorbed, the read functions and
// `recalc access` take its ids in either form, and both row-level security
// policies admit exactly the rows access_level allows.
func TestCharIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCharIDs(t)

	level := func(user, object, id string) string {
		t.Helper()
		var l string
		if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level($1, $2, $3::text)`, user, object, id).Scan(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	check := func(after string, want map[[3]string]string) {
		t.Helper()
		for k, w := range want {
			if got := level(k[0], k[1], k[2]); got != w {
				t.Errorf("%s: access_level(%s, %s, %q) = %s, want %s", after, k[0], k[1], k[2], got, w)
			}
		}
	}
	check("attached", map[[3]string]string{
		{"bob", "account", "a1"}:   "all",  // owner, a char(36) 'bob' padded with blanks
		{"bob", "account", "a1  "}: "all",  // the id as the column holds it
		{"frank", "account", "a1"}: "read", // the tech rule
		{"erin", "case", "c1"}:     "all",
		{"erin", "account", "a1"}:  "read", // implicit parent access through a char parent column
		{"bob", "case", "c1"}:      "edit", // his account's case: role east's case access
		{"bob", "account", "a3"}:   "none", // carol's, his peer in role east
	})
	if t.Failed() {
		return
	}

	// Writes: a new owner, a case moved under another account, a delete.
	b.exec(t, b.app, `UPDATE crm.s_account SET assigned_user_id = 'frank' WHERE id = 'a3'`,
		`UPDATE crm.s_case SET account_id = 'a3' WHERE id = 'c1'`,
		`DELETE FROM crm.s_case WHERE id = 'c2'`)
	b.run(t)
	check("after writes", map[[3]string]string{
		{"frank", "account", "a3"}: "all",
		{"erin", "account", "a3"}:  "read",
		{"bob", "case", "c1"}:      "none", // no longer his account's case
		{"bob", "case", "c2"}:      "none",
	})

	// visible_ids takes the column's type for the page's start, and text.
	for _, after := range []string{"NULL::char(36)", "NULL::text"} {
		var ids []string
		if err := b.admin.QueryRow(ctx, `SELECT coalesce(array_agg(id::text ORDER BY n), '{}')
			FROM recalc.visible_ids('frank', 'account', 'read', `+after+`, 10) WITH ORDINALITY v(id, level, next_after, n)`).Scan(&ids); err != nil {
			t.Fatalf("visible_ids(%s): %v", after, err)
		}
		if want := []string{charUUID, "a1", "a3"}; !slices.Equal(ids, want) {
			t.Errorf("visible_ids(frank, %s) = %q, want %q", after, ids, want)
		}
	}
	if out, err := b.recalc("access", "--user", "frank", "--object", "account", "--id", "a3  "); err != nil || out != "all\n" {
		t.Errorf("recalc access --id 'a3  ': %q, %v; want all", out, err)
	}

	// Row-level security on the char-keyed table, both policies, as the
	// table's owner under FORCE.
	b.exec(t, b.admin, `GRANT `+ident(b.engineRole)+` TO `+ident(b.appRole))
	if out, err := b.recalc("grant", "reader", b.appRole); err != nil {
		t.Fatalf("recalc grant reader: %v\n%s", err, out)
	}
	for _, perUser := range []bool{false, true} {
		args := []string{"rls", "enable", "--table", "crm.s_account", "--object", "account", "--user-setting", "app.user_id", "--force"}
		if perUser {
			args = append(args, "--per-user-plans")
		}
		if out, errOut, err := b.recalcAs(b.appRole, args...); err != nil {
			t.Fatalf("recalc %q: %v\n%s\n%s", args, err, out, errOut)
		}
		for _, u := range crmUsers {
			want := b.readableIDs(t, "crm.s_account", u)
			var got []string
			err := pgx.BeginFunc(ctx, b.app, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, u); err != nil {
					return err
				}
				return tx.QueryRow(ctx, `SELECT coalesce(array_agg(id::text ORDER BY id::text COLLATE "C"), '{}') FROM crm.s_account`).Scan(&got)
			})
			if err != nil {
				t.Fatalf("per-user %v, %s reads crm.s_account: %v", perUser, u, err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("per-user %v: %s sees %q through the policy, access_level allows %q", perUser, u, got, want)
			}
		}
	}
}

// TestCharUserIDs: the users attached from a table keyed by char(n) are
// named by their ids without trailing blanks, as char owner columns name
// them, and a change to a user's row is absorbed.
func TestCharUserIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app,
		`CREATE TABLE crm.s_user (id char(12) PRIMARY KEY, role_id text, active boolean NOT NULL DEFAULT true)`,
		`INSERT INTO crm.s_user (id, role_id) VALUES ('alice', 'ceo'), ('bob', 'east'), ('carol', 'east'), ('dave', 'west'), ('erin', 'west'), ('frank', NULL)`,
		`GRANT SELECT, TRIGGER ON crm.s_user TO `+ident(b.engineRole))
	b.mustAttach(t, strings.TrimSuffix(strings.TrimSpace(crmSpec), "}")+
		`, "users": {"table": "crm.s_user", "id": "id", "role": "role_id", "active": "active"}}`)
	b.run(t)
	if !storedActive(t, b, "bob") || levelOf(t, b, "bob", "account:1") != "all" {
		t.Fatalf("attached: bob active %v, his account:1 %s; want active, all", storedActive(t, b, "bob"), levelOf(t, b, "bob", "account:1"))
	}
	b.exec(t, b.app, `UPDATE crm.s_user SET active = false WHERE id = 'bob'`)
	b.run(t)
	if storedActive(t, b, "bob") || levelOf(t, b, "bob", "account:1") != "none" {
		t.Errorf("deactivated: bob active %v, his account:1 %s; want inactive, none", storedActive(t, b, "bob"), levelOf(t, b, "bob", "account:1"))
	}
}
