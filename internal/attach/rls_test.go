package attach_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestRLSOnAttachedTables installs both policies on attached tables with
// bigint and uuid ids, whose records are "object:id", and reads them as a
// reader role: every user sees exactly the rows access_level gives it.
func TestRLSOnAttachedTables(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	ctx := context.Background()
	b.exec(t, b.app, `INSERT INTO crm.opportunity VALUES (gen_random_uuid(), 1, 'bob', 'open', 50, NULL),
		(gen_random_uuid(), 2, 'dave', 'won', 5000, NULL), (gen_random_uuid(), 3, 'zed', 'lost', 10, NULL)`)
	b.run(t)
	reader := "attach_reader_" + b.appRole[len("attach_app_"):]
	testdb.DropRoles(t, b.url, reader)
	b.exec(t, b.admin, `CREATE ROLE `+ident(reader)+` NOLOGIN NOSUPERUSER`,
		`GRANT USAGE ON SCHEMA crm, support TO `+ident(reader),
		`GRANT SELECT ON crm.account, crm.opportunity, support."case" TO `+ident(reader))
	if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error { return access.Grant(ctx, tx, access.Reader, reader) }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, table, object string }{ // name as rls enable takes it; table quoted
		{"crm.account", "crm.account", "account"}, {"crm.opportunity", "crm.opportunity", "opportunity"},
		{"support.case", `support."case"`, "case"},
	} {
		for _, perUser := range []bool{false, true} {
			err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
				return access.EnableRLS(ctx, tx, &access.RLS{Table: tc.name, Object: tc.object, IDColumn: "id", UserSetting: "app.user_id", PerUserPlans: perUser})
			})
			if err != nil {
				t.Fatalf("%s: %v", tc.table, err)
			}
			filtered := false
			for _, u := range append(crmUsers, "nobody") {
				var want []string
				err := b.admin.QueryRow(ctx, `SELECT coalesce(array_agg(id::text ORDER BY id::text), '{}') FROM `+tc.table+`
					WHERE recalc.access_level($1, $2, id) <> 'none'`, u, tc.object).Scan(&want) // by the table's own ids
				if err != nil {
					t.Fatal(err)
				}
				got, err := b.asPolicyUser(t, reader, &u, nil, `SELECT id::text FROM `+tc.table, "")
				if err != nil {
					t.Fatalf("%s as %s: %v", tc.table, u, err)
				}
				if want = sortedIDs(want); !slices.Equal(got, want) {
					t.Errorf("%s, per-user %v: %s sees %v, access_level gives %v", tc.table, perUser, u, got, want)
				}
				filtered = filtered || len(want) > 0
			}
			if !filtered {
				t.Errorf("%s: no user sees a row: the test does not exercise the policy", tc.table)
			}
		}
	}
}
