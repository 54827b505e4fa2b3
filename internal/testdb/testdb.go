// Package testdb gives each test its own PostgreSQL database on the server
// named by DATABASE_URL (the Makefile sets it, starting a throwaway cluster
// when none is given), so that tests run in parallel without sharing state.
// Tests never mock the database.
//
// Under Main, a test's database is not dropped when the test ends:
// PostgreSQL forces a checkpoint for every DROP DATABASE, and a test that
// waits for it (and for the flush of every dirty page on the server) holds
// its parallel slot idle. Main drops the finished tests' databases in the
// background while the others run, dropParallel at a time (one checkpoint
// serves the drops waiting when it starts), and the last ones when the
// package's tests end. Main also drops the test databases a killed test
// process left behind.
// The roles a test registers with DropRoles go after the databases, and
// the test databases' creates and drops share one admin pool (the
// schema template's maker keeps a session of its own for its advisory
// lock): a new PostgreSQL session costs tens of milliseconds of server
// time on a small machine.
//
// The test processes of a go test run share the server's connections
// (100 by default): their batches of drops take turns under an advisory
// lock, the admin pool closes the sessions a batch used once they sit
// idle for adminIdle, and a test's pools (Migrated, CloseIdle) close
// theirs after poolIdle, so that what a busy phase of one test opened
// is not held through the rest of it.
//
// A migrated database is a copy of a template that holds recalc's schema
// (CREATE DATABASE ... TEMPLATE), which is cheaper than migrating each. The
// template is named for a hash of the migrations, made once by the first
// test process that needs it (under an advisory lock, so that concurrent
// test processes wait for one another) and kept for later runs.
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/schema"
)

// AdminURL is the server tests create their databases on.
func AdminURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// URL returns a connection string for database name on the test server.
func URL(name string) string { return dburl.WithDatabase(AdminURL(), name) }

// New creates an empty database, drops it when the test ends, and returns a
// connection string for it. The test fails at once if no server is reachable.
func New(t testing.TB) string {
	t.Helper()
	return clone(t, "")
}

// Clone creates a copy of database template, which no session may be
// connected to, drops it when the test ends, and returns a connection string
// for it.
func Clone(t testing.TB, template string) string {
	t.Helper()
	if template == "" {
		t.Fatal("clone: no template database named")
	}
	return clone(t, template)
}

// NewICU creates an empty database whose default collation is ICU's
// locale (such as "en-US", where "a" sorts before "B" and accents and
// punctuation sort apart from byte order), as a server initialised with
// such a locale gives every database createdb makes; it drops it when the
// test ends, and returns a connection string for it.
func NewICU(t testing.TB, locale string) string {
	t.Helper()
	return newDB(t, func(ctx context.Context) (string, error) { return create(ctx, "", locale) })
}

func clone(t testing.TB, template string) string {
	t.Helper()
	return newDB(t, func(ctx context.Context) (string, error) { return Create(ctx, template) })
}

// newDB creates a database with createDB, drops it when the test ends, and
// returns a connection string for it.
func newDB(t testing.TB, createDB func(context.Context) (string, error)) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name, err := createDB(ctx)
	if err != nil {
		t.Fatalf("%v (set DATABASE_URL or run make test)", err)
	}
	t.Cleanup(func() {
		if spent.keep(name) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := Drop(ctx, name); err != nil {
			t.Error(err)
		}
	})
	return URL(name)
}

// spentDBs holds the databases of finished tests while Main runs, and
// drops them in batches (startBatch).
type spentDBs struct {
	sync.Mutex
	main      bool
	names     []string   // not yet dropped
	roles     [][]string // each test's roles, dropped after the databases
	busy      bool       // a batch is being dropped
	batches   sync.WaitGroup
	templates []string // spent databases that are templates, for Main to drop last
	errs      []error  // of the batches' drops
}

// spent is this test process's.
var spent spentDBs

// dropParallel is how many databases Main drops at once, each on a
// session of the admin pool. Every DROP DATABASE waits for a checkpoint,
// and one checkpoint serves all the drops waiting when it starts: with 4
// at a time, 12 template copies took 68 s to drop on a loaded server, with
// 12 at a time 9 s, and a package's 190 databases took 3.5 minutes, a
// third of its wall time.
const dropParallel = 16

// createConns is how many sessions of the admin pool are left to the
// tests' creates while a batch of dropParallel drops waits for its
// checkpoint (which took a minute on a loaded server).
const createConns = 4

