package schema_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/schema"
)

// TestMigrateConcurrentAndIdempotent runs init from several connections at
// once, then again: every call succeeds and each migration applies once.
func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ms, err := schema.Migrations()
	if err != nil || len(ms) == 0 {
		t.Fatalf("migrations: %v (%d)", err, len(ms))
	}
	if err := schema.Check(ctx, pool); err == nil {
		t.Fatal("Check passed on an empty database")
	}
	var wg sync.WaitGroup
	applied := make([]int, 4)
	errs := make([]error, 4)
	for i := range applied {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied[i], errs[i] = schema.Migrate(ctx, pool)
		}()
	}
	wg.Wait()
	total := 0
	for i := range applied {
		if errs[i] != nil {
			t.Fatalf("concurrent init %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if total != len(ms) {
		t.Errorf("concurrent inits applied %d migrations in all, want %d", total, len(ms))
	}
	if n, err := schema.Migrate(ctx, pool); err != nil || n != 0 {
		t.Errorf("second init applied %d (err %v), want 0", n, err)
	}
	if err := schema.Check(ctx, pool); err != nil {
		t.Errorf("Check after init: %v", err)
	}
}

// TestMigrateIgnoresCallerSearchPath: functions a role created on the
// migrating session's search_path, closer matches than pg_catalog's, are
// not bound into the SQL-standard bodies of migration 018.
func TestMigrateIgnoresCallerSearchPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.New(t)
	setupPool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer setupPool.Close()
	if _, err := setupPool.Exec(ctx, `CREATE SCHEMA evil;
		CREATE FUNCTION evil.unnest(text[]) RETURNS SETOF text LANGUAGE sql AS $$ SELECT 'PWNED' $$`); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = "evil, pg_catalog"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := pool.QueryRow(ctx, `SELECT recalc.rls_text_ids(ARRAY['o:a', 'o:b'], 'o:')::text`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "{a,b}" {
		t.Errorf("rls_text_ids after a migration under search_path evil: %s, want {a,b}", got)
	}
}

// TestChangeKeysCompression: the ids array of a change row is compressed
// with lz4 on a server that has it (migration 030), and a server without
// lz4 keeps its default.
func TestChangeKeysCompression(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Migrated(t)
	want := "l"
	if _, err := pool.Exec(ctx, `CREATE TEMP TABLE probe (x text COMPRESSION lz4)`); err != nil {
		if pg.Code(err) != pg.FeatureNotSupported {
			t.Fatal(err)
		}
		want = "" // the server's default_toast_compression
	}
	var got string
	if err := pool.QueryRow(ctx, `SELECT attcompression::text FROM pg_attribute
		WHERE attrelid = 'recalc.change'::regclass AND attname = 'keys'`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("recalc.change.keys compression %q, want %q", got, want)
	}
}

// newPool returns a pool on url, closed when the test ends, with the
// session parameters params.
func newPool(t *testing.T, url string, params map[string]string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	testdb.CloseIdle(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// migratedURL returns a connection string for a database with recalc's
// schema of its own.
func migratedURL(t *testing.T) string {
	t.Helper()
	return testdb.Migrated(t).Config().ConnString()
}

// exec runs statements on pool, failing the test on an error.
func exec(t *testing.T, pool *pgxpool.Pool, stmts ...string) {
	t.Helper()
	for _, sql := range stmts {
		if _, err := pool.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// The schema_version changes the tests make: a newer recalc's migration, or
// this binary's newest one not applied yet.
const (
	bumpVersion   = `INSERT INTO recalc.schema_version (version, name) SELECT max(version) + 1, 'future.up.sql' FROM recalc.schema_version`
	unapplyNewest = `DELETE FROM recalc.schema_version WHERE version = (SELECT max(version) FROM recalc.schema_version)`
)

// TestCheckVersion: Check, on a pool and inside a transaction, passes on
// the schema this binary needs only, and say what to do otherwise.
func TestCheckVersion(t *testing.T) {
	t.Parallel()
	latest := schema.Latest()
	for _, tc := range []struct {
		name    string
		stmts   []string // run on a migrated database; nil: an empty database
		current int      // the VersionError's Current; -1: no error
		says    string
	}{
		{name: "no schema", current: 0, says: "run `recalc init` first"},
		{name: "older", stmts: []string{unapplyNewest}, current: latest - 1, says: "run `recalc init` to upgrade"},
		{name: "current", stmts: []string{}, current: -1},
		{name: "newer", stmts: []string{bumpVersion}, current: latest + 1,
			says: "newer than this recalc, which knows up to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			var pool *pgxpool.Pool
			if tc.stmts == nil {
				pool = newPool(t, testdb.New(t), nil)
			} else {
				pool = newPool(t, migratedURL(t), nil)
				exec(t, pool, tc.stmts...)
			}
			for what, err := range map[string]error{
				"on the pool":      schema.Check(ctx, pool),
				"in a transaction": pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return schema.Check(ctx, tx) }),
			} {
				var ve *schema.VersionError
				switch {
				case tc.current < 0:
					if err != nil {
						t.Errorf("%s: %v, want nil", what, err)
					}
				case !errors.As(err, &ve):
					t.Errorf("%s: %v, want a *schema.VersionError", what, err)
				case ve.Current != tc.current || ve.Want != latest:
					t.Errorf("%s: %+v, want Current %d, Want %d", what, *ve, tc.current, latest)
				case !strings.Contains(err.Error(), tc.says):
					t.Errorf("%s: %q, want it to say %q", what, err, tc.says)
				}
			}
		})
	}
}

// TestMigrateRefusesNewerSchema: `recalc init` with a binary older than
// the schema fails, saying that a newer recalc upgraded it, and changes
// nothing; it does not report the schema up to date.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, migratedURL(t), nil)
	exec(t, pool, bumpVersion)
	state := func() string {
		var s string
		if err := pool.QueryRow(ctx, `SELECT concat_ws(' | ',
			(SELECT string_agg(version || ' ' || name, ',' ORDER BY version) FROM recalc.schema_version),
			(SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'recalc'::regnamespace),
			(SELECT string_agg(oid::regprocedure::text, ',' ORDER BY oid::regprocedure::text) FROM pg_proc WHERE pronamespace = 'recalc'::regnamespace),
			(SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid IN
				(SELECT oid FROM pg_class WHERE relnamespace = 'recalc'::regnamespace)))`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := state()
	n, err := schema.Migrate(ctx, pool)
	var ve *schema.VersionError
	if !errors.As(err, &ve) || ve.Current != schema.Latest()+1 || ve.Want != schema.Latest() {
		t.Fatalf("Migrate on a schema one version newer than this binary: applied %d, err %v; want a *schema.VersionError{%d, %d}",
			n, err, schema.Latest()+1, schema.Latest())
	}
	if n != 0 || !strings.Contains(err.Error(), "a newer recalc upgraded it") {
		t.Errorf("Migrate: applied %d, err %q; want 0 and an error saying a newer recalc upgraded it", n, err)
	}
	if after := state(); after != before {
		t.Errorf("Migrate refused, but changed the schema:\nbefore %s\nafter  %s", before, after)
	}
}

// TestMigrateLockTimeout: Migrate bounds its lock waits (here with the
// session's lock_timeout, 100ms, rather than its own 5s), rolls back and
// tries again while another session holds a lock on recalc's tables, and
// fails with an error saying what to do when the lock stays held. It waits
// for the engine's running work (the model lock of an import or a plan, a
// job's row locked by its finish) only when it has a migration to apply.
func TestMigrateLockTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	for _, tc := range []struct {
		name    string
		empty   bool     // an empty database, else a migrated one
		setup   []string // statements run first
		hold    string   // the lock another transaction holds
		release time.Duration
		applied int // -1: Migrate fails
	}{
		{name: "version table, released while retrying", empty: true,
			setup: []string{`CREATE SCHEMA recalc`, `CREATE TABLE recalc.schema_version (
				version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`},
			hold: `LOCK TABLE recalc.schema_version IN ACCESS EXCLUSIVE MODE`, release: 4 * timeout, applied: len(mustMigrations(t))},
		{name: "model lock held by an import", setup: []string{unapplyNewest},
			hold: `SELECT FROM recalc.engine_lock WHERE scope = 2 FOR UPDATE`, applied: -1},
		{name: "running job's row held by its finish", setup: []string{unapplyNewest,
			`INSERT INTO recalc.job (kind, trigger, status, change_seq, config, plan, chunks) VALUES ('incremental', 'test', 'running', 0, '{}', '{}', 0)`},
			hold: `SELECT FROM recalc.job WHERE status = 'running' FOR UPDATE`, applied: -1},
		{name: "up to date: waits for no work",
			hold: `SELECT FROM recalc.engine_lock WHERE scope = 2 FOR UPDATE`, applied: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := testdb.New(t)
			if !tc.empty {
				url = migratedURL(t)
			}
			other := newPool(t, url, nil)
			exec(t, other, tc.setup...)
			var want int
			if err := other.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM recalc.schema_version`).Scan(&want); err != nil {
				t.Fatal(err)
			}
			holder, err := other.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			release := func() { once.Do(func() { _ = holder.Rollback(ctx) }) }
			defer release()
			if _, err := holder.Exec(ctx, tc.hold); err != nil {
				t.Fatal(err)
			}
			if tc.release > 0 {
				time.AfterFunc(tc.release, release)
			}
			pool := newPool(t, url, map[string]string{"lock_timeout": timeout.String()})
			start := time.Now()
			n, err := schema.Migrate(ctx, pool)
			took := time.Since(start)
			switch {
			case tc.applied >= 0 && (err != nil || n != tc.applied):
				t.Fatalf("Migrate: applied %d, %v; want %d", n, err, tc.applied)
			case tc.applied >= 0 && tc.release > 0 && took < tc.release:
				t.Errorf("Migrate returned after %s, before the lock was released (%s)", took, tc.release)
			case tc.applied >= 0:
				return
			case !pg.IsLockNotAvailable(err) || !strings.Contains(err.Error(), "another session holds a lock on recalc's tables") ||
				!strings.Contains(err.Error(), "retry when it ends"):
				t.Fatalf("Migrate with a lock held throughout: applied %d, %v; want a lock timeout saying to retry when the lock's holder ends", n, err)
			case took < 5*timeout || took > 20*time.Second:
				t.Errorf("Migrate failed after %s; want 5 tries of %s each, with backoff", took, timeout)
			}
			var got int
			if err := pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM recalc.schema_version`).Scan(&got); err != nil || got != want {
				t.Errorf("schema version after the failed Migrate: %d (%v), want %d, unchanged", got, err, want)
			}
		})
	}
}

