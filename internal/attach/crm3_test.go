package attach_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/schema"
)

// crm3 is a third CRM, modelled on Odoo (res_users, res_partner holding both
// companies and their contacts through a self-referencing parent_id, crm_lead
// holding both leads and opportunities told apart by a type column, archived
// rows with active = false, a jsonb properties column, a many-to-many tag
// table) with a SuiteCRM-style cases table beside it (varchar(36) uuid-string
// ids, a deleted flag, a generated column), in schemas that are not public.
//
// The users table has integer ids; owner columns are integer (partners),
// bigint (leads) and varchar(36) (cases). Attached strictly as the docs say:
// the engine creates its views in a schema it owns; the model is imported
// without the groups and rules that name users, the users are attached, a
// run, then those are merged.

// crm3Base is the model imported first: nothing in it names a user.
const crm3Base = `{
  "version": 1,
  "objects": [
    {"name": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "opportunity", "parent": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "lead", "internal_owd": "private", "external_owd": "private"},
    {"name": "case", "parent": "account", "internal_owd": "private", "external_owd": "private"}
  ],
  "roles": [
    {"id": "Director"},
    {"id": "Sales Manager", "parent": "Director", "opportunity_access": "edit", "contact_access": "read", "case_access": "read"},
    {"id": "Salesperson", "parent": "Sales Manager"},
    {"id": "Support", "parent": "Director", "case_access": "edit"},
    {"id": "Portal"}
  ],
  "groups": [
    {"id": "Team America", "members": ["role:Salesperson"]},
    {"id": "Support Queue", "queue": true, "members": ["role:Support"]},
    {"id": "Lead Queue", "queue": true, "members": ["role:Sales Manager"]}
  ],
  "rules": [
    {"id": "gold_accounts", "object": "account", "type": "criteria", "target": "group:Team America", "access": "read",
     "opportunity_access": "read", "case_access": "read",
     "criteria": {"conditions": [{"field": "tier", "op": "equals", "value": "gold"}, {"field": "credit_limit", "op": "ge", "value": 50000},
                                 {"field": "vip", "op": "equals", "value": true}], "logic": "1 OR (2 AND 3)"}},
    {"id": "energy", "object": "account", "type": "criteria", "target": "role:Support", "access": "read",
     "criteria": {"conditions": [{"field": "Industry", "op": "equals", "value": "Energy"}, {"field": "display_name", "op": "contains", "value": "Inc"}], "logic": "1 OR 2"}},
    {"id": "sales_accounts", "object": "account", "type": "owner", "source": "role:Salesperson", "target": "role:Support", "access": "read"},
    {"id": "scored_leads", "object": "lead", "type": "criteria", "target": "role:Sales Manager", "access": "edit",
     "criteria": {"conditions": [{"field": "x_Score", "op": "ge", "value": 50}]}},
    {"id": "p1_cases", "object": "case", "type": "criteria", "target": "role:Salesperson", "access": "read",
     "criteria": {"conditions": [{"field": "Priority Rank", "op": "equals", "value": 1}, {"field": "deleted", "op": "equals", "value": 0},
                                 {"field": "date_entered", "op": "lt", "value": "2026-06-01"}], "logic": "(1 AND 2) OR 3"}}
  ]
}`

// crm3Merge is merged once the users are attached and absorbed: a sales
// team naming users, and rules targeting it and a user.
const crm3Merge = `{
  "groups": [{"id": "Team Europe", "members": ["user:3", "user:4", "user:8"]}],
  "rules": [
    {"id": "big_deals", "object": "opportunity", "type": "criteria", "target": "group:Team Europe", "access": "edit",
     "criteria": {"conditions": [{"field": "expected_revenue", "op": "ge", "value": 10000}, {"field": "date_deadline", "op": "lt", "value": "2027-01-01"}]}},
    {"id": "hot_deals", "object": "opportunity", "type": "criteria", "target": "user:2", "access": "read",
     "criteria": {"conditions": [{"field": "hot", "op": "equals", "value": true}]}},
    {"id": "team_eu_leads", "object": "lead", "type": "criteria", "target": "group:Team Europe", "access": "read",
     "criteria": {"conditions": [{"field": "team_id", "op": "equals", "value": 1}]}}
  ]
}`

// crm3Roles are the roles of crm3Base.
var crm3Roles = []string{"Director", "Sales Manager", "Salesperson", "Support", "Portal"}

