package attach_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// storedUsers reads the stored users section by id.
func storedUsers(t *testing.T, b *bundle) map[string]map[string]any {
	t.Helper()
	var doc string
	if err := b.admin.QueryRow(context.Background(), `SELECT doc::text FROM recalc.model_section WHERE name = 'users'`).Scan(&doc); err != nil {
		t.Fatal(err)
	}
	var us []map[string]any
	if err := json.Unmarshal([]byte(doc), &us); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, u := range us {
		out[u["id"].(string)] = u
	}
	return out
}

// storedActive reports whether the stored users section has id as an
// active user.
func storedActive(t *testing.T, b *bundle, id string) bool {
	t.Helper()
	u, ok := storedUsers(t, b)[id]
	if !ok {
		return false
	}
	a, has := u["active"]
	return !has || a == true
}

// levelOf is recalc.access_level(user, record) as the admin.
func levelOf(t *testing.T, b *bundle, user, record string) string {
	t.Helper()
	var l string
	if err := b.admin.QueryRow(context.Background(), `SELECT recalc.access_level($1, $2)`, user, record).Scan(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

// tempFile writes content to a temporary file.
func tempFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "f.json")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestUsersViewDuplicateID: a users view (allowed, with capture) may yield
// one id twice (a user with two e-mail addresses). Such rows are no user,
// as an object view's are no record, and the other users' changes, a
// deactivation included, still apply (an upsert of both rows failed with
// SQLSTATE 21000 and left every later change unapplied).
func TestUsersViewDuplicateID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	eng := ident(b.engineRole)
	b.exec(t, b.app,
		`ALTER TABLE crm.app_user ADD COLUMN role_id text, ADD COLUMN kind text, ADD COLUMN active boolean DEFAULT true`,
		`UPDATE crm.app_user SET role_id = CASE id WHEN 'alice' THEN 'ceo' WHEN 'bob' THEN 'east' WHEN 'carol' THEN 'east'
		     WHEN 'dave' THEN 'west' WHEN 'erin' THEN 'west' END`,
		`CREATE TABLE crm.user_email (email text PRIMARY KEY, user_id text NOT NULL REFERENCES crm.app_user)`,
		`GRANT SELECT, TRIGGER ON crm.app_user, crm.user_email TO `+eng)
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.user_v AS
		SELECT u.id, u.role_id, u.kind, u.active, e.email FROM crm.app_user u LEFT JOIN crm.user_email e ON e.user_id = u.id`)
	spec := strings.TrimSuffix(strings.TrimSpace(crmSpec), "}") +
		`, "users": {"table": "crm_recalc.user_v", "id": "id", "role": "role_id", "type": "kind", "active": "active",
		  "capture": [{"table": "crm.app_user", "id": "id"}, {"table": "crm.user_email", "id": "user_id"}]}}`
	b.mustAttach(t, spec)
	b.run(t)
	if !storedActive(t, b, "carol") {
		t.Fatal("carol is not active after attaching the users view")
	}
	// bob gets two addresses and moves to west; carol is deactivated.
	b.exec(t, b.app,
		`INSERT INTO crm.user_email VALUES ('bob@a', 'bob'), ('bob@b', 'bob')`,
		`UPDATE crm.app_user SET active = false WHERE id = 'carol'`,
		`UPDATE crm.app_user SET role_id = 'west' WHERE id = 'bob'`)
	b.run(t)
	b.run(t)
	var stuck string
	_ = b.admin.QueryRow(context.Background(), `SELECT coalesce((SELECT error_code FROM recalc.attach_stuck WHERE object = 'users'), '')`).Scan(&stuck)
	if storedActive(t, b, "carol") {
		t.Errorf("carol, deactivated in the users table, is still an active user (users absorb stuck: %q); a duplicated id in the users view blocks every user change", stuck)
	}
}

// TestAttachEmptyUsersTable: attaching an empty users table (or one whose
// ids are all NULL) replaces the imported users: the table is the source
// of truth, and holds none of them.
func TestAttachEmptyUsersTable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app,
		`CREATE TABLE crm.staff (id text PRIMARY KEY, role_id text, active boolean)`,
		`GRANT SELECT, TRIGGER ON crm.staff TO `+ident(b.engineRole))
	spec := strings.TrimSuffix(strings.TrimSpace(crmSpec), "}") +
		`, "users": {"table": "crm.staff", "id": "id", "role": "role_id", "active": "active"}}`
	b.mustAttach(t, spec)
	b.run(t)
	b.run(t)
	if storedActive(t, b, "alice") {
		t.Errorf("the attached users table is empty, yet alice is still an active user (users section never rebuilt): %v", storedUsers(t, b)["alice"])
	}
	if l := levelOf(t, b, "alice", "account:1"); l != "none" {
		t.Errorf("alice, whom the empty attached users table does not hold, reads account:1 at %q, want none", l)
	}
}

// TestTeamUserDeletedFromUsersTable: a team entry (or a manual share) may
// name an attached user; once the users table deletes that user, the
// rebuilt users section keeps it as an inactive stub, so that later
// imports do not fail on the stored team entry.
func TestTeamUserDeletedFromUsersTable(t *testing.T) {
	t.Parallel()
	b := setupUsersRun(t)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"teams": [{"record": "account:1", "user": "zed", "access": "edit"}]}`)); err != nil {
		t.Fatalf("merge import of a team entry for zed: %v", err)
	}
	b.run(t)
	if l := levelOf(t, b, "zed", "account:1"); l != "edit" {
		t.Fatalf("zed on account:1 through the team: %q, want edit", l)
	}
	b.exec(t, b.app, `DELETE FROM crm.app_user WHERE id = 'zed'`)
	b.run(t)
	if l := levelOf(t, b, "zed", "account:1"); l != "none" {
		t.Errorf("zed, deleted from the users table, still has %q on account:1", l)
	}
	// An unrelated import: the roles as they are.
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"roles": [{"id": "ceo"}, {"id": "east", "parent": "ceo", "opportunity_access": "read", "case_access": "edit"}, {"id": "west", "parent": "ceo"}]}`)); err != nil {
		t.Errorf("an unrelated import after the users table deleted a team member: %v", err)
	}
}

// TestAccessByIDWrongObject: for an object that is not attached,
// `recalc access --object O --id ID` (and explain) refuses a record of
// another object, as recalc.access_level(user, O, ID) says none.
func TestAccessByIDWrongObject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"records": [{"object": "account", "id": "a1", "owner": "bob"}]}`)); err != nil {
		t.Fatalf("import a record: %v", err)
	}
	b.run(t)
	var sqlLevel string
	if err := b.admin.QueryRow(context.Background(), `SELECT recalc.access_level('bob', 'contact', 'a1')`).Scan(&sqlLevel); err != nil {
		t.Fatal(err)
	}
	out, err := b.recalc("access", "--user", "bob", "--object", "contact", "--id", "a1")
	if err == nil && strings.TrimSpace(out) != sqlLevel {
		t.Errorf("recalc access --user bob --object contact --id a1 (a1 is an account): %q, want an error or %q as recalc.access_level('bob', 'contact', 'a1') says", strings.TrimSpace(out), sqlLevel)
	}
	if out, err := b.recalc("explain", "--user", "bob", "--object", "contact", "--id", "a1"); err == nil {
		t.Errorf("recalc explain --object contact --id a1 explains account a1:\n%s", out)
	}
}

