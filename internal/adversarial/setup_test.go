package adversarial

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/schema"
)

// TestMain drops the tests' databases when they have all run (testdb.Main).
func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// SQLSTATE codes the tests expect.
const (
	insufficientPrivilege = "42501"
	checkViolation        = "23514"
	raiseException        = "P0001"
)

// baseModel is the org every test starts from. All objects are private and
// no user has a role, so a user's access to a record comes only from what
// the model gives it explicitly:
//   - u1 owns every record;
//   - u2 has a manual share on a1, a2 and p1 (and nothing on a3, the record
//     the trigger attack targets);
//   - u3 is on the account teams of a1 and a2, and in territory west;
//   - u4 is in group crit, which the criteria rule "hot" shares accounts
//     with priority >= 2 with (hot1);
//   - k4 is a contact controlled by its parent a4.
const baseModel = `{
  "version": 1,
  "objects": [
    {"name": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"},
    {"name": "opportunity", "parent": "account", "internal_owd": "private"},
    {"name": "project__c", "internal_owd": "private"},
    {"name": "other__c", "internal_owd": "private"}
  ],
  "users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}, {"id": "u4"}],
  "groups": [{"id": "crit", "members": ["user:u4"]}],
  "territories": [{"id": "west", "users": ["u3"], "account_access": "read"}],
  "rules": [
    {"id": "hot", "object": "account", "type": "criteria", "target": "group:crit", "access": "read",
     "criteria": {"conditions": [{"field": "priority", "op": "ge", "value": 2}]}}
  ],
  "records": [
    {"object": "account", "id": "a1", "owner": "u1"},
    {"object": "account", "id": "a2", "owner": "u1"},
    {"object": "account", "id": "a3", "owner": "u1"},
    {"object": "account", "id": "a4", "owner": "u1"},
    {"object": "contact", "id": "k4", "owner": "u1", "parent": "a4"},
    {"object": "account", "id": "hot1", "owner": "u1", "fields": {"priority": 5}},
    {"object": "project__c", "id": "p1", "owner": "u1"}
  ],
  "shares": [
    {"object": "account", "record": "a1", "grantee": "user:u2", "access": "edit", "cause": "manual"},
    {"object": "account", "record": "a2", "grantee": "user:u2", "access": "edit", "cause": "manual"},
    {"object": "project__c", "record": "p1", "grantee": "user:u2", "access": "read", "cause": "manual"}
  ],
  "teams": [
    {"record": "a1", "user": "u3", "access": "read"},
    {"record": "a2", "user": "u3", "access": "read"}
  ]
}`

// users are the users of baseModel, plus one a later import may add.
var users = []string{"u1", "u2", "u3", "u4", "u5"}

// bundle is one test's database and the roles SECURITY.md describes, each
// with its own pool logged in as that role.
type bundle struct {
	db    string // database name
	url   string // the superuser's connection string for db
	admin *pgxpool.Pool

	engineRole, readerRole, writerRole, outsiderRole string

	engine   *pgxpool.Pool // owns schema recalc: init, import, run
	reader   *pgxpool.Pool // `recalc grant reader`
	writer   *pgxpool.Pool // `recalc grant writer`
	outsider *pgxpool.Pool // CONNECT only
}

