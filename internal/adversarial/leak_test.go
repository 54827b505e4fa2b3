package adversarial

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// The leak tests look for a record's field values (and owner values) in the
// raw PostgreSQL error messages that reach the command line, the logs, the
// job rows and the notifications. PostgreSQL quotes the offending value in
// the message (not only the DETAIL) of several errors: class 22 casts
// (`invalid input syntax for type bigint: "..."`), and also errors of other
// classes raised by input functions, such as the reg* types
// (`role "..." does not exist`, 42704; `relation "..." does not exist`,
// 42P01) or tsquery (`syntax error in tsquery: "..."`, 42601).

const leakSecret = "SECRET-4111-1111-1111-1111"

// attachView sets up an application table app.proj (bigint id, text owner,
// text tag) captured through an engine-owned view crm_recalc.proj_v whose
// field column is tagExpr over the table's tag column, and the sandbox role
// the engine reads attached tables as. It returns the spec file's path.
func (b *bundle) attachView(t *testing.T, object, tagExpr string) string {
	t.Helper()
	eng := ident(b.engineRole)
	sandbox := b.engineRole + "_sandbox"
	exec(t, b.admin, `CREATE ROLE `+ident(sandbox)+` NOLOGIN`)
	t.Cleanup(func() { // before setup's cleanup (LIFO), which drops the other roles
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = b.admin.Exec(ctx, `DROP OWNED BY `+ident(sandbox)+` CASCADE`)
		_, _ = b.admin.Exec(ctx, `DROP ROLE IF EXISTS `+ident(sandbox))
	})
	for _, s := range []string{
		`GRANT ` + ident(sandbox) + ` TO ` + eng,
		`CREATE SCHEMA app`,
		`CREATE TABLE app.proj (id bigint PRIMARY KEY, owner_id text NOT NULL, tag text)`,
		`INSERT INTO app.proj VALUES (1, 'u1', 'pg_monitor'), (2, 'u2', NULL)`,
		`GRANT USAGE ON SCHEMA app TO ` + eng,
		`GRANT SELECT, TRIGGER ON app.proj TO ` + eng,
		`CREATE SCHEMA crm_recalc AUTHORIZATION ` + eng,
	} {
		exec(t, b.admin, s)
	}
	exec(t, b.engine, `CREATE VIEW crm_recalc.proj_v AS SELECT p.id, p.owner_id, `+tagExpr+` AS tag FROM app.proj p`)
	spec := `{"objects": [{"object": "` + object + `", "table": "crm_recalc.proj_v", "id": "id", "owner": "owner_id",
		"fields": ["tag"], "capture": [{"table": "app.proj", "id": "id"}]}]}`
	path := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(path, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLeakAttachInstallQuotesRowValue: input functions of classes other
// than 22 quote the value they cannot read too: a view column cast to
// regrole (42704 `role "..." does not exist`), regclass (42P01) or tsquery
// (42601). A backfill failing so names its SQLSTATE, never the application
// row's value (migration 036; before it, only class 22 was hidden).
func TestLeakAttachInstallQuotesRowValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, expr, bad, code string }{
		// reg* input reads an identifier: a value without hyphens.
		{"regrole", `(p.tag::regrole)::text`, "ssn_078051120", "42704"},
		{"regclass", `(p.tag::regclass)::text`, "ssn_078051120", "42P01"},
		{"tsquery", `(p.tag::tsquery)::text`, leakSecret + " !! (", "42601"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			spec := b.attachView(t, "other__c", tc.expr)
			// A value the cast cannot read, written by the application's user.
			exec(t, b.admin, `UPDATE app.proj SET tag = $1`, tc.bad)
			out, err := b.recalcErr("attach", spec)
			if err == nil {
				t.Fatalf("attach over a row the view cannot read succeeded: %s", out)
			}
			secret := strings.Fields(tc.bad)[0]
			if strings.Contains(err.Error(), secret) || strings.Contains(out, secret) {
				t.Errorf("recalc attach prints the row's field value:\n%v\n%s", err, out)
			}
			if !strings.Contains(err.Error(), "SQLSTATE "+tc.code) {
				t.Errorf("attach error %v does not name SQLSTATE %s", err, tc.code)
			}
		})
	}
}

