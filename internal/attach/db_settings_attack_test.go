package attach_test

import (
	"context"
	"testing"

	"github.com/recalc-dev/recalc/internal/dburl"
)

// hostileDatabaseSettings are settings the owner of a database may give
// every session in it (ALTER DATABASE ... SET), the engine's included,
// that change how SQL text is read or values are printed: string literals
// with backslashes, `= NULL`, array literals, dates, intervals, floats,
// byteas and times, and plans (generic plans, no hash or merge joins,
// parallel plans forced).
var hostileDatabaseSettings = []string{
	`standard_conforming_strings = off`, `backslash_quote = on`, `escape_string_warning = off`,
	`transform_null_equals = on`, `array_nulls = off`,
	`DateStyle = 'SQL, DMY'`, `IntervalStyle = 'sql_standard'`, `extra_float_digits = -15`,
	`bytea_output = 'escape'`, `TimeZone = 'Pacific/Kiritimati'`,
	`plan_cache_mode = force_generic_plan`, `enable_hashjoin = off`, `enable_mergejoin = off`,
	`force_parallel_mode = on`, `default_transaction_deferrable = on`,
}

// TestAttackDatabaseSettings: the application's role owns the database,
// as SECURITY.md allows, and sets for every session in it what SQL text
// and printed values follow (hostileDatabaseSettings). The engine's
// sessions pin only their search_path and isolation, and its reads of
// attached tables pin the conversions (migration 061); every other
// statement, the capture triggers in the application's own sessions, and
// the runs read under the database's settings. The application then writes
// its tables (new accounts matching a rule, owner changes, a territory, a
// delete, an opportunity over the rule's amount) and recalc absorbs and
// recalculates them, incrementally and in full: the access must be the
// oracle's for the rows as written.
func TestAttackDatabaseSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	db := ident(dbName(t, b.url))
	b.checkOracle(t, "attached, before the settings")

	b.exec(t, b.admin, `ALTER DATABASE `+db+` OWNER TO `+ident(b.appRole))
	t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), `ALTER DATABASE `+db+` RESET ALL`) })
	for _, s := range hostileDatabaseSettings {
		b.exec(t, b.app, `ALTER DATABASE `+db+` SET `+s)
	}
	// New sessions take the database's settings.
	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))
	b.app = openPool(t, dburl.WithUser(b.url, b.appRole))
	var scs string
	if err := b.engine.QueryRow(ctx, `SHOW standard_conforming_strings`).Scan(&scs); err != nil || scs != "off" {
		t.Fatalf("the engine's session does not take the database's settings: standard_conforming_strings %q, %v", scs, err)
	}

	b.exec(t, b.app,
		`INSERT INTO crm.account (id, name, owner_id, industry, amount, vip, territories) VALUES
			(10, 'Back\slash', 'erin', 'tech', 12.5, NULL, '{north}'), (11, 'Vip', 'carol', 'retail', 1e-7, true, NULL),
			(12, 'None', 'frank', NULL, NULL, false, '{}')`,
		`UPDATE crm.account SET owner_id = 'alice', territories = '{north}' WHERE id = 1`,
		`UPDATE crm.account SET industry = 'tech' WHERE id = 3`,
		`INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-00000000000a', 2, 'carol', 'won', 1000.00, '2027-03-01'),
			('00000000-0000-0000-0000-00000000000b', 10, 'bob', 'lost', 999.99, '2027-01-31')`,
		`INSERT INTO support."case" VALUES (3, 10, 'dave', 3, 'New')`,
		`DELETE FROM support."case" WHERE id = 2`)
	b.run(t)
	b.checkOracle(t, "written under the database's settings, incremental run")

	b.exec(t, b.app, `UPDATE crm.opportunity SET amount = 1000.01 WHERE id = '00000000-0000-0000-0000-00000000000b'`,
		`UPDATE crm.account SET vip = NULL WHERE id = 2`, `UPDATE support."case" SET priority = 1 WHERE id = 1`)
	b.run(t)
	b.checkOracle(t, "written again, incremental run")
	b.full(t)
	b.checkOracle(t, "full run under the database's settings")
	if out, err := b.recalc("verify"); err != nil {
		t.Errorf("recalc verify under the database's settings: %v\n%s", err, out)
	}
}
