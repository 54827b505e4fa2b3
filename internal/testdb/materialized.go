package testdb

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// materializedParts are the lines Materialized renders, one query a table,
// each line naming its rows by natural keys.
var materializedParts = []string{
	`SELECT 'share ' || r.id || ' ' || g.key || ' ' || s.cause || ' ' || s.level || ' ' || s.boss_ok
	 FROM recalc.acl_share s JOIN recalc.acl_record r USING (rid) JOIN recalc.grantee g USING (gid)`,
	`SELECT 'member ' || g.key || ' ' || p.id || ' ' || m.boss
	 FROM recalc.acl_member m JOIN recalc.grantee g USING (gid) JOIN recalc.principal p USING (uid)`,
	`SELECT 'record ' || r.id || ' ' || r.object || ' ' || coalesce(a.id, '-') || ' ' || r.root_id
	 FROM recalc.acl_record r LEFT JOIN recalc.acl_record a ON a.rid = r.access_root`,
	`SELECT 'object ' || name || ' ' || internal_level || ' ' || external_level || ' ' || cbp FROM recalc.acl_object`,
	`SELECT 'user ' || id || ' ' || internal FROM recalc.acl_user`,
}

// materializedQuery renders every part, sorted, in one statement: one
// round trip where a property test compares the tables twice a step.
var materializedQuery = func() string {
	cols := make([]string, len(materializedParts))
	for i, q := range materializedParts {
		cols[i] = `(SELECT coalesce(string_agg(l, E'\n' ORDER BY l COLLATE "C"), '') FROM (` + q + `) x (l)) || E'\n'`
	}
	return `SELECT ` + strings.Join(cols, " || ")
}()

// Materialized renders every materialized table with natural keys, sorted,
// so two renderings are equal exactly when the tables mean the same. It
// reads them in one statement, and so from one snapshot.
func Materialized(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	var out string
	if err := pool.QueryRow(context.Background(), materializedQuery).Scan(&out); err != nil {
		t.Fatal(err)
	}
	return out
}
