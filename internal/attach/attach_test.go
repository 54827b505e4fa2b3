package attach_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// checkMirror fails unless recalc.record holds exactly the application's
// rows as records: ids, owners, parents and fields.
func (b *bundle) checkMirror(t *testing.T, after string) {
	t.Helper()
	var diff []string
	err := b.admin.QueryRow(context.Background(), `
		WITH x(doc) AS (`+expectedRecords+`),
		e AS (SELECT r->>'id' id, r->>'owner' owner, r->>'parent' parent, coalesce(r->'fields', '{}') f
		      FROM x, jsonb_array_elements(x.doc::jsonb) r),
		m AS (SELECT id, owner, parent, jsonb_strip_nulls(fields) f FROM recalc.record)
		SELECT coalesce(array_agg(d), '{}') FROM (
		    (SELECT 'missing ' || id FROM (SELECT * FROM e EXCEPT SELECT * FROM m) a)
		    UNION ALL (SELECT 'extra ' || id FROM (SELECT * FROM m EXCEPT SELECT * FROM e) b)) z(d)`).Scan(&diff)
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		t.Fatalf("%s, recalc.record differs from the application's rows: %v", after, diff)
	}
}

// TestAttachCRM attaches a CRM's tables, runs its writes as plain SQL
// (INSERT, UPDATE, DELETE, COPY, TRUNCATE) from several connections while
// recalculations run, and checks the records mirror the rows and access
// equals the oracle's and a full run's.
func TestAttachCRM(t *testing.T) {
	t.Parallel()
	b := setup(t)
	out, err := b.attach(t, crmSpec)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	for _, o := range []string{"account", "contact", "opportunity", "case"} {
		if !strings.Contains(out, o) || !strings.Contains(out, "attached") {
			t.Fatalf("attach output does not report %s attached:\n%s", o, out)
		}
	}
	b.checkMirror(t, "after the backfill")
	b.run(t)
	b.checkOracle(t, "after the backfill")
	// Account 1 and case 1 share the application id 1 and stay apart.
	var n int
	if err := b.admin.QueryRow(context.Background(), `SELECT count(*) FROM recalc.record WHERE id IN ('account:1', 'case:1')`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("colliding ids: %d records (%v), want 2", n, err)
	}

	b.writeWhileRunning(t, 7, writeAccounts, writeContacts, relinkContacts, writeOpportunities, writeCases)
	b.run(t)
	b.checkMirror(t, "after concurrent writes and an incremental run")
	b.checkOracle(t, "after concurrent writes and an incremental run")
	b.full(t)
	b.checkOracle(t, "after a full run")
}

// writer is one of the application's connections writing its tables.
type writer func(context.Context, *pgxpool.Pool, *rand.Rand) error

// writeWhileRunning runs writers at once as the application (writer i with
// a generator seeded (i, seed)) while incremental runs follow one another,
// fails the test on any error, and returns how many runs the writes saw.
func (b *bundle) writeWhileRunning(t *testing.T, seed uint64, writers ...writer) int {
	t.Helper()
	return b.writeWhile(t, seed, func() error {
		_, err := engine.Run(context.Background(), b.engine, engine.Options{ChunkSize: 5, Retries: 5}, zerolog.Nop())
		return err
	}, writers...)
}

// writeWhile runs writers as writeWhileRunning does while step runs again
// and again, and returns how many times step ran.
func (b *bundle) writeWhile(t *testing.T, seed uint64, step func() error, writers ...writer) int {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	steps := make(chan error, 1)
	n := 0
	go func() {
		for ctx.Err() == nil {
			if err := step(); err != nil {
				steps <- err
				return
			}
			n++
		}
		steps <- nil
	}()
	var wg sync.WaitGroup
	errs := make(chan error, len(writers))
	for i, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w(context.Background(), b.app, rand.New(rand.NewPCG(uint64(i), seed))); err != nil {
				errs <- fmt.Errorf("writer %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	stop()
	if err := <-steps; err != nil {
		t.Fatalf("beside the writes: %v", err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return n
}

// tx runs statements in one transaction of the application's role. It
// retries a deadlock, as an application does: recalc's planner fixes family
// roots with one UPDATE over many records, which can deadlock with an
// application statement changing many records (PostgreSQL aborts either).
func tx(ctx context.Context, app *pgxpool.Pool, stmts ...string) error {
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, app, func(tx pgx.Tx) error {
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return fmt.Errorf("%s: %w", s, err)
				}
			}
			return nil
		})
		if sqlState(err) != "40P01" || attempt == 5 {
			return err
		}
	}
}

