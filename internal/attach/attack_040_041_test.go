package attach_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/pg"
)

// Attacks on migration 041 (moving a record controlled by its parent needs
// all access to it, recalc.rls_may_reparent in the write guard), on the
// text-id contact table of attack4Contacts: contacts are controlled by
// their account; dave owns contact k1 under his account 2; bob edits k1
// only through his edit team entry on account 2, and owns account 1. Each
// write runs as the writer role (a non-superuser reader) under FORCE ROW
// LEVEL SECURITY. A failing test is an attack that works, or a legitimate
// write that broke.

// TestAttack041MoveForms: bob's moves of k1 in every form the brief names:
// to no parent, together with an id change, together with a title, a
// multi-row update swapping k1 and his own contact's parents, MERGE, and
// through a writable CTE. All refused (42501), and after an absorb bob
// still has edit on k1 and dave all.
func TestAttack041MoveForms(t *testing.T) {
	t.Parallel()
	b, role, _ := attack4Contacts(t)
	// bob's own contact kb under his account 1 (all: owner, and owner of
	// the parent), absorbed.
	if err := b.commitAs(t, role, "bob", `INSERT INTO crm.contact_t VALUES ('kb', 'bob', 'mine', 1)`); err != nil {
		t.Fatalf("bob adds a contact under his account: %v", err)
	}
	b.run(t)
	wantLevels(t, b, "premise", map[[2]string]string{{"bob", "contact:kb"}: "all", {"bob", "contact:k1"}: "edit", {"dave", "contact:k1"}: "all"})
	for _, c := range []struct{ name, stmt string }{
		{"to no parent", `UPDATE crm.contact_t SET account_id = NULL WHERE id = 'k1'`},
		{"with a field", `UPDATE crm.contact_t SET title = 'x', account_id = 1 WHERE id = 'k1'`},
		{"swap with his own contact", `UPDATE crm.contact_t SET account_id = CASE id WHEN 'k1' THEN 1 ELSE 2 END WHERE id IN ('k1', 'kb')`},
		{"MERGE", `MERGE INTO crm.contact_t c USING (VALUES ('k1', 1::bigint)) s(id, a) ON c.id = s.id WHEN MATCHED THEN UPDATE SET account_id = s.a`},
		{"writable CTE", `WITH m AS (UPDATE crm.contact_t SET account_id = 1 WHERE id = 'k1' RETURNING id) SELECT count(*) FROM m`},
		{"new account then move", `INSERT INTO crm.account (id, name, owner_id) VALUES (88, 'B', 'bob');
			UPDATE crm.contact_t SET account_id = 88 WHERE id = 'k1'`},
		{"to no parent then to his", `UPDATE crm.contact_t SET account_id = NULL WHERE id = 'k1';
			UPDATE crm.contact_t SET account_id = 1 WHERE id = 'k1'`},
	} {
		if err := b.multiAs(t, role, "bob", c.stmt); pg.Code(err) != pg.InsufficientPrivilege || !strings.Contains(err.Error(), "may move it under another parent") {
			t.Errorf("bob moves k1 (%s): %v, want refused (42501) for the move", c.name, err)
		}
	}
	// Legitimate: bob moves his own kb (all by the owner grant) under
	// account 2, which he edits; alice (dave's boss: all on account 2, so on
	// k1) and dave move k1 under account 1 or to no parent; a field edit by
	// bob goes through.
	for _, c := range []struct{ name, user, stmt string }{
		{"bob moves his own contact under account 2", "bob", `UPDATE crm.contact_t SET account_id = 2 WHERE id = 'kb'`},
		{"bob moves his own contact to no parent", "bob", `UPDATE crm.contact_t SET account_id = NULL WHERE id = 'kb'`},
		{"alice moves k1 under account 1", "alice", `UPDATE crm.contact_t SET account_id = 1 WHERE id = 'k1'`},
		{"dave moves k1 to no parent", "dave", `UPDATE crm.contact_t SET account_id = NULL WHERE id = 'k1'`},
		{"bob edits k1's title", "bob", `UPDATE crm.contact_t SET title = 'CEO' WHERE id = 'k1'`},
	} {
		if err := b.writeAs(t, role, c.user, c.stmt); !errors.Is(err, errRolledBack) {
			t.Errorf("%s: %v, want it to go through", c.name, err)
		}
	}
	b.run(t)
	wantLevels(t, b, "after the attempts", map[[2]string]string{{"bob", "contact:k1"}: "edit", {"dave", "contact:k1"}: "all", {"bob", "contact:kb"}: "all"})
	// From no parent to a parent: dave puts k1 under no account
	// (committed, absorbed: only the owner grant is left), then back.
	if err := b.commitAs(t, role, "dave", `UPDATE crm.contact_t SET account_id = NULL WHERE id = 'k1'`); err != nil {
		t.Fatalf("dave moves k1 to no parent: %v", err)
	}
	b.run(t)
	wantLevels(t, b, "k1 without a parent", map[[2]string]string{{"bob", "contact:k1"}: "none", {"dave", "contact:k1"}: "all"})
	if err := b.writeAs(t, role, "bob", `UPDATE crm.contact_t SET account_id = 1 WHERE id = 'k1'`); errors.Is(err, errRolledBack) {
		t.Errorf("bob moves the parentless k1 he cannot see under his account: went through")
	}
	if err := b.writeAs(t, role, "dave", `UPDATE crm.contact_t SET account_id = 2 WHERE id = 'k1'`); !errors.Is(err, errRolledBack) {
		t.Errorf("dave puts k1 back under account 2: %v, want it to go through", err)
	}
}

