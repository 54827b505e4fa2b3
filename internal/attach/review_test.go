package attach_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/testkit"
)

// mustFail runs stmt on pool and fails the test unless it errs with a
// message containing want.
func mustFail(t *testing.T, pool *pgxpool.Pool, what, stmt, want string) {
	t.Helper()
	_, err := pool.Exec(context.Background(), stmt)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: %v, want an error containing %q", what, err, want)
	}
}

// recordOf reads a record's object and owner ("" when there is none).
func (b *bundle) recordOf(t *testing.T, id string) (object, owner string) {
	t.Helper()
	err := b.admin.QueryRow(context.Background(), `SELECT object, owner FROM recalc.record WHERE id = $1`, id).Scan(&object, &owner)
	if err != nil && err != pgx.ErrNoRows {
		t.Fatal(err)
	}
	return object, owner
}

// TestBaseTableTurnedIntoViewCannotRunAsEngine (review C1): the owner of a
// base table of an attached view drops its capture triggers and turns it
// into a view calling its own function; the next capture of the view's
// other base table must refuse to re-read the view instead of running that
// function with the engine's rights.
func TestBaseTableTurnedIntoViewCannotRunAsEngine(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.exec(t, b.app, `CREATE TABLE crm.tag (contact_id uuid PRIMARY KEY, label text)`,
		`GRANT SELECT, TRIGGER ON crm.tag TO `+ident(b.engineRole))
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.contact_t AS
		SELECT c.id, c.owner_id, c.title, ca.account_id, g.label FROM crm.contact c
		LEFT JOIN crm.contact_account ca ON ca.contact_id = c.id LEFT JOIN crm.tag g ON g.contact_id = c.id`)
	spec := strings.Replace(crmSpec, `"table": "crm_recalc.contact_v"`, `"table": "crm_recalc.contact_t"`, 1)
	spec = strings.Replace(spec, `{"table": "crm.contact_account", "id": "contact_id"}]`,
		`{"table": "crm.contact_account", "id": "contact_id"}, {"table": "crm.tag", "id": "contact_id"}]`, 1)
	b.mustAttach(t, spec)
	var triggers []string
	if err := b.admin.QueryRow(ctx, `SELECT array_agg(tgname::text) FROM pg_trigger WHERE tgrelid = 'crm.tag'::regclass AND NOT tgisinternal`).Scan(&triggers); err != nil || len(triggers) != 5 {
		t.Fatalf("capture triggers of crm.tag: %v (%v)", triggers, err)
	}
	for _, tg := range triggers {
		b.exec(t, b.app, `DROP TRIGGER `+ident(tg)+` ON crm.tag`)
	}
	b.exec(t, b.app, `ALTER TABLE crm.tag DROP CONSTRAINT tag_pkey`, `VACUUM crm.tag`,
		`CREATE FUNCTION crm.evil() RETURNS text LANGUAGE plpgsql AS $$
		 BEGIN EXECUTE format('GRANT ALL ON SCHEMA recalc TO %I', session_user); RETURN NULL; END $$`,
		`CREATE RULE "_RETURN" AS ON SELECT TO crm.tag DO INSTEAD SELECT NULL::uuid AS contact_id, crm.evil() AS label`)
	// The write to the other base table is logged; the engine's absorb must
	// not read the view over the converted table, and keeps the write.
	b.exec(t, b.app, `INSERT INTO crm.contact VALUES ('00000000-0000-0000-0000-000000000001', 'erin', 'CTO', NULL)`)
	b.run(t)
	var pwned bool
	if err := b.admin.QueryRow(ctx, `SELECT has_schema_privilege($1, 'recalc', 'CREATE')`, b.appRole).Scan(&pwned); err != nil || pwned {
		t.Fatalf("the application's function ran as the engine: CREATE on schema recalc %v (%v)", pwned, err)
	}
	var waiting, mirrored int
	if err := b.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.change WHERE kind = 'attached' AND object = 'contact'),
		(SELECT count(*) FROM recalc.record WHERE id = 'contact:00000000-0000-0000-0000-000000000001')`).Scan(&waiting, &mirrored); err != nil ||
		waiting != 1 || mirrored != 0 {
		t.Fatalf("a write to a view over a converted table: %d change rows waiting, %d records (%v), want 1 and 0", waiting, mirrored, err)
	}
	if list, err := b.recalc("attach", "--list"); err != nil || !strings.Contains(list, "CAPTURE INCOMPLETE") {
		t.Fatalf("attach --list after a base table became a view: %v\n%s", err, list)
	}
	if _, err := b.attach(t, spec); err == nil || !strings.Contains(err.Error(), "not a table") {
		t.Fatalf("re-attaching a view over a view: %v, want refused", err)
	}
}

