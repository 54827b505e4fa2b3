package cli_test

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/schema"
)

// randomName is prefix followed by random hex, for a role or a database
// no other test names.
func randomName(prefix string) string {
	var b [4]byte
	_, _ = crand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// TestRefusedConnectionExits1: a database that does not exist, a role
// that does not exist or may not log in, and a role without CONNECT on the
// database exited 3, "run the command again once it is reachable", which
// no retry fixes (a service manager restarts into it for ever). Each
// exits 1 with one line naming the database and what to do, never the
// password; `recalc watch` too, at once.
func TestRefusedConnectionExits1(t *testing.T) {
	ctx := context.Background()
	url := testdb.New(t)
	nologin, noconnect := randomName("recalc_nologin_"), randomName("recalc_noconnect_")
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, sql := range []string{
		`CREATE ROLE ` + nologin + ` NOLOGIN NOSUPERUSER PASSWORD 'h45-secret-pw'`,
		`CREATE ROLE ` + noconnect + ` LOGIN NOSUPERUSER`,
		`REVOKE CONNECT ON DATABASE ` + pgx.Identifier{cfg.Database}.Sanitize() + ` FROM PUBLIC`,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	testdb.DropRoles(t, url, nologin, noconnect)
	withPassword := func(conn, user string) string {
		return strings.Replace(dburl.WithUser(conn, user), "@", ":h45-secret-pw@", 1)
	}
	missing := randomName("recalc_missing_")
	for _, tc := range []struct {
		name, url, db, sqlstate, todo string
	}{
		{"a database that does not exist", dburl.WithDatabase(url, missing), missing, "3D000", "create the database"},
		{"a role that does not exist", withPassword(url, randomName("recalc_ghost_")), cfg.Database, "28000", "check the role and password in --database-url"},
		{"a role that may not log in", withPassword(url, nologin), cfg.Database, "28000", "check the role and password in --database-url"},
		{"a role without CONNECT", dburl.WithUser(url, noconnect), cfg.Database, "42501", "grant the role CONNECT on the database"},
	} {
		for _, args := range [][]string{{"status"}, {"watch"}} {
			t.Run(tc.name+" "+args[0], func(t *testing.T) {
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				code, msg := recalcErr(cctx, tc.url, args...)
				if code != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, strconv.Quote(tc.db)) ||
					!strings.Contains(msg, "SQLSTATE "+tc.sqlstate) || !strings.Contains(msg, tc.todo) || strings.Contains(msg, "h45-secret-pw") {
					t.Errorf("recalc %s: exit %d, %q; want exit 1 and one line naming database %q, SQLSTATE %s and %q, not the password",
						args[0], code, msg, tc.db, tc.sqlstate, tc.todo)
				}
			})
		}
	}
}

// TestClientRefusedConnectionExits1: a connection the client gives up on
// for its own settings (require_auth, channel_binding=require that the
// server's authentication method does not meet) exited 3, "run the
// command again once it is reachable", which no retry fixes. Each exits 1
// with one line naming the database and the setting, never the password;
// `recalc watch` too, at once. The test server trusts its clients, so a
// client that requires a password method refuses it.
func TestClientRefusedConnectionExits1(t *testing.T) {
	ctx := context.Background()
	url := strings.Replace(testdb.AdminURL(), "@", ":h45-secret-pw@", 1)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, reason string
	}{
		{"require_auth=scram-sha-256", dburl.WithParam(url, "require_auth", "scram-sha-256"), "require_auth check failed"},
		{"channel_binding=require", dburl.WithParam(url, "channel_binding", "require"), "channel binding check failed"},
	} {
		for _, args := range [][]string{{"status"}, {"watch"}} {
			t.Run(tc.name+" "+args[0], func(t *testing.T) {
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				code, msg := recalcErr(cctx, tc.url, args...)
				if code != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, strconv.Quote(cfg.Database)) ||
					!strings.Contains(msg, "the client refused the connection: "+tc.reason) || strings.Contains(msg, "h45-secret-pw") {
					t.Errorf("recalc %s: exit %d, %q; want exit 1 and one line naming database %q and %q, not the password",
						args[0], code, msg, cfg.Database, tc.reason)
				}
			})
		}
	}
}