func mustMigrations(t *testing.T) []schema.Migration {
	t.Helper()
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestMigrateRefusesNonOwner: only the role that owns recalc's objects
// (the owner of recalc.schema_version) may migrate them. Another role, a
// superuser included, is refused with a *schema.OwnerError naming the
// owner, and nothing changes: what it created would belong to it, and the
// owner's SECURITY DEFINER functions could not call it. A schema not yet
// migrated is anyone's who may create in it, and objects an earlier upgrade
// gave to another role are named, so that they can be given back.
func TestMigrateRefusesNonOwner(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		engineOwned bool   // the test's role ran the first init; else a superuser did
		prepare     string // run by the superuser before the migration
		asRole      bool   // the test's role migrates; else the superuser
		want        string // the refusal; "" for a migration that applies
	}{
		{"a superuser, recalc's objects being another role's", true, unapplyNewest, false, "owner:role"},
		{"a role that does not own recalc's objects", false, unapplyNewest, true, "owner:superuser"},
		// As a reader of recalc's tables: the schema lock, which it may not
		// take on recalc.engine_lock, is then the advisory one.
		{"a role that may use schema recalc but does not own it", false, unapplyNewest + `; GRANT USAGE ON SCHEMA recalc TO ROLE`, true, "owner:superuser"},
		{"objects an earlier upgrade gave to another role", true,
			`ALTER FUNCTION recalc.rls_mode(text, text, text) OWNER TO CURRENT_USER`, true, "function recalc.rls_mode(text,text,text)"},
		{"the first init, into a schema another role created", false,
			`CREATE SCHEMA recalc; GRANT USAGE, CREATE ON SCHEMA recalc TO ROLE`, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := testdb.New(t)
			admin := newPool(t, url, nil)
			var superuser string
			if err := admin.QueryRow(ctx, `SELECT current_user`).Scan(&superuser); err != nil {
				t.Fatal(err)
			}
			role := fmt.Sprintf("schema_owner_test_%d", time.Now().UnixNano())
			exec(t, admin, `CREATE ROLE `+role+` NOLOGIN`)
			t.Cleanup(func() {
				exec(t, admin, `DROP SCHEMA IF EXISTS recalc CASCADE`, `DROP OWNED BY `+role, `DROP ROLE `+role)
			})
			asRole := newPool(t, url, map[string]string{"role": role})
			first := admin
			if tc.engineOwned {
				exec(t, admin, `CREATE SCHEMA recalc AUTHORIZATION `+role)
				first = asRole
			}
			if !strings.HasPrefix(tc.prepare, "CREATE SCHEMA") {
				if _, err := schema.Migrate(ctx, first); err != nil {
					t.Fatalf("the first init: %v", err)
				}
			}
			exec(t, admin, strings.ReplaceAll(tc.prepare, "ROLE", role))
			before := versions(t, admin)
			migrating := admin
			if tc.asRole {
				migrating = asRole
			}
			n, err := schema.Migrate(ctx, migrating)
			if tc.want == "" {
				var owner string
				if err != nil || n != len(mustMigrations(t)) || admin.QueryRow(ctx,
					`SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'recalc.schema_version'::regclass`).Scan(&owner) != nil || owner != role {
					t.Fatalf("the first init into a schema %s created: applied %d, %v; schema_version owned by %q, want %s", superuser, n, err, owner, role)
				}
				return
			}
			var oe *schema.OwnerError
			switch owner := strings.TrimPrefix(tc.want, "owner:"); {
			case owner == "role" && (!errors.As(err, &oe) || oe.Owner != role),
				owner == "superuser" && (!errors.As(err, &oe) || oe.Owner != superuser):
				t.Fatalf("Migrate by a role not owning recalc's objects: applied %d, %v; want a *schema.OwnerError naming the %s", n, err, owner)
			case oe != nil && !oe.Super && !strings.Contains(err.Error(), "run recalc init as that role"),
				oe != nil && oe.Super && !strings.Contains(err.Error(), "give every object of schema recalc to the engine's role"):
				t.Errorf("the refusal does not say what to do: %q", err)
			case oe == nil && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ALTER FUNCTION")):
				t.Fatalf("Migrate over objects of another role: %v; want a refusal naming %s and how to give it back", err, tc.want)
			}
			if n != 0 || !strings.Contains(err.Error(), "nothing was changed") || versions(t, admin) != before {
				t.Errorf("the refusal applied %d, changed the versions (%s, then %s), or does not say nothing changed: %v", n, before, versions(t, admin), err)
			}
		})
	}
}