const crm3Schema = `
CREATE TABLE odoo.res_users (
    id integer PRIMARY KEY, login varchar(64) NOT NULL UNIQUE, "Sales Role" varchar(32),
    share boolean NOT NULL DEFAULT false, active boolean DEFAULT true);
CREATE TABLE odoo.crm_team (id integer PRIMARY KEY, name text NOT NULL, user_id integer REFERENCES odoo.res_users);
CREATE TABLE odoo.res_partner (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL,
    is_company boolean NOT NULL DEFAULT false,
    parent_id integer REFERENCES odoo.res_partner ON DELETE SET NULL,
    user_id integer REFERENCES odoo.res_users ON DELETE SET NULL,
    active boolean NOT NULL DEFAULT true,
    "Industry" varchar(40), credit_limit numeric(12,2), properties jsonb NOT NULL DEFAULT '{}',
    "function" text, email varchar(240),
    display_name text GENERATED ALWAYS AS (CASE WHEN is_company THEN name || ' (company)' ELSE name END) STORED,
    write_date timestamp NOT NULL DEFAULT now());
CREATE INDEX ON odoo.res_partner (parent_id);
CREATE TABLE odoo.crm_lead (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL,
    type varchar(20) NOT NULL DEFAULT 'lead',
    partner_id integer REFERENCES odoo.res_partner ON DELETE SET NULL,
    user_id bigint, team_id integer REFERENCES odoo.crm_team,
    active boolean NOT NULL DEFAULT true, "Stage" text, expected_revenue numeric(14,2), probability double precision,
    date_deadline date, priority varchar(1) DEFAULT '0', contact_name text,
    "x_Score" integer GENERATED ALWAYS AS (CASE priority WHEN '3' THEN 90 WHEN '2' THEN 60 WHEN '1' THEN 30 ELSE 0 END
        + CASE WHEN expected_revenue > 5000 THEN 5 ELSE 0 END) STORED);
CREATE TABLE odoo.crm_tag (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE odoo.crm_tag_rel (
    lead_id bigint NOT NULL REFERENCES odoo.crm_lead ON DELETE CASCADE ON UPDATE CASCADE,
    tag_id integer NOT NULL REFERENCES odoo.crm_tag ON DELETE CASCADE,
    PRIMARY KEY (lead_id, tag_id));
CREATE TABLE "SuiteCRM"."Cases" (
    id varchar(36) PRIMARY KEY, name varchar(255), account_id integer REFERENCES odoo.res_partner ON DELETE SET NULL,
    assigned_user_id varchar(36), priority varchar(100), status varchar(100),
    deleted smallint NOT NULL DEFAULT 0, date_entered timestamp,
    "Priority Rank" smallint GENERATED ALWAYS AS (CASE priority WHEN 'P1' THEN 1 WHEN 'P2' THEN 2 ELSE 3 END) STORED);

INSERT INTO odoo.res_users VALUES
    (1, 'admin', 'Director', false, true), (2, 'mgr', 'Sales Manager', false, true), (3, 'sp1', 'Salesperson', false, true),
    (4, 'sp2', 'Salesperson', false, true), (5, 'sup1', 'Support', false, true), (6, 'sup2', 'Support', false, true),
    (7, 'portal', 'Portal', true, true), (8, 'sp3', 'Salesperson', false, false), (9, 'temp', 'Intern', false, true),
    (10, 'nobody', NULL, false, NULL);
INSERT INTO odoo.crm_team VALUES (1, 'Europe', 2), (2, 'America', 2);
INSERT INTO odoo.crm_tag VALUES (1, 'Hot'), (2, 'Cold');
INSERT INTO odoo.res_partner (id, name, is_company, parent_id, user_id, active, "Industry", credit_limit, properties) VALUES
    (1, 'Acme', true, NULL, 3, true, 'Tech', 60000, '{"tier": "gold", "vip": true}'),
    (2, 'Globex Inc', true, NULL, 4, true, 'Energy', 1000, '{"tier": "silver"}'),
    (3, 'Initech', true, 1, 5, true, NULL, NULL, '{}'),
    (4, 'Umbrella', true, NULL, NULL, true, 'Pharma', 80000, '{"vip": false}'),
    (5, 'Archived Co', true, NULL, 3, false, 'Tech', 1, '{"tier": "gold"}'),
    (6, 'Portal Co', true, NULL, 7, true, 'Retail', 100, '{"vip": true}'),
    (7, 'Hooli', true, 1, 9, true, 'Tech', 90000, '{"tier": "gold", "vip": true}');
INSERT INTO odoo.res_partner (id, name, is_company, parent_id, user_id, active, "function", email) VALUES
    (101, 'Ann', false, 1, 3, true, 'CEO', 'ann@acme'), (102, 'Bo', false, 2, 4, true, 'CTO', 'bo@globex'),
    (103, 'Cy', false, NULL, 5, true, 'Buyer', NULL), (104, 'Di', false, 5, 3, true, 'Buyer', NULL),
    (105, 'Ed', false, 4, NULL, true, 'Clerk', NULL), (106, 'Fay', false, 1, 6, false, 'Old', NULL),
    (107, 'Gus', false, 101, 4, true, 'Assistant', NULL);
SELECT setval(pg_get_serial_sequence('odoo.res_partner', 'id'), 1000);
INSERT INTO odoo.crm_lead (id, name, type, partner_id, user_id, team_id, "Stage", expected_revenue, probability, date_deadline, priority, active) VALUES
    (1, 'Big deal', 'opportunity', 1, 3, 1, 'New', 20000, 0.3, '2026-09-01', '2', true),
    (2, 'Small deal', 'opportunity', 2, 4, 2, 'Won', 500, 1, '2027-03-01', '1', true),
    (3, 'Orphan deal', 'opportunity', NULL, 2, 1, 'New', 100, 0.1, NULL, '0', true),
    (4, 'Via contact', 'opportunity', 101, 3, 1, 'New', 15000, 0.5, '2026-10-01', '0', true),
    (5, 'Unassigned deal', 'opportunity', 4, NULL, 2, 'New', 30000, 0.9, '2026-05-01', '3', true),
    (6, 'Lost deal', 'opportunity', 1, 4, 1, 'Lost', 99999, 0, '2026-01-01', '0', false),
    (7, 'Raw lead', 'lead', NULL, NULL, 1, NULL, 7000, NULL, NULL, '3', true),
    (8, 'Web lead', 'lead', 2, 3, 2, NULL, NULL, NULL, NULL, '1', true),
    (9, 'Team lead', 'lead', NULL, 4, 1, NULL, NULL, NULL, NULL, '2', true);
SELECT setval(pg_get_serial_sequence('odoo.crm_lead', 'id'), 1000);
INSERT INTO odoo.crm_tag_rel VALUES (1, 1), (2, 2), (5, 1);
INSERT INTO "SuiteCRM"."Cases" (id, name, account_id, assigned_user_id, priority, status, deleted, date_entered) VALUES
    ('5f0c2a8e-1b7c-4c0e-9d3a-000000000001', 'Broken', 1, '5', 'P1', 'Open', 0, '2026-07-01 10:00'),
    ('5f0c2a8e-1b7c-4c0e-9d3a-000000000002', 'Slow', 2, '6', 'P2', 'Open', 0, '2026-01-01 10:00'),
    ('5f0c2a8e-1b7c-4c0e-9d3a-000000000003', 'Queued', 4, 'Support Queue', 'P1', 'New', 0, '2026-08-01 10:00'),
    ('5f0c2a8e-1b7c-4c0e-9d3a-000000000004', 'Gone', 1, '5', 'P1', 'Closed', 1, '2026-08-01 10:00'),
    ('5f0c2a8e-1b7c-4c0e-9d3a-000000000005', 'Unknown', 7, '999', 'P3', 'New', 0, NULL);
`

