package attach_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/attach"
	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/schema"
)

// TestParseBounds: the spec file is untrusted; its shape and bounds are
// checked before the database is asked anything.
func TestParseBounds(t *testing.T) {
	t.Parallel()
	many := `{"objects": [` + strings.Repeat(`{"object": "a", "table": "s.t", "id": "id", "owner": "o"},`, attach.MaxObjects) + `{}]}`
	fields := `{"objects": [{"object": "a", "table": "s.t", "id": "id", "owner": "o", "fields": ["f` +
		strings.Repeat(`", "f`, attach.MaxFields) + `"]}]}`
	for name, tc := range map[string]struct{ doc, want string }{
		"not json":        {`{"objects": [`, "not valid JSON"},
		"unknown key":     {`{"objects": [], "extra": 1}`, "unknown field"},
		"no objects":      {`{}`, `no "objects" list`},
		"trailing data":   {`{"objects": []} {}`, "data after"},
		"too many":        {many, "more than 100"},
		"too many fields": {fields, "more than 100"},
		"unqualified":     {`{"objects": [{"object": "a", "table": "t", "id": "id", "owner": "o"}]}`, "schema-qualified"},
		"two dots":        {`{"objects": [{"object": "a", "table": "sales.eu.account", "id": "id", "owner": "o"}]}`, "holds more than one dot"},
		"no owner":        {`{"objects": [{"object": "a", "table": "s.t", "id": "id"}]}`, "owner is required"},
		"long name":       {`{"objects": [{"object": "a", "table": "s.t", "id": "` + strings.Repeat("x", 64) + `", "owner": "o"}]}`, "more than PostgreSQL's 63"},
		"twice":           {`{"objects": [{"object": "a", "table": "s.t", "id": "id", "owner": "o"}, {"object": "a", "table": "s.u", "id": "id", "owner": "o"}]}`, "attached twice"},
		"field twice":     {`{"objects": [{"object": "a", "table": "s.t", "id": "id", "owner": "o", "fields": ["x", "x"]}]}`, "listed twice"},
		"capture strings": {`{"objects": [{"object": "a", "table": "s.t", "id": "id", "owner": "o", "capture": ["s.u"]}]}`, "not valid JSON"},
		"over 1 MiB":      {`{"objects": [], "x": "` + strings.Repeat("x", attach.MaxSpecBytes) + `"}`, "over 1048576 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := attach.Parse(strings.NewReader(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if s, err := attach.Parse(strings.NewReader(crmSpec)); err != nil || len(s.Objects) != 4 {
		t.Fatalf("Parse(crmSpec): %v", err)
	}
}

// TestAttachValidation: a spec the database contradicts is refused with one
// error saying what to do, and nothing is attached.
func TestAttachValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app, `CREATE TABLE crm.loose (id bigint, owner_id text, account_id bigint, data jsonb, ts tstzrange)`,
		`CREATE TABLE crm.float_id (id float8 PRIMARY KEY, owner_id text)`,
		`CREATE TABLE crm.secret (id bigint PRIMARY KEY, owner_id text)`,
		`CREATE TABLE crm."Deal" (id bigint PRIMARY KEY, "ownerId" text)`,
		`CREATE TYPE crm.mood AS ENUM ('calm')`, `ALTER TABLE crm.account ADD COLUMN mood crm.mood`,
		`CREATE TYPE crm.pair AS (a text, b text)`, `ALTER TABLE crm.account ADD COLUMN pair crm.pair`,
		`GRANT SELECT, TRIGGER ON crm.loose, crm.float_id TO `+ident(b.engineRole),
		`CREATE VIEW crm.app_view AS SELECT id, owner_id FROM crm.account`,
		`GRANT SELECT ON crm.app_view TO `+ident(b.engineRole),
		`CREATE TEXT SEARCH CONFIGURATION crm.words (COPY = pg_catalog.simple)`,
		`CREATE TEXT SEARCH DICTIONARY crm.stop (TEMPLATE = pg_catalog.simple)`)
	b.exec(t, b.engine, `CREATE FUNCTION crm_recalc.lower2(text) RETURNS text LANGUAGE sql AS 'SELECT lower($1)'`,
		`CREATE VIEW crm_recalc.fn_view AS SELECT id, crm_recalc.lower2(owner_id) AS owner_id FROM crm.account`,
		// The application's text search configuration and dictionary,
		// whose owner could change what the views show with no write.
		`CREATE VIEW crm_recalc.ts_view AS SELECT id, owner_id,
		   CASE WHEN to_tsvector('crm.words', industry) @@ to_tsquery('crm.words', 'tech') THEN 'tech' END AS industry FROM crm.account`,
		`CREATE VIEW crm_recalc.dict_view AS SELECT id, owner_id, array_to_string(ts_lexize('crm.stop', industry), ' ') AS industry FROM crm.account`,
		`CREATE VIEW crm_recalc.invoker_view WITH (security_invoker = true) AS SELECT id, owner_id FROM crm.account`,
		// A helper's view of a child that also read its parent's row of
		// the same table, to leave out children of deleted parents.
		`CREATE VIEW crm_recalc.field_view AS SELECT a.id, (a.pair).a AS owner_id FROM crm.account a`,
		`CREATE VIEW crm_recalc.twice_view AS SELECT a.id, a.owner_id FROM crm.account a
		   WHERE EXISTS (SELECT FROM crm.account p WHERE p.id = a.id - 1)`)
	acc := `{"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id"}`
	for name, tc := range map[string]struct{ entries, want string }{
		"unknown object": {`{"object": "lead", "table": "crm.account", "id": "id", "owner": "owner_id"}`, "not in the stored model"},
		"no table":       {`{"object": "account", "table": "crm.nope", "id": "id", "owner": "owner_id"}`, "does not exist"},
		"no column":      {`{"object": "account", "table": "crm.account", "id": "id", "owner": "boss"}`, `owner column "boss" does not exist`},
		"column case":    {`{"object": "account", "table": "crm.account", "id": "id", "owner": "Owner_ID"}`, `owner column "Owner_ID" does not exist in crm.account: did you mean "owner_id"? (names as the catalog spells them, unquoted and case-sensitive)`},
		// Names are as the catalog spells them, unquoted: a quoted or
		// case-folded table (Twenty's quoted camelCase) is told its name.
		"table case":         {`{"object": "account", "table": "crm.deal", "id": "id", "owner": "ownerId"}`, `table crm.deal does not exist (or is not visible to this role): did you mean "crm.Deal"? (names as the catalog spells them, unquoted and case-sensitive)`},
		"table quoted":       {`{"object": "account", "table": "crm.\"Deal\"", "id": "id", "owner": "ownerId"}`, `does not exist (or is not visible to this role): did you mean "crm.Deal"?`},
		"capture table case": {`{"object": "account", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.Contact", "id": "id"}]}`, `capture table crm.Contact does not exist (or is not visible to this role): did you mean "crm.contact"?`},
		"column quoted":      {`{"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "fields": ["\"industry\""]}`, `did you mean "industry"?`},
		"id type":            {`{"object": "account", "table": "crm.float_id", "id": "id", "owner": "owner_id"}`, "of type double precision, which recalc cannot read: use one of text, varchar, bpchar, bigint, integer, uuid"},
		"field type":         {`{"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "fields": ["updated_at", "territories"]}`, `field column "territories"`},
		"enum field":         {`{"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "fields": ["mood"]}`, `field column "mood" of crm.account is of type crm.mood, which recalc cannot read: use one of boolean, smallint, integer, bigint, numeric, real, double precision, text, varchar, bpchar, date, timestamp, timestamp with time zone, uuid (PostgreSQL's own types); for a type of the application's own (an enum, a domain), attach a view over crm.account that casts the column, such as "mood"::text AS "mood"`},
		"not unique":         {`{"object": "account", "table": "crm.loose", "id": "id", "owner": "owner_id"}`, "not unique"},
		"no privilege":       {`{"object": "account", "table": "crm.secret", "id": "id", "owner": "owner_id"}`, "GRANT SELECT"},
		"parent missing":     {acc + `, {"object": "case", "table": "support.case", "id": "id", "owner": "owner_id"}`, `give the column holding the parent's id`},
		"parent not needed":  {`{"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "parent": "id"}`, "no parent object"},
		"parent detached":    {`{"object": "case", "table": "support.case", "id": "id", "owner": "owner_id", "parent": "account_id"}`, `attach "account" too`},
		"territories":        {acc + `, {"object": "case", "table": "support.case", "id": "id", "owner": "owner_id", "parent": "account_id", "territories": "status"}`, "only accounts"},
		"view no capture":    {`{"object": "account", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id"}`, "list its base tables"},
		"view not owned":     {`{"object": "account", "table": "crm.app_view", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.account", "id": "id"}]}`, "must be owned by the role running recalc"},
		"view invoker":       {`{"object": "account", "table": "crm_recalc.invoker_view", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.account", "id": "id"}]}`, "security_invoker"},
		"view function":      {`{"object": "account", "table": "crm_recalc.fn_view", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.account", "id": "id"}]}`, "not PostgreSQL's own"},
		"view text search":   {`{"object": "account", "table": "crm_recalc.ts_view", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.account", "id": "id"}]}`, "view crm_recalc.ts_view uses text search configuration crm.words, which is not PostgreSQL's own"},
		"view dictionary":    {`{"object": "account", "table": "crm_recalc.dict_view", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.account", "id": "id"}]}`, "view crm_recalc.dict_view uses text search dictionary crm.stop, which is not PostgreSQL's own"},
		"view table missed":  {acc + `, {"object": "contact", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id", "parent": "account_id", "capture": [{"table": "crm.contact", "id": "id"}]}`, "does not list"},
		"capture key type":   {acc + `, {"object": "contact", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id", "parent": "account_id", "capture": [{"table": "crm.contact", "id": "id"}, {"table": "crm.contact_account", "id": "account_id"}]}`, "it must be of the type of the view's id column \"id\", uuid, as the ids it logs are read back as the view's; a cast in the view does not help (the capture reads the table's own column): alter one of the two columns so that they share a type (SuiteCRM keys every table char(36)), or leave crm.contact_account out of the view"},
		"view reads a field": {`{"object": "account", "table": "crm_recalc.field_view", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.account", "id": "id"}]}`, "reads a field of the composite type crm.pair"},
		"view reads twice":   {`{"object": "account", "table": "crm_recalc.twice_view", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.account", "id": "id"}]}`, "reads table crm.account 2 times"},
		"one table, two":     {acc + `, {"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id"}, {"object": "case", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id"}`, "crm.opportunity is already attached as opportunity"},
		"table capture":      {`{"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "capture": [{"table": "crm.contact", "id": "id"}]}`, "remove \"capture\""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := b.attach(t, `{"objects": [`+tc.entries+`]}`)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("attach: %v, want an error containing %q", err, tc.want)
			}
			b.checkNothingLeft(t)
		})
	}
}