// TestQueueShadowsAttachedUser: while the users are attached, an import
// that adds a queue with the id of an attached user is refused, as the
// model refuses a queue sharing a user's id: the user would disappear and
// the queue's members get the records the user owns.
func TestQueueShadowsAttachedUser(t *testing.T) {
	t.Parallel()
	b := setupUsersRun(t)
	if l := levelOf(t, b, "zed", "case:1"); l != "none" {
		t.Fatalf("zed on case:1 before: %q, want none", l)
	}
	_, err := b.recalc("import", "--merge", tempFile(t, `{"groups": [{"id": "erin", "queue": true, "members": ["user:zed"]}]}`))
	if err == nil {
		b.run(t)
		_, erin := storedUsers(t, b)["erin"]
		t.Errorf("an import adding queue %q, the id of an attached user, was accepted: erin still a user %v; zed on case:1 (erin's) now %q",
			"erin", erin, levelOf(t, b, "zed", "case:1"))
	}
}

// TestTextIDIsCanonical: access_level(user, object, text) and `recalc
// access --object --id` read the text as the id column's type: an
// upper-case uuid and a bigint written 01 find their records.
func TestTextIDIsCanonical(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	var byInt, byText string
	if err := b.admin.QueryRow(context.Background(),
		`SELECT recalc.access_level('bob', 'account', 1::bigint), recalc.access_level('bob', 'account', '01')`).Scan(&byInt, &byText); err != nil {
		t.Fatal(err)
	}
	if byInt != byText {
		t.Errorf("access_level('bob', 'account', 1) = %q but access_level('bob', 'account', '01') = %q: the text form is not read as the id column's type", byInt, byText)
	}
}

