package attach_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestWriterReadsNoAttachedRecord: a writer role (`recalc grant writer`)
// with no right on the application's schemas read, in recalc.record, every
// record of the attached objects as the absorb mirrors them from the
// application's tables: their owners, parents, territories and criteria
// fields (an attack helper listed crm.account's owners, industries and
// amounts). Now it reads only the other records (migration 082): a whole
// scan, a lookup by key and one by parent, in a session whose cached plan
// of the scan predates the attach of another object too; the engine, and
// a member of its role (who may run recalc's commands), still read them all.
func TestWriterReadsNoAttachedRecord(t *testing.T) {
	t.Parallel()
	b := setupOwnRoles(t) // it adds a member to the engine role
	ctx := context.Background()
	w, writer := b.writerPool(t)
	b.exec(t, b.app, `INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000001', 1, 'dave', 'won', 5000, NULL)`)
	b.mustAttach(t, crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")]+"\n]}")
	b.exec(t, w, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('case:900', 'case', 'bob', 'account:1')`)
	if _, err := w.Exec(ctx, `SELECT 1 FROM crm.account`); sqlState(err) != "42501" {
		t.Fatalf("the writer %s reads crm.account: %v, want no right on it", writer, err)
	}
	conn, err := w.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// One statement, prepared once and cached by the session (pgx's
	// statement cache), so that its plan outlives the next attach.
	scan := func() []string {
		t.Helper()
		rows, err := conn.Query(ctx, `SELECT id || ' ' || owner || ' ' || fields::text FROM recalc.record ORDER BY id`)
		if err != nil {
			t.Fatalf("read recalc.record as the writer: %v", err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("read recalc.record as the writer: %v", err)
		}
		return got
	}
	count := func(sql string) (n int) {
		t.Helper()
		if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatalf("%s as the writer: %v", sql, err)
		}
		return n
	}
	if got := scan(); len(got) != 1 || got[0] != "case:900 bob {}" {
		t.Errorf("the writer reads recalc.record as %q, want its own record case:900 alone", got)
	}
	if n := count(`SELECT count(*) FROM recalc.record WHERE id = 'account:1'`); n != 0 {
		t.Errorf("the writer finds account:1 by its key: %d rows, want none", n)
	}
	if n := count(`SELECT count(*) FROM recalc.record WHERE parent = 'account:1'`); n != 1 {
		t.Errorf("the writer finds %d records under account:1, want its own case:900 alone", n)
	}

	b.mustAttach(t, crmSpec)
	if got := scan(); len(got) != 0 {
		t.Errorf("once case is attached, the writer's cached scan reads %q, want nothing", got)
	}
	member := "attach_member_" + strings.TrimPrefix(b.engineRole, "attach_engine_")
	testdb.DropRoles(t, b.url, member)
	b.exec(t, b.admin, `CREATE ROLE `+ident(member)+` LOGIN NOSUPERUSER`, `GRANT `+ident(b.engineRole)+` TO `+ident(member),
		`GRANT CONNECT ON DATABASE `+ident(dbName(t, b.url))+` TO `+ident(member))
	const attached = `SELECT count(*) FROM recalc.record WHERE object IN ('account', 'case')`
	var engineSees, memberSees int
	if err := b.engine.QueryRow(ctx, attached).Scan(&engineSees); err != nil || engineSees != 5 {
		t.Fatalf("the engine reads %d accounts and cases (err %v), want the 5 of the tables", engineSees, err)
	}
	if err := openPool(t, dburl.WithUser(b.url, member)).QueryRow(ctx, attached).Scan(&memberSees); err != nil || memberSees != engineSees {
		t.Errorf("a member of the engine role reads %d accounts and cases (err %v), want the engine's %d", memberSees, err, engineSees)
	}
}
