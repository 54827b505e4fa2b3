package adversarial

import (
	"strings"
	"testing"
)

// TestRLSWarnsOfUncoveredPartitions: PostgreSQL applies a table's policies
// only to reads through that table. A read of one of its partitions or
// inheritance children applies the child's own policies, none unless the
// child has some, and a read of its parent applies the parent's. The attack:
// `rls enable` on a partitioned table, SELECT granted on the schema's tables
// (GRANT ... ON ALL TABLES takes the partitions too), and the reader, for a
// user who may read nothing, reads every row of a partition directly. `rls
// enable` now warns, naming the partition, until it has the policies too;
// on the partition, it warns of the parent through which its rows are read
// without them.
func TestRLSWarnsOfUncoveredPartitions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec(t, b.admin, `CREATE SCHEMA app AUTHORIZATION `+ident(b.engineRole))
	for _, sql := range []string{
		`CREATE TABLE app.account (id text PRIMARY KEY, name text) PARTITION BY LIST (id)`,
		`CREATE TABLE app.account_a PARTITION OF app.account FOR VALUES IN ('a1', 'a2', 'a3', 'a4')`,
		`CREATE TABLE app.account_rest PARTITION OF app.account DEFAULT`,
		`INSERT INTO app.account SELECT id, 'Account ' || id FROM recalc.record WHERE object = 'account'`,
		`GRANT USAGE ON SCHEMA app TO ` + ident(b.readerRole),
		`GRANT SELECT ON ALL TABLES IN SCHEMA app TO ` + ident(b.readerRole),
	} {
		exec(t, b.engine, sql)
	}
	enable := func(table string) string {
		t.Helper()
		_, warning := b.recalcWarnings(t, "rls", "enable", "--table", table, "--object", "account", "--user-setting", "app.user_id")
		return warning
	}
	warning := enable("app.account")
	if got := b.asReader(t, "u2", `SELECT id FROM app.account`); got != "a1 a2" {
		t.Errorf("u2 reads %q through the partitioned table, want a1 a2", got)
	}
	if got := b.asReader(t, "nobody", `SELECT id FROM app.account_a`); got != "a1 a2 a3 a4" {
		t.Errorf("nobody reads %q from the partition directly: the attack needs every row", got)
	}
	for _, want := range []string{"app.account_a, app.account_rest", "not under recalc's policies"} {
		if !strings.Contains(warning, want) {
			t.Errorf("rls enable on the partitioned table warns %q, want it to contain %q", warning, want)
		}
	}
	// Each partition enabled: the warning goes, and the partitions' own
	// reads are judged.
	enable("app.account_a")
	if w := enable("app.account"); !strings.Contains(w, "(no row-level security: app.account_rest)") {
		t.Errorf("rls enable with one partition enabled warns %q, want it to name the other only", w)
	}
	enable("app.account_rest")
	if w := enable("app.account"); strings.Contains(w, "not under recalc's policies") {
		t.Errorf("rls enable warns %q with every partition enabled", w)
	}
	if got := b.asReader(t, "nobody", `SELECT id FROM app.account_a`); got != "" {
		t.Errorf("nobody reads %q from the enabled partition", got)
	}
	// A partition enabled under a parent without row-level security: reads
	// through the parent see its rows unjudged.
	if _, err := b.recalcErr("rls", "disable", "--table", "app.account"); err != nil {
		t.Fatal(err)
	}
	if w := enable("app.account_a"); !strings.Contains(w, "app.account_a is a partition or inheritance child of app.account, which has no row-level security") {
		t.Errorf("rls enable on a partition of an unprotected table warns %q, want it to name its parent", w)
	}
}
