package attach_test

import (
	"testing"

	"github.com/recalc-dev/recalc/internal/access"
)

// The order of a parent and its child in one transaction. The guard checks
// each row as it is written (an AFTER ROW trigger): a child whose parent row
// is written later in the transaction, as a DEFERRABLE INITIALLY DEFERRED
// foreign key allows, is judged before its parent exists, and refused;
// docs/rls.md says to write the parent first, which goes through. (Found by
// an attack helper; deferring the check to the commit would have to keep
// the user of the write, and is not done.)
func TestGuardParentBeforeChild(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	b.exec(t, b.app, `ALTER TABLE crm.opportunity DROP CONSTRAINT opportunity_account_id_fkey,
		ADD CONSTRAINT opportunity_account_id_fkey FOREIGN KEY (account_id) REFERENCES crm.account
		ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED`)
	for _, tb := range protectedTables[:2] {
		b.enablePolicies(t, tb, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	}
	if err := b.commitAs(t, role, "carol",
		`INSERT INTO crm.account (id, name, owner_id) VALUES (60, 'Mine', 'carol')`,
		`INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000060', 60, 'carol', 'open', 1, NULL)`); err != nil {
		t.Fatalf("carol creates an account then a child under it: %v", err)
	}
	wantRefused(t, b.commitAs(t, role, "carol",
		`INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000061', 61, 'carol', 'open', 1, NULL)`,
		`INSERT INTO crm.account (id, name, owner_id) VALUES (61, 'Mine too', 'carol')`))
	b.run(t)
	wantLevels(t, b, "after carol's account and child", map[[2]string]string{
		{"carol", "account:60"}: "all", {"carol", "opportunity:00000000-0000-0000-0000-000000000060"}: "all", {"carol", "account:61"}: "none"})
}
