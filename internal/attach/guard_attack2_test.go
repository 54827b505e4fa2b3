package attach_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// Second round of attacks on the write guard (migration 034).

// With --user-from-role and --insert-role, an end user's role that is a
// member of the insert role (how it gets the insert policy, which is TO
// that role and its members) SET ROLEs to the insert role: current_user is
// then no active recalc user, the guard skips the row, and the insert
// policy (WITH CHECK true) admits a child owned by the end user under an
// account it cannot read.
func TestGuardAttack2SetRoleToInsertRole(t *testing.T) {
	t.Parallel()
	b, role := setupWritePoliciesOwnRoles(t)
	user := "atk_" + b.appRole[len("attach_app_"):]
	testdb.DropRoles(t, b.url, user)
	b.exec(t, b.admin, `CREATE ROLE `+ident(user)+` NOLOGIN NOSUPERUSER`, `GRANT `+ident(role)+` TO `+ident(user),
		`INSERT INTO crm.app_user VALUES ('`+user+`', 'Attacker')`)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"users": [{"id": "`+user+`"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	wantLevels(t, b, "premise", map[[2]string]string{{user, "account:1"}: "none"})
	ctx := context.Background()
	r := access.RLS{Table: "crm.opportunity", Object: "opportunity", IDColumn: "id", UserFromRole: true,
		Write: true, Force: true, OwnerColumn: "owner_id", InsertRole: role}
	if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error { return access.EnableRLS(ctx, tx, &r) }); err != nil {
		t.Fatal(err)
	}
	ins := `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 1, '` + user + `', 'open', 1, NULL)`
	// As itself, the guard refuses.
	err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(user)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, ins)
		return err
	})
	wantRefused(t, err)
	// SET ROLE to the insert role, which it is a member of.
	err = pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(user)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(role)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, ins)
		return err
	})
	if err != nil {
		wantRefused(t, err)
		return
	}
	b.run(t)
	wantLevels(t, b, "after the user inserted a child under account 1 as the insert role", map[[2]string]string{{user, "account:1"}: "none"})
}

// A user of the application not (yet, or no longer) an active recalc user
// is not checked: through --insert-role, its session plants a child it
// owns under any account; once the user is (re)activated, it reads that
// account.
func TestGuardAttack2PendingUserPlantsChild(t *testing.T) {
	t.Parallel()
	b, role := setupWritePoliciesOwnRoles(t)
	b.enablePolicies(t, protectedTables[1], access.RLS{Force: true, InsertRole: role, OwnerColumn: "owner_id"})
	if err := b.commitAs(t, role, "zed", `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 1, 'zed', 'open', 1, NULL)`); err != nil {
		wantRefused(t, err)
		return
	}
	b.run(t)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"users": [{"id": "zed"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	wantLevels(t, b, "after zed, planted a child under account 1 before being a user", map[[2]string]string{{"zed", "account:1"}: "none"})
}

// A child is put under the user's own account, not absorbed yet, which
// then disappears (deleted, or its id changed) while the child keeps the
// id. When an account later takes that id (an explicit id does not advance
// a sequence, so its next value is a free id an attacker can pick), the
// child's owner would read it. A foreign key from the parent column stops
// it (the CRM's cascades: the child goes with its account); without one,
// rls enable warns.
func TestGuardAttack2PlantUnderFutureParentID(t *testing.T) {
	t.Parallel()
	b, role := setupWritePoliciesOwnRoles(t)
	for _, tb := range protectedTables[:2] {
		b.enablePolicies(t, tb, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	}
	if err := b.commitAs(t, role, "carol",
		`INSERT INTO crm.account (id, name, owner_id) VALUES (40, 'Mine', 'carol')`,
		`UPDATE crm.opportunity SET account_id = 40 WHERE id = '`+guardOppC+`'`,
		`DELETE FROM crm.account WHERE id = 40`); err != nil {
		t.Fatalf("carol's own account and opportunity: %v", err)
	}
	b.run(t)
	// Later, dave's new account takes id 40 (written as the table's owner).
	b.exec(t, b.admin, `INSERT INTO crm.account (id, name, owner_id, industry) VALUES (40, 'Daves secret deal', 'dave', 'energy')`)
	b.run(t)
	wantLevels(t, b, "after dave's account took the id carol's child was under", map[[2]string]string{{"carol", "account:40"}: "none"})

	b.exec(t, b.app, `ALTER TABLE crm.opportunity DROP CONSTRAINT opportunity_account_id_fkey`)
	warned := b.rlsEnableWarnings(t, "--table", "crm.opportunity", "--object", "opportunity", "--write")
	if !strings.Contains(warned, "crm.opportunity's parent column has no foreign key to the table of account") {
		t.Errorf("rls enable --write on opportunities without a foreign key to accounts warned %q, want it to say so", warned)
	}
	if warned := b.rlsEnableWarnings(t, "--table", "support.case", "--object", "case", "--write"); warned != "" {
		t.Errorf("rls enable --write on cases, with their foreign key, warned %q", warned)
	}
}
