package attach_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// Attacks on the write guard (migration 034). Each test commits a write
// made as the writer role under recalc's policies, lets recalc absorb it,
// and fails when the writer ends with access the sharing model did not
// give it.

const (
	guardOppB = "00000000-0000-0000-0000-00000000000b"
	guardOppC = "00000000-0000-0000-0000-00000000000c"
	guardCtc  = "00000000-0000-0000-0000-0000000000f1"
)

// commitAs runs stmts as role with app.user_id = user and commits.
func (b *bundle) commitAs(t *testing.T, role, user string, stmts ...string) error {
	t.Helper()
	ctx := context.Background()
	return pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(role)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
			return err
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
}

// noActionFKs makes the CRM's foreign keys to accounts the default
// (NO ACTION), as most schemas declare them, and adds contact f1 (dave's)
// under account 2.
func noActionFKs(t *testing.T, b *bundle) {
	t.Helper()
	b.exec(t, b.app,
		`ALTER TABLE crm.opportunity DROP CONSTRAINT opportunity_account_id_fkey,
			ADD CONSTRAINT opportunity_account_id_fkey FOREIGN KEY (account_id) REFERENCES crm.account`,
		`ALTER TABLE support."case" DROP CONSTRAINT case_account_id_fkey,
			ADD CONSTRAINT case_account_id_fkey FOREIGN KEY (account_id) REFERENCES crm.account`,
		`ALTER TABLE crm.contact_account DROP CONSTRAINT contact_account_account_id_fkey,
			ADD CONSTRAINT contact_account_account_id_fkey FOREIGN KEY (account_id) REFERENCES crm.account`,
		`INSERT INTO crm.contact VALUES ('`+guardCtc+`', 'dave', 'CTO', 'x@example.com')`,
		`INSERT INTO crm.contact_account VALUES ('`+guardCtc+`', 2)`)
	// bob edits account 2 through a team entry (edit, nothing on children).
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"teams": [{"record": "account:2", "user": "bob", "access": "edit"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
}

func wantLevels(t *testing.T, b *bundle, when string, want map[[2]string]string) {
	t.Helper()
	for k, w := range want {
		if got := levelOf(t, b, k[0], k[1]); got != w {
			t.Errorf("%s: %s has %s on %s, want %s", when, k[0], got, k[1], w)
		}
	}
}

// An editor (not owner) of account 2, bob, deletes it and writes another
// row under its id, as his, in one statement (a NO ACTION foreign key
// accepts the replacement row, so the children stay): absorbed, the owner
// change of account:2 would give him the account with its children. Two
// ways: an insert through the owner policy; with --write alone, renaming
// his own account 4 (no children) to 2, which judged by account 4 (all)
// alone would pass. The guard refuses a row taking a held record's id
// below all.
func TestGuardAttackTakeDeletedID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		policy access.RLS
		attack string
	}{
		{"insert as owner", access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"}, `WITH d AS (DELETE FROM crm.account WHERE id = 2 RETURNING *)
			INSERT INTO crm.account (id, name, owner_id, industry, amount, vip, territories, updated_at)
			SELECT id, name, 'bob', industry, amount, vip, territories, updated_at FROM d`},
		{"rename own account", access.RLS{Write: true, Force: true}, `WITH d AS (DELETE FROM crm.account WHERE id = 2 RETURNING id)
			UPDATE crm.account a SET id = d.id FROM d WHERE a.id = 4`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, role := setupWritePoliciesOwnRoles(t)
			b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id) VALUES (4, 'Bobs', 'bob')`)
			noActionFKs(t, b)
			pre := map[[2]string]string{
				{"bob", "account:2"}: "edit", {"bob", "opportunity:" + guardOppB}: "none", {"bob", "contact:" + guardCtc}: "edit",
			}
			wantLevels(t, b, "premise", pre)
			b.enablePolicies(t, protectedTables[0], tc.policy)
			wantRefused(t, b.commitAs(t, role, "bob", `UPDATE crm.account SET owner_id = 'bob' WHERE id = 2`))
			if err := b.commitAs(t, role, "bob", tc.attack); err != nil {
				wantRefused(t, err)
				return
			}
			b.run(t)
			wantLevels(t, b, "after bob's row took account 2's id", pre)
		})
	}
}

