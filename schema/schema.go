// Package schema holds recalc's numbered SQL migrations, embedded in the
// binary, and applies them. Migrations run in one transaction that holds the
// schema lock (a SHARE ROW EXCLUSIVE lock on recalc.engine_lock, or an
// advisory lock while that table does not exist yet: lockSchema), so
// concurrent `recalc init` calls are safe and idempotent.
// A binary refuses a schema other than its own (VersionError): older, it
// needs `recalc init`; newer, a newer recalc upgraded it. Only the role that
// owns recalc's objects may migrate them (OwnerError).
package schema

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/pg"
)

//go:embed *.up.sql
var migrations embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrations, "*.up.sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, n := range names {
		num, _, ok := strings.Cut(n, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %q: name must start with a number and _", n)
		}
		b, err := migrations.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: n, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Migrate applies the migrations not yet applied and returns how many it
// applied. It refuses a schema newer than this binary (a *VersionError),
// before changing anything. Before migrating it waits for the engine's
// running work (plans, live steps, imports, job finishes), so that none
// interleaves with a migration. Its wait for the schema lock is not bounded
// (only another Migrate holds it, while it migrates); its other lock waits
// are: 5 s for the running work's, and, once it migrates, tableLockWait
// for each lock a migration takes on recalc's tables or the attached ones
// (the session's lock_timeout instead when one is set): PostgreSQL queues
// every later read and write of a table behind a statement waiting to lock
// it, and the application writes recalc's tables too (an attached table's
// capture logs to recalc.change in the writer's transaction), so a long
// wait, holding what its earlier migrations locked, stopped them all. When
// a wait times out it rolls back, releasing everything, and tries again
// until migrateWait has passed (a retry's waits within what is left of it
// when the session sets lock_timeout: locks.Within); then it fails,
// naming the sessions last seen blocking its lock waits
// (locks.Watch; those holding locks on those tables when none was
// seen: locks.Blamed), with nothing migrated. Once migrated, it
// gives each attached table whose capture predates version 67 its new
// trigger (renewPins); a table it could not give one makes a *PinsError,
// with the migrations applied counted.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (applied int, err error) {
	ms, err := Migrations()
	if err != nil {
		return 0, err
	}
	return migrateWith(ctx, pool, ms)
}

// migrateWith is Migrate applying ms, Migrations() and any that follow
// them: a test's stand-in for a migration not yet written.
func migrateWith(ctx context.Context, pool *pgxpool.Pool, ms []Migration) (applied int, err error) {
	if applied, err = migrateRetrying(ctx, pool, ms); err != nil {
		return applied, err
	}
	return applied, renewPins(ctx, pool)
}