// crm3Views are the engine's views, in a schema it owns: the users (the
// portal flag as a type), companies and contacts over res_partner (archived
// rows excluded, jsonb properties as fields), opportunities and leads over
// crm_lead (a tag from the many-to-many table as a field; unassigned leads
// owned by a queue).
var crm3Views = []string{
	`CREATE VIEW odoo_recalc.users_v AS SELECT u.id, u."Sales Role" AS role,
	    CASE WHEN u.share THEN 'external' ELSE 'internal' END AS kind, u.active FROM odoo.res_users u`,
	`CREATE VIEW odoo_recalc.account_v AS SELECT p.id, p.user_id, p."Industry", p.credit_limit,
	    p.properties ->> 'tier' AS tier, (p.properties ->> 'vip')::boolean AS vip, p.display_name
	    FROM odoo.res_partner p WHERE p.is_company AND p.active`,
	`CREATE VIEW odoo_recalc.contact_v AS SELECT p.id, p.user_id, p.parent_id, p."function" AS "Job Position", p.email
	    FROM odoo.res_partner p WHERE NOT p.is_company AND p.active`,
	`CREATE VIEW odoo_recalc.opportunity_v AS SELECT l.id, l.user_id, l.partner_id, l.expected_revenue, l.probability,
	    l.date_deadline, l."Stage", EXISTS (SELECT 1 FROM odoo.crm_tag_rel r WHERE r.lead_id = l.id AND r.tag_id = 1) AS hot
	    FROM odoo.crm_lead l WHERE l.type = 'opportunity' AND l.active`,
	`CREATE VIEW odoo_recalc.lead_v AS SELECT l.id, coalesce(l.user_id::text, 'Lead Queue') AS owner, l.team_id, l."x_Score", l.priority
	    FROM odoo.crm_lead l WHERE l.type = 'lead' AND l.active`,
}

const crm3Spec = `{"objects": [
  {"object": "account", "table": "odoo_recalc.account_v", "id": "id", "owner": "user_id",
   "fields": ["Industry", "credit_limit", "tier", "vip", "display_name"], "capture": [{"table": "odoo.res_partner", "id": "id"}]},
  {"object": "contact", "table": "odoo_recalc.contact_v", "id": "id", "owner": "user_id", "parent": "parent_id",
   "fields": ["Job Position", "email"], "capture": [{"table": "odoo.res_partner", "id": "id"}]},
  {"object": "opportunity", "table": "odoo_recalc.opportunity_v", "id": "id", "owner": "user_id", "parent": "partner_id",
   "fields": ["expected_revenue", "probability", "date_deadline", "Stage", "hot"],
   "capture": [{"table": "odoo.crm_lead", "id": "id"}, {"table": "odoo.crm_tag_rel", "id": "lead_id"}]},
  {"object": "lead", "table": "odoo_recalc.lead_v", "id": "id", "owner": "owner",
   "fields": ["team_id", "x_Score", "priority"], "capture": [{"table": "odoo.crm_lead", "id": "id"}]},
  {"object": "case", "table": "SuiteCRM.Cases", "id": "id", "owner": "assigned_user_id", "parent": "account_id",
   "fields": ["priority", "status", "deleted", "date_entered", "Priority Rank"]}
],
 "users": {"table": "odoo_recalc.users_v", "id": "id", "role": "role", "type": "kind", "active": "active",
           "capture": [{"table": "odoo.res_users", "id": "id"}]}}`

// crm3Records is the application's data as records, computed by the test
// from the base tables (not the engine's views).
const crm3Records = `
SELECT coalesce(jsonb_agg(r), '[]')::text FROM (
  SELECT jsonb_build_object('object', 'account', 'id', 'account:' || p.id, 'owner', p.user_id::text, 'parent', NULL,
      'fields', jsonb_build_object('Industry', p."Industry", 'credit_limit', p.credit_limit, 'tier', p.properties ->> 'tier',
                                   'vip', (p.properties ->> 'vip')::boolean, 'display_name', p.display_name)) r
  FROM odoo.res_partner p WHERE p.is_company AND p.active
  UNION ALL
  SELECT jsonb_build_object('object', 'contact', 'id', 'contact:' || p.id, 'owner', p.user_id::text, 'parent', 'account:' || p.parent_id,
      'fields', jsonb_build_object('Job Position', p."function", 'email', p.email))
  FROM odoo.res_partner p WHERE NOT p.is_company AND p.active
  UNION ALL
  SELECT jsonb_build_object('object', 'opportunity', 'id', 'opportunity:' || l.id, 'owner', l.user_id::text, 'parent', 'account:' || l.partner_id,
      'fields', jsonb_build_object('expected_revenue', l.expected_revenue, 'probability', l.probability, 'date_deadline', l.date_deadline,
                                   'Stage', l."Stage", 'hot', EXISTS (SELECT 1 FROM odoo.crm_tag_rel t WHERE t.lead_id = l.id AND t.tag_id = 1)))
  FROM odoo.crm_lead l WHERE l.type = 'opportunity' AND l.active
  UNION ALL
  SELECT jsonb_build_object('object', 'lead', 'id', 'lead:' || l.id, 'owner', coalesce(l.user_id::text, 'Lead Queue'), 'parent', NULL,
      'fields', jsonb_build_object('team_id', l.team_id, 'x_Score', l."x_Score", 'priority', l.priority))
  FROM odoo.crm_lead l WHERE l.type = 'lead' AND l.active
  UNION ALL
  SELECT jsonb_build_object('object', 'case', 'id', 'case:' || c.id, 'owner', c.assigned_user_id, 'parent', 'account:' || c.account_id,
      'fields', jsonb_build_object('priority', c.priority, 'status', c.status, 'deleted', c.deleted, 'date_entered', c.date_entered,
                                   'Priority Rank', c."Priority Rank"))
  FROM "SuiteCRM"."Cases" c) x`

