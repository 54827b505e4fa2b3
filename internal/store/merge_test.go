package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// merge imports file with --merge, and with --if-revision rev when set.
func merge(ctx context.Context, pool *pgxpool.Pool, file, rev string) (*store.Result, error) {
	return store.ImportWith(ctx, pool, strings.NewReader(file), model.DefaultLimits(), zerolog.Nop(), nil,
		store.Options{Merge: true, IfRevision: rev})
}

// export returns the stored model as `recalc export` writes it.
func export(t *testing.T, ctx context.Context, pool *pgxpool.Pool, sections ...string) (string, *store.ExportCounts) {
	t.Helper()
	var buf bytes.Buffer
	res, err := store.Export(ctx, pool, &buf, sections)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	return buf.String(), res
}

// query returns the rows of sql, one column each, joined by "|".
func query(t *testing.T, ctx context.Context, pool *pgxpool.Pool, sql string) string {
	t.Helper()
	var s string
	if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(x, '|' ORDER BY x), '') FROM (`+sql+`) q(x)`).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// TestExportRoundTrip checks that importing an export changes nothing
// stored, logs no change, and leaves a run nothing to do.
func TestExportRoundTrip(t *testing.T) {
	t.Parallel()
	ctx, pool, _ := setup(t)
	if _, err := engine.Full(ctx, pool, engine.Options{Workers: 1, ChunkSize: 100}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	// config_version counts statements writing the configuration, for
	// `recalc watch`'s cache: an import that changes nothing moves it too.
	before := withoutTable(snapshot(t, ctx, pool), "config_version")
	file, res := export(t, ctx, pool)
	if res.Records != 4 || res.Shares != 2 || res.Teams != 1 || len(res.Sections) != 9 {
		t.Fatalf("export wrote %+v, want 4 records, 2 shares, 1 team entry, 9 sections", res)
	}
	if _, err := testkit.ImportString(ctx, pool, file); err != nil {
		t.Fatalf("import of the export: %v\n%s", err, file)
	}
	if after := withoutTable(snapshot(t, ctx, pool), "config_version"); after != before {
		t.Errorf("importing the export changed the stored state:\n%s", oracle.Diff(before, after))
	}
	rep, err := engine.Run(ctx, pool, engine.Options{Workers: 1, ChunkSize: 100}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Nothing || rep.RowsAdded+rep.RowsRemoved+rep.RowsUpdated != 0 {
		t.Errorf("a run after the round trip did something: %+v", rep)
	}
	again, _ := export(t, ctx, pool)
	if again != file {
		t.Errorf("a second export differs from the first")
	}
	rules, part := export(t, ctx, pool, "rules")
	if len(part.Sections) != 1 || !strings.Contains(rules, `"r2"`) || strings.Contains(rules, `"records"`) {
		t.Errorf("export of rules only wrote %v:\n%s", part.Sections, rules)
	}
}

// TestMerge checks that each merge changes exactly the entries it names,
// and that a run after it gives the access a full recalculation does.
func TestMerge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, sql, want string
	}{
		{"replace one rule", `{"rules": [{"id": "r1", "object": "account", "type": "owner", "source": "role_and_subordinates:vp", "target": "group:emea", "access": "edit"}]}`,
			`SELECT e->>'id' || ':' || (e->>'access') FROM recalc.model_section, jsonb_array_elements(doc) e WHERE name = 'rules'`, "r1:edit|r2:edit"},
		{"add and delete rules", `{"rules": [{"id": "r3", "object": "project__c", "type": "owner", "source": "group:emea", "target": "user:u1", "access": "read"}], "delete": {"rules": ["r2"]}}`,
			`SELECT e->>'id' FROM recalc.model_section, jsonb_array_elements(doc) e WHERE name = 'rules'`, "r1|r3"},
		{"add a user, delete a territory", `{"users": [{"id": "u2", "role": "ceo"}], "delete": {"territories": ["west"]},
			"records": [{"object": "account", "id": "a1", "owner": "u1", "fields": {"industry": "Healthcare", "revenue": 5000000}}]}`,
			`SELECT e->>'id' FROM recalc.model_section, jsonb_array_elements(doc) e WHERE name IN ('users', 'territories')`, "old|p1|u1|u2"},
		{"change an owner", `{"records": [{"object": "account", "id": "a1", "owner": "p1", "territories": ["west"]}]}`,
			`SELECT id || ':' || owner FROM recalc.record UNION ALL SELECT 'share ' || record || ' ' || grantee FROM recalc.share_input`,
			"a1:p1|c1:support_q|k1:u1|p9:old|share p9 group:emea"},
		{"add a child, delete a record", `{"records": [{"object": "opportunity", "id": "o1", "owner": "u1", "parent": "a1"}], "delete": {"records": ["p9"]}}`,
			`SELECT id || ':' || coalesce(parent, '') FROM recalc.record UNION ALL SELECT 'share ' || record FROM recalc.share_input`,
			"a1:|c1:a1|k1:a1|o1:a1|share a1"},
		{"shares and teams by key", `{"shares": [{"object": "account", "record": "a1", "grantee": "user:p1", "access": "read", "cause": "manual"}],
			"teams": [{"record": "a1", "user": "p1", "access": "read"}],
			"delete": {"shares": [{"record": "p9", "grantee": "group:emea", "cause": "apex:sync"}], "teams": [{"record": "a1", "user": "u1"}]}}`,
			`SELECT 'share ' || record || ' ' || grantee || ' ' || access FROM recalc.share_input UNION ALL SELECT 'team ' || record || ' ' || user_id FROM recalc.team`,
			"share a1 user:p1 1|team a1 p1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, pool, _ := setup(t)
			opt := engine.Options{Workers: 1, ChunkSize: 100}
			if _, err := engine.Full(ctx, pool, opt, zerolog.Nop()); err != nil {
				t.Fatal(err)
			}
			if _, err := merge(ctx, pool, tc.file, ""); err != nil {
				t.Fatalf("merge: %v", err)
			}
			if got := query(t, ctx, pool, tc.sql); got != tc.want {
				t.Errorf("after the merge: %s\n got %s\nwant %s", tc.sql, got, tc.want)
			}
			runEqualsFull(t, ctx, pool, "the merge")
		})
	}
}

// TestMergeRecordsWithTheirEntries merges records changed together with
// their shares and team entries: a deletion in the file is checked against
// what was stored before the merge, although the record's deletion, or its
// owner change, drops the entry first; and a record whose object changes
// keeps its entries as in a whole import, so that one that no longer
// resolves is refused and a team entry stays on a case, but for the
// manual shares, which an owner change drops.
func TestMergeRecordsWithTheirEntries(t *testing.T) {
	t.Parallel()
	const entries = `SELECT 'share ' || record || ' ' || object || ' ' || grantee FROM recalc.share_input
		UNION ALL SELECT 'team ' || record || ' ' || user_id FROM recalc.team`
	c1 := func(object string, owner ...string) string {
		return `{"object": "` + object + `", "id": "c1", "owner": "` + append(owner, "support_q")[0] + `", "parent": "a1", "fields": {"status": "Escalated"}}`
	}
	const c1Team = `{"teams": [{"record": "c1", "user": "u1", "access": "read"}]}`
	const c1Share = `{"shares": [{"object": "case", "record": "c1", "grantee": "user:p1", "access": "read", "cause": "manual"}]}`
	for _, tc := range []struct {
		name, before, file, want, wantErr string
	}{
		{name: "owner changed, its manual share deleted",
			file: `{"records": [{"object": "account", "id": "a1", "owner": "p1", "territories": ["west"]}],
				"delete": {"shares": [{"record": "a1", "grantee": "user:p1", "cause": "manual"}]}}`,
			want: "share p9 project__c group:emea|team a1 u1"},
		{name: "record deleted with its share",
			file: `{"delete": {"records": ["p9"], "shares": [{"record": "p9", "grantee": "group:emea", "cause": "apex:sync"}]}}`,
			want: "share a1 account user:p1|team a1 u1"},
		{name: "record deleted with its team entry", before: c1Team,
			file: `{"delete": {"records": ["c1"], "teams": [{"record": "c1", "user": "u1"}]}}`,
			want: "share a1 account user:p1|share p9 project__c group:emea|team a1 u1"},
		{name: "object changed: its team entry stays", before: c1Team,
			file: `{"records": [` + c1("opportunity") + `]}`,
			want: "share a1 account user:p1|share p9 project__c group:emea|team a1 u1|team c1 u1"},
		{name: "object changed, its team entry deleted", before: c1Team,
			file: `{"records": [` + c1("opportunity") + `], "delete": {"teams": [{"record": "c1", "user": "u1"}]}}`,
			want: "share a1 account user:p1|share p9 project__c group:emea|team a1 u1"},
		{name: "object changed under a share of the old object", before: c1Share,
			file:    `{"records": [` + c1("opportunity") + `]}`,
			wantErr: `share on record "c1": record is a opportunity, not a case`},
		{name: "object changed, its share deleted", before: c1Share,
			file: `{"records": [` + c1("opportunity") + `], "delete": {"shares": [{"record": "c1", "grantee": "user:p1", "cause": "manual"}]}}`,
			want: "share a1 account user:p1|share p9 project__c group:emea|team a1 u1"},
		{name: "object and owner changed: its manual share goes with the owner", before: c1Share,
			file: `{"records": [` + c1("opportunity", "p1") + `]}`,
			want: "share a1 account user:p1|share p9 project__c group:emea|team a1 u1"},
		{name: "object changed, its share given the new object", before: c1Share,
			file: `{"records": [` + c1("opportunity") + `],
				"shares": [{"object": "opportunity", "record": "c1", "grantee": "user:p1", "access": "read", "cause": "manual"}]}`,
			want: "share a1 account user:p1|share c1 opportunity user:p1|share p9 project__c group:emea|team a1 u1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, pool, _ := setup(t)
			if tc.before != "" {
				if _, err := merge(ctx, pool, tc.before, ""); err != nil {
					t.Fatalf("merge before: %v", err)
				}
			}
			if _, err := engine.Full(ctx, pool, engine.Options{Workers: 1, ChunkSize: 100}, zerolog.Nop()); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, ctx, pool)
			_, err := merge(ctx, pool, tc.file, "")
			if tc.wantErr != "" {
				var inv *store.InvalidError
				if !errors.As(err, &inv) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("merge error = %v, want an invalid-model error mentioning %q", err, tc.wantErr)
				}
				if after := snapshot(t, ctx, pool); after != before {
					t.Errorf("database changed by a refused merge")
				}
				return
			}
			if err != nil {
				t.Fatalf("merge: %v", err)
			}
			if got := query(t, ctx, pool, entries); got != tc.want {
				t.Errorf("shares and team entries after the merge:\n got %s\nwant %s", got, tc.want)
			}
			runEqualsFull(t, ctx, pool, "the merge")
		})
	}
}

// TestMergeRefused checks that a bad merge is refused with one message
// saying what is wrong, and changes nothing.
func TestMergeRefused(t *testing.T) {
	t.Parallel()
	ctx, pool, _ := setup(t)
	before := snapshot(t, ctx, pool)
	for _, tc := range []struct{ name, file, want string }{
		{"delete unknown rule", `{"delete": {"rules": ["nope"]}}`, `delete.rules: rule "nope" is not stored`},
		{"replace and delete", `{"rules": [{"id": "r2", "object": "account", "type": "owner", "source": "group:emea", "target": "user:u1", "access": "read"}], "delete": {"rules": ["r2"]}}`,
			`rule "r2" is both in section rules and in delete.rules`},
		{"delete a user who owns records", `{"delete": {"users": ["u1"]}}`, `"user:u1" does not exist`},
		{"delete a parent record", `{"delete": {"records": ["a1"]}}`, `record "a1" is deleted but record "c1" still names it as parent`},
		{"delete unknown record", `{"delete": {"records": ["zz"]}}`, `delete.records: record "zz" is not stored`},
		{"delete and replace record", `{"records": [{"object": "project__c", "id": "p9", "owner": "u1"}], "delete": {"records": ["p9"]}}`, `record "p9" is both`},
		{"delete unknown share", `{"delete": {"shares": [{"record": "a1", "grantee": "user:u1", "cause": "manual"}]}}`, `share on record "a1" for "user:u1" with cause "manual" is not stored`},
		{"delete unknown team entry", `{"delete": {"teams": [{"record": "c1", "user": "u1"}]}}`, `team entry on record "c1" for user "u1" is not stored`},
		{"record with unknown owner", `{"records": [{"object": "project__c", "id": "p9", "owner": "ghost"}]}`, `owner "ghost"`},
		{"share on a deleted record", `{"shares": [{"object": "project__c", "record": "p9", "grantee": "user:u1", "access": "read", "cause": "manual"}], "delete": {"records": ["p9"]}}`, `"p9": record does not exist`},
		{"unknown delete section", `{"delete": {"people": ["x"]}}`, `delete: unknown section "people"`},
		{"rule listed twice", `{"rules": [{"id": "r1", "object": "account", "type": "owner", "source": "group:emea", "target": "user:u1", "access": "read"},
			{"id": "r1", "object": "account", "type": "owner", "source": "group:emea", "target": "user:u1", "access": "edit"}]}`, `rule "r1" is listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := merge(ctx, pool, tc.file, "")
			var inv *store.InvalidError
			if !errors.As(err, &inv) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("merge error = %v, want an invalid-model error mentioning %q", err, tc.want)
			}
			if after := snapshot(t, ctx, pool); after != before {
				t.Errorf("database changed by a refused merge")
			}
		})
	}
	if _, err := testkit.ImportString(ctx, pool, `{"delete": {"rules": ["r1"]}}`); err == nil || !strings.Contains(err.Error(), "--merge") {
		t.Errorf("a delete section without --merge: %v, want a refusal naming --merge", err)
	}
}

