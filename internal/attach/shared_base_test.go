package attach_test

import (
	"strings"
	"testing"
)

// A table that several objects' views read, as vtiger's vtiger_crmentity
// holds the owner and the deleted flag of every module's records: each of
// its rows belongs to a record of one of those objects. `recalc rls enable
// --object case` on it judges every row as a case, so rows of the accounts
// are hidden from everyone (or, where an id is also a case's, shown by that
// case's access). rls enable says so, naming every object that shares the
// table, and its write-guard warning names the object it was given, not
// the first of them in alphabetical order.
func TestRLSEnableWarnsOfASharedBaseTable(t *testing.T) {
	t.Parallel()
	b := setupOwnRoles(t)
	b.exec(t, b.app, `CREATE TABLE crm.entity (id bigint PRIMARY KEY, note text)`,
		`GRANT SELECT, TRIGGER ON crm.entity TO `+ident(b.engineRole))
	b.exec(t, b.engine,
		`CREATE VIEW crm_recalc.account_v AS SELECT a.id, a.owner_id, a.industry FROM crm.account a LEFT JOIN crm.entity e ON e.id = a.id`,
		`CREATE VIEW crm_recalc.case_v AS SELECT c.id, c.owner_id, c.account_id, c.priority FROM support."case" c LEFT JOIN crm.entity e ON e.id = c.id`)
	b.mustAttach(t, `{"objects": [
  {"object": "account", "table": "crm_recalc.account_v", "id": "id", "owner": "owner_id", "fields": ["industry"],
   "capture": [{"table": "crm.account", "id": "id"}, {"table": "crm.entity", "id": "id"}]},
  {"object": "contact", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["title"], "capture": [{"table": "crm.contact", "id": "id"}, {"table": "crm.contact_account", "id": "contact_id"}]},
  {"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id"},
  {"object": "case", "table": "crm_recalc.case_v", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["priority"],
   "capture": [{"table": "support.case", "id": "id"}, {"table": "crm.entity", "id": "id"}]}
]}`)
	b.run(t)

	read := b.rlsEnableWarnings(t, "--table", "crm.entity", "--object", "case")
	if !strings.Contains(read, "crm.entity is a base table of the attached views of objects account and case") {
		t.Errorf("rls enable on a table two objects' views share warned %q, want it to name both objects", read)
	}
	write := b.rlsEnableWarnings(t, "--table", "crm.entity", "--object", "case", "--write")
	if strings.Contains(write, "object account's attached view") {
		t.Errorf("rls enable --object case --write warned %q: it names object account's view, not case's", write)
	}
	if !strings.Contains(write, "the write guard knows no owner or parent column of it") {
		t.Errorf("rls enable --write on a shared base table warned %q, want it to say the guard cannot check it", write)
	}
	// A base table of one object's view, enabled for that object: no word of sharing.
	own := b.rlsEnableWarnings(t, "--table", "crm.contact", "--object", "contact")
	if strings.Contains(own, "attached views of objects") {
		t.Errorf("rls enable on the contact view's own base table warned %q, as if another object shared it", own)
	}
}

// A table attached as an object itself, and read too by another object's
// view (an opportunity's primary contact, which the contact view counts):
// every row is a record of the table's own object, so rls enable for that
// object warns of no sharing, and its write guard checks the table (it is
// no view's base table to the guard): no warning that it knows no owner or
// parent column of it.
func TestRLSEnableOwnTableReadByAnotherView(t *testing.T) {
	t.Parallel()
	b := setupOwnRoles(t)
	b.exec(t, b.app, `ALTER TABLE crm.opportunity ADD COLUMN contact_id uuid`)
	b.exec(t, b.engine, `CREATE OR REPLACE VIEW crm_recalc.contact_v AS
		SELECT c.id, c.owner_id, c.title, ca.account_id,
		       (SELECT count(*) FROM crm.opportunity o WHERE o.contact_id = c.id) AS opportunities
		FROM crm.contact c LEFT JOIN crm.contact_account ca ON ca.contact_id = c.id`)
	b.mustAttach(t, `{"objects": [
  {"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "parent": null, "fields": ["industry"]},
  {"object": "contact", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["title", "opportunities"], "capture": [{"table": "crm.contact", "id": "id"}, {"table": "crm.contact_account", "id": "contact_id"},
   {"table": "crm.opportunity", "id": "contact_id"}]},
  {"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id"},
  {"object": "case", "table": "support.case", "id": "id", "owner": "owner_id", "parent": "account_id"}
]}`)
	b.run(t)

	warned := b.rlsEnableWarnings(t, "--table", "crm.opportunity", "--object", "opportunity", "--write")
	if strings.Contains(warned, "attached views of objects") {
		t.Errorf("rls enable on opportunity's own table warned %q, as if its rows were another object's", warned)
	}
	if strings.Contains(warned, "the write guard knows no owner or parent column of it") {
		t.Errorf("rls enable --write on opportunity's own table warned %q, but its guard checks it", warned)
	}
}