// migrateRetrying tries migrateOnce until it migrates, or until migrateWait
// has passed (Migrate), on one session of pool that locks.Watch watches
// from the first try to the last: a watcher opened for each try (its own
// session, connected 25 ms into it) saw none of a loaded machine's last
// 100 ms waits, and the error named the holders.
func migrateRetrying(ctx context.Context, pool *pgxpool.Pool, ms []Migration) (int, error) {
	session, err := locks.SessionTimeout(ctx, pool)
	if err != nil {
		return 0, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: acquire a session: %w", err)
	}
	defer conn.Release()
	stop := locks.Watch(ctx, conn.Conn())
	defer stop()
	start := time.Now()
	for try := 1; ; try++ {
		var limit time.Duration // the first try waits the session's lock_timeout whole
		if try > 1 && session > 0 {
			limit = locks.Within(session, locks.TryWait, start.Add(migrateWait))
		}
		applied, err := migrateOnce(ctx, conn, ms, limit)
		if err == nil {
			return applied, nil
		}
		if !pg.IsLockNotAvailable(err) && pg.Code(err) != pg.DeadlockDetected {
			return applied, err
		}
		if time.Since(start) >= migrateWait {
			held := locks.Blamed(stop(), "sessions holding locks on recalc's tables or the attached ones",
				func() []string { return migrateHolders(ctx, pool) })
			return 0, fmt.Errorf("migrate: lock waits timed out or deadlocked for %s (%d tries; %s): "+
				"nothing was migrated; another session holds a lock on recalc's tables (a long or idle transaction, a feed reader, "+
				"a running job): retry when it ends: %w",
				time.Since(start).Round(100*time.Millisecond), try, held, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(min(100*time.Millisecond<<(try-1), time.Second)):
		}
	}
}

// migrateHolders names the sessions holding a lock on one of recalc's
// tables or of the attached ones (locks.Holders); nil when they cannot be
// read.
func migrateHolders(ctx context.Context, pool *pgxpool.Pool) []string {
	var relids []string
	if err := pool.QueryRow(ctx, `SELECT ARRAY(SELECT c.oid::text FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'recalc' AND c.relkind IN ('r', 'p'))`).Scan(&relids); err != nil {
		return nil
	}
	var attached []string // none before version 10, or when they cannot be read
	if err := pool.QueryRow(ctx, `SELECT ARRAY(SELECT relid::text FROM recalc.attach_capture
		UNION SELECT relid::text FROM recalc.attachment)`).Scan(&attached); err == nil {
		relids = append(relids, attached...)
	}
	return locks.Holders(ctx, pool, locks.AnyLock, relids)
}

// Migrate's lock waits. migrateTries bounds renewPins' tries too.
const (
	migrateTries = 5
	// lockTimeout bounds the lock waits after the schema lock's, the
	// running work's (waitForWork) among them, unless the session sets its
	// own lock_timeout.
	lockTimeout = "5s"
	// tableLockWait bounds each lock wait of the migrations themselves,
	// unless the session sets its own lock_timeout.
	tableLockWait = locks.TryWait
	// migrateWait is how long Migrate tries again before it fails.
	migrateWait = 10 * time.Second
)

// renewPins gives each attached table whose fifth capture trigger predates
// version 67 the one that marks the rows whose id an UPDATE changed
// (recalc.attach_renew_pin), in a transaction of its own per table, each
// lock wait bounded by pinLockTimeout (the session's lock_timeout instead
// when set), tried again for migrateWait at most, each try after the first
// within what is left of it (locks.Within): one application table
// held at a time cannot deadlock with the application's transactions, and
// its writes wait at most that long. A table that stays locked, or that the engine may
// no longer add triggers to, keeps its old trigger; the error names its
// object, and the next `recalc init` tries again.
func renewPins(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, `SELECT object, relid FROM recalc.attach_pins_outdated()`)
	if err != nil {
		return fmt.Errorf("list the captures to renew: %w", err)
	}
	type capture struct {
		Object string
		Relid  uint32
	}
	outdated, err := pgx.CollectRows(rows, pgx.RowToStructByPos[capture])
	if err != nil {
		return fmt.Errorf("list the captures to renew: %w", err)
	}
	each, err := locks.SessionTimeout(ctx, pool)
	if err != nil {
		return err
	}
	if each == 0 {
		each = pinLockTimeout
	}
	var failed []string
	var locked []string // oids, as regclass reads them
	var last error
	for _, c := range outdated {
		start, this := time.Now(), each
		for try := 1; ; try, this = try+1, locks.Within(each, pinLockTimeout, start.Add(migrateWait)) {
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if err := locks.SetTimeout(ctx, tx, this); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `SELECT recalc.attach_renew_pin($1, $2)`, c.Object, c.Relid)
				return err
			})
			if err == nil || try == migrateTries*2 || time.Since(start) >= migrateWait ||
				!pg.IsLockNotAvailable(err) && pg.Code(err) != pg.DeadlockDetected {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond * time.Duration(try)):
			}
		}
		if err != nil {
			failed, last = append(failed, c.Object), err
		}
		if pg.IsLockNotAvailable(err) || pg.Code(err) == pg.DeadlockDetected {
			locked = append(locked, strconv.FormatUint(uint64(c.Relid), 10))
		}
	}
	if len(failed) > 0 {
		return &PinsError{Objects: failed, Holders: locks.Holders(ctx, pool, locks.AnyLock, locked), Err: last}
	}
	return nil
}

// PinsError is Migrate's error when the schema is migrated but the capture
// of some attached objects kept its fifth trigger from before version 67
// (renewPins): the schema works, and `recalc init` again renews them.
type PinsError struct {
	Objects []string // the objects whose table kept the old trigger
	Holders []string // "pid N (role R)": the sessions holding locks on the tables a lock was not granted on, when read
	Err     error    // the last table's failure
}