// TestPartitionsAndInheritanceAreRefused (review C2): a partitioned table,
// or one with inheritance children, is refused at attach; a child added
// after attaching stops the capture (and so the writes) and shows in
// `attach --list`, since writes addressed to it would not be captured.
func TestPartitionsAndInheritanceAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	eng := ident(b.engineRole)
	b.exec(t, b.app,
		`CREATE TABLE support.case_p (id bigint PRIMARY KEY, account_id bigint NOT NULL, owner_id text NOT NULL, priority integer, status varchar(20)) PARTITION BY RANGE (id)`,
		`CREATE TABLE support.case_p1 PARTITION OF support.case_p FOR VALUES FROM (0) TO (1000)`,
		`CREATE TABLE support.case_i (id bigint PRIMARY KEY, account_id bigint NOT NULL, owner_id text NOT NULL, priority integer, status varchar(20))`,
		`CREATE TABLE support.case_i1 () INHERITS (support.case_i)`,
		`GRANT SELECT, TRIGGER ON support.case_p, support.case_p1, support.case_i, support.case_i1 TO `+eng)
	for table, want := range map[string]string{
		"support.case_p":  "partitioned",
		"support.case_p1": "is a partition",
		"support.case_i":  "inheritance children",
		"support.case_i1": "inheritance children",
	} {
		spec := strings.Replace(crmSpec, `"table": "support.case"`, `"table": "`+table+`"`, 1)
		if _, err := b.attach(t, spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("attaching %s: %v, want an error containing %q", table, err, want)
		}
	}
	b.mustAttach(t, crmSpec)
	b.exec(t, b.app, `CREATE TABLE support.case_later () INHERITS (support."case")`)
	mustFail(t, b.app, "a write to an attached table that has gained a child",
		`INSERT INTO support."case" VALUES (300, 1, 'bob', 1, 'New')`, "is incomplete")
	if list, err := b.recalc("attach", "--list"); err != nil || !strings.Contains(list, "CAPTURE INCOMPLETE") {
		t.Fatalf("attach --list with an inheritance child: %v\n%s", err, list)
	}
	// The child dropped, the table takes writes again at once: PostgreSQL
	// clears pg_class.relhassubclass only at the next ANALYZE of the table.
	b.exec(t, b.app, `DROP TABLE support.case_later`, `DROP TABLE support.case_i1`,
		`INSERT INTO support."case" VALUES (300, 1, 'bob', 1, 'New')`)
	if list, err := b.recalc("attach", "--list"); err != nil || strings.Contains(list, "CAPTURE INCOMPLETE") {
		t.Fatalf("attach --list once the child is dropped: %v\n%s", err, list)
	}
	spec := strings.Replace(crmSpec, `"table": "support.case"`, `"table": "support.case_i"`, 1)
	b.mustAttach(t, spec)
}

// TestWriterCannotWriteAttachedRecords (review H1): a role given writer
// access may write the records of objects that are not attached, but may
// not create, re-own, re-object or delete records of attached ones; the
// application's writes still reach them through the capture.
func TestWriterCannotWriteAttachedRecords(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	w, _ := b.writerPool(t)
	noCase := crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")] + "\n]}"
	b.mustAttach(t, noCase)
	b.exec(t, w, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('case:900', 'case', 'bob', 'account:1')`,
		`UPDATE recalc.record SET owner = 'erin' WHERE id = 'case:900'`)
	for name, stmt := range map[string]string{
		"create": `INSERT INTO recalc.record (id, object, owner) VALUES ('account:666', 'account', 'erin')`,
		// A record of another object under the key of a row the table may
		// take later: the row would never be mirrored, and its key would
		// name the writer's record.
		"take a key": `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('account:5', 'case', 'erin', 'account:1')`,
		"re-key":     `UPDATE recalc.record SET id = 'account:6' WHERE id = 'case:900'`,
	} {
		_, err := w.Exec(ctx, stmt)
		if sqlState(err) != "42501" || !strings.Contains(err.Error(), "attached object") {
			t.Errorf("%s a record of an attached object as a writer: %v, want refused (42501)", name, err)
		}
	}
	// The row-level security of recalc.record (migration 082) refuses a
	// record moved into an attached object before the guard sees it.
	if _, err := w.Exec(ctx, `UPDATE recalc.record SET object = 'account', parent = NULL WHERE id = 'case:900'`); sqlState(err) != "42501" ||
		!strings.Contains(err.Error(), "row-level security policy for table \"record\"") {
		t.Errorf("re-object a record into an attached object as a writer: %v, want refused (42501)", err)
	}
	// Since migration 082 the writer does not see the records of attached
	// objects (TestWriterReadsNoAttachedRecord): a statement naming one
	// changes no row.
	for name, stmt := range map[string]string{
		"re-own": `UPDATE recalc.record SET owner = 'erin' WHERE id = 'account:1'`,
		"delete": `DELETE FROM recalc.record WHERE id = 'account:1'`,
	} {
		if tag, err := w.Exec(ctx, stmt); err != nil || tag.RowsAffected() != 0 {
			t.Errorf("%s a record of an attached object as a writer: %v, %d rows, want no row changed", name, err, tag.RowsAffected())
		}
	}
	if object, owner := b.recordOf(t, "account:1"); object != "account" || owner != "bob" {
		t.Fatalf("account:1 after the writer's attempts: %s owned by %q", object, owner)
	}
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'carol' WHERE id = 1`,
		`INSERT INTO crm.account (id, name, owner_id) VALUES (5, 'Umbrella', 'frank')`)
	b.run(t)
	if _, owner := b.recordOf(t, "account:1"); owner != "carol" {
		t.Fatalf("the application's update was not captured: owner %q", owner)
	}
	if object, owner := b.recordOf(t, "account:5"); object != "account" || owner != "frank" {
		t.Fatalf("the application's account 5 is mirrored as %s owned by %q, want account owned by frank", object, owner)
	}
}

