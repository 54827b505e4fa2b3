package attach_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// vsModel is object dated__c, its owner alice, and one criteria rule per
// test case, each granting read to its own user.
func vsModel(rules []vsRule) string {
	users := []string{`{"id": "alice"}`}
	var rs []string
	for i, r := range rules {
		users = append(users, fmt.Sprintf(`{"id": "vs_u%d"}`, i))
		rs = append(rs, fmt.Sprintf(`{"id": "vs_r%d", "object": "dated__c", "type": "criteria", "target": "user:vs_u%d", "access": "read",
			"criteria": {"conditions": [{"field": %q, "op": %q, "value": %q}]}}`, i, i, r.field, r.op, r.value))
	}
	return `{"version": 1, "objects": [{"name": "dated__c", "internal_owd": "private", "external_owd": "private"}],
		"roles": [], "groups": [], "territories": [], "users": [` + strings.Join(users, ",") + `], "rules": [` + strings.Join(rs, ",\n") + `]}`
}

type vsRule struct {
	field, op, value string
	match            []int
}

// TestViewReadsUnderHostileSettings: an attached view that turns a date,
// a timestamp, an interval or a bytea into text (as the attach error's
// hint suggests for an application's own types) reads the same text
// whatever the settings the engine's sessions get from its role or from
// the database, which the application's owner may own and ALTER DATABASE
// ... SET: DateStyle, IntervalStyle and bytea_output are pinned for every
// read, as TimeZone and extra_float_digits are. Under the engine's role's
// DateStyle 'SQL, DMY', a due date of 1 March 2027 read as "01/03/2027"
// matched `due lt "2027-02-01"`, giving its rule's user the record.
func TestViewReadsUnderHostileSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOwnRoles(t)
	eng := ident(b.engineRole)
	b.exec(t, b.app, `CREATE TABLE crm.dated (id bigint PRIMARY KEY, owner_id text NOT NULL, due date, at timestamp, span interval, blob bytea)`,
		`GRANT SELECT, TRIGGER ON crm.dated TO `+eng,
		`INSERT INTO crm.dated VALUES (1, 'alice', '2027-01-31', '2026-12-01 18:40:57.2', '1 day 2 hours', 'hi'),
			(2, 'alice', '2027-03-01', '2027-03-01 00:00', '-1 mon', '\x00ff')`)
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.dated_v AS
		SELECT id, owner_id, due::text AS due, at::text AS at, span::text AS span, blob::text AS blob FROM crm.dated`)
	rules := []vsRule{
		{"due", "lt", "2027-02-01", []int{1}},
		{"due", "starts_with", "2027-03", []int{2}},
		{"at", "equals", "2026-12-01 18:40:57.2", []int{1}},
		{"span", "equals", "1 day 02:00:00", []int{1}},
		{"span", "equals", "-1 mons", []int{2}},
		{"blob", "equals", `\x00ff`, []int{2}},
	}
	if _, err := testkit.ImportString(ctx, b.engine, vsModel(rules)); err != nil {
		t.Fatalf("import: %v", err)
	}

	check := func(after string) {
		t.Helper()
		want := map[string]string{
			"dated__c:1": `{"at": "2026-12-01 18:40:57.2", "due": "2027-01-31", "blob": "\\x6869", "span": "1 day 02:00:00"}`,
			"dated__c:2": `{"at": "2027-03-01 00:00:00", "due": "2027-03-01", "blob": "\\x00ff", "span": "-1 mons"}`,
		}
		for id, w := range want {
			var same bool
			var got string
			if err := b.admin.QueryRow(ctx, `SELECT fields = $2::jsonb, fields::text FROM recalc.record WHERE id = $1`, id, w).Scan(&same, &got); err != nil {
				t.Fatalf("%s: record %s: %v", after, id, err)
			}
			if !same {
				t.Errorf("%s: record %s has fields %s, want %s", after, id, got, w)
			}
		}
		for i, r := range rules {
			for row := 1; row <= 2; row++ {
				level, wantLevel := "", "none"
				for _, m := range r.match {
					if m == row {
						wantLevel = "read"
					}
				}
				if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level($1, 'dated__c', $2::bigint)`, fmt.Sprintf("vs_u%d", i), row).Scan(&level); err != nil {
					t.Fatal(err)
				}
				if level != wantLevel {
					t.Errorf("%s: rule %s %s %q on row %d gives %s, want %s", after, r.field, r.op, r.value, row, level, wantLevel)
				}
			}
		}
	}

	// The engine's role, then the database (as its owner could), set what
	// the text of dates, intervals and byteas follows.
	b.exec(t, b.admin, `ALTER ROLE `+eng+` SET DateStyle = 'SQL, DMY'`, `ALTER ROLE `+eng+` SET IntervalStyle = 'sql_standard'`,
		`ALTER ROLE `+eng+` SET bytea_output = 'escape'`)
	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))
	b.mustAttach(t, `{"objects": [{"object": "dated__c", "table": "crm_recalc.dated_v", "id": "id", "owner": "owner_id",
		"fields": ["due", "at", "span", "blob"], "capture": [{"table": "crm.dated", "id": "id"}]}]}`)
	b.full(t)
	check("attached under the engine role's settings")

	db := ident(dbName(t, b.url))
	b.exec(t, b.admin, `ALTER ROLE `+eng+` RESET ALL`, `ALTER DATABASE `+db+` SET DateStyle = 'German'`,
		`ALTER DATABASE `+db+` SET IntervalStyle = 'iso_8601'`)
	t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), `ALTER DATABASE `+db+` RESET ALL`) })
	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))
	b.exec(t, b.app, `UPDATE crm.dated SET span = span + interval '1 second'`, `UPDATE crm.dated SET span = span - interval '1 second'`)
	b.run(t)
	check("rows written again under the database's settings, incremental run")
	out, err := b.recalc("verify")
	if err != nil || !strings.Contains(out, "No drift") || strings.Contains(out, "differ from it") {
		t.Errorf("recalc verify under the database's settings: %v\n%s", err, out)
	}
	b.full(t)
	check("full run under the database's settings")
}
