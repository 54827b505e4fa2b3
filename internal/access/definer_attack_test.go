package access_test

// Attacks on recalc's SECURITY DEFINER functions as they stand after every
// migration, by a hostile role that can reach the schema: a reader (`recalc
// grant reader`) and a role granted nothing. Each test fails on a defect and
// passes on correct behaviour.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/attach"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// definerExecutors is every SECURITY DEFINER function of schema recalc after
// all migrations, and whether a reader may execute it (SECURITY.md's table).
// A new one, or one missing, fails TestDefinerAttackInventory.
var definerExecutors = map[string]bool{
	"recalc.access_level(text,text)":                        true,
	"recalc.access_level(text,text,text)":                   true,
	"recalc.can_access(text,text,text,text)":                true,
	"recalc.visible_records(text,text,text)":                true,
	"recalc.visible_records(text,text,text,text,integer)":   true,
	"recalc.visible_ids(text,text,text,anyelement,integer)": true,
	"recalc.invalid_records()":                              true,
	"recalc.rls_mode(text,text,text)":                       true,
	"recalc.rls_records(text,text,text)":                    true,
	"recalc.rls_keys(text,text,text)":                       true,
	"recalc.rls_broad_exact(text,text,text)":                true,
	"recalc.rls_owner_kept(text,text,text,text)":            true,
	"recalc.rls_guard(oid)":                                 true,
	"recalc.rls_guard_territories(oid)":                     true,
	"recalc.rls_may_transfer(text,text)":                    true,
	"recalc.rls_may_reparent(text,text,text)":               true,
	"recalc.record_key(text,text)":                          true,
	"recalc.access_changes(bigint,integer)":                 true,
	"recalc.access_changes_head()":                          true,
	"recalc.wait_fresh(bigint,interval)":                    true,
	"recalc.log_record_change()":                            false, // the capture trigger of recalc.record only
	"recalc.attached_users_named()":                         false, // a statement trigger of recalc.team and recalc.share_input only
}

// definerRole creates a NOLOGIN role with a unique name, dropped when the
// test ends, and returns its quoted name.
func definerRole(t *testing.T, b *bundle, prefix string) (name, quoted string) {
	t.Helper()
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	name = prefix + hex.EncodeToString(tok[:])
	quoted = pgx.Identifier{name}.Sanitize()
	b.exec(t, `CREATE ROLE `+quoted+` NOLOGIN NOSUPERUSER NOBYPASSRLS`)
	t.Cleanup(func() {
		// Its grants in the test's database first: the database outlives
		// the test (testdb.Main drops it), and a role with grants cannot go.
		_, _ = b.pool.Exec(context.Background(), `DROP OWNED BY `+quoted)
		if c, err := pgx.Connect(context.Background(), testdb.AdminURL()); err == nil {
			defer c.Close(context.Background())
			if _, err := c.Exec(context.Background(), `DROP ROLE IF EXISTS `+quoted); err != nil {
				t.Errorf("drop role %s: %v", quoted, err)
			}
		}
	})
	return name, quoted
}

// sqlState runs sqls as role (quoted) in a transaction that is rolled back
// and returns the SQLSTATE of the first error, "" when none.
func sqlState(t *testing.T, b *bundle, role string, sqls ...string) (string, error) {
	t.Helper()
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+role); err != nil {
		t.Fatal(err)
	}
	for _, s := range sqls {
		if _, err := tx.Exec(b.ctx, s); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				return pgErr.Code, err
			}
			return "?", err
		}
	}
	return "", nil
}