// adminIdle is how long an admin session may sit idle before the pool
// closes it, where pgxpool kept it for 30 minutes (with a batch's drop
// sessions, 36 idle of the server's 100 with two packages side by side;
// withDropLock now closes those as the batch ends). A new session costs
// tens of milliseconds; the tests' creates, a few a second, keep theirs.
const adminIdle = 3 * time.Second

// Main runs a package's tests, for its TestMain, dropping the databases
// of the finished ones in batches while the others run, and then the rest,
// dropParallel at a time: PostgreSQL merges the checkpoints that
// concurrent drops ask for. It returns m.Run's exit code, or 1 when a drop
// fails.
func Main(m *testing.M) int {
	sweep()
	spent.Lock()
	spent.main = true
	spent.Unlock()
	code := m.Run()
	spent.batches.Wait() // no test keeps a database any more: no batch starts
	spent.Lock()
	names, roles, errs := append(spent.names, spent.templates...), spent.roles, spent.errs
	spent.main, spent.names, spent.roles, spent.templates, spent.errs = false, nil, nil, nil, nil
	spent.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := errors.Join(append(errs, dropLeft(ctx, names))...)
	if err == nil {
		err = dropRoleSets(ctx, roles)
	}
	if admins.pool != nil {
		admins.pool.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return max(code, 1)
	}
	return code
}

// dropLeft drops the databases names that Main finds left when the tests
// end, dropParallel at a time under the drop lock. With none left (a test
// process that made no database, such as a test's child process) it takes
// no lock: the lock is the server's, and waiting for another process's batch
// of drops, a checkpoint each, kept TestLiveKillBackoffOverflow's child
// (then a 7 s watch) running 26 s on a loaded machine.
func dropLeft(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	return withDropLock(ctx, func() error {
		var g errgroup.Group // one failed drop stops no other
		g.SetLimit(dropParallel)
		for _, name := range names {
			g.Go(func() error { return Drop(ctx, name) })
		}
		return g.Wait()
	})
}

// sweep drops the test databases made more than staleAfter ago (their
// names carry the time): those of a test process killed before its Main
// could drop them. A running test binary is younger: go test stops it after
// 10 minutes unless -timeout says otherwise. Failures are only reported.
func sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return // the tests report an unreachable server
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, testPrefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, "list stale test databases:", err)
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		fmt.Fprintln(os.Stderr, "list stale test databases:", err)
		return
	}
	for _, name := range names {
		at, _, _ := strings.Cut(strings.TrimPrefix(name, testPrefix), "_")
		made, err := strconv.ParseInt(at, 10, 64)
		if err != nil || time.Since(time.Unix(made, 0)) <= staleAfter {
			continue
		}
		if err := drop(ctx, conn, name); err != nil {
			fmt.Fprintf(os.Stderr, "drop stale test database %s: %v\n", name, err)
		}
	}
}

// DropAtEnd leaves database name, made by Create outside a test (a
// template that the process's tests copy), to Main, which drops it with
// the tests' databases: a template last. Call it once name is a template,
// or will not be one: a batch drops a database that is not.
func DropAtEnd(name string) {
	if !spent.keep(name) {
		fmt.Fprintf(os.Stderr, "testdb: no Main runs to drop database %s\n", name)
	}
}

// keep keeps name for Main to drop, and reports whether it did: false when
// no Main runs, and the caller drops it now.
func (s *spentDBs) keep(name string) bool {
	s.Lock()
	defer s.Unlock()
	if s.main {
		s.names = append(s.names, name)
		s.startBatch()
	}
	return s.main
}

// startBatch, with s locked, drops the kept databases in the background
// once dropParallel of them wait and no other batch is being dropped: a
// package's drops then wait for their checkpoints while its tests run, not
// after the last one (internal/attach waited 31 s of its 301 for its last
// 190 drops). A kept database that is a template now (one a test made and
// later tests copy) is left for Main to drop last.
func (s *spentDBs) startBatch() {
	if s.busy || len(s.names) < dropParallel {
		return
	}
	batch := s.names
	s.names, s.busy = nil, true
	s.batches.Add(1)
	go func() {
		defer s.batches.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		templates, err := dropUnlessTemplates(ctx, batch)
		s.Lock()
		defer s.Unlock()
		s.templates = append(s.templates, templates...)
		if err != nil {
			s.errs = append(s.errs, err)
		}
		s.busy = false
		s.startBatch()
	}()
}