func (e *PinsError) Error() string {
	return fmt.Sprintf("the schema is migrated, but the capture of object %s kept its old trigger, which does not mark "+
		"the rows one UPDATE moves onto each other's ids: run recalc init again once the table is not locked "+
		"(or recalc attach, once the engine may add triggers to it)%s: %v", strings.Join(e.Objects, ", "), e.holders(), e.Err)
}

func (e *PinsError) Unwrap() error { return e.Err }

// holders names the sessions that held the tables, when known.
func (e *PinsError) holders() string {
	if len(e.Holders) == 0 {
		return ""
	}
	return " (sessions holding locks on its tables: " + strings.Join(e.Holders, ", ") + ")"
}

// pinLockTimeout bounds each lock wait of renewPins.
const pinLockTimeout = 200 * time.Millisecond

// migrateOnce is one try of Migrate, in one transaction on conn. limit,
// when not 0, bounds its lock waits after the schema lock's in place of
// the session's lock_timeout (a retry within what is left of migrateWait).
func migrateOnce(ctx context.Context, conn *pgxpool.Conn, ms []Migration, limit time.Duration) (applied int, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		current, ours, err := begin(ctx, tx)
		if err != nil {
			return err
		}
		if limit > 0 { // only when the session sets lock_timeout, so begin set none (not ours)
			if err := locks.SetTimeout(ctx, tx, limit); err != nil {
				return err
			}
		}
		latest := latestOf(ms)
		if current > latest {
			return &VersionError{Current: current, Want: latest}
		}
		if current < latest {
			if err := waitForWork(ctx, tx); err != nil {
				return err
			}
			if ours {
				if err := locks.SetTimeout(ctx, tx, tableLockWait); err != nil {
					return err
				}
			}
		}
		for _, m := range ms {
			if m.Version <= current {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO recalc.schema_version (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Name, err)
			}
			applied++
		}
		return restorePrivileges(ctx, tx)
	})
	if err != nil {
		return 0, err // rolled back
	}
	return applied, nil
}

// restorePrivileges puts back what a restore without privileges
// (pg_restore --no-acl) changes (SECURITY.md): EXECUTE on recalc's
// functions, which no function grants to PUBLIC (each migration revokes
// it), and, once `recalc attach` has made the sandbox role's reader
// (recalc.attach_read), the role's USAGE on the schema and the reader
// executable by the engine alone. It changes nothing otherwise.
func restorePrivileges(ctx context.Context, tx pgx.Tx) error {
	var public bool
	var sandbox, reader *string
	var engine, role string
	if err := tx.QueryRow(ctx, `SELECT current_user::text, current_setting('role'),
		EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = 'recalc'::regnamespace AND p.proowner = n.nspowner
		        AND has_function_privilege('public', p.oid, 'EXECUTE')),
		(SELECT r.rolname::text FROM pg_roles r WHERE r.rolname = recalc.attach_sandbox_role() AND NOT has_schema_privilege(r.oid, 'recalc', 'USAGE')
		   AND to_regprocedure('recalc.attach_read(text, text[])') IS NOT NULL),
		(SELECT r.rolname::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		 WHERE p.oid = to_regprocedure('recalc.attach_read(text, text[])') AND r.rolname = recalc.attach_sandbox_role()
		   AND pg_has_role(r.oid, 'MEMBER') AND has_function_privilege('public', p.oid, 'EXECUTE'))
		FROM pg_namespace n WHERE n.nspname = 'recalc'`).Scan(&engine, &role, &public, &sandbox, &reader); err != nil {
		return fmt.Errorf("read recalc's privileges: %w", err)
	}
	var stmts []string
	if public {
		stmts = append(stmts, `REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA recalc FROM PUBLIC`)
	}
	if sandbox != nil {
		stmts = append(stmts, `GRANT USAGE ON SCHEMA recalc TO `+pgx.Identifier{*sandbox}.Sanitize())
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("restore recalc's privileges: %s: %w", s, err)
		}
	}
	if reader != nil {
		return restoreReader(ctx, tx, *reader, engine, role)
	}
	return nil
}

