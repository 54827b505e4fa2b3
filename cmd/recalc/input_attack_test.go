package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Attacks on the command line's flags and arguments other than model files:
// names past PostgreSQL's 63-byte identifier limit, invalid UTF-8, bad
// numbers, and the row-level security commands on tables that carry the
// application's own policies. Each case fails on a defect found.

// attackRun runs recalc and returns its exit status, standard output and
// standard error.
func (o *processOrg) attackRun(env []string, args ...string) (int, string, string) {
	o.t.Helper()
	cmd := o.command(args...)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		o.t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// attackQuery reads one value.
func (o *processOrg) attackQuery(sql string, dst any, args ...any) {
	o.t.Helper()
	if err := o.pool.QueryRow(context.Background(), sql, args...).Scan(dst); err != nil {
		o.t.Fatalf("%s: %v", sql, err)
	}
}

// attackSample returns an active user and a record of the org.
func (o *processOrg) attackSample() (user, record string) {
	o.t.Helper()
	o.attackQuery(`SELECT id FROM recalc.record WHERE object = 'account' ORDER BY id LIMIT 1`, &record)
	o.attackQuery(`SELECT owner FROM recalc.record WHERE id = $1`, &user, record)
	return user, record
}

// longName is a unique name of exactly 63 bytes (PostgreSQL's longest
// identifier) starting with prefix: roles are the cluster's, so tests
// must not share them.
func longName(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	n := prefix + hex.EncodeToString(b)
	return n + strings.Repeat("x", 63-len(n))
}

// TestInputAttackLongNamesActOnAnotherObject: a role, table or insert role
// named with more than 63 bytes is silently truncated by PostgreSQL, so the
// command acts on the existing object whose name is the first 63 bytes, and
// says it acted on the name given. It must refuse the name instead, as
// `recalc attach` does (internal/attach/spec.go, checkName).
func TestInputAttackLongNamesActOnAnotherObject(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	role := longName(t, "h3ia_role_")
	table := longName(t, "h3ia_table_")
	o.exec(`CREATE ROLE ` + quoteIdent(role) + ` NOLOGIN`)
	t.Cleanup(func() {
		// The role's grants in this database go with the database; drop
		// what it owns first so that DROP ROLE succeeds.
		_, _ = o.pool.Exec(context.Background(), `DROP OWNED BY `+quoteIdent(role))
		_, _ = o.pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+quoteIdent(role))
	})
	o.exec(`CREATE TABLE public.` + quoteIdent(table) + ` (id text PRIMARY KEY)`)
	o.exec(`CREATE TABLE public.h3ia_ins (id text PRIMARY KEY)`)

	for _, tc := range []struct {
		name  string
		args  []string
		check string // SQL: true when the wrong object was changed
	}{
		{"grant to a role named past 63 bytes", []string{"grant", "reader", role + "_EXTRA"},
			`SELECT has_function_privilege(` + quoteLiteral(role) + `, 'recalc.fresh_token()', 'EXECUTE')`},
		{"rls enable on a table named past 63 bytes", []string{"rls", "enable", "--table", table + "_EXTRA", "--object", "account", "--user-setting", "app.user_id"},
			`SELECT relrowsecurity FROM pg_class WHERE oid = ` + quoteLiteral("public."+quoteIdent(table)) + `::regclass`},
		{"rls enable with an insert role named past 63 bytes", []string{"rls", "enable", "--table", "public.h3ia_ins", "--object", "account",
			"--user-setting", "app.user_id", "--insert-role", role + "_EXTRA"},
			`SELECT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = 'public.h3ia_ins'::regclass AND polname = 'recalc_insert')`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := o.attackRun(nil, tc.args...)
			var changed bool
			if err := o.pool.QueryRow(ctx, tc.check).Scan(&changed); err != nil {
				t.Fatal(err)
			}
			if code == 0 || changed {
				t.Errorf("recalc %s: exit %d, changed the object named by the first 63 bytes: %v\nstdout %.300q\nstderr %.300q\n"+
					"want: the name refused (more than 63 bytes) and nothing changed", shortArgs(tc.args), code, changed, stdout, stderr)
			}
		})
	}
}