type crm3Record struct {
	Object string          `json:"object"`
	ID     string          `json:"id"`
	Owner  *string         `json:"owner"`
	Parent *string         `json:"parent"`
	Fields json.RawMessage `json:"fields"`
}

// setupCRM3 creates the roles (an engine that may not create roles, its
// sandbox made by the administrator, the application's owner role), the
// schemas, tables and data, the engine's views, and imports crm3Base with
// the command line.
func setupCRM3(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	b := newBundle(t, []string{"odoo_recalc"}, []string{"odoo", "SuiteCRM"})
	eng := ident(b.engineRole)
	b.exec(t, b.app, crm3Schema,
		`GRANT USAGE ON SCHEMA odoo, "SuiteCRM" TO `+eng,
		`GRANT SELECT, TRIGGER ON odoo.res_users, odoo.res_partner, odoo.crm_lead, odoo.crm_tag_rel, "SuiteCRM"."Cases" TO `+eng)
	if _, err := schema.Migrate(ctx, b.engine); err != nil {
		t.Fatalf("recalc init as the engine: %v", err)
	}
	b.exec(t, b.engine, crm3Views...)
	if out, err := b.recalcFile(t, crm3Base, "import"); err != nil {
		t.Fatalf("recalc import of the base model: %v\n%s", err, out)
	}
	return b
}

// recalcFile writes content to a file and runs `recalc ARGS... FILE`.
func (b *bundle) recalcFile(t *testing.T, content string, args ...string) (string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "file.json")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return b.recalc(append(args, f)...)
}

// recalcAs runs the command line connected as role.
func (b *bundle) recalcAs(role string, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	app := cli.App(&out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {}
	argv := append([]string{"recalc", "--database-url", dburl.WithUser(b.url, role), "--log-format", "json"}, args...)
	err := testkit.RunApp(context.Background(), app, argv)
	return out.String(), errOut.String(), err
}

// crm3Model is the model the stored one must equal: crm3Base with
// crm3Merge's entries (when merged), the users res_users gives it by
// docs/attach.md's rules, and the application's valid rows as records.
// It returns the model, the records expected invalid, and the expected
// records (all of them, as recalc.record must mirror them).
func (b *bundle) crm3Model(t *testing.T, merged bool) (*model.Model, []string, []crm3Record) {
	t.Helper()
	ctx := context.Background()
	var cfg map[string]any
	if err := json.Unmarshal([]byte(crm3Base), &cfg); err != nil {
		t.Fatal(err)
	}
	if merged {
		var m map[string][]any
		if err := json.Unmarshal([]byte(crm3Merge), &m); err != nil {
			t.Fatal(err)
		}
		cfg["groups"] = append(cfg["groups"].([]any), m["groups"]...)
		cfg["rules"] = append(cfg["rules"].([]any), m["rules"]...)
	}
	// Users: an unknown role or type, or active NULL: inactive, no role;
	// active false: inactive with its role and type.
	rows, err := b.admin.Query(ctx, `SELECT id::text, "Sales Role", CASE WHEN share THEN 'external' ELSE 'internal' END, active FROM odoo.res_users ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var users []any
	owners := map[string]bool{"Support Queue": true, "Lead Queue": true}
	var id, kind string
	var role *string
	var active *bool
	if _, err := pgx.ForEachRow(rows, []any{&id, &role, &kind, &active}, func() error {
		u := map[string]any{"id": id, "type": kind}
		ok := active != nil
		if ok && !*active {
			u["active"] = false
		}
		if role != nil {
			u["role"] = *role
			ok = ok && slices.Contains(crm3Roles, *role)
		}
		if !ok {
			u = map[string]any{"id": id, "active": false}
		}
		users = append(users, u)
		owners[id] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg["users"] = users

	var doc string
	if err := b.admin.QueryRow(ctx, crm3Records).Scan(&doc); err != nil {
		t.Fatal(err)
	}
	var recs []crm3Record
	if err := json.Unmarshal([]byte(doc), &recs); err != nil {
		t.Fatal(err)
	}
	valid := map[string]bool{}
	for i := range recs {
		r := &recs[i]
		if r.Owner == nil || *r.Owner == "" { // docs/attach.md: an owner missing is mirrored as an empty owner, nothing else
			empty := ""
			r.Owner, r.Parent, r.Fields = &empty, nil, json.RawMessage(`{}`)
			continue
		}
		valid[r.ID] = owners[*r.Owner]
	}
	for changed := true; changed; {
		changed = false
		for _, r := range recs {
			if valid[r.ID] && r.Parent != nil && !valid[*r.Parent] {
				valid[r.ID], changed = false, true
			}
		}
	}
	var records []any
	var invalid []string
	for _, r := range recs {
		if !valid[r.ID] {
			invalid = append(invalid, r.ID)
			continue
		}
		rec := map[string]any{"object": r.Object, "id": r.ID, "owner": *r.Owner, "fields": r.Fields}
		if r.Parent != nil {
			rec["parent"] = *r.Parent
		}
		records = append(records, rec)
	}
	cfg["records"] = records
	file, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := model.Parse(bytes.NewReader(file))
	if err != nil {
		t.Fatalf("the expected model: %v", err)
	}
	if _, err := m.Validate(); err != nil {
		t.Fatalf("the expected model: %v", err)
	}
	slices.Sort(invalid)
	return m, invalid, recs
}

// crm3Check fails unless recalc.record mirrors the rows, the invalid
// records are those expected, and access equals the oracle's.
func (b *bundle) crm3Check(t *testing.T, after string, merged bool) *model.Model {
	t.Helper()
	ctx := context.Background()
	m, wantInvalid, recs := b.crm3Model(t, merged)
	want, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	var diff []string
	if err := b.admin.QueryRow(ctx, `
		SELECT coalesce(array_agg(coalesce(e.id, r.id) || ': want ' || coalesce(row(e.object, e.owner, e.parent, e.fields)::text, 'none')
		                          || ', have ' || coalesce(row(r.object, r.owner, r.parent, r.fields)::text, 'none')
		                          ORDER BY coalesce(e.id, r.id)), '{}')
		FROM jsonb_to_recordset($1::jsonb) AS e (id text, object text, owner text, parent text, fields jsonb)
		FULL JOIN recalc.record r ON r.id = e.id
		WHERE row(e.object, e.owner, e.parent, e.fields) IS DISTINCT FROM row(r.object, r.owner, r.parent, r.fields)`,
		string(want)).Scan(&diff); err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		t.Fatalf("%s, recalc.record differs from the application's rows in %d records:\n%s", after, len(diff), strings.Join(diff, "\n"))
	}
	var invalid []string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(array_agg(record ORDER BY record COLLATE "C"), '{}') FROM recalc.invalid_record`).Scan(&invalid); err != nil {
		t.Fatal(err)
	}
	if wantInvalid == nil {
		wantInvalid = []string{}
	}
	if !slices.Equal(invalid, wantInvalid) {
		t.Fatalf("%s, invalid records %q, want %q", after, invalid, wantInvalid)
	}
	if got, want := testkit.AccessCSV(t, ctx, b.engine), oracle.CSV(oracle.Access(m)); got != want {
		t.Fatalf("%s, access differs from the oracle\n%s", after, oracle.Diff(want, got))
	}
	return m
}

// TestAttachCRM3 attaches an Odoo/SuiteCRM-like schema as documented, with
// its users table, writes through it from several connections while runs
// go on, and checks the records, the invalid records, access against the
// oracle and a full run, and row-level security as a non-superuser
// application role against the oracle.
func TestAttachCRM3(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Now()
	b := setupCRM3(t)
	out, err := b.attach(t, crm3Spec)
	if err != nil {
		t.Fatalf("recalc attach: %v\n%s", err, out)
	}
	t.Logf("recalc attach:\n%s", out)
	if _, err := b.recalc("run"); err != nil {
		t.Fatalf("recalc run: %v", err)
	}
	if out, err := b.recalcFile(t, crm3Merge, "import", "--merge"); err != nil {
		t.Fatalf("recalc import --merge of the groups and rules naming users: %v\n%s", err, out)
	}
	if _, err := b.recalc("run"); err != nil {
		t.Fatalf("recalc run: %v", err)
	}
	b.crm3Check(t, "after the backfill and the merge", true)
	if list, err := b.recalc("attach", "--list"); err != nil || strings.Contains(list, "INCOMPLETE") || strings.Contains(list, "NOT ABSORBED") {
		t.Fatalf("attach --list: %v\n%s", err, list)
	}

	n := b.writeWhileRunning(t, 3, crm3Partners, crm3Leads, crm3Cases, crm3Users)
	t.Logf("%d incremental runs during the writes", n)
	if _, err := b.recalc("run"); err != nil {
		t.Fatalf("recalc run: %v", err)
	}
	b.checkAbsorbed(t, "after the writes and a run")
	b.crm3Check(t, "after the writes and a run", true)
	incremental := testkit.AccessCSV(t, ctx, b.engine)
	if _, err := b.recalc("run", "--full"); err != nil {
		t.Fatalf("recalc run --full: %v", err)
	}
	if full := testkit.AccessCSV(t, ctx, b.engine); full != incremental {
		t.Fatalf("a full run changes the access the incremental runs left\n%s", oracle.Diff(full, incremental))
	}
	if out, err := b.recalc("verify"); err != nil {
		t.Fatalf("recalc verify: %v\n%s", err, out)
	}
	t.Logf("attach and writes: %v", time.Since(start))

	b.crm3RLS(t)
	t.Logf("total: %v", time.Since(start))
}

// crm3WaitCompanies waits for the commit of crm3Partners' copy of the
// companies that the leads and cases point at (their foreign keys would
// refuse them before it).
func crm3WaitCompanies(ctx context.Context, app *pgxpool.Pool, r *mrand.Rand) error {
	for deadline := time.Now().Add(time.Minute); ; pause(r) {
		var n int
		if err := app.QueryRow(ctx, `SELECT count(*) FROM odoo.res_partner WHERE id IN (200, 201, 210, 215, 220, 239)`).Scan(&n); err != nil {
			return fmt.Errorf("wait for the companies: %w", err)
		}
		if n == 6 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for the companies: %d of 6 after a minute", n)
		}
	}
}