// TestDroppedDatabaseMidCommand: `recalc wait` whose database is dropped
// while it waits tried to reconnect for two minutes, then exited 3; it
// exits 1 at once, saying to create the database. `recalc watch` waits
// on, saying at error level that the server refuses the connection: a
// database being restored comes back, and a service manager would only
// restart it into the same refusal. `recalc changes --follow`, which
// docs/operations.md says retries the same way, does so too, saying so
// at level error (it said "lost the database connection" at level warn).
func TestDroppedDatabaseMidCommand(t *testing.T) {
	ctx := context.Background()
	for _, cmd := range []string{"wait", "watch", "changes"} {
		t.Run(cmd, func(t *testing.T) {
			pool := testdb.Migrated(t)
			url := pool.Config().ConnString()
			name := pool.Config().ConnConfig.Database
			args := []string{cmd}
			if cmd == "wait" {
				var id int64
				if err := pool.QueryRow(ctx, `INSERT INTO recalc.job (kind, trigger, status, change_seq, config, plan, chunks)
					VALUES ('incremental', 'test', 'running', 0, '{}', '{}', 0) RETURNING id`).Scan(&id); err != nil {
					t.Fatal(err)
				}
				if _, err := pool.Exec(ctx, `INSERT INTO recalc.job_worker (job_id, worker) VALUES ($1, 'test')`, id); err != nil {
					t.Fatal(err)
				}
				args = append(args, strconv.FormatInt(id, 10))
			}
			if cmd == "changes" {
				args = append(args, "--follow")
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			var out, errOut lockedBuffer
			exited := make(chan int, 1)
			go func() {
				app := cli.App(&out, &errOut)
				app.ExitErrHandler = func(*ucli.Context, error) {}
				err := testkit.RunApp(cctx, app, append([]string{"recalc", "--database-url", url, "--log-format", "json"}, args...))
				code := 0
				if coder, ok := err.(ucli.ExitCoder); ok {
					code = coder.ExitCode()
				}
				errOut.Write([]byte(errString(err)))
				exited <- code
			}()
			waitForSession(t, pool, map[string]string{"wait": "%FROM recalc.job%", "watch": "LISTEN%", "changes": "%access_changes%"}[cmd])
			pool.Close()
			if err := testdb.Drop(ctx, name); err != nil {
				t.Fatal(err)
			}
			if cmd == "wait" {
				select {
				case code := <-exited:
					if msg := errOut.String(); code != 1 || !strings.Contains(msg, "create the database") {
						t.Errorf("recalc wait on a dropped database: exit %d:\n%s\nwant exit 1 saying to create the database", code, msg)
					}
				case <-time.After(20 * time.Second):
					t.Errorf("recalc wait on a dropped database still waits after 20 s:\n%s", errOut.String())
				}
				return
			}
			want := `"level":"error","error":`
			for deadline := time.Now().Add(10 * time.Second); !strings.Contains(errOut.String(), "the server refuses the connection"); time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("recalc %s on a dropped database said nothing of the refusal within 10 s:\n%s", cmd, errOut.String())
				}
			}
			select {
			case code := <-exited:
				t.Fatalf("recalc %s exited %d on a dropped database, want it to wait on:\n%s", cmd, code, errOut.String())
			default:
			}
			if msg := errOut.String(); !strings.Contains(msg, want) || !strings.Contains(msg, "3D000") {
				t.Errorf("recalc %s on a dropped database logged:\n%s\nwant %s and SQLSTATE 3D000", cmd, msg, want)
			}
			cancel()
			if code := <-exited; code != 0 {
				t.Errorf("recalc %s stopped: exit %d, want 0", cmd, code)
			}
		})
	}
}

// errString is err's text, or "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// waitForSession waits until a session of pool's database other than
// pool's own has run a query LIKE query.
func waitForSession(t *testing.T, pool *pgxpool.Pool, query string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE $1`, query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command never ran %s", query)
		}
	}
}

// TestSQLASCIIDatabaseRefused: on a database encoded SQL_ASCII, whose
// text PostgreSQL stores unchecked, an attached row's bytes that are not
// UTF-8 reached recalc as they were: Go read a field's as U+FFFD where
// the SQL prefilter compared the bytes (a full run granted a rule's access
// that an incremental run did not), and an id's failed every incremental
// run. Every command refuses such a database (one recalc is not installed
// in: TestSQLASCIIDatabaseRemoval), before it reads or writes
// anything, with one line saying what to do; init created the schema.
func TestSQLASCIIDatabaseRefused(t *testing.T) {
	ctx := context.Background()
	name, url := sqlASCIIDatabase(t)
	for _, args := range [][]string{{"init"}, {"status"}, {"run"}, {"watch"}} {
		t.Run(args[0], func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			code, msg := recalcErr(cctx, url, args...)
			if code != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, strconv.Quote(name)) ||
				!strings.Contains(msg, "encoding is SQL_ASCII") || !strings.Contains(msg, "ENCODING 'UTF8'") {
				t.Errorf("recalc %s on a SQL_ASCII database: exit %d, %q; want exit 1 and one line naming database %q, its encoding and what to do",
					args[0], code, msg, name)
			}
		})
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var created bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'recalc')`).Scan(&created); err != nil || created {
		t.Errorf("schema recalc created on a SQL_ASCII database: %v, %v", created, err)
	}
}

// TestSQLASCIIDatabaseRemoval: refusing every command on a SQL_ASCII
// database left an install made before the refusal with no way to take
// recalc off the application's tables: detach and rls disable were
// refused, and init, which brings the schema to the version they need,
// too. Where schema recalc exists they run, with a warning; every other
// command is still refused there.
func TestSQLASCIIDatabaseRemoval(t *testing.T) {
	ctx := context.Background()
	_, url := sqlASCIIDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool); err != nil { // installed before the refusal
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE public.app_t (id text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"status"}, 1},
		{[]string{"run"}, 1},
		{[]string{"rls", "enable", "--table", "app_t", "--object", "case", "--user-setting", "app.user_id"}, 1},
		{[]string{"init"}, 0},
		{[]string{"detach", "--all"}, 0},
		{[]string{"rls", "disable", "--table", "app_t"}, 0},
	} {
		t.Run(strings.Join(tc.args[:min(2, len(tc.args))], " "), func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			code, msg := recalcErr(cctx, url, tc.args...)
			if refused := strings.Contains(msg, "encoding is SQL_ASCII"); code != tc.code || refused != (tc.code == 1) {
				t.Errorf("recalc %s on a SQL_ASCII database recalc is installed in: exit %d, %q; want exit %d", tc.args, code, msg, tc.code)
			}
		})
	}
}

// sqlASCIIDatabase creates a database encoded SQL_ASCII, dropped when the
// test ends, and returns its name and URL.
func sqlASCIIDatabase(t *testing.T) (name, url string) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testdb.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name = randomName("recalc_test_ascii_")
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+name+` TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testdb.Drop(context.Background(), name); err != nil {
			t.Error(err)
		}
	})
	return name, testdb.URL(name)
}