// dropUnlessTemplates drops the databases names that are not templates,
// dropParallel at a time, and returns those that are.
func dropUnlessTemplates(ctx context.Context, names []string) ([]string, error) {
	var mu sync.Mutex
	var templates []string
	err := withDropLock(ctx, func() error {
		var g errgroup.Group // one failed drop stops no other
		g.SetLimit(dropParallel)
		for _, name := range names {
			g.Go(func() error {
				template, err := dropUnlessTemplate(ctx, name)
				if template {
					mu.Lock()
					templates = append(templates, name)
					mu.Unlock()
				}
				return err
			})
		}
		return g.Wait()
	})
	return templates, err
}

// withDropLock runs drops, dropParallel at a time, holding the server's
// drop lock, and closes their sessions before it lets go: the test
// processes of one go test run (a package each, -p at a time) then drop
// their batches one after another, not all at once, and at most
// dropParallel+1 admin sessions on the server are dropping. Two
// packages side by side each held 16 drop sessions, beside their tests'
// own, and the server ran out of its 100 (SQLSTATE 53300). The lock is a
// session advisory lock, released with its session should the unlock fail.
func withDropLock(ctx context.Context, drops func() error) error {
	pool, err := adminPool()
	if err != nil {
		return fmt.Errorf("drop test databases: %w", err)
	}
	c, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("drop test databases: connect to the test server: %w", err)
	}
	defer c.Release()
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(dropLock)); err != nil {
		return fmt.Errorf("drop test databases: wait for another test process's drops: %w", err)
	}
	err = drops()
	// The next process's batch opens its sessions as soon as the lock is
	// free: close this one's first, not adminIdle later.
	for _, idle := range pool.AcquireAllIdle(ctx) {
		idle.Conn().Close(context.Background()) //nolint:errcheck // a closed session leaves the pool on release
		idle.Release()
	}
	if _, uerr := c.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(dropLock)); uerr != nil {
		c.Conn().Close(context.Background()) //nolint:errcheck // closing the session releases the lock
	}
	return err
}

// dropUnlessTemplate drops database name unless it is a template, and
// reports whether it is.
func dropUnlessTemplate(ctx context.Context, name string) (bool, error) {
	pool, err := adminPool()
	if err != nil {
		return false, fmt.Errorf("drop test database %s: %w", name, err)
	}
	var template bool
	err = pool.QueryRow(ctx, `SELECT coalesce((SELECT datistemplate FROM pg_database WHERE datname = $1), false)`, name).Scan(&template)
	if err == nil && !template {
		_, err = pool.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
	}
	if err != nil {
		return false, fmt.Errorf("drop test database %s: %w", name, err)
	}
	return template, nil
}

// keepRoles keeps roles for Main to drop, and reports whether it did.
func (s *spentDBs) keepRoles(roles []string) bool {
	s.Lock()
	defer s.Unlock()
	if s.main {
		s.roles = append(s.roles, roles)
	}
	return s.main
}

// DropRoles drops roles when the test ends. They may own objects and hold
// privileges in the test's database conn only. Under Main they are dropped
// after the databases, on the admin pool, so that the drop opens no session
// of its own; otherwise at once, with what they own in conn. A role that
// does not exist is skipped.
func DropRoles(t testing.TB, conn string, roles ...string) {
	t.Helper()
	t.Cleanup(func() {
		if spent.keepRoles(roles) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := dropRolesIn(ctx, conn, roles); err != nil {
			t.Errorf("drop roles %v: %v", roles, err)
		}
	})
}

// dropRolesIn drops the roles that exist among roles, and what they own,
// in database conn.
func dropRolesIn(ctx context.Context, conn string, roles []string) error {
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var list []string
	if err := c.QueryRow(ctx, `SELECT coalesce(array_agg(rolname::text), '{}') FROM pg_roles WHERE rolname = ANY ($1)`, roles).Scan(&list); err != nil {
		return err
	}
	if len(list) == 0 {
		return nil
	}
	all := identList(list)
	if _, err := c.Exec(ctx, `DROP OWNED BY `+all+` CASCADE`); err != nil {
		return err
	}
	_, err = c.Exec(ctx, `DROP ROLE `+all)
	return err
}

// dropRoleSets drops each set of roles, whose databases are gone, on the
// admin pool.
func dropRoleSets(ctx context.Context, sets [][]string) error {
	var errs []error
	for _, roles := range sets {
		if err := admin(ctx, `DROP ROLE IF EXISTS `+identList(roles)); err != nil {
			errs = append(errs, fmt.Errorf("drop roles %v: %w", roles, err))
		}
	}
	return errors.Join(errs...)
}