// versions lists the applied migrations ("" before the first).
func versions(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	var exists bool
	var s string
	if err := pool.QueryRow(ctx, `SELECT to_regclass('recalc.schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		return ""
	}
	if err := pool.QueryRow(ctx, `SELECT string_agg(version::text, ',' ORDER BY version) FROM recalc.schema_version`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCheckNamesTheEngineRole: a role that may not read recalc's tables is
// told which role owns them and how to act as it; never to be granted a
// superuser role, when one owns them (as after pg_restore --no-owner).
func TestCheckNamesTheEngineRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, super := range []bool{false, true} {
		url := testdb.New(t)
		admin := newPool(t, url, nil)
		role := testRole(t, admin, `DROP SCHEMA IF EXISTS recalc CASCADE`)
		owner := testRole(t, admin, `DROP SCHEMA IF EXISTS recalc CASCADE`)
		migrator := admin
		if !super {
			exec(t, admin, `CREATE SCHEMA recalc AUTHORIZATION `+owner)
			migrator = newPool(t, url, map[string]string{"role": owner})
		} else if err := admin.QueryRow(ctx, `SELECT current_user`).Scan(&owner); err != nil {
			t.Fatal(err)
		}
		if _, err := schema.Migrate(ctx, migrator); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("connect as recalc's engine role, %s, or grant it to this role (GRANT %s TO %s)", owner, owner, `"`+role+`"`)
		if super {
			want = fmt.Sprintf("recalc's objects belong to the superuser %s (as after pg_restore --no-owner)", owner)
		}
		err := schema.Check(ctx, newPool(t, url, map[string]string{"role": role}))
		if err == nil || !strings.Contains(err.Error(), want) || super && strings.Contains(err.Error(), "GRANT "+owner) {
			t.Fatalf("Check as a role without privileges, recalc owned by %s: %v, want it to say %q", owner, err, want)
		}
	}
}

// TestInitWithoutCreateSaysHow: a first init by a role that may not create
// the schema says how a superuser creates it for the role.
func TestInitWithoutCreateSaysHow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.New(t)
	admin := newPool(t, url, nil)
	role := testRole(t, admin)
	_, err := schema.Migrate(ctx, newPool(t, url, map[string]string{"role": role}))
	if want := `CREATE SCHEMA recalc AUTHORIZATION "` + role + `"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("init by a role without CREATE: %v, want it to say %q", err, want)
	}
	if versions(t, admin) != "" {
		t.Error("the refused init left a schema")
	}
}