// TestImportAndAttachedRecords: an import may not add or replace records of
// an attached object, and one with a records section keeps them; the
// records of other objects import as before.
func TestImportAndAttachedRecords(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	ctx := context.Background()
	for name, rec := range map[string]string{
		"attached object": `{"object": "account", "id": "a1", "owner": "bob"}`,
		"attached id":     `{"object": "case", "id": "account:1", "owner": "bob", "parent": "account:2"}`,
	} {
		_, err := testkit.ImportString(ctx, b.engine, `{"version": 1, "records": [`+rec+`]}`)
		if err == nil || !strings.Contains(err.Error(), "which is attached to") {
			t.Errorf("%s: import: %v, want a refusal naming the attached table", name, err)
		}
	}
	b.checkMirror(t, "after refused imports")
	// Detach cases; an import of case records replaces the cases only.
	if _, err := b.recalc("detach", "case"); err != nil {
		t.Fatalf("detach case: %v", err)
	}
	// A key of the form account:ID is the attached table's, even for a row not there yet.
	_, err := testkit.ImportString(ctx, b.engine, `{"version": 1, "records": [{"object": "case", "id": "account:77", "owner": "bob", "parent": "account:1"}]}`)
	if err == nil || !strings.Contains(err.Error(), "take the key of") {
		t.Errorf("import of a record keyed like an attached object's: %v, want a refusal", err)
	}
	if _, err := testkit.ImportString(ctx, b.engine, `{"version": 1, "records": [{"object": "case", "id": "k1", "owner": "bob", "parent": "account:1"}]}`); err != nil {
		t.Fatalf("import of a detached object's records: %v", err)
	}
	var n int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.record WHERE object = 'account'`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("attached accounts after an import with records: %d (%v), want 3", n, err)
	}
	b.run(t)
}

// TestImportBreakingAttachedRecordSaysWhere: an import that would break an
// attached record (dropping the user a row of the application's table names
// as owner) is refused, and the error says the record mirrors an attached
// table's row, so the fix may be there.
func TestImportBreakingAttachedRecordSaysWhere(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	_, err := testkit.ImportString(context.Background(), b.engine, `{"version": 1, "users": [{"id": "alice", "role": "ceo"}, {"id": "bob", "role": "east"},
		{"id": "dave", "role": "west"}, {"id": "erin", "role": "west"}, {"id": "frank"}]}`)
	if err == nil || !strings.Contains(err.Error(), `owner "carol" is neither a user nor a queue`) || !strings.Contains(err.Error(), "mirrors a row of an attached table") {
		t.Errorf("import dropping carol, who owns account 3: %v, want a refusal saying the record mirrors an attached table's row", err)
	}
	b.checkMirror(t, "after the refused import")
}

// TestSubscribedTableNotCaptured: PostgreSQL's apply worker of logical
// replication fires no statement trigger, so a table a subscription writes
// is not captured: once subscribed, its writes wait unabsorbed, and attach
// refuses it. (The subscription here has no slot and never runs: the table
// list is what counts.)
func TestSubscribedTableNotCaptured(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	b.exec(t, b.admin, `CREATE PUBLICATION recalc_test_pub FOR TABLE crm.account`)
	sub := "recalc_test_sub_" + b.appRole[len("attach_app_"):]
	b.exec(t, b.admin, `CREATE SUBSCRIPTION `+ident(sub)+` CONNECTION '`+strings.ReplaceAll(b.url, "'", "''")+`' PUBLICATION recalc_test_pub
		WITH (create_slot = false, enabled = false, slot_name = NONE)`)
	t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), `DROP SUBSCRIPTION IF EXISTS `+ident(sub)) })
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`)
	if rep := b.run(t); !slices.Equal(rep.NotAbsorbed, []string{"account"}) {
		t.Fatalf("a run once crm.account is subscribed: not absorbed %v, want account's writes to wait", rep.NotAbsorbed)
	}
	if _, err := b.attach(t, crmSpec); err == nil || !strings.Contains(err.Error(), "crm.account is written by a subscription of logical replication") {
		t.Fatalf("attach a subscribed table: %v, want it refused", err)
	}
}