var owners = []string{"alice", "bob", "carol", "dave", "erin", "frank"}

// writeAccounts COPYs accounts in, then changes owners, industries and
// territories, and deletes a few (their children go by cascade).
func writeAccounts(ctx context.Context, app *pgxpool.Pool, r *rand.Rand) error {
	var rows [][]any
	for id := int64(10); id < 40; id++ {
		terr := []string{}
		if id%3 == 0 {
			terr = []string{"north"}
		}
		rows = append(rows, []any{id, fmt.Sprintf("Account %d", id), owners[r.IntN(len(owners))], []string{"tech", "energy", "retail"}[id%3], id * 100, id%4 == 0, terr})
	}
	if _, err := app.CopyFrom(ctx, pgx.Identifier{"crm", "account"}, []string{"id", "name", "owner_id", "industry", "amount", "vip", "territories"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("copy accounts: %w", err)
	}
	for i := 0; i < 30; i++ {
		id := 10 + r.IntN(30)
		err := tx(ctx, app,
			fmt.Sprintf(`UPDATE crm.account SET owner_id = '%s' WHERE id = %d`, owners[r.IntN(len(owners))], id),
			fmt.Sprintf(`UPDATE crm.account SET industry = CASE industry WHEN 'tech' THEN 'retail' ELSE 'tech' END, updated_at = now() WHERE id %% 7 = %d`, i%7),
			`UPDATE crm.account SET name = name || '.'`) // not an attached column: no record change
		if err != nil {
			return err
		}
	}
	return tx(ctx, app, `DELETE FROM crm.account WHERE id IN (11, 12)`, `UPDATE crm.account SET territories = '{north}' WHERE id = 2`)
}

// writeContacts inserts contacts linked to the first accounts, changes
// their titles and owners, and deletes some.
func writeContacts(ctx context.Context, app *pgxpool.Pool, r *rand.Rand) error {
	if err := tx(ctx, app,
		`INSERT INTO crm.contact SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'bob', 'Engineer' FROM generate_series(1, 20) g`,
		`INSERT INTO crm.contact_account SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 1 + g % 3 FROM generate_series(1, 15) g`); err != nil {
		return err
	}
	titles := []string{"VP Sales", "Engineer", "VP Ops", "Buyer"}
	for i := 0; i < 40; i++ {
		g := 1 + r.IntN(20)
		if err := tx(ctx, app, fmt.Sprintf(`UPDATE crm.contact SET title = '%s', owner_id = '%s' WHERE id = ('00000000-0000-0000-0000-' || lpad('%d', 12, '0'))::uuid`,
			titles[r.IntN(len(titles))], owners[r.IntN(len(owners))], g)); err != nil {
			return err
		}
	}
	return tx(ctx, app, `DELETE FROM crm.contact WHERE id = '00000000-0000-0000-0000-000000000020'`)
}

// relinkContacts moves contacts between accounts, and links and unlinks
// them, concurrently with writeContacts changing the same contacts.
func relinkContacts(ctx context.Context, app *pgxpool.Pool, r *rand.Rand) error {
	for i := 0; i < 40; i++ {
		g := 1 + r.IntN(19)
		id := fmt.Sprintf("('00000000-0000-0000-0000-' || lpad('%d', 12, '0'))::uuid", g)
		stmt := fmt.Sprintf(`INSERT INTO crm.contact_account SELECT c.id, %d FROM crm.contact c WHERE c.id = %s
			ON CONFLICT (contact_id) DO UPDATE SET account_id = excluded.account_id`, 1+r.IntN(3), id)
		if r.IntN(4) == 0 {
			stmt = `DELETE FROM crm.contact_account WHERE contact_id = ` + id
		}
		if err := tx(ctx, app, stmt); err != nil {
			return err
		}
	}
	return nil
}

// writeOpportunities inserts opportunities on the first accounts, changes
// amounts and stages in bulk, and deletes some.
func writeOpportunities(ctx context.Context, app *pgxpool.Pool, r *rand.Rand) error {
	if err := tx(ctx, app, `INSERT INTO crm.opportunity SELECT gen_random_uuid(), 1 + g % 3, (ARRAY['alice','bob','carol','dave','erin','frank'])[1 + g % 6],
		'Prospecting', g * 97, date '2027-01-01' + g FROM generate_series(1, 60) g`); err != nil {
		return err
	}
	for i := 0; i < 20; i++ {
		if err := tx(ctx, app, fmt.Sprintf(`UPDATE crm.opportunity SET amount = amount + %d, stage = 'Negotiation' WHERE amount::bigint %% 5 = %d`, r.IntN(900), i%5)); err != nil {
			return err
		}
	}
	return tx(ctx, app, `DELETE FROM crm.opportunity WHERE amount < 500`)
}

// writeCases inserts cases whose ids collide with accounts', changes
// priorities, truncates the table, and inserts again.
func writeCases(ctx context.Context, app *pgxpool.Pool, r *rand.Rand) error {
	if err := tx(ctx, app, `INSERT INTO support."case" SELECT g, 1 + g % 3, 'erin', g % 5, 'New' FROM generate_series(3, 30) g`); err != nil {
		return err
	}
	for i := 0; i < 10; i++ {
		if err := tx(ctx, app, fmt.Sprintf(`UPDATE support."case" SET priority = %d WHERE id %% 3 = %d`, r.IntN(5), i%3)); err != nil {
			return err
		}
	}
	if err := tx(ctx, app, `TRUNCATE support."case"`); err != nil {
		return err
	}
	return tx(ctx, app, `INSERT INTO support."case" SELECT g, 1 + g % 3, 'dave', g % 5, 'Escalated' FROM generate_series(1, 12) g`,
		`UPDATE support."case" SET owner_id = 'bob' WHERE id = 1`)
}

// TestRowsFailClosed: a row recalc.record's constraints would refuse, or
// whose owner is no user of the model, is still written by the
// application; its record gets no access and is listed as invalid.
func TestRowsFailClosed(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id, amount) VALUES (50, 'Huge', 'bob', 1e400), (51, 'Nobody', 'zed', 1)`)
	b.run(t)
	var invalid []string
	if err := b.admin.QueryRow(context.Background(), `SELECT array_agg(record || ': ' || reason ORDER BY record) FROM recalc.invalid_record`).Scan(&invalid); err != nil {
		t.Fatal(err)
	}
	if len(invalid) != 2 || !strings.HasPrefix(invalid[0], "account:50: values out of bounds") || !strings.HasPrefix(invalid[1], "account:51: unknown owner") {
		t.Fatalf("invalid records: %v, want account:50 out of bounds and account:51 with an unknown owner", invalid)
	}
	if _, owner := b.recordOf(t, "account:50"); owner != "bob" {
		t.Fatalf("account:50 failed closed with owner %q, want its owner bob kept", owner)
	}
	for _, u := range crmUsers {
		var level string
		if err := b.engine.QueryRow(context.Background(), `SELECT recalc.access_level($1, 'account:50')`, u).Scan(&level); err != nil || level != "none" {
			t.Fatalf("access_level(%s, account:50) = %s (%v), want none", u, level, err)
		}
	}
}

// TestPoisonRowsFailClosed: a row whose value the absorb could not convert
// used to stop its whole object (every try failed, so no write of it was
// mirrored, a revocation included). Now the row fails closed and the
// object's other writes go on being mirrored.
func TestPoisonRowsFailClosed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, poison string }{
		{"territories of two dimensions", `UPDATE crm.account SET territories = '{{north},{north}}' WHERE id = 1`},
		{"a field over jsonb's string limit", `UPDATE crm.account SET industry = repeat('x', 270000000) WHERE id = 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t)
			b.exec(t, b.app, tc.poison,
				`UPDATE crm.account SET owner_id = 'frank' WHERE id = 3`) // a revocation: account 3 leaves carol
			b.run(t)
			for _, tw := range []struct{ user, record, level string }{{"carol", "account:3", "none"}, {"frank", "account:3", "all"}, {"bob", "account:1", "none"}} {
				var level string
				if err := b.engine.QueryRow(context.Background(), `SELECT recalc.access_level($1, $2)`, tw.user, tw.record).Scan(&level); err != nil || level != tw.level {
					t.Errorf("access_level(%s, %s) = %s (%v), want %s", tw.user, tw.record, level, err, tw.level)
				}
			}
			var stuck, reason string
			if err := b.admin.QueryRow(context.Background(), `SELECT (SELECT coalesce(string_agg(object, ','), '') FROM recalc.attach_stuck),
				(SELECT coalesce(string_agg(reason, ','), '') FROM recalc.invalid_record WHERE record = 'account:1')`).Scan(&stuck, &reason); err != nil {
				t.Fatal(err)
			}
			if stuck != "" || !strings.HasPrefix(reason, "values out of bounds") {
				t.Errorf("stuck objects %q, account:1 invalid for %q; want none stuck, account:1 out of bounds", stuck, reason)
			}
		})
	}
}