// restoreReader makes recalc.attach_read executable by engine alone, as
// its owner, the sandbox role, which the engine may become; then the
// session's role is role again.
func restoreReader(ctx context.Context, tx pgx.Tx, sandbox, engine, role string) error {
	wrap := func(err error) error { return fmt.Errorf("make recalc.attach_read the engine's alone: %w", err) }
	if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, sandbox); err != nil {
		return wrap(err)
	}
	if _, err := tx.Exec(ctx, `REVOKE EXECUTE ON FUNCTION recalc.attach_read(text, text[]) FROM PUBLIC;
		GRANT EXECUTE ON FUNCTION recalc.attach_read(text, text[]) TO `+pgx.Identifier{engine}.Sanitize()); err != nil {
		return wrap(err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, role); err != nil {
		return wrap(err)
	}
	return nil
}

// lockSchema takes the schema lock until tx ends. Once recalc.engine_lock
// exists (version 15) and this role may lock it, that is a SHARE ROW
// EXCLUSIVE lock on that table, which only roles with rights on it can
// take (a reader's or another role's statement on it, refused, takes at
// most ACCESS SHARE, which does not conflict): the advisory lock of
// locks.Schema, any role that can connect may take and hold, which stalled
// every init, upgrades included, for as long as it held it, without a
// word. Before that table exists, or for a role refused further on
// (checkOwner), it is the advisory lock.
func lockSchema(ctx context.Context, tx pgx.Tx) error {
	var lockable bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'recalc' AND c.relname = 'engine_lock'
		  AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'UPDATE'))`).Scan(&lockable); err != nil {
		return fmt.Errorf("take schema lock: %w", err)
	}
	if !lockable {
		return locks.XactLock(ctx, tx, locks.Schema)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE recalc.engine_lock IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("take schema lock: %w", err)
	}
	return nil
}

// begin takes the schema lock, bounds the transaction's lock waits from
// then on (ours: by lockTimeout, the session setting none), creates the
// schema if missing, refuses a role that does not own recalc's objects,
// creates the version table if missing, and reads the version.
func begin(ctx context.Context, tx pgx.Tx) (current int, ours bool, err error) {
	// Unbounded: a concurrent init holds it while it migrates, and a
	// session waiting for it holds nothing.
	if err := lockSchema(ctx, tx); err != nil {
		return 0, false, err
	}
	if err := tx.QueryRow(ctx, `SELECT s.ours, CASE WHEN s.ours THEN set_config('lock_timeout', $1, true) END
		FROM (SELECT current_setting('lock_timeout') = '0' AS ours) s`, lockTimeout).Scan(&ours, nil); err != nil {
		return 0, false, fmt.Errorf("set lock timeout: %w", err)
	}
	var self string // for the advice below: the transaction cannot answer once CREATE SCHEMA failed
	if err := tx.QueryRow(ctx, `SELECT current_user`).Scan(&self); err != nil {
		return 0, false, fmt.Errorf("read the current role: %w", err)
	}
	// CREATE SCHEMA IF NOT EXISTS would need CREATE on the database even
	// when the schema exists, which a least-privilege role lacks.
	if _, err := tx.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'recalc') THEN CREATE SCHEMA recalc; END IF;
		END $$`); err != nil {
		if pg.IsInsufficientPrivilege(err) {
			return 0, false, fmt.Errorf("create schema recalc: %w: as a superuser, create it for this role "+
				"(CREATE SCHEMA recalc AUTHORIZATION %s; SECURITY.md, \"Roles\"), then run recalc init again", err, pgx.Identifier{self}.Sanitize())
		}
		return 0, false, fmt.Errorf("create schema recalc: %w", err)
	}
	if err := checkOwner(ctx, tx); err != nil {
		return 0, false, err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS recalc.schema_version (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, false, fmt.Errorf("create version table: %w", err)
	}
	// Migrations name every object with its schema; builtins are found
	// in pg_catalog only: a function a role created in a schema on the
	// caller's search_path (say public.unnest(text[]), a closer match)
	// would otherwise be bound into SQL-standard function bodies,
	// which are resolved once, when created.
	if _, err := tx.Exec(ctx, `SET LOCAL search_path = pg_catalog, pg_temp`); err != nil {
		return 0, false, fmt.Errorf("pin search_path: %w", err)
	}
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM recalc.schema_version`).Scan(&current); err != nil {
		return 0, false, fmt.Errorf("read schema version: %w", err)
	}
	return current, ours, nil
}

// checkOwner refuses a role other than the one that owns recalc's objects
// (the owner of recalc.schema_version, which the first init creates), a
// superuser included: what its migrations created would belong to it, and
// the owner's SECURITY DEFINER functions, which run as their owner, could
// not call them. A schema not yet migrated is anyone's who may create in
// it. It also refuses objects that belong to another role already (an
// upgrade an older recalc let another role run), naming a few; those of a
// role the owner is a member of (the sandbox role's reader, migration 021)
// are the owner's own.
func checkOwner(ctx context.Context, tx pgx.Tx) error {
	var owner string
	var mine, super bool
	var strays []string
	err := tx.QueryRow(ctx, `
		SELECT pg_get_userbyid(v.relowner), v.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user),
			(SELECT r.rolsuper FROM pg_roles r WHERE r.oid = v.relowner),
			ARRAY(SELECT what FROM (
				SELECT format('function %s', p.oid::regprocedure), p.proowner FROM pg_proc p WHERE p.pronamespace = v.relnamespace
				UNION ALL
				SELECT format('relation %s', c.oid::regclass), c.relowner FROM pg_class c
				WHERE c.relnamespace = v.relnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')) o(what, owner)
			WHERE o.owner <> v.relowner AND NOT pg_has_role(v.relowner, o.owner, 'MEMBER') ORDER BY 1 LIMIT 3)
		FROM pg_class v JOIN pg_namespace n ON n.oid = v.relnamespace
		WHERE n.nspname = 'recalc' AND v.relname = 'schema_version'`).Scan(&owner, &mine, &super, &strays)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("read the owner of recalc's objects: %w", err)
	case !mine:
		return &OwnerError{Owner: owner, Super: super}
	case len(strays) > 0:
		return fmt.Errorf("some of recalc's objects belong to another role than %q, which owns the rest (such as %s): an earlier upgrade, "+
			"or a full run by an older recalc, ran as another role; as a superuser, give each back (ALTER FUNCTION or ALTER TABLE ... OWNER TO %s), "+
			"then run recalc init again; nothing was changed",
			owner, strings.Join(strays, ", "), pgx.Identifier{owner}.Sanitize())
	}
	return nil
}

// OwnerError says that a role other than the owner of recalc's objects
// tried to migrate them.
type OwnerError struct {
	Owner string
	Super bool // the owner is a superuser, as after pg_restore --no-owner
}

func (e *OwnerError) Error() string {
	if e.Super {
		return superOwned(e.Owner) + "; nothing was changed"
	}
	return fmt.Sprintf("recalc's objects belong to role %q: run recalc init as that role (connect as it, or SET ROLE to it), "+
		"so that what the migrations create belongs to it too; nothing was changed", e.Owner)
}

// waitForWork waits for the engine's running work and keeps new work from
// starting until tx ends: plans, live steps and imports hold the model lock
// (from version 15), and a job's finish its row of recalc.job. FOR NO KEY
// UPDATE lets the job's heartbeats and chunks (their foreign keys) go on.
func waitForWork(ctx context.Context, tx pgx.Tx) error {
	var engineLock, job bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('recalc.engine_lock') IS NOT NULL, to_regclass('recalc.job') IS NOT NULL`).Scan(&engineLock, &job); err != nil {
		return fmt.Errorf("look up recalc's lock tables: %w", err)
	}
	if engineLock {
		if err := locks.XactLock(ctx, tx, locks.Model); err != nil {
			return err
		}
	}
	if job {
		if _, err := tx.Exec(ctx, `SELECT FROM recalc.job WHERE status = 'running' FOR NO KEY UPDATE`); err != nil {
			return fmt.Errorf("wait for running jobs: %w", err)
		}
	}
	return nil
}