// TestInitRestoresReaderPrivileges: a restore without privileges
// (pg_restore --no-acl) leaves recalc.attach_read, which runs the SQL it is
// given as the sandbox role, executable by PUBLIC, and takes the sandbox
// role's USAGE on the schema. `recalc init`, as the engine, makes the reader
// the engine's alone again (as its owner, the sandbox role), and writes are
// absorbed as before.
func TestInitRestoresReaderPrivileges(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	sandbox := ident(sandboxRole(b.engineRole))
	b.exec(t, b.admin, `GRANT EXECUTE ON FUNCTION recalc.attach_read(text, text[]) TO PUBLIC`,
		`REVOKE USAGE ON SCHEMA recalc FROM `+sandbox)
	ctx := context.Background()
	if _, err := schema.Migrate(ctx, b.engine); err != nil {
		t.Fatalf("init as the engine: %v", err)
	}
	var public, usage, engine bool
	if err := b.admin.QueryRow(ctx, `SELECT has_function_privilege('public', 'recalc.attach_read(text, text[])', 'EXECUTE'),
		has_schema_privilege($1, 'recalc', 'USAGE'), has_function_privilege($2, 'recalc.attach_read(text, text[])', 'EXECUTE')`,
		sandboxRole(b.engineRole), b.engineRole).Scan(&public, &usage, &engine); err != nil {
		t.Fatal(err)
	}
	if public || !usage || !engine {
		t.Fatalf("after init: attach_read executable by PUBLIC %v, by the engine %v; the sandbox may use schema recalc %v", public, engine, usage)
	}
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`)
	if rep := b.run(t); len(rep.NotAbsorbed) > 0 {
		t.Fatalf("after init, writes not absorbed: %v", rep.NotAbsorbed)
	}
	b.checkOracle(t, "after init restored the reader's privileges")
}

// TestAttachAsAnotherRoleSaysWhichRole: `recalc attach` must run as the
// role that owns schema recalc. A newcomer running it as a superuser got
// a read failure, SQLSTATE 42501, and a hint to check the table's rows and
// the view's casts (or, for a view, to give the view to the superuser);
// the error now names the role to connect as, and nothing changes.
func TestAttachAsAnotherRoleSaysWhichRole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := tempFile(t, crmSpec)
	var out, errOut bytes.Buffer
	app := cli.App(&out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {}
	err := testkit.RunApp(context.Background(), app, []string{"recalc", "--database-url", b.url, "--log-format", "json", "attach", f})
	want := "owned by " + b.engineRole
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("attach as a superuser that does not own schema recalc: %v, want an error naming the role to run as (%q)", err, want)
	}
	var n int
	if err := b.admin.QueryRow(context.Background(), `SELECT count(*) FROM recalc.attachment`).Scan(&n); err != nil || n != 0 {
		t.Errorf("attachments after the refused attach: %d (%v), want none", n, err)
	}
	if _, err := b.attach(t, crmSpec); err != nil {
		t.Errorf("attach as the engine role afterwards: %v", err)
	}
}

// TestRunAsAnotherRoleSaysWhichRole: once tables are attached, only schema
// recalc's owner may write their records. The first `recalc run` after
// `recalc attach` (and `recalc watch`, which retried forever) as a
// superuser that does not own the schema failed fixing family roots, with
// a hint to write the application table instead; it now names the role to
// run as.
func TestRunAsAnotherRoleSaysWhichRole(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t) // then `recalc run`, as the superuser
	b.exec(t, b.app, `INSERT INTO support."case" VALUES (9001, 1, 'alice', 1, 'New')`)
	var out, errOut bytes.Buffer
	app := cli.App(&out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {}
	err := testkit.RunApp(context.Background(), app, []string{"recalc", "--database-url", b.url, "--log-format", "json", "run"})
	want := "only schema recalc's owner, " + b.engineRole
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("run as a superuser that does not own schema recalc, with tables attached: %v, want an error naming the role to run as (%q)", err, want)
	}
	b.run(t)
}