// setup creates a fresh database and the roles of SECURITY.md's recipe:
//
//	CREATE ROLE recalc_engine LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
//	GRANT CONNECT ON DATABASE db TO recalc_engine;
//	CREATE SCHEMA recalc AUTHORIZATION recalc_engine;
//
// then, as the engine, migrates, imports baseModel, runs a full
// recalculation, and runs `recalc grant reader READER` and `recalc grant
// writer WRITER`. The reader, writer and outsider roles are LOGIN roles with
// CONNECT on the database and nothing else (besides what PostgreSQL gives
// PUBLIC). Role names carry a random suffix: roles are cluster-wide.
func setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	b := &bundle{url: testdb.New(t)}
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatalf("parse test database url: %v", err)
	}
	b.db = strings.TrimPrefix(u.Path, "/")
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	suffix := hex.EncodeToString(tok[:])
	b.engineRole = "recalc_engine_" + suffix
	b.readerRole = "recalc_reader_" + suffix
	b.writerRole = "recalc_writer_" + suffix
	b.outsiderRole = "recalc_outsider_" + suffix
	roles := []string{b.readerRole, b.writerRole, b.outsiderRole, b.engineRole}

	b.admin = openPool(t, b.url)
	db := pgx.Identifier{b.db}.Sanitize()
	eng := ident(b.engineRole)
	stmts := []string{
		`CREATE ROLE ` + eng + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT`,
		`GRANT CONNECT ON DATABASE ` + db + ` TO ` + eng,
		`CREATE SCHEMA recalc AUTHORIZATION ` + eng,
	}
	for _, r := range roles[:3] {
		stmts = append(stmts, `CREATE ROLE `+ident(r)+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`,
			`GRANT CONNECT ON DATABASE `+db+` TO `+ident(r))
	}
	// Registered before the pools, so that without testdb.Main it runs
	// after they are closed.
	testdb.DropRoles(t, b.url, roles...)
	for _, s := range stmts {
		if _, err := b.admin.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}

	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))
	b.reader = openPool(t, dburl.WithUser(b.url, b.readerRole))
	b.writer = openPool(t, dburl.WithUser(b.url, b.writerRole))
	b.outsider = openPool(t, dburl.WithUser(b.url, b.outsiderRole))
	for _, p := range []*pgxpool.Pool{b.engine, b.reader, b.writer, b.outsider} {
		var super bool
		var user string
		if err := p.QueryRow(ctx, `SELECT rolsuper, current_user FROM pg_roles WHERE rolname = current_user`).Scan(&super, &user); err != nil || super {
			t.Fatalf("role %s must not be a superuser (super=%v, err=%v)", user, super, err)
		}
	}

	if _, err := schema.Migrate(ctx, b.engine); err != nil {
		t.Fatalf("migrate as the engine: %v", err)
	}
	b.importJSON(t, baseModel)
	b.full(t)
	b.recalc(t, "grant", "reader", b.readerRole)
	b.recalc(t, "grant", "writer", b.writerRole)
	return b
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// openPool opens a small pool, closed when the test ends.
func openPool(t *testing.T, conn string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(conn)
	if err != nil {
		t.Fatalf("parse connection string: %v", err)
	}
	cfg.MaxConns = 4
	testdb.CloseIdle(cfg)
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// connect opens a dedicated connection as role, closed when the test ends.
func (b *bundle) connect(t *testing.T, role string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dburl.WithUser(b.url, role))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// recalc runs the recalc command line as the engine role and returns its
// standard output.
func (b *bundle) recalc(t *testing.T, args ...string) string {
	t.Helper()
	out, err := b.recalcErr(args...)
	if err != nil {
		t.Fatalf("recalc %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// recalcErr runs the recalc command line as the engine role.
func (b *bundle) recalcErr(args ...string) (string, error) {
	return b.recalcAs(dburl.WithUser(b.url, b.engineRole), args...)
}

// recalcAs runs the recalc command line on the database url.
func (b *bundle) recalcAs(url string, args ...string) (string, error) {
	return b.recalcCtx(context.Background(), url, args...)
}

// recalcCtx runs the recalc command line on the database url until ctx
// ends.
func (b *bundle) recalcCtx(ctx context.Context, url string, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	app := cli.App(&out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {} // return errors, never exit the test binary
	argv := append([]string{"recalc", "--database-url", url, "--log-format", "json"}, args...)
	err := testkit.RunApp(ctx, app, argv)
	if err != nil {
		return out.String(), fmt.Errorf("%w (stderr: %s)", err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// importJSON imports a model file as the engine.
func (b *bundle) importJSON(t *testing.T, doc string) {
	t.Helper()
	if _, err := testkit.ImportString(context.Background(), b.engine, doc); err != nil {
		t.Fatalf("import as the engine: %v", err)
	}
}

// run recalculates incrementally as the engine.
func (b *bundle) run(t *testing.T) *engine.Report {
	t.Helper()
	rep, err := engine.Run(context.Background(), b.engine, engine.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatalf("run as the engine: %v", err)
	}
	return rep
}

// full recalculates from scratch as the engine.
func (b *bundle) full(t *testing.T) *engine.Report {
	t.Helper()
	rep, err := engine.Full(context.Background(), b.engine, engine.Options{Workers: 2}, zerolog.Nop())
	if err != nil {
		t.Fatalf("full run as the engine: %v", err)
	}
	return rep
}

// access is user's access to record, asked as the reader.
func (b *bundle) access(t *testing.T, user, record string) string {
	t.Helper()
	var level string
	if err := b.reader.QueryRow(context.Background(), `SELECT recalc.access_level($1, $2)`, user, record).Scan(&level); err != nil {
		t.Fatalf("access_level(%s, %s) as the reader: %v", user, record, err)
	}
	return level
}

// wantAccess checks levels, "user record" -> level, as the reader.
func (b *bundle) wantAccess(t *testing.T, want map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		user, record, _ := strings.Cut(k, " ")
		if got := b.access(t, user, record); got != want[k] {
			t.Errorf("access_level(%s, %s) = %s, want %s", user, record, got, want[k])
		}
	}
}

// accessAll renders every user's access to every record stored or
// materialized, and to the extra ids, as the reader: one "user record level"
// line per pair above none, sorted.
func (b *bundle) accessAll(t *testing.T, extra ...string) string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM (
		SELECT id FROM recalc.record UNION SELECT id FROM recalc.acl_record UNION SELECT unnest($1::text[])) x`, extra).Scan(&ids); err != nil {
		t.Fatalf("list record ids: %v", err)
	}
	rows, err := b.reader.Query(ctx, `SELECT u || ' ' || r || ' ' || l FROM (
		SELECT u, r, recalc.access_level(u, r) l FROM unnest($1::text[]) u, unnest($2::text[]) r) x
		WHERE l <> 'none' ORDER BY 1`, users, ids)
	if err != nil {
		t.Fatalf("access_level as the reader: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("access_level as the reader: %v", err)
	}
	return strings.Join(lines, "\n")
}

// sameAsFull checks that what the incremental runs left equals what a full
// run computes from scratch, read through access_level.
func (b *bundle) sameAsFull(t *testing.T, extra ...string) {
	t.Helper()
	inc := b.accessAll(t, extra...)
	b.full(t)
	if full := b.accessAll(t, extra...); inc != full {
		t.Errorf("access after incremental runs differs from a full run\nincremental:\n%s\nfull:\n%s", inc, full)
	}
}

// exec runs statements on q and fails the test on error.
func exec(t *testing.T, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, sql string, args ...any) {
	t.Helper()
	if _, err := q.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// count runs a count query as the superuser.
func (b *bundle) count(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := b.admin.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// inputsOf counts the manual/apex shares and team entries stored for ids.
func (b *bundle) inputsOf(t *testing.T, ids ...string) (shares, teams int64) {
	t.Helper()
	return b.count(t, `SELECT count(*) FROM recalc.share_input WHERE record = ANY($1)`, ids),
		b.count(t, `SELECT count(*) FROM recalc.team WHERE record = ANY($1)`, ids)
}

// sqlState returns err's SQLSTATE, "" when it has none.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// wantState fails unless err carries SQLSTATE code.
func wantState(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := sqlState(err); got != code {
		t.Errorf("%s: got error %v (SQLSTATE %q), want SQLSTATE %s", what, err, got, code)
	}
}

// rolledBack runs sql in a transaction on p that it then rolls back, and
// returns the statement's error.
func rolledBack(p *pgxpool.Pool, sql string, args ...any) error {
	ctx := context.Background()
	tx, err := p.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, sql, args...)
	return err
}

// syncBuffer is a log sink the engine's workers may write concurrently.
type syncBuffer struct {
	w   io.Writer
	buf *bytes.Buffer
}

func newSyncBuffer() *syncBuffer {
	var buf bytes.Buffer
	return &syncBuffer{w: zerolog.SyncWriter(&buf), buf: &buf}
}

func (s *syncBuffer) Write(p []byte) (int, error) { return s.w.Write(p) }

// status reads `recalc status` as the engine.
func (b *bundle) status(t *testing.T) *access.Status {
	t.Helper()
	st, err := access.ReadStatus(context.Background(), b.engine, 5)
	if err != nil {
		t.Fatalf("read status as the engine: %v", err)
	}
	return st
}