// dbName is the database of conn.
func dbName(t *testing.T, conn string) string {
	t.Helper()
	c, err := pgx.ParseConfig(conn)
	if err != nil {
		t.Fatal(err)
	}
	return c.Database
}

// TestCaptureNeverTakesOverAnotherObjectsRecord (review L1): a record of an
// object that is not attached, keyed like an attached object's record, is
// never turned into that object's record by the capture; and an import
// refuses such keys.
func TestCaptureNeverTakesOverAnotherObjectsRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	noCase := crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")] + "\n]}"
	b.mustAttach(t, noCase)
	b.exec(t, b.engine, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('account:5', 'case', 'dave', 'account:1')`)
	b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id) VALUES (5, 'Umbrella', 'frank')`)
	if object, owner := b.recordOf(t, "account:5"); object != "case" || owner != "dave" {
		t.Fatalf("the capture took over another object's record: now %s owned by %q", object, owner)
	}
	model := strings.TrimSuffix(strings.TrimSpace(crmModel), "}") +
		`, "records": [{"object": "case", "id": "account:77", "owner": "bob", "parent": "account:1"}]}`
	if _, err := testkit.ImportString(ctx, b.engine, model); err == nil || !strings.Contains(err.Error(), "take the key") {
		t.Fatalf("importing a record keyed like an attached object's: %v, want refused", err)
	}
	// Attaching a table whose rows' keys a record of another object holds
	// fails, and attaches nothing.
	b.exec(t, b.engine, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('case:9', 'opportunity', 'dave', 'account:1')`)
	if out, err := b.attach(t, crmSpec); err == nil || !strings.Contains(out+err.Error(), `record "case:9" is not of object case but takes the key`) {
		t.Fatalf("attaching case while record case:9 is an opportunity: %v\n%s", err, out)
	}
	if list, err := b.recalc("attach", "--list"); err != nil || strings.Contains(list, "support.case") {
		t.Fatalf("attach --list after the refused attach: %v\n%s", err, list)
	}
}

// TestDroppedUniqueIndexStopsCapture (review L2): once the id column of an
// attached table loses its unique index, the capture refuses to run rather
// than collapse rows sharing an id into one record.
func TestDroppedUniqueIndexStopsCapture(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	b.exec(t, b.app, `ALTER TABLE support."case" DROP CONSTRAINT case_pkey`,
		`CREATE INDEX case_id ON support."case" (id)`)
	mustFail(t, b.app, "a write after the unique index was dropped",
		`INSERT INTO support."case" VALUES (1, 2, 'frank', 5, 'Dup')`, "is incomplete")
	if _, owner := b.recordOf(t, "case:1"); owner != "erin" {
		t.Fatalf("case:1 is now owned by %q, want erin", owner)
	}
	if list, err := b.recalc("attach", "--list"); err != nil || !strings.Contains(list, "CAPTURE INCOMPLETE") {
		t.Fatalf("attach --list without the unique index: %v\n%s", err, list)
	}
}

// TestNondeterministicCollationRefused (review M1): an id, owner or parent
// column with a nondeterministic collation is refused at attach, and a
// collation changed after attaching stops the capture.
func TestNondeterministicCollationRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app, `CREATE COLLATION crm.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`,
		`CREATE TABLE support.case_ci (id text COLLATE crm.ci PRIMARY KEY, account_id bigint NOT NULL, owner_id text NOT NULL, priority integer, status varchar(20))`,
		`CREATE TABLE support.case_oci (id bigint PRIMARY KEY, account_id bigint NOT NULL, owner_id text COLLATE crm.ci NOT NULL, priority integer, status varchar(20))`,
		`GRANT SELECT, TRIGGER ON support.case_ci, support.case_oci TO `+ident(b.engineRole))
	for _, table := range []string{"support.case_ci", "support.case_oci"} {
		spec := strings.Replace(crmSpec, `"table": "support.case"`, `"table": "`+table+`"`, 1)
		if _, err := b.attach(t, spec); err == nil || !strings.Contains(err.Error(), "nondeterministic collation") {
			t.Errorf("attaching %s: %v, want refused", table, err)
		}
	}
	b.mustAttach(t, crmSpec)
	b.exec(t, b.app, `ALTER TABLE support."case" DROP COLUMN status CASCADE, ADD COLUMN status varchar(20) COLLATE "C"`)
	mustFail(t, b.app, "a write after a column's collation changed",
		`INSERT INTO support."case" VALUES (78, 1, 'bob', 1, 'New')`, "changed since it was attached")
}