// LockModel takes the model lock (locks.Model), held until tx ends, then
// checks the schema version (Check): Migrate takes the lock too, so a
// writer of the stored model or the share tables that waited behind a
// newer recalc's migration stops rather than write into a schema it does
// not know.
func LockModel(ctx context.Context, tx pgx.Tx) error {
	if err := locks.XactLock(ctx, tx, locks.Model); err != nil {
		return err
	}
	return Check(ctx, tx)
}

// LockModelSaid is LockModel that logs, past a second, that it waits: a
// holder (an import, a `recalc plan FILE`'s dry run, a job's planning) may
// keep the lock for minutes, and a command that waited silently looked
// hung. A wait behind a watch step, a few milliseconds, is not logged.
func LockModelSaid(ctx context.Context, tx pgx.Tx, log zerolog.Logger) error {
	waiting := time.AfterFunc(time.Second, func() {
		log.Info().Msg("waiting for the model lock, which another recalc command holds (an import, a `recalc plan FILE`, a job's planning): " +
			"this goes on once it is released")
	})
	defer waiting.Stop()
	return LockModel(ctx, tx)
}

// VersionError says that this binary and the database's recalc schema
// disagree: the schema is missing or older (`recalc init` creates or
// upgrades it), or newer (a newer recalc upgraded it, and only that one
// may work on it).
type VersionError struct {
	Current, Want int // Current is 0 when there is no schema; Want is Latest()
}