// TestUnreadableRowFailsClosedAlone: a row that the attached view cannot
// read (its cast does not fit the row's value) fails closed alone, at the
// backfill and at every absorb after it: the rows around it are mirrored,
// no object is stuck, nothing prints the value, the record keeps its stored
// owner, and once the row is corrected it is mirrored as it is.
func TestUnreadableRowFailsClosedAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const secret = "SSN 078-05-1120"
	b.exec(t, b.app, `UPDATE support."case" SET status = '7' WHERE id = 1`,
		`UPDATE support."case" SET status = '`+secret+`' WHERE id = 2`,
		`INSERT INTO support."case" SELECT g, 1, 'carol', g, g::text FROM generate_series(3, 40) g`,
		`GRANT SELECT, TRIGGER ON support."case" TO `+ident(b.engineRole))
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.case_n AS SELECT c.id, c.owner_id, c.account_id, (c.status)::integer AS status_n FROM support."case" c`)
	spec := `{"objects": [
  {"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "fields": ["industry", "amount", "vip"], "territories": "territories"},
  {"object": "case", "table": "crm_recalc.case_n", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["status_n"],
   "capture": [{"table": "support.case", "id": "id"}]}]}`
	out, err := b.attach(t, spec)
	if err != nil || strings.Contains(out, "078-05-1120") {
		t.Fatalf("attach over a row the view cannot read: %v\n%s\nwant it attached, the value unprinted", err, out)
	}
	check := func(when string, invalid string, owners map[string]string) {
		t.Helper()
		b.run(t)
		var got, stuck string
		var mirrored int
		if err := b.admin.QueryRow(ctx, `SELECT (SELECT coalesce(string_agg(record || ' ' || split_part(reason, ' (', 1), ',' ORDER BY record), '') FROM recalc.invalid_record),
				(SELECT coalesce(string_agg(object || ' ' || error_code, ','), '') FROM recalc.attach_stuck),
				(SELECT count(*) FROM recalc.record WHERE object = 'case' AND fields ? 'status_n')`).Scan(&got, &stuck, &mirrored); err != nil {
			t.Fatal(err)
		}
		if got != invalid || stuck != "" {
			t.Errorf("%s: invalid records %q, stuck objects %q; want %q, none stuck", when, got, stuck, invalid)
		}
		wantMirrored := 40 - strings.Count(invalid, ",") - 1
		if invalid == "" {
			wantMirrored = 40
		}
		if mirrored != wantMirrored {
			t.Errorf("%s: %d cases mirrored with their fields, want %d", when, mirrored, wantMirrored)
		}
		for id, want := range owners {
			if _, owner := b.recordOf(t, id); owner != want {
				t.Errorf("%s: %s is owned by %q, want %q", when, id, owner, want)
			}
		}
	}
	check("after the backfill", "case:2 values out of bounds or unreadable", map[string]string{"case:1": "erin", "case:2": "", "case:3": "carol"})
	// An unreadable value on a row mirrored before, beside writes to its
	// neighbours in the same statement and in later ones.
	b.exec(t, b.app, `UPDATE support."case" SET status = CASE id WHEN 30 THEN 'n/a' ELSE status END, owner_id = 'dave' WHERE id BETWEEN 25 AND 35`,
		`UPDATE support."case" SET owner_id = 'frank' WHERE id = 1`)
	check("after an update", "case:2 values out of bounds or unreadable,case:30 values out of bounds or unreadable",
		map[string]string{"case:1": "frank", "case:25": "dave", "case:30": "carol", "case:35": "dave"})
	level := func(when, user, record, want string) {
		t.Helper()
		var got string
		if err := b.engine.QueryRow(ctx, `SELECT recalc.access_level($1, $2)`, user, record).Scan(&got); err != nil || got != want {
			t.Errorf("%s: %s's access to %s is %q (%v), want %s", when, user, record, got, err, want)
		}
	}
	level("while unreadable", "carol", "case:30", "none")
	level("while unreadable", "dave", "case:29", "all")
	b.exec(t, b.app, `UPDATE support."case" SET status = '2' WHERE id IN (2, 30)`)
	check("once corrected", "", map[string]string{"case:2": "bob", "case:30": "dave"})
	b.full(t)
	level("after a full run", "dave", "case:30", "all")
	level("after a full run", "bob", "case:2", "all")
}

// TestViewFailingWithoutRowsFailsAttach: a view whose read fails whatever
// the rows (a constant cast, folded when planned) is the view's fault, not
// a row's: the attach fails with the SQLSTATE, rather than mirror every row
// closed.
func TestViewFailingWithoutRowsFailsAttach(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app, `GRANT SELECT, TRIGGER ON support."case" TO `+ident(b.engineRole))
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.case_k AS SELECT c.id, c.owner_id, c.account_id, ('n/a'::text)::integer AS k FROM support."case" c`)
	_, err := b.attach(t, `{"objects": [
  {"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id"},
  {"object": "case", "table": "crm_recalc.case_k", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["k"],
   "capture": [{"table": "support.case", "id": "id"}]}]}`)
	if err == nil || !strings.Contains(err.Error(), "SQLSTATE 22P02") {
		t.Fatalf("attach of a view that fails for every row: %v, want an error naming SQLSTATE 22P02", err)
	}
}

