package attach_test

import (
	"context"
	"testing"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestViewReadsPinTimezoneAbbreviations: an attached view that reads a
// time kept as text ('2027-01-01 05:30 IST'::timestamptz) reads the zone's
// abbreviation as PostgreSQL's default set does (IST: Israel, UTC+2)
// whatever the set the engine's sessions get from the database, whose
// owner (here the application's role) sets timezone_abbreviations to
// 'India' (IST: UTC+5:30) for every session. Unpinned, the read took row 1
// as midnight UTC, and the rule `at equals "2027-01-01 00:00:00+00"` gave
// its user the row, which the default does not.
func TestViewReadsPinTimezoneAbbreviations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	db := ident(dbName(t, b.url))
	b.exec(t, b.app, `CREATE TABLE crm.stamped (id bigint PRIMARY KEY, owner_id text NOT NULL, at text)`,
		`GRANT SELECT, TRIGGER ON crm.stamped TO `+ident(b.engineRole),
		`INSERT INTO crm.stamped VALUES (1, 'alice', '2027-01-01 05:30 IST'), (2, 'alice', '2027-01-01 02:00 IST')`)
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.stamped_v AS
		SELECT id, owner_id, (at::timestamptz)::text AS at FROM crm.stamped`)
	if _, err := testkit.ImportString(ctx, b.engine, vsModel([]vsRule{{"at", "equals", "2027-01-01 00:00:00+00", nil}})); err != nil {
		t.Fatalf("import: %v", err)
	}
	b.exec(t, b.admin, `ALTER DATABASE `+db+` OWNER TO `+ident(b.appRole))
	b.exec(t, b.app, `ALTER DATABASE `+db+` SET timezone_abbreviations = 'India'`)
	t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), `ALTER DATABASE `+db+` RESET ALL`) })
	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))
	b.mustAttach(t, `{"objects": [{"object": "dated__c", "table": "crm_recalc.stamped_v", "id": "id", "owner": "owner_id",
		"fields": ["at"], "capture": [{"table": "crm.stamped", "id": "id"}]}]}`)
	b.full(t)
	check := func(after string, want map[int]string) {
		t.Helper()
		for row, want := range want {
			var level string
			if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('vs_u0', 'dated__c', $1::bigint)`, row).Scan(&level); err != nil {
				t.Fatal(err)
			}
			if level != want {
				t.Errorf("%s: the rule at equals midnight UTC gives row %d %s, want %s (IST is UTC+2 by default)", after, row, level, want)
			}
		}
	}
	check("attached under the database's timezone_abbreviations = 'India'", map[int]string{1: "none", 2: "read"})
	b.exec(t, b.app, `UPDATE crm.stamped SET at = '2027-01-01 05:30 IST' WHERE id = 2`)
	b.run(t)
	check("row 2 written again, incremental run", map[int]string{1: "none", 2: "none"})
}