func (e *VersionError) Error() string {
	switch {
	case e.Current == 0:
		return "it has no recalc schema: run `recalc init` first (with this DATABASE_URL)"
	case e.Current > e.Want:
		return fmt.Sprintf("its recalc schema is at version %d, newer than this recalc, which knows up to %d: a newer recalc upgraded it; "+
			"run that one (its `recalc run` resumes any job this one left failed)", e.Current, e.Want)
	}
	return fmt.Sprintf("its recalc schema is at version %d, this recalc needs %d: run `recalc init` to upgrade", e.Current, e.Want)
}

// Latest is the version of the newest migration: the schema this binary
// needs. The engine asks at every plan, live step and chunk, so it reads the
// migrations' names once, on the first call (they are embedded: they never
// change).
func Latest() int { return latest() }

// latest reads the newest migration's version from the embedded names once.
var latest = sync.OnceValue(func() int {
	names, _ := fs.Glob(migrations, "*.up.sql")
	latest := 0
	for _, n := range names {
		num, _, _ := strings.Cut(n, "_")
		if v, err := strconv.Atoi(num); err == nil {
			latest = max(latest, v)
		}
	}
	return latest
})

func latestOf(ms []Migration) int {
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// engineRoleAdvice says how to act as recalc's engine role, named when the
// catalog (which any role may read) tells who owns recalc's objects.
func engineRoleAdvice(ctx context.Context, q pg.Querier) string {
	var owner, user string
	var super bool
	err := q.QueryRow(ctx, `SELECT c.relowner::regrole::text, current_user::text, r.rolsuper FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
		WHERE n.nspname = 'recalc' AND c.relname = 'schema_version'`).Scan(&owner, &user, &super)
	if err != nil {
		return "connect as recalc's engine role, or grant it to this role"
	}
	if super {
		return superOwned(owner)
	}
	return fmt.Sprintf("connect as recalc's engine role, %s, or grant it to this role (GRANT %s TO %s)", owner, owner, pgx.Identifier{user}.Sanitize())
}

// superOwned says what to do when a superuser owns recalc's objects, as a
// restore with --no-owner run by a superuser leaves them: never to grant
// that role to the engine (it would become a superuser in effect), nor to
// run recalc as it (the SECURITY DEFINER functions would run as a
// superuser).
func superOwned(owner string) string {
	return fmt.Sprintf("recalc's objects belong to the superuser %s (as after pg_restore --no-owner): restore without --no-owner, "+
		"or have a superuser give every object of schema recalc to the engine's role (ALTER ... OWNER TO); never grant %s to another role", owner, owner)
}

// Check fails with a *VersionError unless the stored schema version is
// Latest(): missing, older or newer. The engine also calls it inside its
// transactions, once it holds the model lock or a job's row, which Migrate
// also takes: a process that an upgrade by a newer recalc left running
// stops at its next plan, live step, chunk or job finish, rather than work
// on a schema it does not know.
func Check(ctx context.Context, q pg.Querier) error {
	var current int
	err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM recalc.schema_version`).Scan(&current)
	switch {
	case pg.IsNoSchema(err):
		return &VersionError{Want: Latest()}
	case pg.IsInsufficientPrivilege(err):
		return fmt.Errorf("read schema version: %w: this role may not read recalc's tables; %s (SECURITY.md, \"Roles\")", err, engineRoleAdvice(ctx, q))
	case err != nil:
		return fmt.Errorf("read schema version: %w", err)
	case current != Latest():
		return &VersionError{Current: current, Want: Latest()}
	}
	return nil
}

// Installed reports whether the database has schema recalc, at any
// version: an earlier `recalc init` ran there.
func Installed(ctx context.Context, q pg.Querier) (bool, error) {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'recalc')`).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for schema recalc: %w", err)
	}
	return ok, nil
}