// TestInputAttackRLSForeignPolicies: the row-level security commands on a
// table that has the application's own policies.
//   - `rls disable` on such a table (even one recalc never protected)
//     disables row-level security, which switches the application's own
//     policies off and shows every row to every role. It must drop only
//     recalc's policies and leave row-level security on while others remain.
//   - `rls enable` on a table with a permissive SELECT policy says the policy
//     "shows the rows ... that the user may read", but the other policy
//     admits every row (permissive policies add up): it must warn, naming it.
//   - `rls enable --force` on a table a superuser owns warns "give --force",
//     advice that cannot help: the owner bypasses as a superuser.
func TestInputAttackRLSForeignPolicies(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	o.exec(`CREATE TABLE public.h3ia_app (id text PRIMARY KEY, note text)`)
	o.exec(`ALTER TABLE public.h3ia_app ENABLE ROW LEVEL SECURITY`)
	o.exec(`CREATE POLICY app_only_mine ON public.h3ia_app USING (false)`)
	o.exec(`CREATE TABLE public.h3ia_open (id text PRIMARY KEY)`)
	o.exec(`ALTER TABLE public.h3ia_open ENABLE ROW LEVEL SECURITY`)
	o.exec(`CREATE POLICY app_all ON public.h3ia_open FOR SELECT USING (true)`)

	t.Run("rls disable keeps the application's own policies in force", func(t *testing.T) {
		code, _, stderr := o.attackRun(nil, "rls", "disable", "--table", "public.h3ia_app")
		var on bool
		o.attackQuery(`SELECT relrowsecurity FROM pg_class WHERE oid = 'public.h3ia_app'::regclass`, &on)
		if !on {
			t.Errorf("recalc rls disable on a table with only the application's policy: exit %d, stderr %q; "+
				"row-level security is now off, so policy app_only_mine no longer applies and every role reads every row", code, stderr)
		}
	})

	t.Run("rls disable warns when only restrictive policies are left", func(t *testing.T) {
		o.exec(`CREATE TABLE public.h3ia_tenant (id text PRIMARY KEY)`)
		o.exec(`ALTER TABLE public.h3ia_tenant ENABLE ROW LEVEL SECURITY`)
		o.exec(`CREATE POLICY tenant_iso ON public.h3ia_tenant AS RESTRICTIVE USING (true)`)
		code, _, stderr := o.attackRun(nil, "rls", "disable", "--table", "public.h3ia_tenant")
		if code != 0 || !strings.Contains(stderr, "now read no row of public.h3ia_tenant") {
			t.Errorf("rls disable leaving only a restrictive policy: exit %d, stderr %q; want exit 0 and a warning that no row is readable", code, stderr)
		}
	})

	t.Run("rls enable warns of a permissive policy that admits every row", func(t *testing.T) {
		code, _, stderr := o.attackRun(nil, "rls", "enable", "--table", "public.h3ia_open", "--object", "account", "--user-setting", "app.user_id")
		if code != 0 {
			t.Fatalf("rls enable: exit %d: %s", code, stderr)
		}
		if !strings.Contains(stderr, "app_all") {
			t.Errorf("rls enable on a table whose policy app_all admits every row printed no warning naming it (stderr %q): "+
				"any session reads every row, whatever recalc_read says", stderr)
		}
	})

	t.Run("rls enable --force gives no advice that cannot help", func(t *testing.T) {
		var super bool
		o.attackQuery(`SELECT rolsuper FROM pg_roles WHERE rolname = current_user`, &super)
		if !super {
			t.Skip("needs a superuser to own the table")
		}
		o.exec(`CREATE TABLE public.h3ia_forced (id text PRIMARY KEY)`)
		code, _, stderr := o.attackRun(nil, "rls", "enable", "--table", "public.h3ia_forced", "--object", "account", "--user-setting", "app.user_id", "--force")
		if code != 0 {
			t.Fatalf("rls enable --force: exit %d: %s", code, stderr)
		}
		if strings.Contains(stderr, "give --force") {
			t.Errorf("rls enable --force on a superuser's table advises \"give --force\", which was given and cannot help "+
				"(a superuser owner bypasses row-level security): %q", stderr)
		}
	})
	_ = ctx
}

// TestInputAttackRawDatabaseErrors: inputs that reach the database unchecked
// and come back as PostgreSQL's error, with no guidance. Each must be one
// line saying what is wrong with the input and what to do, with no SQLSTATE.
// An argument that is not UTF-8 is a mistyped one: a usage error (exit 2).
func TestInputAttackRawDatabaseErrors(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	user, record := o.attackSample()
	bad := "\xff\xfe" // not UTF-8
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"access --user not UTF-8", []string{"access", "--user", bad, "--record", record}, 2},
		{"access --record not UTF-8", []string{"access", "--user", user, "--record", bad}, 2},
		{"access --after not UTF-8", []string{"access", "--user", user, "--object", "account", "--after", bad}, 2},
		{"access --id not UTF-8", []string{"access", "--user", user, "--object", "account", "--id", bad}, 2},
		{"explain --id not UTF-8", []string{"explain", "--user", user, "--object", "account", "--id", bad}, 2},
		{"grant to a role not UTF-8", []string{"grant", "reader", bad}, 2},
		{"rls enable on a table not UTF-8", []string{"rls", "enable", "--table", bad, "--object", "account", "--user-setting", "app.user_id"}, 2},
		{"rls disable on a missing table", []string{"rls", "disable", "--table", "public.h3ia_no_such_table"}, 1},
		{"rls disable on an empty schema name", []string{"rls", "disable", "--table", ".x"}, 2},
		{"status --jobs negative", []string{"status", "--jobs", "-1"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := o.attackRun(nil, tc.args...)
			lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1
			if code != tc.code || strings.Contains(stderr, "SQLSTATE") || lines != 1 {
				t.Errorf("recalc %s: exit %d, stderr %q; want exit %d and one line of guidance, not PostgreSQL's error",
					shortArgs(tc.args), code, stderr, tc.code)
			}
		})
	}
}