// TestCaptureUnderRepeatableRead: writes to an attached table and to a
// view's base table under REPEATABLE READ are captured: the engine re-reads
// the view for them later, in its own READ COMMITTED transaction.
func TestCaptureUnderRepeatableRead(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	ctx := context.Background()
	for _, stmt := range []string{
		`INSERT INTO crm.contact VALUES (gen_random_uuid(), 'bob', 'CFO')`,
		`INSERT INTO crm.account (id, name, owner_id) VALUES (60, 'RR', 'bob')`,
	} {
		err := pgx.BeginTxFunc(ctx, b.app, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, stmt)
			return err
		})
		if err != nil {
			t.Fatalf("repeatable read write %q: %v", stmt, err)
		}
	}
	b.run(t)
	b.checkMirror(t, "after a repeatable read write")
}

// TestFailClosedKeepsManualShares: a row that fails closed for a moment for
// a reason other than its owner (a number out of float64's range) keeps its
// owner, so its manual shares are not wiped as by an owner change: they give
// no access while the record is invalid, and again once the row is valid.
func TestFailClosedKeepsManualShares(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	ctx := context.Background()
	if _, err := testkit.ImportString(ctx, b.engine, `{"shares": [{"object": "account", "record": "account:1", "grantee": "user:frank", "access": "edit", "cause": "manual"}]}`); err != nil {
		t.Fatal(err)
	}
	level := func(after string, want string) {
		t.Helper()
		b.run(t)
		var got string
		if err := b.engine.QueryRow(ctx, `SELECT recalc.access_level('frank', 'account:1')`).Scan(&got); err != nil || got != want {
			t.Fatalf("%s: frank's access to account:1 is %s (%v), want %s", after, got, err, want)
		}
	}
	level("with the manual share", "edit")
	b.exec(t, b.app, `UPDATE crm.account SET amount = 1e400 WHERE id = 1`)
	level("while the row fails closed", "none")
	if _, owner := b.recordOf(t, "account:1"); owner != "bob" {
		t.Fatalf("account:1 failed closed with owner %q, want bob kept", owner)
	}
	b.exec(t, b.app, `UPDATE crm.account SET amount = 5 WHERE id = 1`)
	level("once the row is valid again", "edit") // read (the tech rule) if the share were gone
}