// TestRevisionGuard checks that an exported file, or --if-revision, is
// refused once the stored configuration changed since the export, and that
// changing records only does not count.
func TestRevisionGuard(t *testing.T) {
	t.Parallel()
	ctx, pool, _ := setup(t)
	file, exp := export(t, ctx, pool, "rules")
	rev := fmt.Sprintf(`"revision": %q`, exp.Revision)
	edit := strings.Replace(file, `"access": "read"`, `"access": "edit"`, 1)
	if edit == file {
		t.Fatalf("no read rule to edit in %s", file)
	}
	if _, err := merge(ctx, pool, `{`+rev+`, "records": [{"object": "project__c", "id": "p9", "owner": "u1"}]}`, ""); err != nil {
		t.Fatalf("a records merge at the exported revision: %v", err)
	}
	if _, err := merge(ctx, pool, edit, exp.Revision); err != nil {
		t.Fatalf("the first edit of the export: %v", err)
	}
	now, err := store.Revision(ctx, pool)
	if err != nil || now == exp.Revision {
		t.Fatalf("revision after a rule edit = %q (%v), want a new one", now, err)
	}
	before := snapshot(t, ctx, pool)
	var stale *store.StaleError
	if _, err := testkit.ImportString(ctx, pool, file); !errors.As(err, &stale) || !strings.Contains(err.Error(), "recalc export") {
		t.Errorf("importing the old export again: %v, want a stale-revision refusal", err)
	}
	if _, err := merge(ctx, pool, `{"delete": {"rules": ["r2"]}}`, exp.Revision); !errors.As(err, &stale) || !stale.Flag {
		t.Errorf("--if-revision with the old revision: %v, want a stale-revision refusal", err)
	}
	if after := snapshot(t, ctx, pool); after != before {
		t.Errorf("a stale import changed the database")
	}
}