// TestLeakAttachInstallHidesDataException: a row failing the view's cast
// with a class 22 error (22P02, `invalid input syntax for type numeric:
// "..."`) fails closed alone (migration 039): the attach succeeds, and
// neither it, `recalc attach --list` nor the invalid records carry the value.
func TestLeakAttachInstallHidesDataException(t *testing.T) {
	t.Parallel()
	b := setup(t)
	spec := b.attachView(t, "other__c", `((p.tag)::numeric)::text`)
	exec(t, b.admin, `UPDATE app.proj SET tag = '5' WHERE id = 1`)
	exec(t, b.admin, `UPDATE app.proj SET tag = $1 WHERE id = 2`, leakSecret)
	out := b.recalc(t, "attach", spec)
	b.run(t)
	list := b.recalc(t, "attach", "--list")
	var invalid string
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(string_agg(i::text, E'\n'), '') FROM recalc.invalid_record i`).Scan(&invalid); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(invalid, "other__c:2") || strings.Contains(invalid, "other__c:1") {
		t.Errorf("invalid records %q: want other__c:2 alone", invalid)
	}
	for what, text := range map[string]string{"`recalc attach`": out, "`recalc attach --list`": list, "the invalid records": invalid, "the stuck objects": b.stuckText(t)} {
		if strings.Contains(text, leakSecret) {
			t.Errorf("%s carry the field value %s:\n%s", what, leakSecret, text)
		}
	}
}

// TestLeakAbsorbOfUnreadableRowShowsSQLStateOnly: once attached, a row
// whose value the view's cast cannot read (any class) makes its object's
// absorb fail; runs, `recalc run`, `recalc watch`-style logs, the job rows
// and their notifications, `recalc status`, `recalc attach --list` and the
// feed name the SQLSTATE, never the value.
func TestLeakAbsorbOfUnreadableRowShowsSQLStateOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	spec := b.attachView(t, "other__c", `(p.tag::regrole)::text`)
	b.recalc(t, "attach", spec)
	b.run(t)
	listener := b.connect(t, b.outsiderRole)
	exec(t, listener, `LISTEN recalc_jobs`)

	exec(t, b.admin, `UPDATE app.proj SET tag = $1 WHERE id = 1`, leakSecret)
	exec(t, b.admin, `INSERT INTO app.proj VALUES (3, $1, $1)`, leakSecret)
	logs := newSyncBuffer()
	for _, full := range []bool{false, true} {
		run := engine.Run
		if full {
			run = engine.Full
		}
		if _, err := run(ctx, b.engine, engine.Options{Workers: 2}, zerolog.New(logs)); err != nil {
			if strings.Contains(err.Error(), leakSecret) {
				t.Errorf("run error carries the field value: %v", err)
			}
		}
	}
	runOut, runErr := b.recalcErr("run")
	if runErr != nil {
		runOut += runErr.Error()
	}
	if !strings.Contains(logs.buf.String(), "42704") {
		t.Errorf("the logs do not name the absorb's SQLSTATE 42704:\n%s", logs.buf.String())
	}
	var payloads []string
	for {
		wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if err != nil {
			break
		}
		payloads = append(payloads, n.Payload)
	}
	status, _ := json.Marshal(b.status(t))
	list, err := b.recalcErr("attach", "--list", "--format", "json")
	if err != nil {
		list += err.Error()
	}
	feed, err := b.recalcErr("changes", "--since", "0")
	if err != nil {
		feed += err.Error()
	}
	for what, text := range map[string]string{
		"the engine's logs":       logs.buf.String(),
		"`recalc run`":            runOut,
		"the job rows":            b.jobText(t),
		"NOTIFY payloads":         strings.Join(payloads, "\n"),
		"status":                  string(status),
		"`recalc status`":         b.recalc(t, "status"),
		"`recalc attach --list`":  list,
		"`recalc changes`":        feed,
		"the stuck object's code": b.stuckText(t),
	} {
		if strings.Contains(text, leakSecret) {
			t.Errorf("%s carry the field value %s:\n%s", what, leakSecret, text)
		}
	}
}

// stuckText renders recalc.attach_stuck.
func (b *bundle) stuckText(t *testing.T) string {
	t.Helper()
	var s string
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(string_agg(s::text, E'\n'), '') FROM recalc.attach_stuck s`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLeakWriterValuesNeverReachRuns: the writer stores values that
// PostgreSQL cannot take as numbers, dates or text (huge numbers, strings
// shaped like numbers or dates for numeric criteria, NUL escapes, deep
// nesting): every write is refused by a constraint whose message quotes
// no value (the DETAIL, which does, is printed nowhere), or is stored and
// read by the run with no error.
func TestLeakWriterValuesNeverReachRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	writes := []string{
		`{"priority": "` + leakSecret + `"}`,
		`{"priority": "1e400` + leakSecret + `"}`,
		`{"priority": 1e400, "ssn": "` + leakSecret + `"}`,
		`{"priority": 123456789012345678901234567890123456789012345678901234567890e300, "ssn": "` + leakSecret + `"}`,
		`{"priority": "2024-13-45 ` + leakSecret + `"}`,
		`{"ssn": "` + leakSecret + `\u0000"}`,
		`{"ssn": "` + leakSecret + `\ud800"}`,
		`{"ssn": {"x": "` + leakSecret + `"}}`,
		`["` + leakSecret + `"]`,
		`"` + leakSecret + `"`,
	}
	var errs []string
	for i, w := range writes {
		id := "wv" + string(rune('a'+i))
		if _, err := b.writer.Exec(ctx, `INSERT INTO recalc.record (id, object, owner, fields) VALUES ($1, 'account', 'u1', $2::text::jsonb)`, id, w); err != nil {
			errs = append(errs, err.Error())
		}
		// Cast inside the server: the jsonb parser's own errors.
		if _, err := b.writer.Exec(ctx, `UPDATE recalc.record SET fields = `+quoteLit(w)+`::jsonb WHERE id = 'a3'`); err != nil {
			errs = append(errs, err.Error())
		}
	}
	logs := newSyncBuffer()
	_, runErr := engine.Run(ctx, b.engine, engine.Options{}, zerolog.New(logs))
	if runErr != nil {
		errs = append(errs, runErr.Error())
	}
	_, fullErr := engine.Full(ctx, b.engine, engine.Options{Workers: 2}, zerolog.New(logs))
	if fullErr != nil {
		errs = append(errs, fullErr.Error())
	}
	out, err := b.recalcErr("verify")
	if err != nil {
		out += err.Error()
	}
	for what, text := range map[string]string{
		"the writes' and runs' errors (Error(), without DETAIL)": strings.Join(errs, "\n"),
		"the engine's logs":   logs.buf.String(),
		"the job rows":        b.jobText(t),
		"`recalc verify`":     out,
		"`recalc status`":     b.recalc(t, "status"),
		"`recalc plan`":       b.recalc(t, "plan", "--format", "json"),
		"`recalc changes`":    b.recalc(t, "changes", "--since", "0"),
		"invalid record list": func() string { s, _ := json.Marshal(b.invalidRecords(t)); return string(s) }(),
	} {
		if strings.Contains(text, leakSecret) {
			t.Errorf("%s carry the field value:\n%s", what, text)
		}
	}
	if runErr != nil || fullErr != nil {
		t.Errorf("runs failed over the writer's values: %v / %v", runErr, fullErr)
	}
}

// quoteLit quotes s as a SQL string literal (standard_conforming_strings on).
func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