// TestAttack041NoUserSession: the application's own role, no user set,
// writing through a policy of the application's own that admits it (a
// background job). docs/rls.md: such a session may "move no record
// controlled by its parent that recalc holds"; a contact not yet absorbed
// it may move.
func TestAttack041NoUserSession(t *testing.T) {
	t.Parallel()
	b, role, _ := attack4Contacts(t)
	b.exec(t, b.app, `CREATE POLICY app_jobs ON crm.contact_t FOR ALL TO `+ident(role)+`
		USING (coalesce(current_setting('app.user_id', true), '') = '') WITH CHECK (coalesce(current_setting('app.user_id', true), '') = '')`)
	for _, s := range []string{
		`UPDATE crm.contact_t SET account_id = 1 WHERE id = 'k1'`,
		`UPDATE crm.contact_t SET account_id = NULL WHERE id = 'k1'`,
		`UPDATE crm.contact_t SET account_id = 3 WHERE id = 'k1'`,
	} {
		if err := b.writeAs(t, role, "", s); pg.Code(err) != pg.InsufficientPrivilege {
			t.Errorf("no user: %s: %v, want refused (42501)", s, err)
		}
	}
	if err := b.writeAs(t, role, "", `UPDATE crm.contact_t SET title = 'job' WHERE id = 'k1'`); !errors.Is(err, errRolledBack) {
		t.Errorf("no user edits k1's title: %v, want it to go through", err)
	}
	// Not absorbed yet: k7, written just now (by a superuser).
	b.exec(t, b.admin, `INSERT INTO crm.contact_t VALUES ('k7', 'dave', 'new', 2)`)
	if err := b.writeAs(t, role, "", `UPDATE crm.contact_t SET account_id = 1 WHERE id = 'k7'`); !errors.Is(err, errRolledBack) {
		t.Errorf("no user moves k7, not absorbed yet: %v, want it to go through", err)
	}
}

// TestAttack041StoredModel: the object's OWD as an import not yet run has
// it. Opportunities are private (materialized): frank edits opportunity b
// (dave's, under account 2) by rule big_opp and reads account 1, so moving
// b under account 1 goes through. Once the stored model makes opportunity
// controlled by its parent (an import, no run), the same move is refused.
// And contacts: the stored model makes them private again, no run: bob's
// move of k1 stays refused (the materialized tables still say controlled
// by parent).
func TestAttack041StoredModel(t *testing.T) {
	t.Parallel()
	b, role, _ := attack4Contacts(t)
	b.enablePolicies(t, protectedTables[1], access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	const move = `UPDATE crm.opportunity SET account_id = 1 WHERE id = '` + guardOppB + `'`
	if err := b.writeAs(t, role, "frank", move); !errors.Is(err, errRolledBack) {
		t.Fatalf("premise: frank moves b under account 1 while opportunities are private: %v", err)
	}
	ctx := context.Background()
	setOWD := func(object, owd string) {
		t.Helper()
		tag, err := b.admin.Exec(ctx, `UPDATE recalc.model_section SET doc = (
			SELECT jsonb_agg(CASE WHEN o ->> 'name' = $1 THEN o || jsonb_build_object('internal_owd', $2::text, 'external_owd', $2::text) ELSE o END)
			FROM jsonb_array_elements(doc) o) WHERE name = 'objects'`, object, owd)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("store %s as %s: %v", object, owd, err)
		}
	}
	setOWD("opportunity", "controlled_by_parent")
	if err := b.writeAs(t, role, "frank", move); pg.Code(err) != pg.InsufficientPrivilege {
		t.Errorf("frank moves b under account 1 once the stored model makes opportunities controlled by parent: %v, want refused (42501)", err)
	}
	if err := b.writeAs(t, role, "dave", move); !errors.Is(err, errRolledBack) {
		t.Errorf("dave (all on b) moves it: %v, want it to go through", err)
	}
	setOWD("contact", "private")
	if err := b.writeAs(t, role, "bob", `UPDATE crm.contact_t SET account_id = 1 WHERE id = 'k1'`); pg.Code(err) != pg.InsufficientPrivilege {
		t.Errorf("bob moves k1 while only the stored model says contacts are private: %v, want refused (42501)", err)
	}
}