// Create creates a database, empty or a copy of template when not "", and
// returns its name. The caller drops it (Drop): for a database that outlives
// one test, such as a template a TestMain drops; tests use New or Clone.
func Create(ctx context.Context, template string) (string, error) {
	return create(ctx, template, "")
}

// create is Create, of a database whose default collation is ICU's
// icuLocale when it is not "" (template must then be "").
func create(ctx context.Context, template, icuLocale string) (string, error) {
	name := fmt.Sprintf("%s%d_%s", testPrefix, time.Now().Unix(), token())
	q := "CREATE DATABASE " + ident(name)
	if template != "" {
		q += " TEMPLATE " + ident(template)
	}
	if icuLocale != "" {
		q += " TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' LOCALE_PROVIDER icu ICU_LOCALE " + literal(icuLocale)
	}
	// A commit need not wait for its WAL flush: no test crashes the server,
	// and a test commits thousands of times. JIT is off, as recalc's CLI
	// sets it for its own sessions: it changes no result, and compiling a
	// query whose estimate looks big (a recursive CTE over a table never
	// analyzed) took 0.7 s on an idle machine and several seconds on a
	// loaded one, so that a watch under test missed its freshness deadline.
	// (A database's settings are not copied from its template.)
	if err := admin(ctx, q, "ALTER DATABASE "+ident(name)+" SET synchronous_commit = off",
		"ALTER DATABASE "+ident(name)+" SET jit = off"); err != nil {
		return "", fmt.Errorf("create test database: %w", err)
	}
	return name, nil
}

// Drop drops database name, a template or not, ending the sessions still
// connected to it.
func Drop(ctx context.Context, name string) error {
	pool, err := adminPool()
	if err != nil {
		return fmt.Errorf("drop test database %s: %w", name, err)
	}
	c, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("drop test database %s: connect to the test server: %w", name, err)
	}
	defer c.Release()
	if err := drop(ctx, c.Conn(), name); err != nil {
		return fmt.Errorf("drop test database %s: %w", name, err)
	}
	return nil
}

// drop drops database name, a template or not, on the admin connection c.
func drop(ctx context.Context, c *pgx.Conn, name string) error {
	var template bool
	err := c.QueryRow(ctx, `SELECT datistemplate FROM pg_database WHERE datname = $1`, name).Scan(&template)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	case template:
		if _, err := c.Exec(ctx, "ALTER DATABASE "+ident(name)+" IS_TEMPLATE false"); err != nil {
			return err
		}
	}
	_, err = c.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
	return err
}

// MarkTemplate makes database name a template: no session may connect to
// it any more, so that Clone can copy it at any time.
func MarkTemplate(ctx context.Context, name string) error {
	if err := admin(ctx, "ALTER DATABASE "+ident(name)+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("make %s a template: %w", name, err)
	}
	return nil
}

