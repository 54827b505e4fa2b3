package attach_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestRLSWriteGuard: the write guard (migration 034) sees a write's old and
// new rows, which no policy does. Under the write policies of an attached
// table, in a session of an active user: changing a row's id or owner needs
// all access to its record, so an editor cannot take a record by giving it
// a new id with its new owner (which version 33's restrictive policy let
// through: a new id had no record yet); and a new or changed parent must be
// a record the user may read, or the owner of a child would read any
// account (implicit parent access) by putting a child under it. Both found
// by an attack helper. Each case runs with --write alone, with
// --owner-column, and with --insert-role; refused writes fail with 42501.
//
// In the CRM: frank may edit opportunity b (rule big_opp) of account 2,
// owned by dave, and reads account 1, not 3; carol owns opportunity c of
// account 3, and cannot read account 1; bob may edit case 1 (his role's
// case access on his account 1), owned by erin.
func TestRLSWriteGuard(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	ctx := context.Background()
	const opp = "'00000000-0000-0000-0000-00000000000b'"
	// Account 9 is not absorbed yet: recalc has no record of it.
	b.exec(t, b.admin, `INSERT INTO crm.account (id, name, owner_id) VALUES (9, 'New', 'carol'), (10, 'Other', 'bob')`)
	for _, p := range []struct{ user, object, id, level string }{
		{"frank", "opportunity", "00000000-0000-0000-0000-00000000000b", "edit"}, {"dave", "opportunity", "00000000-0000-0000-0000-00000000000b", "all"},
		{"bob", "case", "1", "edit"}, {"erin", "case", "1", "all"},
		{"frank", "account", "1", "read"}, {"frank", "account", "3", "none"},
		{"carol", "opportunity", "00000000-0000-0000-0000-00000000000c", "all"}, {"carol", "account", "1", "none"}, {"carol", "account", "3", "all"},
	} {
		var got string
		if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level($1, $2, $3)`, p.user, p.object, p.id).Scan(&got); err != nil || got != p.level {
			t.Fatalf("premise: %s has %s (%v) on %s %s, want %s", p.user, got, err, p.object, p.id, p.level)
		}
	}
	refused, allowed := true, false
	cases := []struct {
		name, user, stmt string
		policies         []string // the rls enable variants it runs under: write, owner, insert
		refused          bool
	}{
		{"editor changes the id", "frank", `UPDATE crm.opportunity SET id = gen_random_uuid() WHERE id = ` + opp, []string{"write", "owner"}, refused},
		{"editor changes the id and the owner", "frank", `UPDATE crm.opportunity SET id = gen_random_uuid(), owner_id = 'frank' WHERE id = ` + opp, []string{"write", "owner"}, refused},
		{"editor changes the owner", "frank", `UPDATE crm.opportunity SET owner_id = 'frank' WHERE id = ` + opp, []string{"write", "owner"}, refused},
		{"editor changes a field", "frank", `UPDATE crm.opportunity SET stage = 'won' WHERE id = ` + opp, []string{"write", "owner"}, allowed},
		// A row with a new id has no record yet: only the owner policy admits it.
		{"owner changes the id", "dave", `UPDATE crm.opportunity SET id = gen_random_uuid() WHERE id = ` + opp, []string{"owner"}, allowed},
		{"editor changes a bigint id", "bob", `UPDATE support."case" SET id = 100 WHERE id = 1`, []string{"write", "owner"}, refused},
		{"owner changes a bigint id", "erin", `UPDATE support."case" SET id = 100 WHERE id = 1`, []string{"owner"}, allowed},
		{"editor moves a child under an account it cannot read", "frank", `UPDATE crm.opportunity SET account_id = 3 WHERE id = ` + opp, []string{"write", "owner"}, refused},
		{"editor moves a child under an account it reads", "frank", `UPDATE crm.opportunity SET account_id = 1 WHERE id = ` + opp, []string{"write", "owner"}, allowed},
		{"owner moves a child under an account it cannot read", "carol", `UPDATE crm.opportunity SET account_id = 1 WHERE id = '00000000-0000-0000-0000-00000000000c'`, []string{"write", "owner"}, refused},
		{"owner inserts a child under an account it cannot read", "carol", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 1, 'carol', 'open', 1, NULL)`, []string{"owner", "insert"}, refused},
		{"owner inserts a child under an account it reads", "carol", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 3, 'carol', 'open', 1, NULL)`, []string{"owner", "insert"}, allowed},
		{"owner inserts a child under an account not absorbed yet", "carol", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 9, 'carol', 'open', 1, NULL)`, []string{"owner", "insert"}, allowed},
		{"owner inserts a child under another user's account not absorbed yet", "carol", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 10, 'carol', 'open', 1, NULL)`, []string{"owner", "insert"}, refused},
		{"the application inserts with no user set", "", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 1, 'carol', 'open', 1, NULL)`, []string{"insert"}, allowed},
		// A user recalc does not know yet (not absorbed) is held to the same:
		// activated later, it would read the account.
		{"the application inserts for a user not active yet", "zed", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 1, 'zed', 'open', 1, NULL)`, []string{"insert"}, refused},
	}
	variants := map[string]access.RLS{
		"write":  {Write: true, Force: true},
		"owner":  {Write: true, Force: true, OwnerColumn: "owner_id"},
		"insert": {Force: true, InsertRole: role, OwnerColumn: "owner_id"},
	}
	for _, v := range []string{"write", "owner", "insert"} {
		for _, tb := range protectedTables[1:] {
			b.enablePolicies(t, tb, variants[v])
		}
		for _, c := range cases {
			if !slices.Contains(c.policies, v) {
				continue
			}
			err := b.writeAs(t, role, c.user, c.stmt)
			switch {
			case c.refused && pg.Code(err) != pg.InsufficientPrivilege:
				t.Errorf("%s: %s (%s): %v, want refused (42501)", v, c.name, c.user, err)
			case !c.refused && !errors.Is(err, errRolledBack):
				t.Errorf("%s: %s (%s): %v, want it to go through", v, c.name, c.user, err)
			}
		}
	}

	// The guard's refusal names the objects, and no value.
	err := b.writeAs(t, role, "carol", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 1, 'carol', 'open', 1, NULL)`)
	if want := "the parent of a record of object opportunity must be a record of object account that the user may read"; err == nil || !strings.HasSuffix(err.Error(), want+" (SQLSTATE 42501)") {
		t.Errorf("the guard's refusal of a parent: %v, want %q", err, want)
	}

	// The guard is rls enable's: rls disable removes it, and it refuses to
	// run as any other trigger.
	if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error { _, err := access.DisableRLS(ctx, tx, "crm.opportunity"); return err }); err != nil {
		t.Fatal(err)
	}
	var guards int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'crm.opportunity'::regclass AND tgname = 'recalc_write_guard'`).Scan(&guards); err != nil || guards != 0 {
		t.Errorf("after rls disable: %d write guards (%v), want none", guards, err)
	}
	b.exec(t, b.admin, `CREATE TRIGGER borrowed BEFORE UPDATE ON crm.opportunity FOR EACH ROW EXECUTE FUNCTION recalc.rls_write_guard('app.user_id')`)
	_, err = b.admin.Exec(ctx, `UPDATE crm.opportunity SET stage = 'x' WHERE id = `+opp)
	if pg.Code(err) != pg.InsufficientPrivilege {
		t.Errorf("the guard as a BEFORE trigger: %v, want refused (42501)", err)
	}
}

// writeAs runs stmt as role with app.user_id = user (unset when ""), in a
// transaction it rolls back: errRolledBack when the statement went through.
func (b *bundle) writeAs(t *testing.T, role, user, stmt string) error {
	t.Helper()
	ctx := context.Background()
	return pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(role)); err != nil {
			return err
		}
		if user != "" {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, stmt)
		if err == nil && tag.RowsAffected() != 1 {
			err = errors.New("no row written")
		}
		if err == nil {
			err = errRolledBack
		}
		return err
	})
}

// TestRLSWriteGuardAcrossAbsorbs: the guard judges an id by what recalc
// still holds under it, absorbed deletes included. bob (edit on account 2,
// by a team entry) deletes it, without foreign keys to stop him; once that
// is absorbed, its opportunities stay, invalid, naming it as parent, and a
// new account 2 of bob's, or of anyone's written with no user set, would
// take them: refused. And a role writing under the policies needs the
// reader's functions (the guard says so).
func TestRLSWriteGuardAcrossAbsorbs(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	b.exec(t, b.app, `ALTER TABLE crm.opportunity DROP CONSTRAINT opportunity_account_id_fkey`,
		`ALTER TABLE support."case" DROP CONSTRAINT case_account_id_fkey`,
		`ALTER TABLE crm.contact_account DROP CONSTRAINT contact_account_account_id_fkey`)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"teams": [{"record": "account:2", "user": "bob", "access": "edit"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	b.enablePolicies(t, protectedTables[0], access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	if got := levelOf(t, b, "bob", "account:2"); got != "edit" {
		t.Fatalf("premise: bob has %s on account 2, want edit", got)
	}
	if err := b.commitAs(t, role, "bob", `DELETE FROM crm.account WHERE id = 2`); err != nil {
		t.Fatalf("bob (edit) deletes account 2: %v", err)
	}
	b.run(t)
	err := b.commitAs(t, role, "bob", `INSERT INTO crm.account (id, name, owner_id) VALUES (2, 'Mine', 'bob')`)
	if pg.Code(err) != pg.InsufficientPrivilege {
		t.Errorf("bob takes the deleted account's id and its opportunities: %v, want refused (42501)", err)
	}
	if err := b.commitAs(t, role, "bob", `INSERT INTO crm.account (id, name, owner_id) VALUES (20, 'New', 'bob')`); err != nil {
		t.Errorf("bob inserts an account of a new id: %v", err)
	}
	b.enablePolicies(t, protectedTables[0], access.RLS{Force: true, InsertRole: role})
	if err := b.writeAs(t, role, "", `INSERT INTO crm.account (id, name, owner_id) VALUES (2, 'Theirs', 'dave')`); pg.Code(err) != pg.InsufficientPrivilege {
		t.Errorf("the application, no user set, gives the deleted account's id to dave: %v, want refused (42501)", err)
	}

	// An insert role that is no reader.
	ins := "attach_ins_" + b.appRole[len("attach_app_"):]
	testdb.DropRoles(t, b.url, ins)
	b.exec(t, b.admin, `CREATE ROLE `+ident(ins)+` NOLOGIN NOSUPERUSER`, `GRANT USAGE ON SCHEMA crm TO `+ident(ins),
		`GRANT INSERT ON crm.opportunity TO `+ident(ins))
	b.enablePolicies(t, protectedTables[1], access.RLS{Force: true, InsertRole: ins})
	const row = `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 3, 'carol', 'open', 1, NULL)`
	for _, user := range []string{"", "carol"} {
		if err := b.writeAs(t, ins, user, row); pg.Code(err) != pg.InsufficientPrivilege || !strings.Contains(err.Error(), "recalc grant reader") {
			t.Errorf("the insert role, no reader, user %q: %v, want refused, saying to grant reader", user, err)
		}
	}
}

// The guard's refusal of a parent carries a hint that says how to write a
// child under a parent not materialized yet (commit it, wait_fresh), and no
// value: a newcomer creating a customer and its first quotation in one
// transaction, the customer attached through a view, was refused with
// "that the user may read" although the user owned it; and a lead under a
// customer with no salesperson (an invalid record) was refused alike.
func TestGuardParentRefusalHints(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	b.enablePolicies(t, protectedTables[1], access.RLS{Force: true, InsertRole: role, OwnerColumn: "owner_id"})
	err := b.writeAs(t, role, "carol", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 1, 'carol', 'open', 1, NULL)`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != pg.InsufficientPrivilege {
		t.Fatalf("carol gives an opportunity account 1, which she may not read: %v, want refused (42501)", err)
	}
	for _, want := range []string{"the parent may be invalid (recalc.invalid_record",
		"commit the parent and SELECT recalc.wait_fresh(interval '2 s') before writing the child"} {
		if !strings.Contains(pgErr.Hint, want) {
			t.Errorf("the refusal's hint: %q, want it to say %q", pgErr.Hint, want)
		}
	}
	if strings.Contains(pgErr.Hint, "carol") || strings.Contains(pgErr.Hint, "1,") {
		t.Errorf("the refusal's hint names a value: %q", pgErr.Hint)
	}
}
