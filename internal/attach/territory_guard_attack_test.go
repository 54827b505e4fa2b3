package attach_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/pg"
)

// TestRLSWriteTerritoriesNeedAll: a record's territories give access, as a
// share does, to every user of each territory, and a territory's child
// access levels give its users access to the account's contacts,
// opportunities and cases (docs/semantics.md, "Implicit child"). Assigning
// an account to a territory is no field edit: an editor who could do it
// would share the account at will, and gain, through a territory of their
// own, access to its children that nothing gave them. bob edits account 2
// (a team entry, nothing on its children) and is a user of territory
// south, whose opportunity and case access is edit; under the write
// policies he sets account 2's territories to south. The guard refuses it,
// as it refuses an owner change below all, in every statement form; the
// owner (all) may, and bob then edits the opportunities of account 2.
// Before the fix bob's update went through and, once absorbed, gave him
// edit on opportunity b (dave's), where he had nothing.
func TestRLSWriteTerritoriesNeedAll(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{
		"territories": [{"id": "north", "users": ["dave"], "account_access": "read"},
		                {"id": "south", "users": ["bob"], "account_access": "read", "opportunity_access": "edit", "case_access": "edit"}],
		"teams": [{"record": "account:2", "user": "bob", "access": "edit"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	for _, tb := range protectedTables {
		b.enablePolicies(t, tb, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	}
	pre := map[[2]string]string{
		{"bob", "account:2"}: "edit", {"dave", "account:2"}: "all", {"bob", "opportunity:" + guardOppB}: "none",
		{"erin", "opportunity:" + guardOppB}: "none",
	}
	wantLevels(t, b, "premise", pre)

	for _, stmt := range []string{
		`UPDATE crm.account SET territories = ARRAY['south'] WHERE id = 2`,
		`UPDATE crm.account SET territories = ARRAY['north'] WHERE id = 2`,
		`UPDATE crm.account SET territories = ARRAY['north', 'south'] WHERE id = 2`,
		`UPDATE crm.account SET territories = ARRAY[NULL] WHERE id = 2`,
		`INSERT INTO crm.account (id, name, owner_id, territories) VALUES (2, 'Globex', 'bob', ARRAY['south'])
			ON CONFLICT (id) DO UPDATE SET territories = EXCLUDED.territories`,
		`MERGE INTO crm.account a USING (VALUES (2::bigint)) s(id) ON a.id = s.id
			WHEN MATCHED THEN UPDATE SET territories = ARRAY['south']`,
	} {
		err := b.writeAs(t, role, "bob", stmt)
		if errors.Is(err, errRolledBack) {
			t.Errorf("bob (edit on account 2) changes its territories: went through (%s)", stmt)
			continue
		}
		wantTerritoryRefusal(t, stmt, err)
	}
	// What the guard stops: committed and absorbed, it gave bob edit on
	// dave's opportunity b.
	if err := b.commitAs(t, role, "bob", `UPDATE crm.account SET territories = ARRAY['south'] WHERE id = 2`); err == nil {
		b.run(t)
		t.Errorf("bob set account 2's territories; once absorbed he has %s on opportunity b, want none",
			levelOf(t, b, "bob", "opportunity:"+guardOppB))
	} else {
		wantTerritoryRefusal(t, "commit", err)
	}
	// A field is still his to edit, and a write that leaves the
	// territories as they are (as a set: NULL is no territory, as an empty
	// array is) still goes through.
	for _, stmt := range []string{
		`UPDATE crm.account SET industry = 'energy' WHERE id = 2`,
		`UPDATE crm.account SET territories = territories, name = 'Globex 2' WHERE id = 2`,
		`UPDATE crm.account SET territories = '{}' WHERE id = 2`,
	} {
		if err := b.writeAs(t, role, "bob", stmt); !errors.Is(err, errRolledBack) {
			t.Errorf("bob (edit): %s: %v, want it to go through", stmt, err)
		}
	}
	// The owner may.
	if err := b.commitAs(t, role, "dave", `UPDATE crm.account SET territories = ARRAY['south'] WHERE id = 2`); err != nil {
		t.Fatalf("dave (owner) sets account 2's territories: %v", err)
	}
	if err := b.writeAs(t, role, "bob", `UPDATE crm.account SET territories = ARRAY['south', 'south'] WHERE id = 2`); !errors.Is(err, errRolledBack) {
		t.Errorf("bob (edit) repeats account 2's territory: %v, want it to go through", err)
	}
	wantTerritoryRefusal(t, "bob takes account 2 out of south", b.writeAs(t, role, "bob", `UPDATE crm.account SET territories = NULL WHERE id = 2`))
	b.run(t)
	wantLevels(t, b, "after dave put account 2 in south", map[[2]string]string{
		{"bob", "opportunity:" + guardOppB}: "edit", {"dave", "account:2"}: "all",
	})
}

// wantTerritoryRefusal fails unless err is the guard's refusal of a
// territory change (42501, naming territories): a refusal by a policy would
// mean the attack was not tried.
func wantTerritoryRefusal(t *testing.T, what string, err error) {
	t.Helper()
	if pg.Code(err) != pg.InsufficientPrivilege || !strings.Contains(err.Error(), "territories") {
		t.Errorf("%s: %v, want the write guard's refusal of a territory change", what, err)
	}
}