// withoutTable drops table's rows from a snapshot.
func withoutTable(snap, table string) string {
	head := "== " + table + "\n"
	i := strings.Index(snap, head)
	if i < 0 {
		return snap
	}
	rest := snap[i+len(head):]
	if j := strings.Index(rest, "\n== "); j >= 0 {
		return snap[:i] + rest[j+1:]
	}
	return snap[:i]
}

// TestMergeInterleavesWithApplication commits an application transaction
// on a record a merge rewrites while the merge waits for it, and one after
// the merge: the run that follows loses neither change and gives the
// access a full recalculation does.
func TestMergeInterleavesWithApplication(t *testing.T) {
	t.Parallel()
	ctx, pool, _ := setup(t)
	opt := engine.Options{Workers: 1, ChunkSize: 100}
	if _, err := engine.Full(ctx, pool, opt, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	app, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Rollback(ctx)
	if _, err := app.Exec(ctx, `UPDATE recalc.record SET fields = '{"phase": "app"}' WHERE id = 'p9'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := merge(ctx, pool, `{"records": [{"object": "project__c", "id": "p9", "owner": "u1", "fields": {"phase": "merge"}},
			{"object": "opportunity", "id": "o1", "owner": "p1", "parent": "a1"}]}`, "")
		done <- err
	}()
	// The merge is waiting for p9's row lock when the application commits.
	var waiting bool
	for !waiting {
		select {
		case err := <-done:
			t.Fatalf("the merge ended without waiting for the application: %v", err)
		default:
		}
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE 'UPDATE recalc.record r SET object%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("merge: %v", err)
	}
	if _, err := pool.Exec(ctx, `UPDATE recalc.record SET owner = 'p1' WHERE id = 'k1'`); err != nil {
		t.Fatal(err)
	}
	if got := query(t, ctx, pool, `SELECT id || ':' || owner || ':' || fields::text FROM recalc.record WHERE id IN ('p9', 'o1', 'k1')`); got !=
		`k1:p1:{}|o1:p1:{}|p9:u1:{"phase": "merge"}` {
		t.Fatalf("records after the interleaved writes: %s", got)
	}
	runEqualsFull(t, ctx, pool, "interleaved writes")
}

// runEqualsFull runs, and fails the test when the access it gives differs
// from a full recalculation's.
func runEqualsFull(t *testing.T, ctx context.Context, pool *pgxpool.Pool, after string) {
	t.Helper()
	opt := engine.Options{Workers: 1, ChunkSize: 100}
	if _, err := engine.Run(ctx, pool, opt, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	incremental := testkit.AccessCSV(t, ctx, pool)
	if _, err := engine.Full(ctx, pool, opt, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if full := testkit.AccessCSV(t, ctx, pool); full != incremental {
		t.Errorf("the run after %s gave other access than a full run:\n%s", after, oracle.Diff(full, incremental))
	}
}