// TestExportOfAttachedOrgImportsBack: `recalc export` leaves out the records
// of attached objects (they are the application's rows, which an import may
// not write), so importing the export is accepted and changes nothing, and
// the team entry and share on attached records go out and come back.
func TestExportOfAttachedOrgImportsBack(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"teams": [{"record": "account:2", "user": "bob", "access": "edit"}],
		"shares": [{"object": "account", "record": "account:1", "grantee": "user:bob", "access": "read", "cause": "manual"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	before := testdb.Materialized(t, b.admin)
	path := filepath.Join(t.TempDir(), "export.json")
	if _, err := b.recalc("export", "-o", path); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"record":"account:2","user":"bob"`, `"record":"account:1","grantee":"user:bob"`} {
		if !strings.Contains(string(file), want) {
			t.Errorf("the export lacks %s:\n%.3000s", want, file)
		}
	}
	if strings.Contains(string(file), `"id":"account:`) {
		t.Errorf("the export holds records of the attached object account:\n%.3000s", file)
	}
	if _, err := b.recalc("import", path); err != nil {
		t.Fatalf("importing the export: %v", err)
	}
	if rep := b.run(t); !rep.Nothing {
		t.Errorf("importing the export left something to recalculate: %+v", rep)
	}
	if after := testdb.Materialized(t, b.admin); after != before {
		t.Errorf("importing the export changed the materialized tables:\n%s", oracle.Diff(before, after))
	}
	b.checkMirror(t, "import of the export")
}