// TestAttack041ReparentLookupAsReader: rls_may_reparent is granted to the
// writer (a reader); as docs say it tells only whether an object is
// controlled by its parent and rls_may_transfer's answer; a role that is
// no reader may not call it.
func TestAttack041ReparentLookupAsReader(t *testing.T) {
	t.Parallel()
	b, role, _ := attack4Contacts(t)
	ctx := context.Background()
	tx, err := b.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(role)); err != nil {
		t.Fatal(err)
	}
	var bob, dave, other, none bool
	if err := tx.QueryRow(ctx, `SELECT recalc.rls_may_reparent('bob', 'contact', 'contact:k1'), recalc.rls_may_reparent('dave', 'contact', 'contact:k1'),
		recalc.rls_may_reparent('bob', 'opportunity', 'opportunity:x'), recalc.rls_may_reparent(NULL, 'contact', 'contact:k1')`).Scan(&bob, &dave, &other, &none); err != nil {
		t.Fatal(err)
	}
	if bob || !dave || !other || none {
		t.Errorf("rls_may_reparent: bob %v dave %v opportunity %v no user %v, want false true true false", bob, dave, other, none)
	}
	var public bool
	if err := b.admin.QueryRow(ctx, `SELECT has_function_privilege('public', 'recalc.rls_may_reparent(text, text, text)', 'EXECUTE')`).Scan(&public); err != nil || public {
		t.Errorf("PUBLIC may run rls_may_reparent: %v (%v)", public, err)
	}
}

// TestAttack041Grandchild: a chain of objects controlled by their parents,
// note__c under contact under account. bob edits note n1 (under dave's k1)
// only through his edit on account 2. Moving n1 under his own contact kb
// (under his account 1) would give him all on it: refused. Moving k1 (the
// middle of the chain) is refused as before; dave may move n1.
func TestAttack041Grandchild(t *testing.T) {
	t.Parallel()
	b, role, _ := attack4Contacts(t)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"objects": [{"name": "note__c", "parent": "contact", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `CREATE TABLE crm.note_t (id text PRIMARY KEY, owner_id text NOT NULL REFERENCES crm.app_user,
			body text, contact_id text REFERENCES crm.contact_t ON DELETE CASCADE)`,
		`GRANT SELECT, TRIGGER ON crm.note_t TO `+ident(b.engineRole),
		`INSERT INTO crm.note_t VALUES ('n1', 'dave', 'secret', 'k1')`)
	b.exec(t, b.admin, `INSERT INTO crm.contact_t VALUES ('kb', 'bob', 'mine', 1)`, `GRANT SELECT, INSERT, UPDATE, DELETE ON crm.note_t TO `+ident(role))
	spec := crmSpecWith(t, `{"object": "contact", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["title"], "capture": [{"table": "crm.contact", "id": "id"}, {"table": "crm.contact_account", "id": "contact_id"}]}`,
		`{"object": "contact", "table": "crm.contact_t", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["title"]},
  {"object": "note__c", "table": "crm.note_t", "id": "id", "owner": "owner_id", "parent": "contact_id", "fields": []}`)
	b.mustAttach(t, spec)
	b.run(t)
	b.enablePolicies(t, protectedTable{"crm.note_t", "crm.note_t", "note__c", "body"}, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	wantLevels(t, b, "premise", map[[2]string]string{
		{"bob", "note__c:n1"}: "edit", {"dave", "note__c:n1"}: "all", {"bob", "contact:kb"}: "all", {"bob", "contact:k1"}: "edit"})
	if err := b.writeAs(t, role, "bob", `UPDATE crm.note_t SET contact_id = 'kb' WHERE id = 'n1'`); pg.Code(err) != pg.InsufficientPrivilege {
		t.Errorf("bob moves n1 under his own contact kb: %v, want refused (42501)", err)
	}
	if err := b.writeAs(t, role, "bob", `UPDATE crm.note_t SET body = 'edited' WHERE id = 'n1'`); !errors.Is(err, errRolledBack) {
		t.Errorf("bob edits n1's body: %v, want it to go through", err)
	}
	if err := b.writeAs(t, role, "dave", `UPDATE crm.note_t SET contact_id = 'kb' WHERE id = 'n1'`); !errors.Is(err, errRolledBack) {
		t.Errorf("dave (all on n1; reads kb? %s) moves n1 under kb: %v", levelOf(t, b, "dave", "contact:kb"), err)
	}
}
