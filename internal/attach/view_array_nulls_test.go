package attach_test

import (
	"context"
	"testing"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestViewReadsPinArrayNulls: an attached view that builds an array from
// text (a list kept as one string, '{' || csv || '}') reads the element
// NULL as SQL's NULL whatever the settings the engine's sessions get from
// the database, whose owner (here the application's role) sets
// array_nulls off for every session. Before migration 65 the read took the
// element as the string 'NULL' there, and the rule `tag2 equals "NULL"`
// gave its user row 1, which PostgreSQL's default does not.
func TestViewReadsPinArrayNulls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	db := ident(dbName(t, b.url))
	b.exec(t, b.app, `CREATE TABLE crm.tagged (id bigint PRIMARY KEY, owner_id text NOT NULL, tags text)`,
		`GRANT SELECT, TRIGGER ON crm.tagged TO `+ident(b.engineRole),
		`INSERT INTO crm.tagged VALUES (1, 'alice', 'a,NULL'), (2, 'alice', 'b,c')`)
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.tagged_v AS
		SELECT id, owner_id, (('{' || tags || '}')::text[])[2] AS tag2 FROM crm.tagged`)
	if _, err := testkit.ImportString(ctx, b.engine, vsModel([]vsRule{{"tag2", "equals", "NULL", nil}})); err != nil {
		t.Fatalf("import: %v", err)
	}
	b.exec(t, b.admin, `ALTER DATABASE `+db+` OWNER TO `+ident(b.appRole))
	b.exec(t, b.app, `ALTER DATABASE `+db+` SET array_nulls = off`)
	t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), `ALTER DATABASE `+db+` RESET ALL`) })
	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))
	b.mustAttach(t, `{"objects": [{"object": "dated__c", "table": "crm_recalc.tagged_v", "id": "id", "owner": "owner_id",
		"fields": ["tag2"], "capture": [{"table": "crm.tagged", "id": "id"}]}]}`)
	b.full(t)
	check := func(after string) {
		t.Helper()
		for row, want := range map[int]string{1: "none", 2: "none"} {
			var level string
			if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('vs_u0', 'dated__c', $1::bigint)`, row).Scan(&level); err != nil {
				t.Fatal(err)
			}
			if level != want {
				t.Errorf("%s: the rule tag2 equals \"NULL\" gives row %d %s, want %s (the element NULL is no string)", after, row, level, want)
			}
		}
	}
	check("attached under the database's array_nulls = off")
	b.exec(t, b.app, `UPDATE crm.tagged SET tags = 'x,NULL' WHERE id = 2`)
	b.run(t)
	check("row 2 written again, incremental run")
}