// TestRedefinedFunctionsKeepAttributes: a migration that redefines a
// function (CREATE OR REPLACE resets what it does not say) keeps its
// attributes: SECURITY DEFINER or not, parallel safety, pinned settings,
// and no EXECUTE for PUBLIC.
func TestRedefinedFunctionsKeepAttributes(t *testing.T) {
	t.Parallel()
	pool := testdb.Migrated(t)
	for _, tc := range []struct {
		fn       string
		definer  bool
		parallel string
		config   string
	}{
		{"recalc.visible_ids(text, text, text, anyelement, integer)", true, "u", "{\"search_path=pg_catalog, pg_temp\",jit=off}"},
		{"recalc.rls_write_guard()", false, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.rls_guard(oid)", true, "s", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.attach_intact(text)", false, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.visible_records(text, text, text, text, integer)", true, "u", ""},
		{"recalc.can_access(text, text, text, text)", true, "s", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.rls_records(text, text, text)", true, "s", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.attach_fingerprints()", false, "u", "{\"search_path=pg_catalog, pg_temp\",jit=off}"},
		{"recalc.attach_fingerprints_changed()", false, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.attach_catalog_stamp()", false, "u", "{\"search_path=pg_catalog, pg_temp\",jit=off}"},
		{"recalc.wait_fresh(bigint, interval)", true, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.attach_complete(text)", false, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.attach_foreign_code(text)", false, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.attach_view_reads(oid, oid)", false, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.attach_view_rule(oid)", false, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.attach_absorb_begin(interval, bigint)", false, "u", "{\"search_path=pg_catalog, pg_temp\"}"},
		{"recalc.record_key(text, text)", true, "s", "{\"search_path=pg_catalog, pg_temp\",standard_conforming_strings=on}"},
	} {
		var definer, public bool
		var parallel, config string
		err := pool.QueryRow(context.Background(), `SELECT prosecdef, proparallel::text, coalesce(proconfig::text, ''),
				EXISTS (SELECT FROM aclexplode(coalesce(proacl, acldefault('f', proowner))) a WHERE a.grantee = 0)
			FROM pg_proc WHERE oid = $1::regprocedure`, tc.fn).Scan(&definer, &parallel, &config, &public)
		switch {
		case err != nil:
			t.Errorf("%s: %v", tc.fn, err)
		case definer != tc.definer || parallel != tc.parallel || (tc.config != "" && config != tc.config) || public:
			t.Errorf("%s: SECURITY DEFINER %v, parallel %s, settings %s, PUBLIC may run it %v; want %v, %s, %s, false",
				tc.fn, definer, parallel, config, public, tc.definer, tc.parallel, tc.config)
		}
	}
}

// testRole creates a role with no privileges for the test; at its end it
// runs first, then drops the role.
func testRole(t *testing.T, admin *pgxpool.Pool, first ...string) string {
	t.Helper()
	role := fmt.Sprintf("schema_test_role_%d", time.Now().UnixNano())
	exec(t, admin, `CREATE ROLE `+role+` NOLOGIN`)
	t.Cleanup(func() { exec(t, admin, append(first, `DROP ROLE `+role)...) })
	return role
}

// TestInitRevokesPublicExecute: a restore without privileges
// (pg_restore --no-acl) gives EXECUTE on every function back to PUBLIC;
// `recalc init` takes it away again, schema up to date or not (the
// sandbox's reader: internal/attach, TestInitRestoresReaderPrivileges).
func TestInitRevokesPublicExecute(t *testing.T) {
	t.Parallel()
	pool := testdb.Migrated(t)
	ctx := context.Background()
	public := func() int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'recalc'::regnamespace
			AND has_function_privilege('public', p.oid, 'EXECUTE')`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := public(); n != 0 {
		t.Fatalf("%d functions executable by PUBLIC once migrated, want none", n)
	}
	exec(t, pool, `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA recalc TO PUBLIC`)
	if n := public(); n == 0 {
		t.Fatal("the grant to PUBLIC did not take")
	}
	if _, err := schema.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if n := public(); n != 0 {
		t.Fatalf("%d functions executable by PUBLIC after init, want none", n)
	}
}

// TestLatestReadsTheNamesOnce: Latest is the newest migration's version,
// and the engine asks for it at every plan, chunk and live step; it globbed
// the embedded migrations' names each time (1.3 s of a property test's
// 97 s of processor time under -race), where the names never change.
func TestLatestReadsTheNamesOnce(t *testing.T) { // not parallel: AllocsPerRun refuses
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := schema.Latest(), ms[len(ms)-1].Version; got != want {
		t.Fatalf("Latest() = %d, the newest migration is %d", got, want)
	}
	if allocs := testing.AllocsPerRun(100, func() { schema.Latest() }); allocs != 0 {
		t.Fatalf("Latest() allocates %.0f times a call, want none: it reads the migrations' names again", allocs)
	}
}