// crm3Partners COPYs companies and contacts, changes salespeople (to NULL
// too), moves contacts between companies, archives and restores partners,
// edits jsonb properties, turns a contact into a company and back, and
// deletes some.
func crm3Partners(ctx context.Context, app *pgxpool.Pool, r *mrand.Rand) error {
	var rows [][]any
	for id := 200; id < 240; id++ {
		var owner any = int32(1 + r.IntN(9))
		if id%11 == 0 {
			owner = nil
		}
		props := fmt.Sprintf(`{"tier": %q, "vip": %v}`, []string{"gold", "silver", "bronze"}[id%3], id%4 == 0)
		rows = append(rows, []any{int32(id), fmt.Sprintf("Company %d", id), true, owner, []string{"Tech", "Energy", "Retail"}[id%3], float64(id * 300), props})
	}
	if _, err := app.CopyFrom(ctx, pgx.Identifier{"odoo", "res_partner"},
		[]string{"id", "name", "is_company", "user_id", "Industry", "credit_limit", "properties"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("copy companies: %w", err)
	}
	rows = nil
	for id := 300; id < 380; id++ {
		var owner any = int32(1 + r.IntN(10))
		if id%13 == 0 {
			owner = nil
		}
		var parent any = int32(200 + id%40)
		if id%17 == 0 {
			parent = nil
		}
		rows = append(rows, []any{int32(id), fmt.Sprintf("Person %d", id), false, parent, owner, "Buyer", fmt.Sprintf("p%d@x", id)})
	}
	if _, err := app.CopyFrom(ctx, pgx.Identifier{"odoo", "res_partner"},
		[]string{"id", "name", "is_company", "parent_id", "user_id", "function", "email"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("copy contacts: %w", err)
	}
	for i := 0; i < 15; i++ {
		pause(r)
		owner := fmt.Sprint(1 + r.IntN(10))
		if i%5 == 4 {
			owner = "NULL"
		}
		stmts := []string{
			fmt.Sprintf(`UPDATE odoo.res_partner SET user_id = %s WHERE id >= 200 AND id %% 7 = %d`, owner, i%7),
			fmt.Sprintf(`UPDATE odoo.res_partner SET parent_id = %d WHERE NOT is_company AND id %% 9 = %d`, 200+r.IntN(40), i%9),
			fmt.Sprintf(`UPDATE odoo.res_partner SET properties = properties || jsonb_build_object('tier', (ARRAY['gold','silver','bronze'])[%d], 'vip', %v),
				credit_limit = credit_limit + %d WHERE is_company AND id %% 5 = %d`, 1+r.IntN(3), r.IntN(2) == 0, 1000*r.IntN(30), i%5),
			`UPDATE odoo.res_partner SET write_date = now()`, // not attached: logs nothing for the tables' objects
		}
		switch i {
		case 2:
			stmts = append(stmts, `UPDATE odoo.res_partner SET active = false WHERE id IN (201, 305, 306)`) // archived
		case 4:
			stmts = append(stmts, `UPDATE odoo.res_partner SET parent_id = 1 WHERE id = 3`) // company hierarchy: no sharing effect
		case 6:
			stmts = append(stmts, `UPDATE odoo.res_partner SET active = true WHERE id IN (5, 305)`) // restored
		case 8:
			stmts = append(stmts, `UPDATE odoo.res_partner SET is_company = true, parent_id = NULL WHERE id = 310`) // contact becomes a company
		case 10:
			stmts = append(stmts, `UPDATE odoo.res_partner SET parent_id = 310 WHERE id IN (311, 312)`)
		case 11:
			stmts = append(stmts, `DELETE FROM odoo.res_partner WHERE id IN (320, 321)`)
		case 13:
			stmts = append(stmts, `UPDATE odoo.res_partner SET is_company = false, parent_id = 1 WHERE id = 239`) // company becomes a contact
		case 14:
			stmts = append(stmts, `DELETE FROM odoo.res_partner WHERE id = 230`) // its contacts' parent, leads' partner and cases' account set NULL by the foreign keys
		}
		if err := txIso(ctx, app, pgx.ReadCommitted, stmts...); err != nil {
			return err
		}
	}
	return nil
}

// crm3Leads inserts leads and opportunities, converts leads, reassigns
// them (to nobody too), moves them between teams and partners, tags and
// untags them, archives (marks lost) and restores some, and deletes some.
func crm3Leads(ctx context.Context, app *pgxpool.Pool, r *mrand.Rand) error {
	if err := crm3WaitCompanies(ctx, app, r); err != nil {
		return err
	}
	if err := txIso(ctx, app, pgx.RepeatableRead, `INSERT INTO odoo.crm_lead (id, name, type, partner_id, user_id, team_id, "Stage", expected_revenue, probability, date_deadline, priority)
		SELECT g, 'Lead ' || g, CASE WHEN g % 3 = 0 THEN 'lead' ELSE 'opportunity' END,
		       CASE WHEN g % 10 = 0 THEN NULL WHEN g % 10 = 1 THEN 101 ELSE (ARRAY[1, 2, 4, 6, 7])[1 + g % 5] END,
		       CASE WHEN g % 8 = 0 THEN NULL ELSE 1 + g % 10 END, 1 + g % 2, 'New', g * 250, (g % 10) / 10.0,
		       date '2026-06-01' + g * 7, (g % 4)::text
		FROM generate_series(100, 159) g`,
		`INSERT INTO odoo.crm_tag_rel SELECT g, 1 + g % 2 FROM generate_series(100, 159, 3) g`); err != nil {
		return err
	}
	for i := 0; i < 15; i++ {
		pause(r)
		owner := fmt.Sprint(1 + r.IntN(10))
		if i%4 == 3 {
			owner = "NULL"
		}
		stmts := []string{
			fmt.Sprintf(`UPDATE odoo.crm_lead SET user_id = %s WHERE id >= 100 AND id %% 6 = %d`, owner, i%6),
			fmt.Sprintf(`UPDATE odoo.crm_lead SET expected_revenue = expected_revenue + %d, priority = '%d', date_deadline = date_deadline + 30,
				team_id = %d WHERE id %% 5 = %d`, 500*r.IntN(20), r.IntN(4), 1+r.IntN(2), i%5),
			fmt.Sprintf(`UPDATE odoo.crm_lead SET partner_id = %d WHERE id >= 100 AND id %% 7 = %d`, []int{1, 2, 4, 7, 101, 201, 210}[r.IntN(7)], i%7),
			fmt.Sprintf(`INSERT INTO odoo.crm_tag_rel SELECT id, 1 FROM odoo.crm_lead WHERE id %% 4 = %d ON CONFLICT DO NOTHING`, i%4),
			fmt.Sprintf(`DELETE FROM odoo.crm_tag_rel WHERE tag_id = 1 AND lead_id %% 5 = %d`, r.IntN(5)),
		}
		switch i {
		case 2:
			stmts = append(stmts, `UPDATE odoo.crm_lead SET type = 'opportunity', partner_id = 2 WHERE type = 'lead' AND id % 2 = 0`) // converted
		case 5:
			stmts = append(stmts, `UPDATE odoo.crm_lead SET active = false, "Stage" = 'Lost' WHERE id IN (1, 110, 111, 9)`) // lost / archived
		case 7:
			stmts = append(stmts, `UPDATE odoo.crm_lead SET active = true WHERE id IN (6, 110)`) // restored
		case 9:
			stmts = append(stmts, `DELETE FROM odoo.crm_lead WHERE id IN (120, 121, 8)`)
		case 11:
			stmts = append(stmts, `UPDATE odoo.crm_lead SET id = id + 1000 WHERE id IN (130, 131)`) // tags follow by cascade
		case 12:
			stmts = append(stmts, `UPDATE odoo.crm_lead SET type = 'lead' WHERE id = 2`) // back to a lead
		case 13:
			stmts = append(stmts, `TRUNCATE odoo.crm_tag_rel`, `INSERT INTO odoo.crm_tag_rel SELECT id, 1 FROM odoo.crm_lead WHERE id % 3 = 1`)
		}
		if err := txIso(ctx, app, pgx.RepeatableRead, stmts...); err != nil {
			return err
		}
	}
	return nil
}

// crm3Cases COPYs SuiteCRM cases with uuid-string ids, reassigns them (to
// the queue, to unknown users), changes priorities (the generated rank
// follows), soft-deletes and restores some, moves them between accounts,
// and hard-deletes some.
func crm3Cases(ctx context.Context, app *pgxpool.Pool, r *mrand.Rand) error {
	if err := crm3WaitCompanies(ctx, app, r); err != nil {
		return err
	}
	var rows [][]any
	for g := 0; g < 60; g++ {
		id := fmt.Sprintf("a1b2c3d4-0000-4000-8000-%012d", g)
		owner := []any{"5", "6", "Support Queue", "3", "2", "999", nil, ""}[g%8]
		var acct any = int32([]int{1, 2, 4, 6, 7, 200, 215, 239}[g%8])
		if g%9 == 0 {
			acct = nil
		}
		rows = append(rows, []any{id, fmt.Sprintf("Case %d", g), acct, owner, []string{"P1", "P2", "P3"}[g%3], "New", int16(0),
			time.Date(2026, time.Month(1+g%12), 1+g%28, 9, 0, 0, 0, time.UTC)})
	}
	if _, err := app.CopyFrom(ctx, pgx.Identifier{"SuiteCRM", "Cases"},
		[]string{"id", "name", "account_id", "assigned_user_id", "priority", "status", "deleted", "date_entered"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("copy cases: %w", err)
	}
	for i := 0; i < 15; i++ {
		pause(r)
		stmts := []string{
			fmt.Sprintf(`UPDATE "SuiteCRM"."Cases" SET assigned_user_id = (ARRAY['5', '6', 'Support Queue', '3'])[%d] WHERE right(id, 1) = '%d'`, 1+r.IntN(4), i%10),
			fmt.Sprintf(`UPDATE "SuiteCRM"."Cases" SET priority = (ARRAY['P1', 'P2', 'P3'])[%d], status = 'Assigned' WHERE right(id, 2) < '%02d'`, 1+r.IntN(3), 10+r.IntN(50)),
			fmt.Sprintf(`UPDATE "SuiteCRM"."Cases" SET deleted = 1 - deleted WHERE right(id, 1) = '%d'`, r.IntN(10)),
			fmt.Sprintf(`UPDATE "SuiteCRM"."Cases" SET account_id = %d WHERE right(id, 2) = '%02d'`, []int{1, 2, 3, 4, 7, 220}[r.IntN(6)], r.IntN(60)),
		}
		switch i {
		case 6:
			stmts = append(stmts, `DELETE FROM "SuiteCRM"."Cases" WHERE id IN ('a1b2c3d4-0000-4000-8000-000000000011', 'a1b2c3d4-0000-4000-8000-000000000012')`)
		case 9:
			stmts = append(stmts, `UPDATE "SuiteCRM"."Cases" SET assigned_user_id = '4' WHERE assigned_user_id = '999'`)
		}
		if err := txIso(ctx, app, pgx.Serializable, stmts...); err != nil {
			return err
		}
	}
	return nil
}

// crm3Users changes users: a new salesperson, a role change, a
// deactivation and reactivation, a portal flag, an unknown role fixed.
func crm3Users(ctx context.Context, app *pgxpool.Pool, r *mrand.Rand) error {
	steps := [][]string{
		{`INSERT INTO odoo.res_users VALUES (11, 'sp4', 'Salesperson', false, true)`},
		{`UPDATE odoo.res_partner SET user_id = 11 WHERE id IN (202, 203)`, `UPDATE odoo.crm_lead SET user_id = 11 WHERE id = 101`},
		{`UPDATE odoo.res_users SET "Sales Role" = 'Sales Manager' WHERE id = 4`},
		{`UPDATE odoo.res_users SET active = false WHERE id = 6`},
		{`UPDATE odoo.res_users SET "Sales Role" = 'Salesperson' WHERE id = 9`}, // the unknown role fixed
		{`UPDATE odoo.res_users SET share = true, "Sales Role" = 'Portal' WHERE id = 10`, `UPDATE odoo.res_users SET active = true WHERE id = 10`},
		{`UPDATE odoo.res_users SET active = true WHERE id = 6`, `UPDATE odoo.res_users SET login = login || '_x'`},
		{`UPDATE odoo.res_users SET active = true WHERE id = 8`},
	}
	for _, s := range steps {
		pause(r)
		pause(r)
		if err := txIso(ctx, app, pgx.ReadCommitted, s...); err != nil {
			return err
		}
	}
	return nil
}

// crm3RLS installs recalc's policies, as documented, on the cases table
// (attached directly) and on the base tables of the view-attached
// companies and opportunities, and reads them as a non-superuser
// application role for every user: each must see exactly the rows the
// oracle gives it read access to.
func (b *bundle) crm3RLS(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	web := "crm3_web_" + b.appRole[len("attach_app_"):]
	testdb.DropRoles(t, b.url, web)
	b.exec(t, b.admin,
		`CREATE ROLE `+ident(web)+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`,
		`GRANT CONNECT ON DATABASE `+ident(dbName(t, b.url))+` TO `+ident(web),
		// docs/attach.md "Limits": the engine re-reads an attached table under RLS only with BYPASSRLS.
		`ALTER ROLE `+ident(b.engineRole)+` BYPASSRLS`,
		// docs/rls.md "Who runs it": the table's owner, while the engine role is granted to it.
		`GRANT `+ident(b.engineRole)+` TO `+ident(b.appRole))
	b.exec(t, b.app, `GRANT USAGE ON SCHEMA odoo, "SuiteCRM" TO `+ident(web),
		`GRANT SELECT ON ALL TABLES IN SCHEMA odoo, "SuiteCRM" TO `+ident(web))
	if out, err := b.recalc("grant", "reader", web); err != nil {
		t.Fatalf("recalc grant reader: %v\n%s", err, out)
	}
	webPool := openPool(t, dburl.WithUser(b.url, web))

	type protected struct{ flag, table, object string }
	tables := []protected{
		{"SuiteCRM.Cases", `"SuiteCRM"."Cases"`, "case"},
		{"odoo.res_partner", "odoo.res_partner", "account"},
		{"odoo.crm_lead", "odoo.crm_lead", "opportunity"},
	}
	check := func(after string, perUser bool) {
		t.Helper()
		m, _, _ := b.crm3Model(t, true)
		readable := map[string]map[string][]string{} // object -> user -> app ids
		for _, row := range oracle.Access(m) {
			if readable[row.Object] == nil {
				readable[row.Object] = map[string][]string{}
			}
			readable[row.Object][row.User] = append(readable[row.Object][row.User], strings.TrimPrefix(row.Record, row.Object+":"))
		}
		users := []string{"", "999"}
		for _, u := range m.Users {
			users = append(users, u.ID)
		}
		for _, tb := range tables {
			seen := 0
			for _, u := range users {
				want := sortedIDs(readable[tb.object][u])
				seen += len(want)
				var got []string
				err := pgx.BeginFunc(ctx, webPool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, u); err != nil {
						return err
					}
					rows, err := tx.Query(ctx, `SELECT id::text FROM `+tb.table)
					if err != nil {
						return err
					}
					got, err = pgx.CollectRows(rows, pgx.RowTo[string])
					return err
				})
				if err != nil {
					t.Errorf("%s: reading %s as user %q: %v", after, tb.table, u, err)
					continue
				}
				if got = sortedIDs(got); !slices.Equal(got, want) {
					t.Errorf("%s (per-user %v): user %q sees %v in %s, the oracle gives %v", after, perUser, u, got, tb.table, want)
				}
			}
			if seen == 0 {
				t.Errorf("%s: no user may read a row of %s: the check is vacuous", after, tb.table)
			}
		}
	}
	for _, perUser := range []bool{false, true} {
		for _, tb := range tables {
			args := []string{"rls", "enable", "--table", tb.flag, "--object", tb.object, "--user-setting", "app.user_id"}
			if perUser {
				args = append(args, "--per-user-plans")
			}
			out, errOut, err := b.recalcAs(b.appRole, args...)
			if err != nil {
				t.Fatalf("recalc rls enable %s as the table's owner: %v\n%s\n%s", tb.flag, err, out, errOut)
			}
			t.Logf("rls enable %s (per-user %v): %s %s", tb.flag, perUser, strings.TrimSpace(out), strings.TrimSpace(errOut))
		}
		check("after rls enable", perUser)
	}
	b.exec(t, b.admin, `REVOKE `+ident(b.engineRole)+` FROM `+ident(b.appRole)) // docs/rls.md: revoked afterwards

	// The application keeps writing, as the tables' owner (which bypasses
	// the policies without --force); the engine absorbs under RLS.
	b.exec(t, b.app,
		`UPDATE "SuiteCRM"."Cases" SET assigned_user_id = '3' WHERE id = '5f0c2a8e-1b7c-4c0e-9d3a-000000000001'`,
		`UPDATE odoo.res_partner SET user_id = 4 WHERE id = 1`,
		`INSERT INTO odoo.crm_lead (id, name, type, partner_id, user_id) VALUES (5000, 'After RLS', 'opportunity', 2, 7)`)
	if _, err := b.recalc("run"); err != nil {
		t.Fatalf("recalc run: %v", err)
	}
	b.checkAbsorbed(t, "after writes under RLS")
	b.crm3Check(t, "after writes under RLS", true)
	check("after writes under RLS", true)

	// `recalc watch` (README: "materialize each commit within
	// milliseconds") and read-your-writes (docs/attach.md): the
	// application writes, then waits on a token of its own.
	if out, err := b.recalc("grant", "reader", b.appRole); err != nil {
		t.Fatalf("recalc grant reader: %v\n%s", err, out)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	var werr bytes.Buffer
	go func() {
		app := cli.App(new(bytes.Buffer), &werr)
		app.ExitErrHandler = func(*ucli.Context, error) {}
		done <- testkit.RunApp(wctx, app, []string{"recalc", "--database-url", dburl.WithUser(b.url, b.engineRole), "--log-format", "json", "watch"})
	}()
	for i, stmts := range [][]string{
		{`UPDATE odoo.res_partner SET user_id = 5 WHERE id = 2`, `UPDATE odoo.res_partner SET parent_id = 2 WHERE id = 101`},
		{`UPDATE odoo.crm_lead SET user_id = NULL WHERE id = 7`, `INSERT INTO odoo.crm_tag_rel VALUES (4, 1) ON CONFLICT DO NOTHING`},
		{`UPDATE odoo.res_partner SET active = false WHERE id = 4`, `UPDATE "SuiteCRM"."Cases" SET deleted = 1, priority = 'P1' WHERE id LIKE '%000000000003'`},
		{`UPDATE odoo.res_users SET "Sales Role" = 'Support' WHERE id = 3`},
		{`INSERT INTO odoo.res_partner (name, is_company, user_id, properties) VALUES ('Fresh Inc', true, 3, '{"tier": "gold"}')`},
	} {
		err := pgx.BeginFunc(ctx, b.app, func(tx pgx.Tx) error {
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return fmt.Errorf("%s: %w", s, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if _, err := b.app.Exec(ctx, `SELECT recalc.wait_fresh(recalc.fresh_token(), interval '30 s')`); err != nil {
			stop()
			t.Fatalf("watch step %d: wait_fresh as the application: %v\nwatch: %s", i, err, werr.String())
		}
		t.Logf("watch step %d fresh after %v", i, time.Since(began))
		b.crm3Check(t, fmt.Sprintf("with recalc watch, after step %d", i), true)
	}
	check("with recalc watch", true)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("recalc watch: %v\n%s", err, werr.String())
	}
}