// TestDefinerAttackInventory: every SECURITY DEFINER function pins
// search_path to exactly pg_catalog then pg_temp, is executable by no
// PUBLIC, by a reader exactly when SECURITY.md says so, and by a role granted
// nothing (but USAGE on the schema) never.
func TestDefinerAttackInventory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, nobody := definerRole(t, b, "definer_nobody_")
	b.exec(t, `GRANT USAGE ON SCHEMA recalc TO `+nobody) // the most a stray grant gives
	reader := strings.Trim(b.role, `"`)
	nobodyName := strings.Trim(nobody, `"`)
	rows, err := b.pool.Query(b.ctx, `
		SELECT p.oid::regprocedure::text, coalesce(p.proconfig, '{}'),
		       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
		               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
		       has_function_privilege($1, p.oid, 'EXECUTE'), has_function_privilege($2, p.oid, 'EXECUTE')
		FROM pg_proc p WHERE p.pronamespace = 'recalc'::regnamespace AND p.prosecdef ORDER BY 1`, reader, nobodyName)
	if err != nil {
		t.Fatal(err)
	}
	type fn struct {
		name            string
		config          []string
		public, r, none bool
	}
	got := map[string]fn{}
	var f fn
	if _, err := pgx.ForEachRow(rows, []any{&f.name, &f.config, &f.public, &f.r, &f.none}, func() error {
		got[f.name] = f
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for name := range got {
		if _, ok := definerExecutors[name]; !ok {
			t.Errorf("%s is SECURITY DEFINER but not in this audit's list: audit it and add it", name)
		}
	}
	for name, readerMay := range definerExecutors {
		t.Run(name, func(t *testing.T) {
			f, ok := got[name]
			if !ok {
				t.Fatalf("%s is no longer SECURITY DEFINER (or gone): update the list", name)
			}
			if !slices.Contains(f.config, "search_path=pg_catalog, pg_temp") {
				t.Errorf("search_path not pinned to pg_catalog, pg_temp: %v", f.config)
			}
			if f.public {
				t.Error("executable by PUBLIC")
			}
			if f.r != readerMay {
				t.Errorf("a reader may execute it: %v, want %v", f.r, readerMay)
			}
			if f.none {
				t.Error("a role granted nothing but USAGE may execute it")
			}
		})
	}
}

// TestDefinerAttackHostileCalls: what a reader, and a role granted nothing,
// try against the functions and the tables behind them, each refused with
// the SQLSTATE given: borrowing the trigger functions, calling the note
// writer, writing the change log, locking the share tables, and inputs
// past the bounds.
func TestDefinerAttackHostileCalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, privateAccounts)
	_, nobody := definerRole(t, b, "definer_nobody_")
	b.exec(t, `GRANT USAGE ON SCHEMA recalc TO `+nobody)
	big := strings.Repeat("x", 1<<20)
	cases := []struct {
		name  string
		role  string // "reader" or "nobody"
		sqls  []string
		state string // wanted SQLSTATE
		not   string // the error must not contain it
	}{
		{"reader calls the capture trigger", "reader", []string{`SELECT recalc.log_record_change()`}, "42501", ""},
		{"reader borrows the capture trigger", "reader", []string{
			`CREATE TEMP TABLE t (id text)`,
			`CREATE TRIGGER t AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change()`}, "42501", ""},
		{"reader borrows the write guard", "reader", []string{
			`CREATE TEMP TABLE t (id text)`,
			`CREATE TRIGGER t AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION recalc.rls_write_guard('app.user_id')`}, "42501", ""},
		{"reader writes the planner note through rls_note", "reader", []string{`SELECT recalc.rls_note('u2', 'account', 'read', true)`}, "42501", ""},
		{"reader inserts a change", "reader", []string{`INSERT INTO recalc.change (kind, keys) VALUES ('truncate', '{}')`}, "42501", ""},
		{"reader locks the share table", "reader", []string{`LOCK TABLE recalc.acl_share IN ACCESS SHARE MODE`}, "42501", ""},
		{"reader locks the engine lock rows", "reader", []string{`SELECT 1 FROM recalc.engine_lock FOR UPDATE`}, "42501", ""},
		{"reader reads share rows", "reader", []string{`SELECT * FROM recalc.acl_share`}, "42501", ""},
		{"reader pages past the bound", "reader", []string{`SELECT * FROM recalc.visible_records('u1', 'account', 'read', NULL, 10001)`}, "22023", ""},
		{"reader reads the feed past the bound", "reader", []string{`SELECT * FROM recalc.access_changes(0, 1000000)`}, "22023", ""},
		{"reader waits past the bound", "reader", []string{`SELECT recalc.wait_fresh(1, interval '1 hour')`}, "22023", ""},
		{"reader's level echoes at most 16 characters", "reader", []string{`SELECT recalc.can_access('u1', 'account', 'abc', '` + big + `')`}, "22023", strings.Repeat("x", 17)},
		{"reader's object echoes at most 64 characters", "reader", []string{`SELECT * FROM recalc.visible_ids('u1', '` + big + `', 'read', NULL::uuid, 10)`}, "22023", strings.Repeat("x", 65)},
		{"nobody asks for a level", "nobody", []string{`SELECT recalc.access_level('u1', 'abc')`}, "42501", ""},
		{"nobody asks the write guard's lookups", "nobody", []string{`SELECT recalc.rls_may_transfer('u1', 'abc')`}, "42501", ""},
		{"nobody asks for the owner", "nobody", []string{`SELECT recalc.rls_owner_kept('u1', 'account', 'abc', 'u1')`}, "42501", ""},
		{"nobody reads the feed", "nobody", []string{`SELECT * FROM recalc.access_changes(0, 10)`}, "42501", ""},
		{"nobody waits", "nobody", []string{`SELECT recalc.wait_fresh(1, interval '1 s')`}, "42501", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			role := b.role
			if c.role == "nobody" {
				role = nobody
			}
			state, err := sqlState(t, b, role, c.sqls...)
			if state != c.state {
				t.Errorf("state %q (%v), want %s", state, err, c.state)
			}
			if c.not != "" && err != nil && strings.Contains(err.Error(), c.not) {
				t.Errorf("the error echoes the input unbounded (%d bytes)", len(err.Error()))
			}
		})
	}
}

