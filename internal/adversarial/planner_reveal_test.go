package adversarial

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// hiddenTable creates app.account, owned by the engine, with a secret
// column and an index on it, holding a row for each of the 5 accounts of
// baseModel (secret "s-ID") and 200 rows that are no record (secret "nobody"), and
// a leaky function app.peek(text) that notes every value it is given in
// the transaction's setting peek.seen and returns true. The reader may
// read and write the table and call the function.
func (b *bundle) hiddenTable(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.admin.Exec(ctx, `CREATE SCHEMA app AUTHORIZATION `+ident(b.engineRole)); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`CREATE TABLE app.account (id text PRIMARY KEY, name text NOT NULL, secret text NOT NULL)`,
		`CREATE INDEX ON app.account (secret)`,
		`INSERT INTO app.account SELECT id, 'Account ' || id, 's-' || id FROM recalc.record WHERE object = 'account'`,
		`INSERT INTO app.account SELECT 'stray' || g, 'no record', 'nobody' FROM generate_series(1, 200) g`,
		`ANALYZE app.account`,
		// COST as low as it goes: the planner would run it before any
		// costlier condition it is free to put after it.
		`CREATE FUNCTION app.peek(text) RETURNS boolean LANGUAGE plpgsql VOLATILE COST 0.0001 AS $$
		 BEGIN PERFORM set_config('peek.seen', coalesce(current_setting('peek.seen', true), '') || $1 || ' ', true); RETURN true; END $$`,
		`GRANT USAGE ON SCHEMA app TO ` + ident(b.readerRole),
		`GRANT SELECT, UPDATE, DELETE ON app.account TO ` + ident(b.readerRole),
		`GRANT EXECUTE ON FUNCTION app.peek(text) TO ` + ident(b.readerRole),
	} {
		if _, err := b.engine.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// TestLeakyFunctionSeesOnlyVisibleRows: a reader's own function that is
// not LEAKPROOF (it could raise, log or note its argument) is evaluated only
// on the rows recalc's policies admit, under both policies, whatever the
// plan: PostgreSQL runs a policy's condition before any non-leakproof
// condition of the query, however cheap the planner thinks it. u4 reads
// hot1 alone, so only hot1's secret may reach the function: through a
// scan, a lookup of a hidden row by id, a sort with a limit, a join, an
// aggregate's FILTER, a CTE, an UPDATE, a DELETE, a COPY of a query and a
// MERGE's WHEN MATCHED condition, with sequential scans on and off.
func TestLeakyFunctionSeesOnlyVisibleRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.hiddenTable(t)
	for _, policy := range [][]string{nil, {"--per-user-plans"}} {
		b.recalc(t, append([]string{"rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id", "--write"}, policy...)...)
		for _, settings := range []string{"", "SET LOCAL enable_seqscan = off"} {
			for _, tc := range []struct {
				user, sql string
				want      string // what the function may see, and must
			}{
				{"u4", `SELECT id FROM app.account WHERE app.peek(secret)`, "s-hot1"},
				{"u4", `SELECT id FROM app.account WHERE id = 'a1' AND app.peek(secret)`, ""},
				{"u4", `SELECT id FROM app.account WHERE secret = 's-a2' AND app.peek(secret)`, ""},
				{"u4", `SELECT id FROM app.account WHERE app.peek(secret) ORDER BY id LIMIT 1`, "s-hot1"},
				{"u4", `SELECT a.id FROM app.account a JOIN app.account b ON b.id = a.id WHERE app.peek(b.secret) AND app.peek(a.secret)`, "s-hot1"},
				{"u4", `SELECT count(*) FILTER (WHERE app.peek(secret))::text FROM app.account`, "s-hot1"},
				{"u4", `WITH c AS MATERIALIZED (SELECT secret FROM app.account) SELECT secret FROM c WHERE app.peek(secret)`, "s-hot1"},
				{"u4", `SELECT id FROM app.account WHERE id IN (SELECT id FROM app.account WHERE app.peek(secret))`, "s-hot1"},
				// u4 may edit nothing; u2 edits a1 and a2.
				{"u4", `UPDATE app.account SET name = name WHERE app.peek(secret) RETURNING id`, ""},
				{"u2", `UPDATE app.account SET name = name WHERE app.peek(secret) RETURNING id`, "s-a1 s-a2"},
				{"u2", `DELETE FROM app.account WHERE app.peek(secret) RETURNING id`, "s-a1 s-a2"},
				{"u4", `COPY (SELECT id FROM app.account WHERE app.peek(secret)) TO STDOUT`, "s-hot1"},
				// MERGE (PostgreSQL 15) joins only the target rows the read
				// policy admits: a3 and hot1 are not matched for u2, and
				// WHEN MATCHED sees the rows u2 edits.
				{"u2", `MERGE INTO app.account t USING (VALUES ('a1'), ('a2'), ('a3'), ('hot1')) s (id) ON t.id = s.id
					WHEN MATCHED AND app.peek(t.secret) THEN UPDATE SET name = t.name`, "s-a1 s-a2"},
			} {
				seen := strings.Fields(b.peekAs(t, tc.user, settings, tc.sql))
				slices.Sort(seen)
				if got := strings.Join(slices.Compact(seen), " "); got != tc.want {
					t.Errorf("%v %s: %s as %s gave the function the secrets %q, want %q (those of the rows the user may read, or edit)", policy, settings, tc.sql, tc.user, got, tc.want)
				}
			}
		}
	}
}

