package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/internal/testkit/fixture"
)

// TestMain drops the tests' databases when they have all run (testdb.Main).
func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// setup returns a fresh database holding testdata/base.json, and that file.
func setup(t *testing.T) (context.Context, *pgxpool.Pool, []byte) {
	t.Helper()
	ctx, pool := context.Background(), testdb.Migrated(t)
	base, err := os.ReadFile("testdata/base.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testkit.ImportString(ctx, pool, string(base)); err != nil {
		t.Fatalf("base model: %v", err)
	}
	return ctx, pool, base
}

// snapshot renders every table of the recalc schema, rows sorted, so two
// snapshots are equal exactly when the stored data is.
func snapshot(t *testing.T, ctx context.Context, pool *pgxpool.Pool) string {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'recalc' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		tables = append(tables, n)
	}
	var b strings.Builder
	for _, tbl := range tables {
		var body string
		err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '') FROM recalc.%q t`, tbl)).Scan(&body)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "== %s\n%s\n", tbl, body)
	}
	return b.String()
}

// invalidModels holds one file per kind of invalidity in the spec and the
// interface. Each is imported over the valid base model and must be rejected
// with a message containing want, leaving the database unchanged.
var invalidModels = []struct{ name, file, want string }{
	{"malformed JSON", `{"users": [`, "malformed JSON"},
	{"not an object", `[1]`, "one JSON object"},
	{"trailing data", `{"users": []} {}`, "after the model"},
	{"unknown section", `{"people": []}`, `unknown section "people"`},
	{"unknown key", `{"users": [{"id": "x", "colour": "red"}]}`, "colour"},
	{"wrong type", `{"users": [{"id": 5}]}`, `"id" must be a string`},
	{"wrong version", `{"version": 2}`, "version"},
	{"external more open", `{"objects": [{"name": "account", "internal_owd": "private", "external_owd": "public_read_only"}]}`, `object "account": external OWD`},
	{"cbp without parent", `{"objects": [{"name": "x__c", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}]}`, `object "x__c"`},
	{"cbp on one side", `{"objects": [{"name": "account", "internal_owd": "private"}, {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent"}]}`, `object "contact"`},
	{"standard hierarchy false", `{"objects": [{"name": "account", "internal_owd": "private", "hierarchy": false}]}`, `object "account": hierarchy`},
	{"unknown parent object", `{"objects": [{"name": "x__c", "parent": "nope__c", "internal_owd": "private"}]}`, `"nope__c" does not exist`},
	{"bad owd", `{"objects": [{"name": "x__c", "internal_owd": "open"}]}`, `object "x__c": internal_owd "open"`},
	{"role cycle", `{"roles": [{"id": "a", "parent": "b"}, {"id": "b", "parent": "a"}]}`, "cycle"},
	{"unknown role", `{"users": [{"id": "u1", "role": "nope"}]}`, `user "u1": role "nope" does not exist`},
	{"group cycle", `{"groups": [{"id": "g0", "members": ["group:g1"]}, {"id": "g1", "members": ["group:g0"]}, {"id": "support_q", "queue": true, "members": []}]}`, "group nesting cycle"},
	{"bad grantee", `{"groups": [{"id": "g0", "members": ["team:x"]}, {"id": "support_q", "queue": true, "members": []}]}`, `group "g0"`},
	{"territory cycle", `{"territories": [{"id": "west", "parent": "east"}, {"id": "east", "parent": "west"}]}`, "cycle"},
	{"rule on cbp object", `{"rules": [{"id": "bad", "object": "contact", "type": "owner", "source": "all_internal_users", "target": "group:emea", "access": "read"}]}`, `rule "bad": object "contact" is controlled_by_parent`},
	{"unknown op", `{"rules": [{"id": "bad", "object": "account", "type": "criteria", "target": "group:emea", "access": "read", "criteria": {"conditions": [{"field": "x", "op": "matches", "value": "y"}]}}]}`, `rule "bad": condition 1: unknown op "matches"`},
	{"bad logic", `{"rules": [{"id": "bad", "object": "account", "type": "criteria", "target": "group:emea", "access": "read", "criteria": {"conditions": [{"field": "x", "op": "equals", "value": "y"}], "logic": "1 AND"}}]}`, `rule "bad": logic`},
	{"logic names missing condition", `{"rules": [{"id": "bad", "object": "account", "type": "criteria", "target": "group:emea", "access": "read", "criteria": {"conditions": [{"field": "x", "op": "equals", "value": "y"}], "logic": "1 OR 2"}}]}`, "condition 2 does not exist"},
	{"empty conditions", `{"rules": [{"id": "bad", "object": "account", "type": "criteria", "target": "group:emea", "access": "read", "criteria": {"conditions": []}}]}`, `rule "bad": criteria has no conditions`},
	{"rule access all", `{"rules": [{"id": "bad", "object": "account", "type": "owner", "source": "all_internal_users", "target": "group:emea", "access": "all"}]}`, `rule "bad": access "all"`},
	{"child access off account", `{"rules": [{"id": "bad", "object": "case", "type": "owner", "source": "all_internal_users", "target": "group:emea", "access": "read", "case_access": "read"}]}`, `rule "bad": child access`},
	{"owner rule with user source", `{"rules": [{"id": "bad", "object": "account", "type": "owner", "source": "user:u1", "target": "group:emea", "access": "read"}]}`, `rule "bad": source`},
	{"string op on number", `{"rules": [{"id": "bad", "object": "account", "type": "criteria", "target": "group:emea", "access": "read", "criteria": {"conditions": [{"field": "x", "op": "contains", "value": 3}]}}]}`, `rule "bad"`},
	{"too many rules", `{"rules": ` + fixture.ManyRules(301, false, "emea", "x") + `}`, "more than 300"},
	{"too many criteria rules", `{"rules": ` + fixture.ManyRules(51, true, "emea", "x") + `}`, "more than 50"},
	{"duplicate share", `{"shares": [{"object": "account", "record": "a1", "grantee": "user:u1", "access": "read", "cause": "manual"}, {"object": "account", "record": "a1", "grantee": "user:u1", "access": "edit", "cause": "manual"}]}`, "listed twice"},
	{"apex on standard object", `{"shares": [{"object": "account", "record": "a1", "grantee": "user:u1", "access": "read", "cause": "apex:x"}]}`, "custom objects"},
	{"bad cause", `{"shares": [{"object": "account", "record": "a1", "grantee": "user:u1", "access": "read", "cause": "Apex:X"}]}`, "cause"},
	{"share on cbp object", `{"shares": [{"object": "contact", "record": "k1", "grantee": "user:u1", "access": "read", "cause": "manual"}]}`, "controlled_by_parent"},
	{"share object mismatch", `{"shares": [{"object": "case", "record": "a1", "grantee": "user:u1", "access": "read", "cause": "manual"}]}`, `record is a account`},
	{"share on missing record", `{"shares": [{"object": "account", "record": "zz", "grantee": "user:u1", "access": "read", "cause": "manual"}]}`, `"zz": record does not exist`},
	{"share to missing user", `{"shares": [{"object": "account", "record": "a1", "grantee": "user:ghost", "access": "read", "cause": "manual"}]}`, `"user:ghost" does not exist`},
	{"team on contact", `{"teams": [{"record": "k1", "user": "u1", "access": "read"}]}`, "teams exist only"},
	{"duplicate team", `{"teams": [{"record": "a1", "user": "u1", "access": "read"}, {"record": "a1", "user": "u1", "access": "edit"}]}`, "listed twice"},
	{"team child access off account", `{"teams": [{"record": "c1", "user": "u1", "access": "read", "case_access": "read"}]}`, "child access"},
	{"team child access none off account", `{"teams": [{"record": "a1", "user": "u1", "access": "read", "case_access": "none"}, {"record": "c1", "user": "u1", "access": "read", "case_access": "none"}]}`, `team entry on record "c1": child access`},
	{"duplicate record", `{"records": [{"object": "account", "id": "a1", "owner": "u1"}, {"object": "account", "id": "a1", "owner": "u1"}, {"object": "project__c", "id": "p9", "owner": "u1"}]}`, `record "a1" is defined twice`},
	{"unknown owner", `{"records": [{"object": "account", "id": "a1", "owner": "ghost"}, {"object": "project__c", "id": "p9", "owner": "u1"}]}`, `owner "ghost"`},
	{"parent of wrong object", `{"records": [{"object": "account", "id": "a1", "owner": "u1"}, {"object": "case", "id": "c1", "owner": "u1", "parent": "p9"}, {"object": "project__c", "id": "p9", "owner": "u1"}]}`, `record "c1": parent record "p9" is a project__c`},
	{"territory on case", `{"records": [{"object": "account", "id": "a1", "owner": "u1"}, {"object": "case", "id": "c1", "owner": "u1", "territories": ["west"]}, {"object": "project__c", "id": "p9", "owner": "u1"}]}`, "only account records"},
	{"field of wrong type", `{"records": [{"object": "account", "id": "a1", "owner": "u1", "fields": {"x": [1]}}]}`, `records[0]: field "x"`},
	// Sections absent from the file are checked too, against what is stored.
	{"removing a user who owns records", `{"users": [{"id": "p1", "type": "external", "role": "vp"}, {"id": "old", "active": false}]}`, `u1`},
	{"removing an object in use", `{"objects": [{"name": "account", "internal_owd": "private"}]}`, "does not exist"},
}

func TestInvalidImportLeavesDatabaseUnchanged(t *testing.T) {
	t.Parallel()
	ctx, pool, _ := setup(t)
	if _, err := engine.Full(ctx, pool, engine.Options{Workers: 2, ChunkSize: 2}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	// A pending change, so the change log is part of what must not move.
	if _, err := testkit.ImportString(ctx, pool, `{"users": [{"id": "u1", "role": "ceo"}, {"id": "p1", "type": "external", "role": "vp"}, {"id": "old", "active": false}]}`); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, ctx, pool)
	for _, tc := range invalidModels {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testkit.ImportString(ctx, pool, tc.file)
			var inv *store.InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("want an invalid-model error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if after := snapshot(t, ctx, pool); after != before {
				t.Errorf("database changed by a rejected import")
			}
		})
	}
}

// A records-only import may not drop a record that the stored shares or
// team entries name: those sections are left alone, and their entries would
// no longer resolve, so the model is invalid and nothing changes. Dropped
// with them, the record takes its shares and team entries along, so none
// carries over to a record that later takes its id.
func TestRemovedRecordLosesSharesAndTeam(t *testing.T) {
	t.Parallel()
	ctx, pool, _ := setup(t)
	count := func() (shares, team int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.share_input WHERE record = 'a1'),
			(SELECT count(*) FROM recalc.team WHERE record = 'a1')`).Scan(&shares, &team); err != nil {
			t.Fatal(err)
		}
		return shares, team
	}
	if s, tm := count(); s != 1 || tm != 1 {
		t.Fatalf("base model: a1 has %d shares and %d team entries, want 1 and 1", s, tm)
	}
	const records = `"records": [{"object": "case", "id": "c1", "owner": "support_q"}, {"object": "project__c", "id": "p9", "owner": "old"}]`
	for _, file := range []string{`{` + records + `}`, `{` + records + `, "teams": []}`, `{` + records + `, "shares": []}`} {
		var inv *store.InvalidError
		if _, err := testkit.ImportString(ctx, pool, file); !errors.As(err, &inv) || !strings.Contains(err.Error(), `record "a1"`) {
			t.Errorf("import %s, which leaves a1's share or team entry without its record: %v, want it refused naming a1", file, err)
		}
		if s, tm := count(); s != 1 || tm != 1 {
			t.Fatalf("after a refused import, a1 has %d shares and %d team entries, want 1 and 1", s, tm)
		}
	}
	if _, err := testkit.ImportString(ctx, pool, `{`+records+`, "shares": [], "teams": []}`); err != nil {
		t.Fatalf("removing a record with its shares and team entries: %v", err)
	}
	back := `{"records": [{"object": "account", "id": "a1", "owner": "u1"}, {"object": "case", "id": "c1", "owner": "support_q"},
		{"object": "project__c", "id": "p9", "owner": "old"}]}`
	if _, err := testkit.ImportString(ctx, pool, back); err != nil {
		t.Fatal(err)
	}
	if s, tm := count(); s != 0 || tm != 0 {
		t.Errorf("a1 removed and imported again has %d shares and %d team entries, want none", s, tm)
	}
}

func TestOwnerChangeWipesStoredManualShares(t *testing.T) {
	t.Parallel()
	ctx, pool, _ := setup(t)
	// a1 changes owner; the file still lists the stored manual share (wiped)
	// and adds a new one (kept), in the same import.
	res, err := testkit.ImportString(ctx, pool, `{
		"records": [{"object": "account", "id": "a1", "owner": "p1"}, {"object": "case", "id": "c1", "owner": "support_q", "parent": "a1"},
		            {"object": "contact", "id": "k1", "owner": "u1", "parent": "a1"}, {"object": "project__c", "id": "p9", "owner": "old"}],
		"shares": [{"object": "account", "record": "a1", "grantee": "user:p1", "access": "edit", "cause": "manual"},
		           {"object": "account", "record": "a1", "grantee": "user:old", "access": "read", "cause": "manual"},
		           {"object": "project__c", "record": "p9", "grantee": "group:emea", "access": "read", "cause": "apex:sync"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.ManualSharesWiped != 1 {
		t.Errorf("wiped %d manual shares, want 1", res.ManualSharesWiped)
	}
	var got []string
	rows, _ := pool.Query(ctx, `SELECT record || ' ' || grantee || ' ' || cause FROM recalc.share_input ORDER BY 1`)
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		got = append(got, s)
	}
	want := []string{"a1 user:old manual", "p9 group:emea apex:sync"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("shares after owner change = %v, want %v", got, want)
	}
}

func TestImportRecordsChanges(t *testing.T) {
	t.Parallel()
	ctx, pool, base := setup(t)
	if _, err := engine.Full(ctx, pool, engine.Options{Workers: 1, ChunkSize: 100}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	var n int
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM recalc.change`).Scan(&n)
	if n != 0 {
		t.Fatalf("change log holds %d rows after a full run, want 0", n)
	}
	// Re-importing the same file changes nothing; editing one record logs it.
	if _, err := testkit.ImportString(ctx, pool, string(base)); err != nil {
		t.Fatal(err)
	}
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM recalc.change`).Scan(&n)
	if n != 0 {
		t.Errorf("re-importing the same model logged %d changes, want 0", n)
	}
	edited := strings.Replace(string(base), `"Healthcare"`, `"Retail"`, 1)
	if _, err := testkit.ImportString(ctx, pool, edited); err != nil {
		t.Fatal(err)
	}
	var keys string
	_ = pool.QueryRow(ctx, `SELECT string_agg(kind || ':' || array_to_string(keys, '+'), ',' ORDER BY seq) FROM recalc.change`).Scan(&keys)
	if keys != "record:a1" {
		t.Errorf("changes = %q, want record:a1", keys)
	}
}

// TestBulkImportAnalyzes checks that an import writing 10,000 records
// leaves the record table with statistics (pg_class.reltuples is -1 until
// the first ANALYZE or VACUUM), and that a small one leaves that to
// autovacuum.
func TestBulkImportAnalyzes(t *testing.T) {
	t.Parallel()
	ctx, pool, base := setup(t)
	reltuples := func() float64 {
		var n float64
		if err := pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'recalc.record'::regclass`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := reltuples(); n != -1 {
		t.Fatalf("a 4-record import analyzed the record table (reltuples %v)", n)
	}
	var model map[string]any
	if err := json.Unmarshal(base, &model); err != nil {
		t.Fatal(err)
	}
	recs := model["records"].([]any)
	for i := range 10000 {
		recs = append(recs, map[string]any{"object": "account", "id": fmt.Sprintf("bulk%05d", i), "owner": "u1"})
	}
	model["records"] = recs
	bulk, err := json.Marshal(model)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testkit.ImportString(ctx, pool, string(bulk)); err != nil {
		t.Fatal(err)
	}
	if n, want := reltuples(), float64(len(recs)); n != want {
		t.Fatalf("after a 10,000-record import reltuples is %v, want %v", n, want)
	}
}