// attachBigint attaches object acct to a table with bigint ids, holding
// row 5 owned by u1, and runs a full recalculation.
func attachBigint(t *testing.T, b *bundle) {
	t.Helper()
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	schemaName := "definer_app_" + hex.EncodeToString(tok[:])
	b.model(t, `{"objects": [{"name": "account", "internal_owd": "private"}], "users": [{"id": "u1"}, {"id": "u2"}], "records": []}`)
	b.exec(t, `CREATE SCHEMA `+schemaName,
		`CREATE TABLE `+schemaName+`.acct (id bigint PRIMARY KEY, owner_id text NOT NULL)`,
		`INSERT INTO `+schemaName+`.acct VALUES (5, 'u1'), (6, 'u2')`)
	spec, err := attach.Parse(strings.NewReader(`{"objects": [{"object": "account", "table": "` + schemaName + `.acct", "id": "id", "owner": "owner_id", "parent": null}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attach.Apply(b.ctx, b.pool, spec); err != nil {
		t.Fatalf("attach: %v", err)
	}
	if _, err := engine.Run(b.ctx, b.pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestDefinerAttackSessionSettings: a SECURITY DEFINER function answers the
// same whatever the calling session set before calling it, and a session
// that set something cannot change the answers a later user of the same
// pooled connection gets. PL/pgSQL parses a function's statements with the
// session's standard_conforming_strings at its first call in the session and
// keeps the plan: with it off, record_key's '^\s*...\s*$' becomes '^s*...s*$'.
func TestDefinerAttackSessionSettings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	attachBigint(t, b)
	calls := []struct{ sql, want string }{
		{`SELECT coalesce(recalc.record_key('account', ' 5'), '-')`, "account:5"},
		{`SELECT coalesce(recalc.record_key('account', '5'), '-')`, "account:5"},
		{`SELECT recalc.access_level('u1', 'account', ' 5')`, "all"},
		{`SELECT recalc.access_level('u1', 'account', 5::bigint)`, "all"},
		{`SELECT recalc.access_level('u2', 'account', ' 5')`, "none"},
		{`SELECT coalesce(recalc.record_key('account', 's5'), '-')`, "-"},
		{`SELECT coalesce(recalc.record_key('account', '5 x'), '-')`, "-"},
	}
	settings := []string{
		``,
		`SET standard_conforming_strings = off`,
		`SET enable_indexscan = off; SET enable_bitmapscan = off`,
		`SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'; SET extra_float_digits = -15`,
		`SET plan_cache_mode = force_generic_plan`,
	}
	for _, set := range settings {
		for _, later := range []bool{false, true} {
			name := fmt.Sprintf("%q/later-user=%v", set, later)
			t.Run(name, func(t *testing.T) {
				// A connection of its own: PL/pgSQL caches per session.
				conn, err := pgx.Connect(b.ctx, b.pool.Config().ConnConfig.ConnString())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close(b.ctx)
				if _, err := conn.Exec(b.ctx, `SET ROLE `+b.role); err != nil {
					t.Fatal(err)
				}
				if set != "" {
					if _, err := conn.Exec(b.ctx, set); err != nil {
						t.Fatal(err)
					}
				}
				if later {
					// The hostile client's call parses the functions; it
					// leaves, the pool resets its settings, the next one calls.
					for _, c := range calls {
						var s string
						_ = conn.QueryRow(b.ctx, c.sql).Scan(&s)
					}
					if _, err := conn.Exec(b.ctx, `RESET ALL`); err != nil {
						t.Fatal(err)
					}
				}
				for _, c := range calls {
					var got string
					if err := conn.QueryRow(b.ctx, c.sql).Scan(&got); err != nil {
						t.Errorf("%s: %v", c.sql, err)
						continue
					}
					if got != c.want {
						t.Errorf("%s = %q, want %q", c.sql, got, c.want)
					}
				}
			})
		}
	}
}

// TestDefinerAttackReaderCannotStallTheEngine: a reader's transaction that
// called an access function holds ACCESS SHARE on the share tables until it
// ends (it needs no SELECT on them). Left open, it must not stop a full
// recalculation for longer than a bound: the first computation's swap
// (DROP TABLE, RENAME) retries its ACCESS EXCLUSIVE lock forever, while it
// holds the job row, so no run, import or watch step gets past it.
// The first case of each kind waits the swap's default bound (10 s); the
// others set a short one (engine.Options.SwapWait), as the bound itself is
// the same code, where each of them waited 10 s too.
func TestDefinerAttackReaderCannotStallTheEngine(t *testing.T) {
	t.Parallel()
	doc := `{"objects": [{"name": "account", "internal_owd": "private"}], "users": [{"id": "u1"}],
		"records": [{"object": "account", "id": "a1", "owner": "u1"}]}`
	short := 200 * time.Millisecond
	for _, c := range []struct {
		name  string
		first bool // the first computation (recalc init, import, run), else a full run --in-place=false
		call  string
		wait  time.Duration // the full run's SwapWait: 0 for the default
	}{
		{"first computation/rls_records of an unknown user", true, `SELECT count(*) FROM recalc.rls_records('nobody', 'account')`, 0},
		{"first computation/visible_records", true, `SELECT count(*) FROM recalc.visible_records('nobody', 'account')`, short},
		{"swap/access_level", false, `SELECT recalc.access_level('u1', 'a1')`, 0},
		{"swap/can_access", false, `SELECT recalc.can_access('u1', 'account', 'a1')`, short},
		{"swap/paged visible_records", false, `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'read', NULL, 10)`, short},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if _, err := testkit.ImportString(b.ctx, b.pool, doc); err != nil {
				t.Fatal(err)
			}
			if !c.first {
				if _, err := engine.Full(b.ctx, b.pool, engine.Options{}, zerolog.Nop()); err != nil {
					t.Fatal(err)
				}
			}
			hold, err := b.pool.Begin(b.ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Rollback(context.Background())
			if _, err := hold.Exec(b.ctx, `SET LOCAL ROLE `+b.role); err != nil {
				t.Fatal(err)
			}
			if _, err := hold.Exec(b.ctx, c.call); err != nil {
				t.Fatal(err)
			}
			// The reader now idles in its transaction.
			ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err = engine.Full(ctx, b.pool, engine.Options{InPlace: false, SwapWait: c.wait}, zerolog.Nop())
			if ctx.Err() != nil {
				t.Fatalf("a full run was still waiting after %v for a reader's idle transaction (%v): "+
					"a reader can stall the engine indefinitely with the locks recalc's functions take", time.Since(start).Round(time.Second), err)
			}
			if err != nil {
				t.Fatalf("a full run beside a reader's idle transaction: %v", err)
			}
			// It copied the rows in place: the reader's transaction still
			// reads the tables, and the owner has all access.
			var level string
			if err := hold.QueryRow(b.ctx, `SELECT recalc.access_level('u1', 'a1')`).Scan(&level); err != nil || level != "all" {
				t.Errorf("after the run, in the reader's transaction: access_level(u1, a1) = %q (%v), want all", level, err)
			}
			if err := b.pool.QueryRow(b.ctx, `SELECT recalc.access_level('u1', 'a1')`).Scan(&level); err != nil || level != "all" {
				t.Errorf("after the run: access_level(u1, a1) = %q (%v), want all", level, err)
			}
		})
	}
}