// Migrated creates a database with recalc's schema and returns a pool on
// it, closed when the test ends.
func Migrated(t testing.TB) *pgxpool.Pool {
	t.Helper()
	tmpl.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tmpl.name, tmpl.err = schemaTemplate(ctx)
	})
	if tmpl.err != nil {
		t.Fatal(tmpl.err)
	}
	cfg, err := pgxpool.ParseConfig(Clone(t, tmpl.name))
	if err != nil {
		t.Fatal(err)
	}
	CloseIdle(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// poolIdle is how long a test's pool keeps a session idle (CloseIdle).
const poolIdle = 2 * time.Second

// CloseIdle makes a test's pool close the sessions idle for poolIdle,
// where pgxpool keeps them for 30 minutes: a test that ran 6 writers at
// once in one phase held their sessions through its later ones, and the
// tests running side by side (a package's -parallel, and go test's -p
// packages) held up to 60 sessions of a 100-connection server, idle for
// the most part. A session a test uses again within poolIdle is kept.
func CloseIdle(cfg *pgxpool.Config) {
	cfg.MaxConnIdleTime, cfg.HealthCheckPeriod = poolIdle, poolIdle/4
}

// tmpl is this process's schema template, found or made once.
var tmpl struct {
	once sync.Once
	name string
	err  error
}

// testPrefix starts the names of test databases, then the Unix time they
// were made; templatePrefix starts the names of schema templates;
// templateLock is the advisory lock their makers hold; dropLock is the one
// the drops of finished tests' databases hold; staleAfter is the age
// past which a template of other migrations, or a test database Main did not
// drop, is dropped.
const (
	testPrefix     = "recalc_test_"
	templatePrefix = "recalc_tmpl_"
	templateLock   = 0x7265_6361_6c63 // "recalc"
	dropLock       = templateLock + 1
	staleAfter     = time.Hour
)

// schemaTemplate returns the name of the template holding the current
// migrations, making it if no test process has yet. It drops templates of
// other migrations made more than staleAfter ago: a test process still
// running from an older tree may use a newer stale one.
func schemaTemplate(ctx context.Context) (string, error) {
	ms, err := schema.Migrations()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, m := range ms {
		fmt.Fprintf(h, "%d %s %d\n%s\n", m.Version, m.Name, len(m.SQL), m.SQL)
	}
	name := templatePrefix + hex.EncodeToString(h.Sum(nil))[:16]

	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return "", fmt.Errorf("connect to the test server (set DATABASE_URL or run make test): %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(templateLock)); err != nil {
		return "", fmt.Errorf("lock the schema template: %w", err)
	}
	// Closing the connection releases the lock too, should the unlock fail.
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(templateLock)) //nolint:errcheck

	var ready bool
	err = conn.QueryRow(ctx, `SELECT datistemplate FROM pg_database WHERE datname = $1`, name).Scan(&ready)
	switch {
	case err == nil && ready:
		return name, nil
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("look up the schema template: %w", err)
	}
	// None, or one a killed process left half made.
	if err := drop(ctx, conn, name); err != nil {
		return "", fmt.Errorf("drop a half-made schema template: %w", err)
	}
	if err := dropStale(ctx, conn); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(name)); err != nil {
		return "", fmt.Errorf("create the schema template: %w", err)
	}
	if err := migrate(ctx, URL(name)); err != nil {
		return "", fmt.Errorf("migrate the schema template: %w", err)
	}
	made := time.Now().UTC().Format(time.RFC3339)
	if _, err := conn.Exec(ctx, "COMMENT ON DATABASE "+ident(name)+" IS "+literal("recalc test schema template, made "+made)); err != nil {
		return "", fmt.Errorf("label the schema template: %w", err)
	}
	if err := MarkTemplate(ctx, name); err != nil {
		return "", err
	}
	return name, nil
}

func migrate(ctx context.Context, url string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	_, err = schema.Migrate(ctx, pool)
	return err
}

// dropStale drops the schema templates labelled as made before staleAfter.
func dropStale(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '')
		FROM pg_database WHERE starts_with(datname, $1)`, templatePrefix)
	if err != nil {
		return fmt.Errorf("list schema templates: %w", err)
	}
	var stale []string
	for rows.Next() {
		var name, label string
		if err := rows.Scan(&name, &label); err != nil {
			return fmt.Errorf("list schema templates: %w", err)
		}
		_, at, _ := strings.Cut(label, ", made ")
		if made, err := time.Parse(time.RFC3339, at); err == nil && time.Since(made) > staleAfter {
			stale = append(stale, name)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list schema templates: %w", err)
	}
	for _, name := range stale {
		if err := drop(ctx, conn, name); err != nil {
			return fmt.Errorf("drop stale schema template %s: %w", name, err)
		}
	}
	return nil
}

// admin runs statements, in order, on the process's admin pool: a few
// connections to the test server as DATABASE_URL's user, opened once and
// shared by every test of the process. A new PostgreSQL session costs tens
// of milliseconds of server time on a small virtual machine (fork and page
// faults), and a package's tests create and drop hundreds of databases and
// roles.
func admin(ctx context.Context, stmts ...string) error {
	pool, err := adminPool()
	if err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := pool.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// adminPool returns the process's admin pool, opening it on first use.
func adminPool() (*pgxpool.Pool, error) {
	admins.once.Do(func() {
		cfg, err := pgxpool.ParseConfig(AdminURL())
		if err != nil {
			admins.err = fmt.Errorf("parse DATABASE_URL: %w", err)
			return
		}
		// A batch's drops and the session holding the drop lock, and the
		// tests' creates beside them.
		cfg.MaxConns = dropParallel + 1 + createConns
		cfg.MaxConnIdleTime, cfg.HealthCheckPeriod = adminIdle, adminIdle/3
		if admins.pool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
			admins.err = fmt.Errorf("connect to the test server: %w", err)
		}
	})
	return admins.pool, admins.err
}

// admins is the process's admin pool, opened once (adminPool).
var admins struct {
	once sync.Once
	pool *pgxpool.Pool
	err  error
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// identList quotes names as identifiers, comma separated.
func identList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = ident(n)
	}
	return strings.Join(quoted, ", ")
}
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func token() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