// peekAs runs sql as the reader for user, with settings first, and returns
// what app.peek saw, rolled back.
func (b *bundle) peekAs(t *testing.T, user, settings, sql string) string {
	t.Helper()
	ctx := context.Background()
	var seen *string
	b.asReaderTx(t, user, func(tx pgx.Tx) {
		if settings != "" {
			if _, err := tx.Exec(ctx, settings); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s as %s: %v", sql, user, err)
		}
		if err := tx.QueryRow(ctx, `SELECT current_setting('peek.seen', true)`).Scan(&seen); err != nil {
			t.Fatal(err)
		}
	})
	if seen == nil {
		return ""
	}
	return *seen
}

// TestRevealPlannerCounts shows what PostgreSQL itself tells a role under
// recalc's policies about the rows they hide (SECURITY.md, "What
// PostgreSQL tells about hidden rows"), which no policy can take away:
//   - EXPLAIN ANALYZE counts the rows a scan's filter removed: with the
//     query's condition on an indexed column (a LEAKPROOF operator, which
//     PostgreSQL lets run before the policy), that is how many rows the
//     reader cannot see hold that value: u4, who reads hot1 alone, learns
//     that a hidden row's secret is s-a1, and that none is s-zz;
//   - the planner's estimates come from statistics of every row, the hidden
//     ones included, for a LEAKPROOF operator: EXPLAIN estimates more rows
//     for a value 200 hidden rows hold than for one no row holds;
//   - pg_class.reltuples, which every role may read, counts every row.
//
// pg_stats, by contrast, shows a role under the policies nothing of the
// table.
func TestRevealPlannerCounts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.hiddenTable(t)
	b.recalc(t, "rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id")
	if got := b.asReader(t, "u4", `SELECT secret FROM app.account`); got != "s-hot1" {
		t.Fatalf("u4 reads %q through the policy, want s-hot1", got)
	}
	removed := func(value string) int {
		t.Helper()
		plan := b.explainAs(t, "u4", `EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM app.account WHERE secret = '`+value+`'`)
		return int(sumKey(plan, "Rows Removed by Filter"))
	}
	if got := removed("s-a1"); got != 1 {
		t.Errorf("EXPLAIN ANALYZE of a read of secret s-a1 as u4 counts %d rows removed by the policy, want 1: PostgreSQL tells that a hidden row holds it", got)
	}
	if got := removed("s-zz"); got != 0 {
		t.Errorf("EXPLAIN ANALYZE of a read of secret s-zz as u4 counts %d rows removed, want 0", got)
	}
	estimate := func(value string) float64 {
		t.Helper()
		plan := b.explainAs(t, "u4", `EXPLAIN (FORMAT JSON) SELECT id FROM app.account WHERE secret = '`+value+`'`)
		top, _ := plan.([]any)
		if len(top) != 1 {
			t.Fatalf("EXPLAIN (FORMAT JSON) gave %v", plan)
		}
		rows, _ := top[0].(map[string]any)["Plan"].(map[string]any)["Plan Rows"].(float64)
		return rows
	}
	if held, none := estimate("nobody"), estimate("s-zz"); held <= 10*none {
		t.Errorf("EXPLAIN estimates %v rows as u4 for a secret 200 hidden rows hold and %v for one no row holds: want the first far above (the statistics of hidden rows)", held, none)
	}
	var tuples float64
	var stats int
	b.asReaderTx(t, "u4", func(tx pgx.Tx) {
		if err := tx.QueryRow(context.Background(), `SELECT reltuples, (SELECT count(*) FROM pg_stats WHERE schemaname = 'app' AND tablename = 'account')
			FROM pg_class WHERE oid = 'app.account'::regclass`).Scan(&tuples, &stats); err != nil {
			t.Fatal(err)
		}
	})
	if int(tuples) != 205 {
		t.Errorf("pg_class.reltuples of app.account reads %v as the reader, want every row's count, 205", tuples)
	}
	if stats != 0 {
		t.Errorf("pg_stats shows the reader %d rows of app.account's statistics, want none", stats)
	}
}

// explainAs runs an EXPLAIN (FORMAT JSON) as the reader for user, with
// sequential scans off (any role may set that), and returns its plan.
func (b *bundle) explainAs(t *testing.T, user, sql string) any {
	t.Helper()
	var plan any
	b.asReaderTx(t, user, func(tx pgx.Tx) {
		ctx := context.Background()
		if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			t.Fatal(err)
		}
		var out []byte
		if err := tx.QueryRow(ctx, sql).Scan(&out); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if err := json.Unmarshal(out, &plan); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	})
	return plan
}

// asReaderTx runs fn as the reader with app.user_id = user, rolled back.
func (b *bundle) asReaderTx(t *testing.T, user string, fn func(pgx.Tx)) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.reader.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
		t.Fatal(err)
	}
	fn(tx)
}

// sumKey adds up the numbers under key anywhere in a decoded JSON plan.
func sumKey(v any, key string) float64 {
	switch v := v.(type) {
	case map[string]any:
		s := 0.0
		for k, x := range v {
			if n, ok := x.(float64); ok && k == key {
				s += n
			} else {
				s += sumKey(x, key)
			}
		}
		return s
	case []any:
		s := 0.0
		for _, x := range v {
			s += sumKey(x, key)
		}
		return s
	}
	return 0
}

// TestRevocationReachesTheNextStatement: once the run that absorbs a
// revocation commits, the policy's next statement in a READ COMMITTED
// transaction, even one open since before, no longer shows the row; a
// REPEATABLE READ transaction whose snapshot was taken before the commit
// goes on showing it until it ends, as it goes on showing every row as of
// its snapshot (docs/rls.md, "When a revocation takes effect"). Until the
// run, the import's change is not yet the share tables' and the row
// shows.
func TestRevocationReachesTheNextStatement(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.hiddenTable(t)
	b.recalc(t, "rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id")
	ctx := context.Background()
	open := func(iso string) pgx.Tx {
		t.Helper()
		tx, err := b.reader.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.TxIsoLevel(iso)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', 'u2', true)`); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	read := func(tx pgx.Tx) string {
		t.Helper()
		var got string
		if err := tx.QueryRow(ctx, `SELECT coalesce(string_agg(id, ' ' ORDER BY id), '') FROM app.account`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	committed, repeatable := open("read committed"), open("repeatable read")
	for _, tx := range []pgx.Tx{committed, repeatable} {
		if got := read(tx); got != "a1 a2" {
			t.Fatalf("u2 reads %q before the revocation, want a1 a2", got)
		}
	}
	// u2's manual share on a2 goes.
	b.importJSON(t, strings.Replace(baseModel,
		`{"object": "account", "record": "a2", "grantee": "user:u2", "access": "edit", "cause": "manual"},`, ``, 1))
	if got := read(committed); got != "a1 a2" {
		t.Errorf("u2 reads %q after the import and before its run, want a1 a2: the share tables are as the last run left them", got)
	}
	b.run(t)
	if got := read(committed); got != "a1" {
		t.Errorf("u2 reads %q in a READ COMMITTED transaction after the run that revoked a2, want a1", got)
	}
	if got := read(repeatable); got != "a1 a2" {
		t.Errorf("u2 reads %q in a REPEATABLE READ transaction whose snapshot predates the run, want a1 a2 (its snapshot's share tables)", got)
	}
	if got := read(open("repeatable read")); got != "a1" {
		t.Errorf("u2 reads %q in a REPEATABLE READ transaction begun after the run, want a1", got)
	}
}

// TestDefinerFunctionsReadAsTheirOwner: an application's SECURITY DEFINER
// function reads a protected table as the function's owner, as a view does
// (docs/rls.md, "Functions"): owned by the table's owner, it returns every
// row to a reader whose user reads one, until `rls enable --force` puts the
// owner under the policies, which then judge the rows for the user the
// setting names; owned by a role without `recalc grant reader`, it fails
// (42501) rather than show a row.
func TestDefinerFunctionsReadAsTheirOwner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.hiddenTable(t)
	ctx := context.Background()
	for _, sql := range []string{
		`CREATE FUNCTION app.secrets() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
		 AS $$ SELECT secret FROM app.account $$`,
		`CREATE FUNCTION app.secrets_of_writer() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
		 AS $$ SELECT secret FROM app.account $$`,
		`GRANT USAGE ON SCHEMA app TO ` + ident(b.writerRole),
		`GRANT SELECT ON app.account TO ` + ident(b.writerRole),
		`GRANT EXECUTE ON FUNCTION app.secrets(), app.secrets_of_writer() TO ` + ident(b.readerRole),
	} {
		if _, err := b.engine.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if _, err := b.admin.Exec(ctx, `ALTER FUNCTION app.secrets_of_writer() OWNER TO `+ident(b.writerRole)); err != nil {
		t.Fatal(err)
	}
	count := func(sql string) (int, error) {
		var n int
		var err error
		b.asReaderTx(t, "u4", func(tx pgx.Tx) { err = tx.QueryRow(ctx, sql).Scan(&n) })
		return n, err
	}
	b.recalc(t, "rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id")
	if n, err := count(`SELECT count(*) FROM app.secrets()`); err != nil || n != 205 {
		t.Errorf("a definer function of the table's owner, called by the reader for u4: %d rows (%v), want all 205: the owner is not under the policies", n, err)
	}
	_, err := count(`SELECT count(*) FROM app.secrets_of_writer()`)
	wantState(t, "a definer function of a role that is no reader", err, insufficientPrivilege)
	b.recalc(t, "rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id", "--force")
	if got := b.asReader(t, "u4", `SELECT s FROM app.secrets() s`); got != "s-hot1" {
		t.Errorf("a definer function of the table's owner, called for u4 after --force: %q, want s-hot1 (the setting's user)", got)
	}
}