// TestAttachUsersWhileWatching: `recalc attach` with a users entry logs a
// section change, so a running `recalc watch` (engine.Live, loaded)
// rebuilds the users section at its next step, with no other write.
func TestAttachUsersWhileWatching(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttachedNotRun(t)
	live := engine.NewLive(engine.Options{}, 1000)
	for range 2 {
		if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	}
	b.exec(t, b.app,
		`ALTER TABLE crm.app_user ADD COLUMN role_id text, ADD COLUMN kind text, ADD COLUMN active boolean DEFAULT true`,
		`UPDATE crm.app_user SET role_id = CASE id WHEN 'alice' THEN 'ceo' WHEN 'bob' THEN 'east' WHEN 'carol' THEN 'east'
		     WHEN 'dave' THEN 'west' WHEN 'erin' THEN 'west' END`,
		`UPDATE crm.app_user SET active = false WHERE id = 'bob'`,
		`GRANT SELECT, TRIGGER ON crm.app_user TO `+ident(b.engineRole))
	b.mustAttach(t, usersSpec)
	for range 2 {
		if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	}
	if storedActive(t, b, "bob") {
		t.Errorf("bob, inactive in the users table just attached, is still an active user after live steps (attached_users_state dirty, but the step was idle)")
	}
}

// TestUsersHugeTypeFailsClosed: a users row whose type is over jsonb's
// string limit makes that user inactive; every other users change, a
// deactivation included, still applies (the users absorb failed at every
// try before migration 028).
func TestUsersHugeTypeFailsClosed(t *testing.T) {
	t.Parallel()
	b := setupUsersRun(t) // crm.app_user given a role, a type and an active column, attached with usersSpec, and a run
	b.exec(t, b.app, `UPDATE crm.app_user SET kind = repeat('x', 270000000) WHERE id = 'dave'`,
		`UPDATE crm.app_user SET active = false WHERE id = 'carol'`)
	b.run(t)
	var stuck string
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(string_agg(object, ','), '') FROM recalc.attach_stuck`).Scan(&stuck); err != nil {
		t.Fatal(err)
	}
	if stuck != "" || storedActive(t, b, "carol") || storedActive(t, b, "dave") || !storedActive(t, b, "bob") {
		t.Errorf("stuck %q; active carol %v, dave %v, bob %v; want nothing stuck, carol deactivated, dave inactive (unknown type), bob active",
			stuck, storedActive(t, b, "carol"), storedActive(t, b, "dave"), storedActive(t, b, "bob"))
	}
}

// TestAttachUsersUnreadableRowFailsClosedAlone: a users row that the users
// view cannot read (its cast does not fit the row's value) becomes an
// inactive user with no role, alone: the other users' changes go on being
// absorbed, no object is stuck, and the corrected row is read as it is.
func TestAttachUsersUnreadableRowFailsClosedAlone(t *testing.T) {
	t.Parallel()
	b := setupFlagUsers(t, `SELECT u.id, u.role_id, (u.flag)::boolean AS active FROM crm.app_user u`)
	ctx := context.Background()
	check := func(when, bobActive, carolRole, bobLevel string) {
		t.Helper()
		b.run(t)
		var active, role, stuck, level string
		if err := b.admin.QueryRow(ctx, `SELECT coalesce((SELECT active::text FROM recalc.attached_user WHERE id = 'bob'), 'null'),
				(SELECT role FROM recalc.attached_user WHERE id = 'carol'),
				(SELECT coalesce(string_agg(object || ' ' || error_code, ','), '') FROM recalc.attach_stuck),
				recalc.access_level('bob', 'account:1')`).Scan(&active, &role, &stuck, &level); err != nil {
			t.Fatal(err)
		}
		if active != bobActive || role != carolRole || stuck != "" || level != bobLevel {
			t.Errorf("%s: bob active %s, carol's role %s, stuck objects %q, bob's access to his account:1 %s; want %s, %s, none stuck, %s",
				when, active, role, stuck, level, bobActive, carolRole, bobLevel)
		}
	}
	check("attached", "true", "east", "all")
	b.exec(t, b.app, `UPDATE crm.app_user SET flag = 'maybe' WHERE id = 'bob'`, `UPDATE crm.app_user SET role_id = 'west' WHERE id = 'carol'`)
	check("with bob's row unreadable", "null", "west", "none")
	b.exec(t, b.app, `UPDATE crm.app_user SET flag = 'yes' WHERE id = 'bob'`)
	check("once corrected", "true", "west", "all")
}

// setupFlagUsers is setup with crm.app_user given a role and a text flag
// ('true'), and attached, beside crmSpec's objects, through the view
// crm_recalc.users_x defined as view (its id, role_id and active
// columns): a copy of a template made once per view (setupPrepared), as
// three tests take the same view, and two another.
func setupFlagUsers(t *testing.T, view string) *bundle {
	t.Helper()
	return setupPrepared(t, "flag users\x00"+view, func(t *testing.T, b *bundle) { attachFlagUsers(t, b, view) })
}

// attachFlagUsers is setupFlagUsers's preparation of b.
func attachFlagUsers(t *testing.T, b *bundle, view string) {
	t.Helper()
	b.exec(t, b.app,
		`ALTER TABLE crm.app_user ADD COLUMN role_id text, ADD COLUMN flag text DEFAULT 'true'`,
		`UPDATE crm.app_user SET role_id = CASE id WHEN 'alice' THEN 'ceo' WHEN 'bob' THEN 'east' WHEN 'carol' THEN 'east' ELSE 'west' END`,
		`GRANT SELECT, TRIGGER ON crm.app_user TO `+ident(b.engineRole))
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.users_x AS `+view)
	b.mustAttach(t, strings.TrimSuffix(strings.TrimSpace(crmSpec), "}")+
		`, "users": {"table": "crm_recalc.users_x", "id": "id", "role": "role_id", "active": "active", "capture": [{"table": "crm.app_user", "id": "id"}]}}`)
}

// inactiveUsers lists the attached users that are not active, by id.
func (b *bundle) inactiveUsers(t *testing.T) string {
	t.Helper()
	var ids string
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(string_agg(id, ',' ORDER BY id), '') FROM recalc.attached_user WHERE active IS NOT TRUE`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestUsersViewCapturesATableOfAnotherKey: a users view may read a table
// whose rows belong to several users, such as the application's roles
// (vtiger's vtiger_role, SuiteCRM's acl_roles), keyed by a column of
// another type than the users' id. The users' source is read whole at
// every absorb, so the capture id column only marks that the table was
// written: attach took any id type there, and a role renamed in that table
// moves its users.
func TestUsersViewCapturesATableOfAnotherKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	eng := ident(b.engineRole)
	b.exec(t, b.app,
		`CREATE TABLE crm.app_role (id integer PRIMARY KEY, name text NOT NULL)`,
		`INSERT INTO crm.app_role VALUES (1, 'ceo'), (2, 'east'), (3, 'west')`,
		`ALTER TABLE crm.app_user ADD COLUMN role_ref integer REFERENCES crm.app_role, ADD COLUMN active boolean DEFAULT true`,
		`UPDATE crm.app_user SET role_ref = CASE id WHEN 'alice' THEN 1 WHEN 'bob' THEN 2 WHEN 'carol' THEN 2
		     WHEN 'dave' THEN 3 WHEN 'erin' THEN 3 END`,
		`GRANT SELECT, TRIGGER ON crm.app_user, crm.app_role TO `+eng)
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.user_r AS
		SELECT u.id, r.name AS role_id, u.active FROM crm.app_user u LEFT JOIN crm.app_role r ON r.id = u.role_ref`)
	spec := strings.TrimSuffix(strings.TrimSpace(crmSpec), "}") +
		`, "users": {"table": "crm_recalc.user_r", "id": "id", "role": "role_id", "active": "active",
		  "capture": [{"table": "crm.app_user", "id": "id"}, {"table": "crm.app_role", "id": "id"}]}}`
	b.mustAttach(t, spec)
	b.run(t)
	if r := storedUsers(t, b)["bob"]["role"]; r != "east" {
		t.Fatalf("bob's role after attaching the users view: %v, want east", r)
	}
	// The application points its role 2 at the model's west.
	b.exec(t, b.app, `UPDATE crm.app_role SET name = 'west' WHERE id = 2`)
	b.run(t)
	if r := storedUsers(t, b)["bob"]["role"]; r != "west" {
		t.Errorf("bob's role after his role was renamed in the roles table: %v, want west", r)
	}
}

// TestExportOfAttachedUsersImportsBack: `recalc export` writes the users as
// rebuilt from the attached table, and importing the file it wrote is a
// no-op (README, "Seeing and editing the stored model"), whole or with
// --merge: a users section equal to the attached users is taken. One that
// differs is still refused, saying to write the table.
func TestExportOfAttachedUsersImportsBack(t *testing.T) {
	t.Parallel()
	b := setupUsersRun(t)
	doc, err := b.recalc("export")
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	f := tempFile(t, doc)
	if _, err := b.recalc("import", f); err != nil {
		t.Errorf("importing the file recalc export wrote, with the users attached: %v", err)
	}
	if _, err := b.recalc("import", "--merge", f); err != nil {
		t.Errorf("merging the file recalc export wrote, with the users attached: %v", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(m["users"]), `"id": "bob"`, `"id": "bob", "type": "external"`, 1)
	if changed == string(m["users"]) {
		t.Fatalf("the exported users section does not name bob as expected: %s", m["users"])
	}
	_, err = b.recalc("import", "--merge", tempFile(t, `{"users": `+changed+`}`))
	if err == nil || !strings.Contains(err.Error(), "the users are attached") {
		t.Errorf("a changed users section was not refused as attached: %v", err)
	}
}

// TestUsersOversizedValuesFailClosed: the application writes its users
// table with any values, and the users table is read whole at each absorb.
// A row whose id is over 1 KiB (here through a view keyed by a column with
// no unique index) is no user, one whose role is over 1 KiB is an inactive
// user with no role, and one whose type is over 1 KiB, however well it
// compresses, has the type '(over 1 KiB)': none of them is kept whole, and
// the other users' changes, a deactivation included, still apply. Before
// migration 63 the long id broke recalc.attached_user's index, so every
// absorb of the users failed (54000) and carol kept her access; long roles
// or types of some hundred megabytes took the whole read past PostgreSQL's
// 1 GB for a value, with the same effect.
func TestUsersOversizedValuesFailClosed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app,
		`ALTER TABLE crm.app_user ADD COLUMN role_id text, ADD COLUMN kind text, ADD COLUMN flag text DEFAULT 'true'`,
		`UPDATE crm.app_user SET role_id = CASE id WHEN 'alice' THEN 'ceo' WHEN 'bob' THEN 'east' WHEN 'carol' THEN 'east' ELSE 'west' END`,
		`GRANT SELECT, TRIGGER ON crm.app_user TO `+ident(b.engineRole))
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.users_x AS
		SELECT lower(u.name) AS id, u.role_id, u.kind, (u.flag)::boolean AS active FROM crm.app_user u`)
	b.mustAttach(t, strings.TrimSuffix(strings.TrimSpace(crmSpec), "}")+
		`, "users": {"table": "crm_recalc.users_x", "id": "id", "role": "role_id", "type": "kind", "active": "active", "capture": [{"table": "crm.app_user", "id": "id"}]}}`)
	b.run(t)
	b.exec(t, b.app,
		`INSERT INTO crm.app_user (id, name, role_id) SELECT 'x1', string_agg(md5(i::text), ''), 'east' FROM generate_series(1, 100) i`,
		`UPDATE crm.app_user SET role_id = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 40) i) WHERE id = 'dave'`,
		`UPDATE crm.app_user SET kind = repeat('x', 50000) WHERE id = 'erin'`,
		`UPDATE crm.app_user SET flag = 'false' WHERE id = 'carol'`)
	b.run(t)
	var stuck, longest, daveRole, erinType string
	if err := b.admin.QueryRow(context.Background(), `SELECT
			(SELECT coalesce(string_agg(object || ' ' || coalesce(error_code, ''), ','), '') FROM recalc.attach_stuck),
			(SELECT coalesce(max(greatest(octet_length(id), octet_length(role), octet_length(type))), 0)::text FROM recalc.attached_user),
			(SELECT coalesce(role, 'null') FROM recalc.attached_user WHERE id = 'dave'),
			(SELECT coalesce(type, 'null') FROM recalc.attached_user WHERE id = 'erin')`).Scan(&stuck, &longest, &daveRole, &erinType); err != nil {
		t.Fatal(err)
	}
	if stuck != "" || longest != "12" || daveRole != "null" || erinType != "(over 1 KiB)" {
		t.Errorf("stuck %q, longest attached value %s bytes, dave's role %.20q, erin's type %.20q; want nothing stuck, 12 bytes ('(over 1 KiB)'), null, (over 1 KiB)",
			stuck, longest, daveRole, erinType)
	}
	if storedActive(t, b, "carol") || storedActive(t, b, "dave") || !storedActive(t, b, "bob") || len(storedUsers(t, b)) != 7 {
		t.Errorf("active carol %v, dave %v, bob %v; %d users; want carol deactivated, dave inactive (role over 1 KiB), bob active, the 7 users and no other",
			storedActive(t, b, "carol"), storedActive(t, b, "dave"), storedActive(t, b, "bob"), len(storedUsers(t, b)))
	}
}