// A parent not absorbed yet: carol (owner of opportunity c, no access to
// bob's accounts) moves c under the account bob created moments ago, before
// the absorb, to read it afterwards (implicit parent access). The guard
// exempts such a parent only when the user owns its row. The foreign key
// is the CRM's.
func TestGuardAttackParentNotAbsorbedYet(t *testing.T) {
	t.Parallel()
	b, role := setupWritePoliciesOwnRoles(t)
	b.enablePolicies(t, protectedTables[1], access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id) VALUES (4, 'Bobs new', 'bob')`)
	if err := b.commitAs(t, role, "carol", `UPDATE crm.opportunity SET account_id = 4 WHERE id = '`+guardOppC+`'`); err != nil {
		wantRefused(t, err)
		return
	}
	b.run(t)
	wantLevels(t, b, "after carol moved opportunity c under bob's new account", map[[2]string]string{{"carol", "account:4"}: "none"})
}

// A rename of the owner column, then `recalc attach` of the fixed spec
// (what the capture's error asks for): a guard that kept the old column
// name would compare a column no row has, and let owner changes pass. The
// guard reads the attachment as it runs.
func TestGuardAttackStaleAfterColumnRename(t *testing.T) {
	t.Parallel()
	b, role := setupWritePoliciesOwnRoles(t)
	b.enablePolicies(t, protectedTables[1], access.RLS{Write: true, Force: true})
	b.exec(t, b.app, `ALTER TABLE crm.opportunity RENAME owner_id TO owner_user`)
	b.mustAttach(t, crmSpecWith(t, `{"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id"`,
		`{"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_user"`))
	b.run(t)
	wantLevels(t, b, "premise", map[[2]string]string{{"frank", "opportunity:" + guardOppB}: "edit"})
	if err := b.commitAs(t, role, "frank", `UPDATE crm.opportunity SET owner_user = 'frank' WHERE id = '`+guardOppB+`'`); err != nil {
		wantRefused(t, err)
		return
	}
	b.run(t)
	wantLevels(t, b, "after frank set the renamed owner column", map[[2]string]string{{"frank", "opportunity:" + guardOppB}: "edit"})
}

// A view-attached object's base table: the guard knows no owner or parent
// column of it (the view computes them), so an editor of contact f1 (bob,
// through account 2) could take it by its owner column; rls enable says so
// on standard error, and docs/rls.md gives the trigger the application adds.
func TestGuardViewBaseTableWarns(t *testing.T) {
	t.Parallel()
	b, role := setupWritePoliciesOwnRoles(t)
	b.exec(t, b.admin, `GRANT SELECT, INSERT, UPDATE, DELETE ON crm.contact, crm.contact_account TO `+ident(role))
	warned := b.rlsEnableWarnings(t, "--table", "crm.contact", "--object", "contact", "--write")
	if !strings.Contains(warned, "crm.contact is a base table of object contact's attached view: the write guard knows no owner or parent column of it") {
		t.Errorf("rls enable --write on the contact view's base table warned %q, want it to say the guard cannot check it", warned)
	}
}

// rlsEnableWarnings runs `recalc rls enable` with args (and a user setting,
// --force) as the tables' owner, with the engine's role granted as
// docs/rls.md says, and returns what it wrote on standard error.
func (b *bundle) rlsEnableWarnings(t *testing.T, args ...string) string {
	t.Helper()
	b.exec(t, b.admin, `GRANT `+ident(b.engineRole)+` TO `+ident(b.appRole))
	var out, errOut bytes.Buffer
	app := cli.App(&out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {}
	argv := append([]string{"recalc", "--database-url", dburl.WithUser(b.url, b.appRole), "rls", "enable", "--user-setting", "app.user_id", "--force"}, args...)
	err := testkit.RunApp(context.Background(), app, argv)
	if err != nil {
		t.Fatalf("rls enable %v: %v (%s)", args, err, errOut.String())
	}
	return errOut.String()
}

// A stored generated parent column is computed after BEFORE triggers: a
// BEFORE trigger would see NULL for the new parent and skip the parent
// check (`recalc attach` accepts such a column). The guard runs AFTER.
func TestGuardAttackGeneratedParentColumn(t *testing.T) {
	t.Parallel()
	b, role := setupWritePoliciesOwnRoles(t)
	b.exec(t, b.app, `ALTER TABLE support."case" ADD COLUMN parent_acct bigint GENERATED ALWAYS AS (account_id) STORED`)
	b.mustAttach(t, crmSpecWith(t, `"owner": "owner_id", "parent": "account_id", "fields": ["priority", "status"]`,
		`"owner": "owner_id", "parent": "parent_acct", "fields": ["priority", "status"]`))
	b.run(t)
	b.enablePolicies(t, protectedTables[2], access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	wantLevels(t, b, "premise", map[[2]string]string{{"carol", "account:1"}: "none", {"carol", "case:3"}: "all"})
	if err := b.commitAs(t, role, "carol", `UPDATE support."case" SET account_id = 1 WHERE id = 3`); err != nil {
		wantRefused(t, err)
		return
	}
	b.run(t)
	wantLevels(t, b, "after carol moved case 3 under account 1", map[[2]string]string{{"carol", "account:1"}: "none"})
}

// wantRefused fails unless err is the guard's refusal (42501): any other
// error would mean the attack was not tried.
func wantRefused(t *testing.T, err error) {
	t.Helper()
	if pg.Code(err) != pg.InsufficientPrivilege {
		t.Fatalf("the attack failed otherwise than by the guard's refusal: %v", err)
	}
}

// crmSpecWith is crmSpec with old replaced by new, which it must hold.
func crmSpecWith(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(crmSpec, old) {
		t.Fatalf("crmSpec holds no %s", old)
	}
	return strings.Replace(crmSpec, old, new, 1)
}

// An object moved from its table to a view over it (say to map a NULL owner
// to a queue) leaves the table's write policies and guard in place, but the
// guard reads the attachment as it runs and finds none of the table's own,
// so it checks nothing there (an editor could take a record by its owner
// column). `recalc attach` says so on standard error, and not while the
// object is the table's.
func TestAttachWarnsOfAGuardLeftOverAView(t *testing.T) {
	t.Parallel()
	b, _ := setupWritePoliciesOwnRoles(t)
	b.enablePolicies(t, protectedTables[1], access.RLS{Write: true, Force: true})
	table := `{"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["stage", "amount", "closes_on"]}`
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.opportunity_v AS SELECT id, owner_id, account_id, stage, amount, closes_on FROM crm.opportunity`)
	view := `{"object": "opportunity", "table": "crm_recalc.opportunity_v", "id": "id", "owner": "owner_id", "parent": "account_id",
	  "fields": ["stage", "amount", "closes_on"], "capture": [{"table": "crm.opportunity", "id": "id"}]}`
	const warning = "crm.opportunity (opportunity) has recalc's write policies, but is attached only as a base table of views: their write guard checks nothing there"
	for _, tc := range []struct {
		name, spec string
		warns      bool
	}{
		{"the table", crmSpecWith(t, table, table), false},
		{"a view over it", crmSpecWith(t, table, view), true},
		{"the table again", crmSpecWith(t, table, table), false},
	} {
		f := filepath.Join(t.TempDir(), "spec.json")
		if err := os.WriteFile(f, []byte(tc.spec), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, err := b.recalcAs(b.engineRole, "attach", f)
		if err != nil {
			t.Fatalf("attach to %s: %v (%s)", tc.name, err, errOut)
		}
		if got := strings.Contains(errOut, warning); got != tc.warns {
			t.Errorf("attach to %s: warned %v, want %v; stderr: %s", tc.name, got, tc.warns, errOut)
		}
	}
}

// `rls enable` as the application's web role, which neither owns the table
// nor may read recalc's tables: the refusal names the owner and says who may
// run it, and never tells that role to take recalc's engine role (which
// would give it the engine's every right, and still not let it enable
// row-level security on a table it does not own).
func TestRLSEnableAsNotTheOwnerNamesTheOwner(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	web := "attach_web_" + b.appRole[len("attach_app_"):]
	testdb.DropRoles(t, b.url, web)
	b.exec(t, b.admin, `CREATE ROLE `+ident(web)+` LOGIN NOSUPERUSER`, `GRANT CONNECT ON DATABASE `+ident(dbName(t, b.url))+` TO `+ident(web))
	b.exec(t, b.app, `GRANT USAGE ON SCHEMA crm TO `+ident(web), `GRANT SELECT, INSERT, UPDATE, DELETE ON crm.opportunity TO `+ident(web))
	for _, reader := range []bool{false, true} {
		if reader {
			if _, err := b.recalc("grant", "reader", web); err != nil {
				t.Fatalf("grant reader: %v", err)
			}
		}
		_, errOut, err := b.recalcAs(web, "rls", "enable", "--table", "crm.opportunity", "--object", "opportunity", "--user-setting", "app.user_id", "--write")
		if err == nil {
			t.Fatalf("rls enable as %s (reader %v): went through", web, reader)
		}
		msg := err.Error() + " " + errOut
		if !strings.Contains(msg, "only the owner of crm.opportunity ("+b.appRole+") may enable row-level security on it") || strings.Contains(msg, "GRANT ") {
			t.Errorf("rls enable as the web role (reader %v): %s; want the owner named, and no GRANT of the engine's role", reader, msg)
		}
	}
}

// An attached view is owned by recalc's role (attach requires it), which
// has BYPASSRLS for its re-reads, and may not be security_invoker (its
// reads run as the sandbox, which may read no table). rls enable on its
// base table used to tell the user to make it security_invoker, which stops
// every absorb of the object (42501). It now leaves out an attached view
// that no role but its owner may read, and for one that another role may
// read it says to revoke that, never to make it security_invoker.
func TestRLSViewWarningSparesAttachedViews(t *testing.T) {
	t.Parallel()
	b, role := setupWritePoliciesOwnRoles(t)
	b.exec(t, b.admin, `GRANT SELECT, INSERT, UPDATE, DELETE ON crm.contact, crm.contact_account TO `+ident(role))
	for _, tc := range []struct {
		name, grant string
		named       bool
	}{
		{"only its owner reads it", "", false},
		{"another role may read it", `GRANT SELECT ON crm_recalc.contact_v TO ` + ident(role), true},
		{"another role may read a column of it", `REVOKE SELECT ON crm_recalc.contact_v FROM ` + ident(role) +
			`; GRANT SELECT (id) ON crm_recalc.contact_v TO ` + ident(role), true},
		{"five other views bypass too", "", true}, // each warning is cut at five names of its own
	} {
		if tc.name == "five other views bypass too" {
			for i := range 5 {
				b.exec(t, b.admin, fmt.Sprintf(`CREATE VIEW crm.v%d AS SELECT * FROM crm.contact`, i))
			}
		}
		if tc.grant != "" {
			b.exec(t, b.engine, tc.grant)
		}
		warned := b.rlsEnableWarnings(t, "--table", "crm.contact", "--object", "contact", "--write")
		if strings.Contains(warned, "crm_recalc.contact_v") != tc.named {
			t.Errorf("%s: rls enable warned %q: naming the attached view crm_recalc.contact_v is %v, want %v", tc.name, warned, !tc.named, tc.named)
		}
		for _, line := range strings.Split(warned, "\n") {
			if strings.Contains(line, "crm_recalc.contact_v") && strings.Contains(line, "security_invoker = true") {
				t.Errorf("%s: rls enable tells to make the attached view security_invoker, which stops its absorbs: %q", tc.name, line)
			}
			if tc.named && strings.Contains(line, "crm_recalc.contact_v") && !strings.Contains(line, "REVOKE SELECT ON crm_recalc.contact_v FROM") {
				t.Errorf("%s: the warning naming the attached view does not say to revoke: %q", tc.name, line)
			}
		}
	}
	b.exec(t, b.app, `UPDATE crm.contact SET title = 'after' WHERE true`)
	b.run(t)
	if b.waiting(t, "contact") {
		t.Error("the contact's writes wait after rls enable and its advice: want them absorbed")
	}
}