// TestInputAttackUsageExitStatus: mistyped flag values must exit 2 (usage)
// before anything runs; these run the command (or part of it) and exit 0
// or 1.
func TestInputAttackUsageExitStatus(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	missing := filepath.Join(t.TempDir(), "missing.json")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		// A negative sample verifies every family: the cost the flag bounds.
		{"verify --sample negative", nil, []string{"verify", "--sample", "-5"}},
		// NaN passes `< 0 || > 1`, and every `share > NaN` is false: the
		// guard is silently off, and the import goes ahead unguarded.
		{"import --max-revoke NaN", nil, []string{"import", "--max-revoke", "NaN", missing}},
		{"RECALC_MAX_REVOKE=NaN", []string{"RECALC_MAX_REVOKE=NaN"}, []string{"import", missing}},
		{"export --output empty", nil, []string{"export", "--output", ""}},
		{"rls enable with both user sources", nil, []string{"rls", "enable", "--table", "public.x", "--object", "account",
			"--user-setting", "app.user_id", "--user-from-role"}},
		{"rls enable with a three-part table", nil, []string{"rls", "enable", "--table", "a.b.c", "--object", "account", "--user-setting", "app.user_id"}},
		{"rls enable with a malformed user setting", nil, []string{"rls", "enable", "--table", "public.x", "--object", "account", "--user-setting", "user_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := o.attackRun(tc.env, tc.args...)
			if code != 2 {
				t.Errorf("recalc %s (env %v): exit %d, stderr %.300q; want exit 2, a usage error", shortArgs(tc.args), tc.env, code, stderr)
			}
		})
	}
}

// TestInputAttackMemProfileAfterTheFact: --mem-profile naming a file that
// cannot be created is found only after the command has done its work: a
// deferral (or an import) is stored, and the process exits 1, as if it had
// failed. It must be refused first, as --cpu-profile is (exit 2, nothing
// changed).
func TestInputAttackMemProfileAfterTheFact(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	before := o.deferralState()
	bad := filepath.Join(t.TempDir(), "no", "such", "dir", "mem.pprof")
	code, _, stderr := o.attackRun(nil, "--mem-profile", bad, "defer")
	after := o.deferralState()
	if code != 2 || after != before {
		t.Errorf("recalc --mem-profile %s defer: exit %d, stderr %q; deferral %q -> %q; want exit 2 and nothing changed", bad, code, stderr, before, after)
	}
}

// TestInputAttackErrorEchoBounded: an id, object or name longer than any
// stored one can be (references are at most 1 KiB) is echoed whole in the
// error, 100 KB of it, and control characters in a table name reach the
// terminal raw. The error must be bounded and quoted.
func TestInputAttackErrorEchoBounded(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	user, record := o.attackSample()
	huge := strings.Repeat("a", 100_000)
	esc := "nosuch\x1b[2J\x1b[31m"
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"access --user huge", []string{"access", "--user", huge, "--record", record}},
		{"access --record huge", []string{"access", "--user", user, "--record", huge}},
		{"access --object huge", []string{"access", "--user", user, "--object", huge}},
		{"explain --user huge", []string{"explain", "--user", huge, "--record", record}},
		{"detach huge", []string{"detach", huge}},
		{"rls enable --table with escapes", []string{"rls", "enable", "--table", esc, "--object", "account", "--user-setting", "app.user_id"}},
		{"rls disable --table with escapes", []string{"rls", "disable", "--table", esc}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := o.attackRun(nil, tc.args...)
			if code == 0 || len(stderr) > 4096 || strings.Contains(stderr, "\x1b") {
				t.Errorf("recalc %s: exit %d, a %d-byte error (escape characters raw: %v): %.200q; want a failure of at most a few hundred bytes, the input quoted",
					shortArgs(tc.args), code, len(stderr), strings.Contains(stderr, "\x1b"), stderr)
			}
		})
	}
}

func shortArgs(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func quoteIdent(s string) string   { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }
