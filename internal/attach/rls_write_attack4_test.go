package attach_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// Fourth round of attacks on the write paths of row-level security on
// attached tables (bigint accounts and cases, uuid opportunities, a text-id
// contact table). Each test asserts the secure outcome, as docs/rls.md and
// SECURITY.md state it: a failing test is an attack that works.

// attack4Contacts attaches contacts to a plain table with text ids
// (crm.contact_t) instead of the view, adds dave's contact k1 under his
// account 2, gives bob edit on account 2 (a team entry: so edit on k1,
// which is controlled by its parent), and enables the write policies (with
// the owner policy) on the contact table.
func attack4Contacts(t *testing.T) (*bundle, string, protectedTable) {
	t.Helper()
	b, role := setupWritePolicies(t)
	b.exec(t, b.app, `CREATE TABLE crm.contact_t (id text PRIMARY KEY, owner_id text NOT NULL REFERENCES crm.app_user,
			title text, account_id bigint REFERENCES crm.account ON DELETE CASCADE)`,
		`GRANT SELECT, TRIGGER ON crm.contact_t TO `+ident(b.engineRole),
		`INSERT INTO crm.contact_t VALUES ('k1', 'dave', 'CFO', 2)`)
	b.exec(t, b.admin, `GRANT SELECT, INSERT, UPDATE, DELETE ON crm.contact_t TO `+ident(role))
	b.mustAttach(t, crmSpecWith(t, `{"object": "contact", "table": "crm_recalc.contact_v", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["title"], "capture": [{"table": "crm.contact", "id": "id"}, {"table": "crm.contact_account", "id": "contact_id"}]}`,
		`{"object": "contact", "table": "crm.contact_t", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["title"]}`))
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"teams": [{"record": "account:2", "user": "bob", "access": "edit"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	tb := protectedTable{"crm.contact_t", "crm.contact_t", "contact", "title"}
	b.enablePolicies(t, tb, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	for _, x := range protectedTables[:2] {
		b.enablePolicies(t, x, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	}
	wantLevels(t, b, "premise", map[[2]string]string{
		{"bob", "contact:k1"}: "edit", {"dave", "contact:k1"}: "all", {"bob", "account:1"}: "all",
		{"bob", "account:2"}: "edit", {"bob", "account:3"}: "none",
	})
	return b, role, tb
}

// TestRLSWriteAttack4ReparentControlledChild: a contact is controlled by its
// parent, so whoever has all on its account has all on it (docs/semantics.md,
// "Controlled by parent"). bob edits dave's contact k1 only through his edit
// on dave's account 2. Moving k1 under his own account 1 would give him all
// on it once absorbed, and then its owner: edit access would become
// transfer (docs/rls.md). So moving a record controlled by its parent needs
// all access to it (migration 041), as an owner change does; dave, its
// owner, may move it.
func TestRLSWriteAttack4ReparentControlledChild(t *testing.T) {
	t.Parallel()
	b, role, _ := attack4Contacts(t)
	for _, stmt := range []string{
		`UPDATE crm.contact_t SET account_id = 1 WHERE id = 'k1'`,
		`UPDATE crm.contact_t SET account_id = 1, title = 'x' WHERE account_id = 2`,
		`INSERT INTO crm.contact_t VALUES ('k1', 'dave', 'CFO', 1) ON CONFLICT (id) DO UPDATE SET account_id = EXCLUDED.account_id`,
	} {
		err := b.commitAs(t, role, "bob", stmt)
		wantRefused(t, err)
		if err != nil && strings.HasPrefix(stmt, "UPDATE") && !strings.Contains(err.Error(), "may move it under another parent") {
			t.Errorf("%s: %v, want the reason to name the move", stmt, err)
		}
	}
	if err := b.commitAs(t, role, "bob", `UPDATE crm.contact_t SET title = 'CEO' WHERE id = 'k1'`); err != nil {
		t.Errorf("bob edits k1's title: %v", err)
	}
	if err := b.commitAs(t, role, "dave", `UPDATE crm.contact_t SET account_id = 2 WHERE id = 'k1'`); err != nil {
		t.Errorf("dave writes k1's parent unchanged: %v", err)
	}
	b.run(t)
	wantLevels(t, b, "after bob's tries", map[[2]string]string{{"bob", "contact:k1"}: "edit", {"dave", "contact:k1"}: "all"})
	if err := b.commitAs(t, role, "dave", `UPDATE crm.contact_t SET account_id = 3 WHERE id = 'k1'`); err != nil {
		t.Errorf("dave (all on k1, read on account 3) moves k1 under account 3: %v", err)
	}
	b.run(t)
	wantLevels(t, b, "after dave moved k1", map[[2]string]string{{"bob", "contact:k1"}: "none", {"dave", "contact:k1"}: "all"})
	if err := b.commitAs(t, role, "bob", `INSERT INTO crm.contact_t VALUES ('k2', 'bob', 'new', 1)`); err != nil {
		t.Errorf("bob adds a contact under his own account: %v", err)
	}
}

// TestRLSWriteAttack4TextIDsOutOfBounds: on the text-id contact table, an
// id over 1 KiB as a key is never mirrored (docs/attach.md). bob (edit on
// k1) cannot give k1 such an id (an id change needs all), nor put a new
// contact with such an id under an account he cannot read; one under an
// account he reads has no record and gains him nothing. dave (all) may
// give k1 an oversize id: its record goes, and no one gets access to it.
func TestRLSWriteAttack4TextIDsOutOfBounds(t *testing.T) {
	t.Parallel()
	b, role, _ := attack4Contacts(t)
	long := strings.Repeat("k", 1100)
	wantRefused(t, b.writeAs(t, role, "bob", `UPDATE crm.contact_t SET id = '`+long+`' WHERE id = 'k1'`))
	wantRefused(t, b.writeAs(t, role, "bob", `INSERT INTO crm.contact_t VALUES ('`+long+`', 'bob', 'x', 3)`))
	wantRefused(t, b.writeAs(t, role, "bob", `INSERT INTO crm.contact_t VALUES ('k9', 'bob', 'x', 3)`))
	if err := b.commitAs(t, role, "bob", `INSERT INTO crm.contact_t VALUES ('`+long+`', 'bob', 'x', 2)`); err != nil {
		t.Fatalf("bob inserts an oversize id under account 2, which he reads: %v", err)
	}
	if err := b.commitAs(t, role, "dave", `UPDATE crm.contact_t SET id = 'd`+long+`' WHERE id = 'k1'`); err != nil {
		t.Fatalf("dave (all) gives k1 an oversize id: %v", err)
	}
	b.run(t)
	var n int
	if err := b.admin.QueryRow(context.Background(), `SELECT count(*) FROM recalc.record WHERE object = 'contact'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("contact records after both rows took oversize ids: %d (%v), want none", n, err)
	}
	wantLevels(t, b, "after the oversize ids", map[[2]string]string{
		{"bob", "account:3"}: "none", {"bob", "account:2"}: "edit", {"bob", "contact:k1"}: "none"})
	// The oversize row is back under a normal id: only its owner may do
	// that (no record: the owner policy alone admits it), and bob may not
	// give it k1's old id under an account he cannot read.
	wantRefused(t, b.writeAs(t, role, "bob", `UPDATE crm.contact_t SET id = 'k1', account_id = 3 WHERE id = '`+long+`'`))
}

// TestRLSWriteAttack4StatementForms: the guard is a row trigger; each form
// of statement that writes rows fires it. frank edits opportunity b (uuid,
// dave's, under account 2) by rule big_opp and reads account 1, not 3; bob
// edits case 1 (bigint, erin's, under account 1) through his role and owns
// case 2. Upserts, MERGE, UPDATE ... FROM, writable CTEs and multi-row
// updates that change an owner or move a row under a parent the user cannot
// read are refused with 42501.
func TestRLSWriteAttack4StatementForms(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	for _, tb := range protectedTables {
		b.enablePolicies(t, tb, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	}
	wantLevels(t, b, "premise", map[[2]string]string{
		{"frank", "opportunity:" + guardOppB}: "edit", {"frank", "account:1"}: "read", {"frank", "account:3"}: "none",
		{"bob", "case:1"}: "edit", {"bob", "case:2"}: "all", {"bob", "account:3"}: "none", {"bob", "case:3"}: "none",
	})
	const opp = `'` + guardOppB + `'`
	for _, c := range []struct{ name, user, stmt string }{
		{"upsert takes the owner", "frank", `INSERT INTO crm.opportunity VALUES (` + opp + `, 2, 'frank', 'won', 5000, NULL)
			ON CONFLICT (id) DO UPDATE SET owner_id = EXCLUDED.owner_id`},
		{"upsert moves under account 3", "frank", `INSERT INTO crm.opportunity VALUES (` + opp + `, 3, 'frank', 'won', 5000, NULL)
			ON CONFLICT (id) DO UPDATE SET account_id = EXCLUDED.account_id`},
		{"upsert changes the id", "frank", `INSERT INTO crm.opportunity VALUES (` + opp + `, 2, 'frank', 'won', 5000, NULL)
			ON CONFLICT (id) DO UPDATE SET id = gen_random_uuid(), owner_id = 'frank'`},
		{"MERGE takes the owner", "frank", `MERGE INTO crm.opportunity o USING (VALUES (` + opp + `::uuid, 'frank')) s(id, owner)
			ON o.id = s.id WHEN MATCHED THEN UPDATE SET owner_id = s.owner
			WHEN NOT MATCHED THEN INSERT VALUES (s.id, 1, s.owner, 'open', 1, NULL)`},
		{"MERGE moves under account 3", "frank", `MERGE INTO crm.opportunity o USING (VALUES (` + opp + `::uuid, 3)) s(id, acct)
			ON o.id = s.id WHEN MATCHED THEN UPDATE SET account_id = s.acct`},
		{"MERGE inserts under account 3", "frank", `MERGE INTO crm.opportunity o USING (VALUES (gen_random_uuid(), 3)) s(id, acct)
			ON o.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.acct, 'frank', 'open', 1, NULL)`},
		{"UPDATE ... FROM moves under account 3", "frank", `UPDATE crm.opportunity o SET account_id = v.acct FROM (VALUES (3::bigint)) v(acct) WHERE o.id = ` + opp},
		{"writable CTE moves under account 3", "frank", `WITH m AS (UPDATE crm.opportunity SET account_id = 3 WHERE id = ` + opp + ` RETURNING id)
			SELECT count(*) FROM m`},
		{"writable CTE inserts own account then takes the owner", "frank", `WITH a AS (INSERT INTO crm.account (id, name, owner_id) VALUES (77, 'F', 'frank') RETURNING id)
			UPDATE crm.opportunity SET account_id = a.id, owner_id = 'frank' FROM a WHERE crm.opportunity.id = ` + opp},
		{"multi-row UPDATE moves own and edited cases under account 3", "bob", `UPDATE support."case" SET account_id = 3 WHERE id IN (1, 2)`},
		{"multi-row UPDATE sets owner on own and edited cases", "bob", `UPDATE support."case" SET owner_id = 'bob' WHERE id IN (1, 2)`},
		{"multi-row UPDATE swaps owners", "bob", `UPDATE support."case" SET owner_id = CASE id WHEN 1 THEN 'bob' ELSE 'erin' END WHERE id IN (1, 2)`},
		{"delete then insert under the same bigint id in one transaction", "bob", `DELETE FROM support."case" WHERE id = 1;
			INSERT INTO support."case" VALUES (1, 1, 'bob', 1, 'Mine')`},
		{"upsert into a case it cannot see", "bob", `INSERT INTO support."case" VALUES (3, 1, 'bob', 1, 'x')
			ON CONFLICT (id) DO UPDATE SET owner_id = EXCLUDED.owner_id`},
	} {
		err := b.multiAs(t, role, c.user, c.stmt)
		if pg.Code(err) != pg.InsufficientPrivilege {
			t.Errorf("%s (%s): %v, want refused (42501)", c.name, c.user, err)
		}
	}
	// The same forms that change only a field go through: what refused
	// the writes above was the owner, id or parent they changed. (An
	// upsert's proposed row must pass the insert policies, here the owner
	// policy, whichever path it takes: PostgreSQL's rule.)
	for _, c := range []struct{ name, user, stmt string }{
		{"upsert sets the stage", "frank", `INSERT INTO crm.opportunity VALUES (` + opp + `, 2, 'frank', 'won', 5000, NULL)
			ON CONFLICT (id) DO UPDATE SET stage = 'lost'`},
		{"MERGE sets the stage", "frank", `MERGE INTO crm.opportunity o USING (VALUES (` + opp + `::uuid)) s(id)
			ON o.id = s.id WHEN MATCHED THEN UPDATE SET stage = 'lost'`},
		{"UPDATE ... FROM moves under account 1", "frank", `UPDATE crm.opportunity o SET account_id = v.acct FROM (VALUES (1::bigint)) v(acct) WHERE o.id = ` + opp},
		{"multi-row UPDATE sets priorities", "bob", `UPDATE support."case" SET priority = 2 WHERE id IN (1, 2)`},
	} {
		if err := b.multiAs(t, role, c.user, c.stmt); !errors.Is(err, errRolledBack) {
			t.Errorf("%s (%s): %v, want it to go through", c.name, c.user, err)
		}
	}
	// Across transactions: bob (edit) deletes case 1 and commits; until the
	// delete is absorbed recalc holds case:1, so his row taking the id is
	// refused. Once absorbed, the record and its manual share (frank's) are
	// gone: a new case 1 is a new record, and frank reads nothing of it.
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"shares": [{"object": "case", "record": "case:1", "grantee": "user:frank", "access": "read", "cause": "manual"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	wantLevels(t, b, "premise", map[[2]string]string{{"frank", "case:1"}: "read"})
	if err := b.commitAs(t, role, "bob", `DELETE FROM support."case" WHERE id = 1`); err != nil {
		t.Fatalf("bob (edit) deletes case 1: %v", err)
	}
	wantRefused(t, b.commitAs(t, role, "bob", `INSERT INTO support."case" VALUES (1, 1, 'bob', 1, 'Mine')`))
	b.run(t)
	if err := b.commitAs(t, role, "bob", `INSERT INTO support."case" VALUES (1, 1, 'bob', 1, 'Mine')`); err != nil {
		t.Fatalf("bob inserts case 1 once its delete is absorbed: %v", err)
	}
	b.run(t)
	wantLevels(t, b, "after bob's new case 1", map[[2]string]string{{"frank", "case:1"}: "none", {"erin", "case:1"}: "none", {"bob", "case:1"}: "all"})
}

// multiAs runs stmt (statements separated by semicolons, in one
// transaction, through the simple protocol) as role with app.user_id = user,
// rolled back: errRolledBack when it went through.
func (b *bundle) multiAs(t *testing.T, role, user, stmt string) error {
	t.Helper()
	ctx := context.Background()
	return pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(role)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, stmt, pgx.QueryExecModeSimpleProtocol); err != nil {
			return err
		}
		return errRolledBack
	})
}

// TestRLSWriteAttack4OutOfBoundsClosure: an editor makes a row out of bounds
// on purpose, so that it is mirrored closed (owner kept, no parent, no
// fields: docs/attach.md). frank (edit on opportunity b by rule big_opp)
// gives it a stage over 1 MiB; bob (edit on account 2 by a team entry)
// gives account 2 an industry over 1 MiB. Both may (as they may delete the
// rows); alone or with an owner or parent change in the same statement
// they may not, nor may bob give it a NULL territory (a territory change
// takes all access since migration 059: TestRLSWriteTerritoriesNeedAll). The
// closed records give no one access, frank and bob included, keep their
// owners, and once the owner puts the rows right, access is as before.
func TestRLSWriteAttack4OutOfBoundsClosure(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"teams": [{"record": "account:2", "user": "bob", "access": "edit"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	for _, tb := range protectedTables {
		b.enablePolicies(t, tb, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	}
	pre := map[[2]string]string{
		{"frank", "opportunity:" + guardOppB}: "edit", {"dave", "opportunity:" + guardOppB}: "all", {"frank", "account:3"}: "none",
		{"bob", "account:2"}: "edit", {"dave", "account:2"}: "all", {"bob", "opportunity:" + guardOppB}: "none",
	}
	wantLevels(t, b, "premise", pre)
	const opp = `'` + guardOppB + `'`
	big := `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 40000) i)`
	wantRefused(t, b.writeAs(t, role, "frank", `UPDATE crm.opportunity SET stage = `+big+`, owner_id = 'frank' WHERE id = `+opp))
	wantRefused(t, b.writeAs(t, role, "frank", `UPDATE crm.opportunity SET stage = `+big+`, account_id = 3 WHERE id = `+opp))
	wantRefused(t, b.writeAs(t, role, "bob", `UPDATE crm.account SET industry = `+big+`, owner_id = 'bob' WHERE id = 2`))
	wantRefused(t, b.writeAs(t, role, "bob", `UPDATE crm.account SET territories = ARRAY[NULL, 'north'] WHERE id = 2`))
	if err := b.commitAs(t, role, "frank", `UPDATE crm.opportunity SET stage = `+big+` WHERE id = `+opp); err != nil {
		t.Fatalf("frank makes opportunity b out of bounds: %v", err)
	}
	if err := b.commitAs(t, role, "bob", `UPDATE crm.account SET industry = `+big+` WHERE id = 2`); err != nil {
		t.Fatalf("bob makes account 2 out of bounds: %v", err)
	}
	b.run(t)
	ctx := context.Background()
	for _, k := range []string{"opportunity:" + guardOppB, "account:2"} {
		var owner string
		var parent *string
		if err := b.admin.QueryRow(ctx, `SELECT owner, parent FROM recalc.record WHERE id = $1`, k).Scan(&owner, &parent); err != nil {
			t.Fatal(err)
		}
		if owner != "dave" || parent != nil {
			t.Errorf("closed %s: owner %q parent %v, want dave's, no parent", k, owner, parent)
		}
	}
	for _, u := range crmUsers {
		for _, k := range []string{"opportunity:" + guardOppB, "account:2", "opportunity:00000000-0000-0000-0000-00000000000d"} {
			if got := levelOf(t, b, u, k); got != "none" && !(k == "opportunity:00000000-0000-0000-0000-00000000000d" && (u == "erin" || u == "alice" || u == "frank")) {
				t.Errorf("while closed, %s has %s on %s", u, got, k)
			}
		}
	}
	// While closed, frank and bob can write neither row (no access); the
	// owner can, through the owner policy, and puts them right.
	if err := b.writeAs(t, role, "frank", `UPDATE crm.opportunity SET stage = 'x' WHERE id = `+opp); err == nil || errors.Is(err, errRolledBack) {
		t.Errorf("frank writes the closed opportunity b: %v", err)
	}
	if err := b.commitAs(t, role, "dave", `UPDATE crm.opportunity SET stage = 'won' WHERE id = `+opp,
		`UPDATE crm.account SET industry = 'energy' WHERE id = 2`); err != nil {
		t.Fatalf("dave puts his rows right: %v", err)
	}
	b.run(t)
	wantLevels(t, b, "after dave put the rows right", pre)
}

// TestRLSWriteAttack4ThroughViewsAndAppTriggers: writes that reach the table
// other than by a plain statement on it. frank (edit on opportunity b)
// writes through a view the application owns (auto-updatable, so checked as
// its owner: without --force no policy applies, the guard still judges the
// session's user), through a temporary view of his session, and through
// the application's own triggers: a BEFORE trigger that sets the owner from
// a field, and a SECURITY DEFINER statement trigger (run as the table's
// owner, under --force) that moves rows. Every one is refused (42501).
func TestRLSWriteAttack4ThroughViewsAndAppTriggers(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	const opp = `'` + guardOppB + `'`
	b.exec(t, b.app, `CREATE VIEW crm.opp_all AS SELECT * FROM crm.opportunity`,
		`GRANT SELECT, INSERT, UPDATE ON crm.opp_all TO `+ident(role))
	ctx := context.Background()
	for _, force := range []bool{false, true} {
		b.enablePolicies(t, protectedTables[1], access.RLS{Write: true, Force: force, OwnerColumn: "owner_id"})
		var forced bool
		if err := b.admin.QueryRow(ctx, `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'crm.opportunity'::regclass`).Scan(&forced); err != nil || forced != force {
			t.Fatalf("premise: FORCE ROW LEVEL SECURITY is %v (%v), want %v", forced, err, force)
		}
		for _, s := range []string{
			`UPDATE crm.opp_all SET owner_id = 'frank' WHERE id = ` + opp,
			`UPDATE crm.opp_all SET account_id = 3 WHERE id = ` + opp,
			`INSERT INTO crm.opp_all VALUES (gen_random_uuid(), 3, 'frank', 'open', 1, NULL)`,
		} {
			if err := b.writeAs(t, role, "frank", s); pg.Code(err) != pg.InsufficientPrivilege {
				t.Errorf("force %v: %s through the application's view: %v, want refused (42501)", force, s, err)
			}
		}
		// Carol's opportunity c, which frank may not even read: under
		// --force the view's policies hide it (no row); without, the
		// guard must refuse the owner change.
		err := b.writeAs(t, role, "frank", `UPDATE crm.opp_all SET owner_id = 'frank' WHERE id = '`+guardOppC+`'`)
		if pg.Code(err) != pg.InsufficientPrivilege && !(force && err != nil && err.Error() == "no row written") {
			t.Errorf("force %v: frank takes carol's opportunity c through the application's view: %v", force, err)
		}
	}
	b.enablePolicies(t, protectedTables[1], access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	wantRefused(t, b.multiAs(t, role, "frank", `CREATE TEMP VIEW mine AS SELECT * FROM crm.opportunity;
		UPDATE mine SET owner_id = 'frank' WHERE id = `+opp))

	// The application's role writes under the policies in its SECURITY
	// DEFINER trigger (--force): it needs the reader's functions.
	if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error { return access.Grant(ctx, tx, access.Reader, b.appRole) }); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `CREATE FUNCTION crm.claim() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.stage LIKE 'claim:%' THEN NEW.owner_id := substr(NEW.stage, 7); END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER claim BEFORE UPDATE ON crm.opportunity FOR EACH ROW EXECUTE FUNCTION crm.claim()`,
		`CREATE FUNCTION crm.relocate() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
		BEGIN
			IF NOT EXISTS (SELECT 1 FROM changed WHERE stage LIKE 'relocate:%') THEN RETURN NULL; END IF;
			UPDATE crm.opportunity o SET account_id = substr(n.stage, 10)::bigint, stage = 'moved'
			FROM changed n WHERE o.id = n.id AND n.stage LIKE 'relocate:%';
			RETURN NULL;
		END $$`,
		`CREATE TRIGGER relocate AFTER UPDATE ON crm.opportunity REFERENCING NEW TABLE AS changed
			FOR EACH STATEMENT EXECUTE FUNCTION crm.relocate()`)
	wantRefused(t, b.writeAs(t, role, "frank", `UPDATE crm.opportunity SET stage = 'claim:frank' WHERE id = `+opp))
	wantRefused(t, b.writeAs(t, role, "frank", `UPDATE crm.opportunity SET stage = 'relocate:3' WHERE id = `+opp))
	if err := b.writeAs(t, role, "frank", `UPDATE crm.opportunity SET stage = 'relocate:1' WHERE id = `+opp); !errors.Is(err, errRolledBack) {
		t.Errorf("frank relocates b under account 1, which he reads, through the application's trigger: %v, want it to go through", err)
	}
}

// TestRLSWriteAttack4HostileUserRole: with --user-from-role each end user
// logs in as a role of its own, so a hostile user runs any SQL it likes. It
// edits opportunity b (a team entry) and holds nothing else. It cannot
// turn the guard or the capture off (session_replication_role, DISABLE
// TRIGGER, DROP TRIGGER, NO FORCE, row_security off, SET ROLE to the
// table's owner), add a trigger, COPY into the table, or take b with
// forged per-user notes; after everything it tried, once absorbed, it
// still has edit on b and nothing on account 3, and dave owns b.
func TestRLSWriteAttack4HostileUserRole(t *testing.T) {
	t.Parallel()
	b, _ := setupWritePolicies(t)
	ctx := context.Background()
	atk := "atk4_" + b.appRole[len("attach_app_"):]
	testdb.DropRoles(t, b.url, atk)
	b.exec(t, b.admin, `CREATE ROLE `+ident(atk)+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`,
		`GRANT CONNECT ON DATABASE `+ident(dbName(t, b.url))+` TO `+ident(atk),
		`GRANT USAGE ON SCHEMA crm TO `+ident(atk),
		`GRANT SELECT, INSERT, UPDATE, DELETE ON crm.opportunity, crm.account TO `+ident(atk),
		`INSERT INTO crm.app_user VALUES ('`+atk+`', 'Attacker')`)
	if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error { return access.Grant(ctx, tx, access.Reader, atk) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"users": [{"id": "`+atk+`"}],
		"teams": [{"record": "opportunity:`+guardOppB+`", "user": "`+atk+`", "access": "edit"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	for _, tb := range protectedTables[:2] {
		r := access.RLS{Table: tb.name, Object: tb.object, IDColumn: "id", UserFromRole: true, Write: true, Force: true,
			OwnerColumn: "owner_id", PerUserPlans: true}
		if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error { return access.EnableRLS(ctx, tx, &r) }); err != nil {
			t.Fatal(err)
		}
	}
	pre := map[[2]string]string{{atk, "opportunity:" + guardOppB}: "edit", {atk, "account:3"}: "none", {"dave", "opportunity:" + guardOppB}: "all"}
	wantLevels(t, b, "premise", pre)
	conn, err := pgx.Connect(ctx, dburl.WithUser(b.url, atk))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const opp = `'` + guardOppB + `'`
	take := `UPDATE crm.opportunity SET owner_id = current_user WHERE id = ` + opp
	move := `UPDATE crm.opportunity SET account_id = 3 WHERE id = ` + opp
	try := func(name string, want string, stmts ...string) {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		for _, s := range stmts {
			if _, err = tx.Exec(ctx, s, pgx.QueryExecModeSimpleProtocol); err != nil {
				break
			}
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		if got := pg.Code(err); got != want {
			t.Errorf("%s: %v, want SQLSTATE %s", name, err, want)
		}
	}
	denied := pg.InsufficientPrivilege
	try("session_replication_role", denied, `SET LOCAL session_replication_role = replica`, take)
	try("disable the guard", denied, `ALTER TABLE crm.opportunity DISABLE TRIGGER recalc_write_guard`, take)
	try("disable every trigger", denied, `ALTER TABLE crm.opportunity DISABLE TRIGGER ALL`, take)
	try("drop the guard", denied, `DROP TRIGGER recalc_write_guard ON crm.opportunity`, take)
	try("no force", denied, `ALTER TABLE crm.opportunity NO FORCE ROW LEVEL SECURITY`, take)
	try("disable row level security", denied, `ALTER TABLE crm.opportunity DISABLE ROW LEVEL SECURITY`, take)
	try("own trigger", denied, `CREATE TRIGGER mine BEFORE UPDATE ON crm.opportunity FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()`)
	try("row_security off", denied, `SET LOCAL row_security = off`, take)
	try("SET ROLE to the table's owner", denied, `SET LOCAL ROLE `+ident(b.appRole), take)
	try("SET ROLE to the engine", denied, `SET LOCAL ROLE `+ident(b.engineRole), take)
	try("SET SESSION AUTHORIZATION", denied, `SET SESSION AUTHORIZATION `+ident(b.appRole), take)
	try("take b", denied, take)
	try("move b", denied, move)
	try("temporary view", denied, `CREATE TEMP VIEW v AS SELECT * FROM crm.opportunity`, `UPDATE v SET owner_id = current_user WHERE id = `+opp)
	try("exception swallowed", "", `DO $$ BEGIN UPDATE crm.opportunity SET owner_id = current_user WHERE id = '`+guardOppB+`';
		EXCEPTION WHEN insufficient_privilege THEN NULL; END $$`)
	for _, note := range []string{"t" + atk, "f" + atk, "tdave", "t", "f", "1"} {
		for _, level := range []string{"edit", "read"} {
			set := `SELECT set_config('recalc.rls_plan.` + level + `.opportunity', '` + note + `', true)`
			try("forged note "+level+" "+note+", take b", denied, set, take)
			try("forged note "+level+" "+note+", move b", denied, set, move)
			try("forged note "+level+" "+note+", take b within the statement", denied,
				`UPDATE crm.opportunity SET owner_id = current_user WHERE id = `+opp+` AND `+set[len("SELECT "):]+` IS NOT NULL`)
		}
	}
	// Rows it cannot edit stay out of reach, whatever the note says.
	for _, note := range []string{"t" + atk, "tdave", "t"} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('recalc.rls_plan.edit.opportunity', $1, true), set_config('recalc.rls_plan.read.opportunity', $1, true)`, note); err != nil {
			t.Fatal(err)
		}
		tag, err := tx.Exec(ctx, `UPDATE crm.opportunity SET stage = 'probe'`)
		if err != nil || tag.RowsAffected() != 1 {
			t.Errorf("forged note %q: UPDATE of every row touched %d rows (%v), want 1 (b)", note, tag.RowsAffected(), err)
		}
		_ = tx.Rollback(ctx)
	}
	// COPY FROM into a table under row-level security is refused.
	_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader(guardOppC[:35]+"9\t3\t"+atk+"\n"),
		`COPY crm.opportunity (id, account_id, owner_id) FROM STDIN`)
	if pg.Code(err) != pg.FeatureNotSupported {
		t.Errorf("COPY FROM into crm.opportunity: %v, want refused (0A000)", err)
	}
	b.run(t)
	wantLevels(t, b, "after the hostile role's attempts", pre)
	var owner string
	if err := b.admin.QueryRow(ctx, `SELECT owner_id FROM crm.opportunity WHERE id = `+opp).Scan(&owner); err != nil || owner != "dave" {
		t.Errorf("opportunity b's owner is %q (%v), want dave", owner, err)
	}
}
