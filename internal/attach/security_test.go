package attach_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recalc-dev/recalc/internal/attach"
)

// sqlState is err's SQLSTATE, or "" when it has none.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// captureFuncs lists the capture functions in schema recalc.
func (b *bundle) captureFuncs(t *testing.T) []string {
	t.Helper()
	var fs []string
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(array_agg(proname::text ORDER BY proname), '{}') FROM pg_proc
		WHERE pronamespace = 'recalc'::regnamespace AND proname LIKE 'attach\_%\_%' AND prorettype = 'trigger'::regtype`).Scan(&fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

// TestCaptureRunsAsDefinerAndCannotBeBorrowed: the application's role has
// rights on its own tables only, yet its writes reach recalc.record through
// the capture; it cannot call a capture function, attach one to a table of
// its own, or write recalc.record itself; and a capture function refuses to
// run on any other table, even when the engine attaches it there, and once
// a column it reads has changed type.
func TestCaptureRunsAsDefinerAndCannotBeBorrowed(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	ctx := context.Background()
	b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id, industry) VALUES (100, 'Hooli', 'erin', 'tech')`)
	b.run(t) // absorbs the logged write into recalc.record
	var owner string
	if err := b.admin.QueryRow(ctx, `SELECT owner FROM recalc.record WHERE id = 'account:100'`).Scan(&owner); err != nil || owner != "erin" {
		t.Fatalf("the application's insert was not captured: owner %q, %v", owner, err)
	}
	// Updating a column no attachment reads logs no change.
	var before, after int64
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM recalc.change`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `UPDATE crm.account SET name = 'Hooli Inc', updated_at = now() WHERE id = 100`)
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM recalc.change`).Scan(&after); err != nil || after != before {
		t.Fatalf("an update of unattached columns logged changes: seq %d -> %d (%v)", before, after, err)
	}
	funcs := b.captureFuncs(t)
	if len(funcs) != 5 { // account, opportunity, case, and the view's two base tables
		t.Fatalf("capture functions: %v, want 5", funcs)
	}
	var weak []string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(array_agg(proname::text), '{}') FROM pg_proc
		WHERE proname = ANY($1) AND pronamespace = 'recalc'::regnamespace
		  AND NOT (prosecdef AND proconfig @> ARRAY['search_path=pg_catalog, pg_temp', 'row_security=off'] AND proacl IS NOT NULL
		           AND NOT EXISTS (SELECT 1 FROM aclexplode(proacl) a WHERE a.grantee = 0))`, funcs).Scan(&weak); err != nil || len(weak) > 0 {
		t.Fatalf("capture functions without a pinned search_path, row_security off, or executable by PUBLIC: %v (%v)", weak, err)
	}
	f := ident(funcs[0])
	for name, stmt := range map[string]string{
		"call":               `SELECT recalc.` + f + `()`,
		"write record":       `INSERT INTO recalc.record (id, object, owner) VALUES ('account:666', 'account', 'erin')`,
		"borrow for a table": `CREATE TABLE crm.mine (id bigint PRIMARY KEY, owner_id text); CREATE TRIGGER t AFTER INSERT ON crm.mine FOR EACH STATEMENT EXECUTE FUNCTION recalc.` + f + `()`,
		"read registry":      `SELECT * FROM recalc.attachment`,
	} {
		_, err := b.app.Exec(ctx, stmt)
		if sqlState(err) != "42501" {
			t.Errorf("%s as the application: %v, want permission denied (42501)", name, err)
		}
	}
	// The engine itself attaching a capture function elsewhere: refused at run time.
	b.exec(t, b.app, `CREATE TABLE crm.other (id bigint PRIMARY KEY, owner_id text)`, `GRANT TRIGGER ON crm.other TO `+ident(b.engineRole))
	b.exec(t, b.engine, `CREATE TRIGGER borrowed AFTER INSERT ON crm.other FOR EACH STATEMENT EXECUTE FUNCTION recalc.`+f+`()`)
	_, err := b.app.Exec(ctx, `INSERT INTO crm.other VALUES (1, 'erin')`)
	if err == nil || !strings.Contains(err.Error(), "runs only as the capture trigger") {
		t.Errorf("a capture function on another table ran: %v", err)
	}
	// recalc's read view keeps an attached column's type; a column dropped
	// (CASCADE drops the view) and added again with another type stops the
	// capture (and so the write) until re-attached.
	mustFail(t, b.app, "changing an attached column's type", `ALTER TABLE support."case" ALTER COLUMN status TYPE text`, "used by a view")
	b.exec(t, b.app, `ALTER TABLE support."case" DROP COLUMN status CASCADE, ADD COLUMN status text`)
	_, err = b.app.Exec(ctx, `INSERT INTO support."case" VALUES (77, 1, 'bob', 1, 'New')`)
	if err == nil || !strings.Contains(err.Error(), "changed since it was attached") {
		t.Errorf("capture ran after a column type changed: %v", err)
	}
	out, err := b.attach(t, crmSpec)
	if err != nil || !strings.Contains(out, "updated") {
		t.Fatalf("re-attach after the type change: %v\n%s", err, out)
	}
	b.exec(t, b.app, `INSERT INTO support."case" VALUES (77, 1, 'bob', 1, 'New')`)
	b.run(t)
	b.checkMirror(t, "after re-attaching a changed table")
}

// TestReattachAndDetach: applying the same spec again changes nothing, a
// changed spec updates, a spec without an object detaches it, and detach
// leaves no trigger, function or record behind; attaching again works.
func TestReattachAndDetach(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	ctx := context.Background()
	var seq int64
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM recalc.change`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	out, err := b.attach(t, crmSpec)
	if err != nil || strings.Count(out, string(attach.Unchanged)) != 4 {
		t.Fatalf("re-applying the same spec: %v\n%s", err, out)
	}
	var after int64
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM recalc.change`).Scan(&after); err != nil || after != seq {
		t.Fatalf("re-applying the same spec logged changes: %d -> %d (%v)", seq, after, err)
	}
	changed := strings.Replace(crmSpec, `"fields": ["industry", "amount", "vip"]`, `"fields": ["vip", "industry", "amount"]`, 1)
	if out, err := b.attach(t, changed); err != nil || !strings.Contains(out, "account          updated") || strings.Count(out, "unchanged") != 3 {
		t.Fatalf("a changed spec: %v\n%s", err, out)
	}
	b.run(t)
	// The application owns its tables, so it can disable the capture: the
	// list says so, and attaching again rebuilds it and catches up.
	b.exec(t, b.app, `ALTER TABLE support."case" DISABLE TRIGGER USER`,
		`INSERT INTO support."case" VALUES (200, 1, 'frank', 5, 'Missed')`)
	if list, err := b.recalc("attach", "--list"); err != nil || !strings.Contains(list, "CAPTURE INCOMPLETE") {
		t.Fatalf("attach --list with a disabled trigger: %v\n%s", err, list)
	}
	if out, err := b.attach(t, changed); err != nil || !strings.Contains(out, "case             updated") {
		t.Fatalf("re-attach after a disabled trigger: %v\n%s", err, out)
	}
	b.checkMirror(t, "after re-attaching a table whose capture was disabled")
	if list, err := b.recalc("attach", "--list"); err != nil || strings.Count(list, "capture complete") != 4 {
		t.Fatalf("attach --list: %v\n%s", err, list)
	}
	if out, err := b.recalc("detach", "--all"); err != nil || strings.Count(out, "detached") != 4 {
		t.Fatalf("detach --all: %v\n%s", err, out)
	}
	b.checkNothingLeft(t)
	b.run(t)
	var n int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.acl_record`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("after detach and a run: %d materialized records (%v), want 0", n, err)
	}
	if _, err := b.attach(t, crmSpec); err != nil {
		t.Fatalf("attach again: %v", err)
	}
	b.checkMirror(t, "after attaching again")
	b.run(t)
	b.checkOracle(t, "after attaching again")
}

// checkNothingLeft fails if any trigger, function, registry row or record
// of an attachment remains.
func (b *bundle) checkNothingLeft(t *testing.T) {
	t.Helper()
	var triggers, records, registry int
	err := b.admin.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'attach\_%' AND tgrelid IN
		    ('crm.account'::regclass, 'crm.contact'::regclass, 'crm.contact_account'::regclass, 'crm.opportunity'::regclass, 'support.case'::regclass)),
		(SELECT count(*) FROM recalc.record),
		(SELECT count(*) FROM recalc.attachment) + (SELECT count(*) FROM recalc.attach_capture)`).Scan(&triggers, &records, &registry)
	if err != nil {
		t.Fatal(err)
	}
	if fs := b.captureFuncs(t); triggers != 0 || records != 0 || registry != 0 || len(fs) != 0 {
		t.Fatalf("left behind: %d triggers, %d records, %d registry rows, functions %v", triggers, records, registry, fs)
	}
}
