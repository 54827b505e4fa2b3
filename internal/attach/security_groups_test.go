package attach_test

import (
	"context"
	"testing"

	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// sgSchema is a SuiteCRM-style corner of an application: accounts and
// opportunities keyed char(36), soft-deleted with `deleted = 1`, and the
// security groups' map of records to groups (securitygroups_records), a
// many-to-many table keyed by the record's id.
const sgSchema = `
CREATE TABLE crm.s_accounts (id char(36) PRIMARY KEY, assigned_user_id char(36), deleted smallint NOT NULL DEFAULT 0);
CREATE TABLE crm.s_opportunities (id char(36) PRIMARY KEY, assigned_user_id char(36), account_id char(36),
    deleted smallint NOT NULL DEFAULT 0);
CREATE TABLE crm.s_sg_records (id char(36) PRIMARY KEY, securitygroup_id char(36) NOT NULL, record_id char(36) NOT NULL,
    deleted smallint NOT NULL DEFAULT 0);
INSERT INTO crm.s_accounts VALUES ('sa1', 'bob', 0), ('sa2', 'carol', 0);
INSERT INTO crm.s_opportunities VALUES ('so1', 'bob', 'sa1', 0);
INSERT INTO crm.s_sg_records VALUES ('m1', 'sg1', 'sa1', 0), ('m2', 'sg2', 'so1', 0), ('m3', 'sg10', 'sa2', 0);`

// sgViews are docs/attach.md's views ("Records mapped to groups in a
// table"): soft-deleted rows left out, the record's groups read in a
// subquery of its own rows, between delimiters.
const sgViews = `
CREATE VIEW crm_recalc.s_accounts_v AS
  SELECT a.id, a.assigned_user_id AS owner_id,
         (SELECT '|' || string_agg(r.securitygroup_id::text, '|' ORDER BY r.securitygroup_id) || '|'
            FROM crm.s_sg_records r WHERE r.record_id = a.id AND r.deleted = 0) AS security_groups
  FROM crm.s_accounts a WHERE a.deleted = 0;
CREATE VIEW crm_recalc.s_opportunities_v AS
  SELECT o.id, o.assigned_user_id AS owner_id, o.account_id,
         (SELECT '|' || string_agg(r.securitygroup_id::text, '|' ORDER BY r.securitygroup_id) || '|'
            FROM crm.s_sg_records r WHERE r.record_id = o.id AND r.deleted = 0) AS security_groups
  FROM crm.s_opportunities o WHERE o.deleted = 0;`

const sgSpec = `{"objects": [
  {"object": "account", "table": "crm_recalc.s_accounts_v", "id": "id", "owner": "owner_id", "parent": null, "fields": ["security_groups"],
   "capture": [{"table": "crm.s_accounts", "id": "id"}, {"table": "crm.s_sg_records", "id": "record_id"}]},
  {"object": "opportunity", "table": "crm_recalc.s_opportunities_v", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["security_groups"],
   "capture": [{"table": "crm.s_opportunities", "id": "id"}, {"table": "crm.s_sg_records", "id": "record_id"}]}]}`

// sgModel gives each security group a group of the model and, per object,
// a criteria rule on the captured field.
const sgModel = `{"groups": [{"id": "sg1", "members": ["user:dave"]}, {"id": "sg2", "members": ["user:erin"]},
    {"id": "sg10", "members": ["user:frank"]}],
  "rules": [
    {"id": "sg1_account", "object": "account", "type": "criteria", "target": "group:sg1", "access": "edit",
     "criteria": {"conditions": [{"field": "security_groups", "op": "contains", "value": "|sg1|"}]}},
    {"id": "sg2_account", "object": "account", "type": "criteria", "target": "group:sg2", "access": "edit",
     "criteria": {"conditions": [{"field": "security_groups", "op": "contains", "value": "|sg2|"}]}},
    {"id": "sg10_account", "object": "account", "type": "criteria", "target": "group:sg10", "access": "edit",
     "criteria": {"conditions": [{"field": "security_groups", "op": "contains", "value": "|sg10|"}]}},
    {"id": "sg2_opportunity", "object": "opportunity", "type": "criteria", "target": "group:sg2", "access": "edit",
     "criteria": {"conditions": [{"field": "security_groups", "op": "contains", "value": "|sg2|"}]}}]}`

// TestSecurityGroupsThroughACapturedField attaches SuiteCRM-style security
// groups as docs/attach.md says: a record's groups are a field its view
// reads from the many-to-many table, which is captured by its record column,
// and a criteria rule per group shares the records holding it. Unlike
// manual shares, the groups' access survives an owner change; a soft delete
// takes the record (and its children's access) away and a restore brings it
// back; a row joining or leaving a group is absorbed as a write of the
// record it names; and sg1 gives nothing on a record of sg10.
func TestSecurityGroupsThroughACapturedField(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.exec(t, b.app, sgSchema,
		`GRANT SELECT, TRIGGER ON crm.s_accounts, crm.s_opportunities, crm.s_sg_records TO `+ident(b.engineRole))
	b.exec(t, b.engine, sgViews)
	b.mustAttach(t, sgSpec)
	if out, err := b.recalcFile(t, sgModel, "import", "--merge"); err != nil {
		t.Fatalf("import the groups and their rules: %v\n%s", err, out)
	}
	type want struct{ user, record, level string }
	steps := []struct {
		name, stmt string
		want       []want
	}{
		{"attached", ``, []want{
			{"dave", "account:sa1", "edit"}, {"erin", "opportunity:so1", "edit"},
			{"erin", "account:sa1", "read"}, // implicit parent access, from the opportunity's group
			{"dave", "account:sa2", "none"}, {"frank", "account:sa2", "edit"}}},
		{"owner change", `UPDATE crm.s_accounts SET assigned_user_id = 'carol' WHERE id = 'sa1'`, []want{
			{"dave", "account:sa1", "edit"}, {"carol", "account:sa1", "all"}, {"bob", "account:sa1", "read"}}},
		{"soft delete", `UPDATE crm.s_accounts SET deleted = 1 WHERE id = 'sa1'`, []want{
			{"dave", "account:sa1", "none"}, {"carol", "account:sa1", "none"},
			{"erin", "opportunity:so1", "none"}, {"bob", "opportunity:so1", "none"}}}, // parent missing: fails closed
		{"restore", `UPDATE crm.s_accounts SET deleted = 0 WHERE id = 'sa1'`, []want{
			{"dave", "account:sa1", "edit"}, {"carol", "account:sa1", "all"}, {"erin", "opportunity:so1", "edit"}}},
		{"leaves a group", `UPDATE crm.s_sg_records SET deleted = 1 WHERE id = 'm1'`, []want{
			{"dave", "account:sa1", "none"}, {"erin", "account:sa1", "read"}}},
		{"joins a group", `INSERT INTO crm.s_sg_records VALUES ('m4', 'sg2', 'sa1', 0)`, []want{
			{"erin", "account:sa1", "edit"}, {"dave", "account:sa1", "none"}}},
		{"the mapping row deleted", `DELETE FROM crm.s_sg_records WHERE id = 'm2'`, []want{
			{"erin", "opportunity:so1", "none"}, {"erin", "account:sa1", "edit"}}},
	}
	for _, s := range steps {
		if s.stmt != "" {
			b.exec(t, b.app, s.stmt)
		}
		b.run(t)
		for _, w := range s.want {
			if got := levelOf(t, b, w.user, w.record); got != w.level {
				t.Errorf("%s: %s has %s on %s, want %s", s.name, w.user, got, w.record, w.level)
			}
		}
	}
	incremental := testkit.AccessCSV(t, ctx, b.engine)
	if _, err := b.recalc("run", "--full"); err != nil {
		t.Fatalf("recalc run --full: %v", err)
	}
	if full := testkit.AccessCSV(t, ctx, b.engine); full != incremental {
		t.Fatalf("a full run changes the access the incremental runs left\n%s", oracle.Diff(full, incremental))
	}
}