// TestDefinerAttackUnpagedVisibleRecordsBounded: the unpaged
// visible_records(user, object) reads every share row the user reaches, of
// every object, to answer for one object: a reader asking about a user with
// many share rows elsewhere makes it read them all (rls_records refuses past
// 1,000, the paged form reads at most 50 x limit records). Counted in the
// transaction's table statistics.
func TestDefinerAttackUnpagedVisibleRecordsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const many = 3000
	var recs []string
	for i := range many {
		recs = append(recs, fmt.Sprintf(`{"object": "lead", "id": "n%05d", "owner": "u1"}`, i))
	}
	recs = append(recs, `{"object": "account", "id": "a1", "owner": "u1"}`)
	b.model(t, `{"objects": [{"name": "account", "internal_owd": "private"}, {"name": "lead", "internal_owd": "private"}],
		"users": [{"id": "u1"}], "records": [`+strings.Join(recs, ",")+`]}`)
	for _, c := range []struct {
		name, sql string
	}{
		{"unpaged", `SELECT count(*) FROM recalc.visible_records('u1', 'account')`},
		{"unpaged at edit", `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'edit')`},
		{"paged", `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'read', NULL, 10)`},
		{"rls_records", `SELECT count(*) FROM recalc.rls_records('u1', 'account')`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tx, err := b.pool.Begin(b.ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(b.ctx)
			read := func() int64 {
				var n int64
				if err := tx.QueryRow(b.ctx, `SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)
					FROM pg_stat_xact_user_tables WHERE relid = 'recalc.acl_share'::regclass`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			before := read()
			if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role); err != nil {
				t.Fatal(err)
			}
			_, callErr := tx.Exec(b.ctx, c.sql) // rls_records refuses: the bound at work
			var pgErr *pgconn.PgError
			if callErr != nil && !(errors.As(callErr, &pgErr) && pgErr.Code == "54000") {
				t.Fatal(callErr)
			}
			if callErr != nil {
				// The failed statement aborted the transaction: count in
				// a fresh one is not possible, the bound held.
				return
			}
			if _, err := tx.Exec(b.ctx, `RESET ROLE`); err != nil {
				t.Fatal(err)
			}
			if n := read() - before; n > 1001+10 {
				t.Errorf("%s read %d share rows (the user reaches %d, %d of them for other objects), want at most about 1,001",
					c.sql, n, many+1, many)
			}
		})
	}
}
