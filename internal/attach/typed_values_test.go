package attach_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// tvFields are the columns of crm.typed that the attachment reads.
var tvFields = []string{"n", "d", "r", "i8", "i2", "g", "b", "dt", "ts", "tz", "u", "t", "c", "v"}

// tvTable is the application's table of typed values; the columns after
// v are of types recalc refuses to read.
const tvTable = `
CREATE TYPE crm.tv_mood AS ENUM ('sad', 'ok');
CREATE DOMAIN crm.tv_text AS text CHECK (VALUE <> 'forbidden');
CREATE TABLE crm.typed (
    id bigint PRIMARY KEY, owner_id text NOT NULL,
    n numeric, d double precision, r real, i8 bigint, i2 smallint,
    g integer GENERATED ALWAYS AS (i2 + 1) STORED,
    b boolean, dt date, ts timestamp, tz timestamptz, u uuid, t text, c char(5), v varchar(20),
    iv interval, ip inet, m money, e crm.tv_mood, dom crm.tv_text, arr text[], j jsonb, x8 xml)`

// tvRow is a row of crm.typed: its attached columns as SQL literals (the
// others NULL), and the record fields the docs give it (docs/attach.md,
// "Record keys and values"): the non-null ones as a jsonb SQL expression, or
// "" when the row fails closed ("Rows that fail closed": values out of
// bounds, no access at all).
type tvRow struct {
	id     int64
	cols   map[string]string
	fields string
}

// tvLongHex is about 600 KB of hex digits (little compressible): under the 1
// MiB bound, so mirrored.
const tvLongHex = `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 19000) i)`

var tvRows = []tvRow{
	{1, map[string]string{"n": `'1e400'`}, ""},                      // beyond a double: fails closed
	{2, map[string]string{"n": `'-1e400'`, "t": `'SECRETtv2'`}, ""}, // the same below
	{3, map[string]string{"n": `'0.1234567890123456789012345678901234567890'`}, `'{"n": 0.1234567890123456789012345678901234567890}'`},
	{4, map[string]string{"n": `'NaN'`}, `'{"n": "NaN"}'`},
	{5, map[string]string{"n": `'Infinity'`, "d": `'-Infinity'`}, `'{"n": "Infinity", "d": "-Infinity"}'`},
	{6, map[string]string{"d": `'NaN'`, "r": `'Infinity'`}, `'{"d": "NaN", "r": "Infinity"}'`},
	{7, map[string]string{"d": `'-0'`, "i2": `-1`}, `'{"d": 0, "i2": -1, "g": 0}'`},
	{8, map[string]string{"d": `'4.9e-324'`}, `'{"d": 5e-324}'`}, // the smallest subnormal
	{9, map[string]string{"i8": `9007199254740993`}, `'{"i8": 9007199254740993}'`},
	{10, map[string]string{"i8": `9223372036854775807`, "i2": `32767`}, `'{"i8": 9223372036854775807, "i2": 32767, "g": 32768}'`},
	{11, map[string]string{"b": `true`, "dt": `'2027-01-31'`, "ts": `'2026-12-01 18:40:57.2'`, "tz": `'2026-12-01 18:40:57.2+05'`},
		`'{"b": true, "dt": "2027-01-31", "ts": "2026-12-01T18:40:57.2", "tz": "2026-12-01T13:40:57.2+00:00"}'`},
	{12, map[string]string{"b": `false`, "dt": `'infinity'`, "ts": `'-infinity'`, "tz": `'infinity'`},
		`'{"b": false, "dt": "infinity", "ts": "-infinity", "tz": "infinity"}'`},
	{13, map[string]string{"dt": `'0044-03-15 BC'`, "u": `'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'`},
		`'{"dt": "0044-03-15 BC", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}'`},
	{14, map[string]string{"t": `'caf` + "\u00e9" + `SECRETtv'`, "c": `'ab'`, "v": `'a,b'`},
		`'{"t": "caf` + "\u00e9" + `SECRETtv", "c": "ab   ", "v": "a,b"}'`}, // char(5) keeps its blanks
	{15, map[string]string{"t": `'cafe` + "\u0301" + `'`, "v": `' x '`}, `'{"t": "cafe` + "\u0301" + `", "v": " x "}'`},
	{16, map[string]string{"t": `'a'`, "v": `'a'`}, `'{"t": "a", "v": "a"}'`},
	{17, map[string]string{}, `'{}'`}, // every column NULL
	// Past 1.7976931348623157e308 as written, but a double rounds it down to
	// it, as a model file's number is read (migration 070; before, it failed
	// closed).
	{18, map[string]string{"n": `'1.7976931348623158e308'`}, `'{"n": 1.7976931348623158e308}'`},
	{19, map[string]string{"t": tvLongHex}, `jsonb_build_object('t', ` + tvLongHex + `)`},
	{20, map[string]string{"t": `repeat('SECRETtv', 300000)`}, ""},                                                                  // 2.4 MB, compressed to little
	{21, map[string]string{"t": `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 50000) i)`}, ""},                      // 1.6 MB, stored over 1 MiB
	{22, map[string]string{"t": `E'q"\\\\' || chr(1) || 'SECRETtv'`}, `jsonb_build_object('t', E'q"\\\\' || chr(1) || 'SECRETtv')`}, // escapes
	{23, map[string]string{"v": `'b'`}, `'{"v": "b"}'`},
	{24, map[string]string{"tz": `'2026-06-30 23:59:59'`}, `'{"tz": "2026-06-30T18:14:59+00:00"}'`}, // written in Asia/Kathmandu
	{25, map[string]string{"d": `0.1::float8 + 0.2::float8`}, `'{"d": 0.30000000000000004}'`},
}

// tvRule is a criteria rule of one condition (with its logic) granting read
// to its own user, and the rows it must match.
type tvRule struct {
	field, op, value, logic string
	match                   []int64
}

var tvRules = []tvRule{
	{"n", "gt", `0`, "", []int64{3, 18}},                   // NaN and Infinity are strings; 1e400 fails closed
	{"n", "equals", `"NaN"`, "", []int64{4}},               // numeric NaN is the string "NaN"
	{"n", "not_equals", `1`, "", []int64{3, 18}},           // a type mismatch is false, not_equals too
	{"n", "equals", `0.12345678901234568`, "", []int64{3}}, // 40 digits compare as their double
	{"n", "le", `0.1234567890123456789012345678901234567890`, "", []int64{3}},
	{"n", "ge", `"A"`, "", []int64{4, 5}},
	{"n", "gt", `0`, "NOT 1", []int64{4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 22, 23, 24, 25}},
	{"d", "lt", `0`, "", nil},            // -0.0 is 0; -Infinity is a string
	{"d", "equals", `0`, "", []int64{7}}, // -0.0
	{"d", "gt", `0`, "", []int64{8, 25}}, // a subnormal is not 0
	{"d", "not_equals", `1`, "", []int64{7, 8, 25}},
	{"d", "equals", `"-Infinity, NaN"`, "", []int64{5, 6}}, // a comma list
	{"d", "starts_with", `"-"`, "", []int64{5}},
	{"d", "equals", `0.30000000000000004`, "", []int64{25}}, // all 17 digits, whatever extra_float_digits
	{"d", "equals", `0.3`, "", nil},
	{"r", "equals", `"Infinity"`, "", []int64{6}},
	{"i8", "equals", `9007199254740992`, "", []int64{9}},     // 2^53 + 1 is 2^53 as a double
	{"i8", "equals", `9223372036854775807`, "", []int64{10}}, // both 2^63
	{"i8", "gt", `9223372036854775000`, "", []int64{10}},     // 2^63 - 1024 as a double
	{"i8", "lt", `9007199254740994`, "", []int64{9}},
	{"g", "ge", `32768`, "", []int64{10}}, // a generated column
	{"g", "equals", `0`, "", []int64{7}},
	{"b", "equals", `true`, "", []int64{11}},
	{"b", "not_equals", `true`, "", []int64{12}},      // NULL is false
	{"b", "equals", `"true"`, "", nil},                // a string is not a boolean
	{"dt", "lt", `"2027-02-01"`, "", []int64{11, 13}}, // string order: "0044-03-15 BC" < "2027"
	{"dt", "gt", `"9999-12-31"`, "", []int64{12}},     // "infinity"
	{"ts", "lt", `"0"`, "", []int64{12}},              // "-infinity"
	{"tz", "equals", `"2026-12-01T13:40:57.2+00:00"`, "", []int64{11}},
	{"tz", "starts_with", `"2026-12-01T18"`, "", nil}, // never the writer's local time
	{"tz", "starts_with", `"2026-06-30T18:14:59"`, "", []int64{24}},
	{"u", "equals", `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`, "", []int64{13}},
	{"u", "equals", `"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"`, "", nil}, // case-sensitive
	{"t", "starts_with", `"caf` + "\u00e9" + `"`, "", []int64{14}},     // NFC only: no normalization
	{"t", "contains", `"e` + "\u0301" + `"`, "", []int64{15}},          // NFD only
	{"t", "not_contains", `"zz"`, "", []int64{14, 15, 16, 19, 22}},
	{"t", "contains", `"\""`, "", []int64{22}},
	{"c", "equals", `"ab"`, "", nil}, // char(5) is padded
	{"c", "equals", `"ab   "`, "", []int64{14}},
	{"v", "equals", `"a,b"`, "", []int64{16, 23}},              // a list: "a" or "b", never "a,b" itself
	{"v", "not_equals", `"x, y"`, "", []int64{14, 15, 16, 23}}, // the field is not trimmed
	{"v", "contains", `","`, "", []int64{14}},
	{"v", "equals", `"zz,` + "\u00a0" + `b"`, "", []int64{23}}, // parts trimmed of white space, NBSP too
}

func tvUser(i int) string { return fmt.Sprintf("tv_u%02d", i) }

// tvModel is the sharing model: object typed__c, its owner alice and one
// user per rule.
func tvModel(shift int) string {
	users := []string{`{"id": "alice"}`}
	var rules []string
	for i, r := range tvRules {
		users = append(users, fmt.Sprintf(`{"id": %q}`, tvUser(i)))
		target := tvUser((i + shift) % len(tvRules))
		logic := ""
		if r.logic != "" {
			logic = fmt.Sprintf(`, "logic": %q`, r.logic)
		}
		rules = append(rules, fmt.Sprintf(`{"id": "r%02d", "object": "typed__c", "type": "criteria", "target": "user:%s", "access": "read",
			"criteria": {"conditions": [{"field": %q, "op": %q, "value": %s}]%s}}`, i, target, r.field, r.op, r.value, logic))
	}
	return `{"version": 1, "objects": [{"name": "typed__c", "internal_owd": "private", "external_owd": "private"}],
		"roles": [], "groups": [], "territories": [], "users": [` + strings.Join(users, ",") + `], "rules": [` + strings.Join(rules, ",\n") + `]}`
}

const tvSpec = `{"objects": [{"object": "typed__c", "table": "crm.typed", "id": "id", "owner": "owner_id",
	"fields": ["n", "d", "r", "i8", "i2", "g", "b", "dt", "ts", "tz", "u", "t", "c", "v"]}]}`

// tvMarkers are parts of row values that no error, log line or
// notification may carry.
var tvMarkers = []string{"SECRETtv", "caf\u00e9", "12345678901234567890", "a0eebc99", "9007199254740993", "1e400", "0044-03-15"}

func tvNoMarker(t *testing.T, what, s string) {
	t.Helper()
	for _, m := range tvMarkers {
		if strings.Contains(strings.ToLower(s), strings.ToLower(m)) {
			t.Errorf("%s carries a row's value (%q): %.300s", what, m, s)
		}
	}
}

// tvWrite sets every row's attached columns to its values (values) or to
// NULL, in a session whose TimeZone, DateStyle and extra_float_digits
// differ from the engine's.
func tvWrite(t *testing.T, b *bundle, values bool) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, b.app, func(tx pgx.Tx) error {
		for _, s := range []string{`SET LOCAL TimeZone = 'Asia/Kathmandu'`, `SET LOCAL DateStyle = 'SQL, DMY'`, `SET LOCAL extra_float_digits = -15`} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		for _, r := range tvRows {
			var cols, vals, set []string
			for _, c := range tvFields {
				if c == "g" {
					continue
				}
				v := "NULL"
				if lit, ok := r.cols[c]; ok && values {
					v = lit
				}
				cols, vals, set = append(cols, c), append(vals, v), append(set, c+" = excluded."+c)
			}
			stmt := fmt.Sprintf(`INSERT INTO crm.typed (id, owner_id, %s) VALUES (%d, 'alice', %s) ON CONFLICT (id) DO UPDATE SET %s`,
				strings.Join(cols, ", "), r.id, strings.Join(vals, ", "), strings.Join(set, ", "))
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("row %d: %w", r.id, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("write rows: %v", err)
	}
}

// tvCheck checks the mirrored records, every rule's user's access to every
// row, and the access against the oracle's, with the rows' values (values)
// or all NULL.
func tvCheck(t *testing.T, b *bundle, values bool, shift int, after string) {
	t.Helper()
	ctx := context.Background()
	var records []string
	for _, r := range tvRows {
		key := fmt.Sprintf("typed__c:%d", r.id)
		failed := values && r.fields == ""
		expr := `'{}'::jsonb`
		if values && !failed {
			expr = r.fields
		}
		var want, got, reason *string
		var same *bool
		err := b.admin.QueryRow(ctx, fmt.Sprintf(`
			WITH w AS (SELECT (SELECT jsonb_object_agg(f, 'null'::jsonb) FROM unnest($2::text[]) f) || %s AS f)
			SELECT w.f::text, r.fields = w.f, left(r.fields::text, 200), (SELECT reason FROM recalc.invalid_record i WHERE i.record = $1)
			FROM w LEFT JOIN recalc.record r ON r.id = $1`, expr), key, tvFields).Scan(&want, &same, &got, &reason)
		if err != nil {
			t.Fatalf("%s: record %s: %v", after, key, err)
		}
		switch {
		case got == nil:
			t.Errorf("%s: row %d has no record", after, r.id)
		case failed:
			if reason == nil || !strings.HasPrefix(*reason, "values out of bounds") || *got != "{}" {
				t.Errorf("%s: row %d should fail closed (values out of bounds, no fields): reason %v, fields %s", after, r.id, deref(reason), *got)
			}
		case !*same || reason != nil:
			t.Errorf("%s: row %d: fields %s, want %.200s (invalid: %v)", after, r.id, *got, *want, deref(reason))
		}
		if !failed {
			records = append(records, fmt.Sprintf(`{"object": "typed__c", "id": %q, "owner": "alice", "fields": %s}`, key, *want))
		}
	}

	// Every rule's user reaches exactly the rows the rule matches; alice
	// owns every row but those that fail closed.
	users := []string{"alice"}
	for i := range tvRules {
		users = append(users, tvUser(i))
	}
	rows, err := b.admin.Query(ctx, `SELECT usr, t.id, recalc.access_level(usr, 'typed__c', t.id)
		FROM unnest($1::text[]) usr, crm.typed t ORDER BY 1, 2`, users)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[int64]string{}
	var u, level string
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&u, &id, &level}, func() error {
		if got[u] == nil {
			got[u] = map[int64]string{}
		}
		got[u][id] = level
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range tvRows {
		want := "all"
		if values && r.fields == "" {
			want = "none"
		}
		if got["alice"][r.id] != want {
			t.Errorf("%s: owner's access to row %d is %s, want %s", after, r.id, got["alice"][r.id], want)
		}
	}
	for i, rule := range tvRules {
		for _, r := range tvRows {
			want := "none"
			if values && slices.Contains(rule.match, r.id) || !values && rule.logic == "NOT 1" { // NOT of a false condition
				want = "read"
			}
			if l := got[tvUser((i+shift)%len(tvRules))][r.id]; l != want {
				t.Errorf("%s: rule %d (%s %s %s logic %q) on row %d: %s gets %s, want %s",
					after, i, rule.field, rule.op, rule.value, rule.logic, r.id, tvUser((i+shift)%len(tvRules)), l, want)
			}
		}
	}

	// The oracle, on the records the docs give (those failing closed have
	// no access at all, so they are left out).
	file := strings.TrimSuffix(strings.TrimSpace(tvModel(shift)), "}") + `, "records": [` + strings.Join(records, ",") + "]}"
	m, _, err := model.Parse(strings.NewReader(file))
	if err != nil {
		t.Fatalf("%s: expected model: %v", after, err)
	}
	if g, w := testkit.AccessCSV(t, ctx, b.engine), oracle.CSV(oracle.Access(m)); g != w {
		t.Errorf("%s: access differs from the oracle\n%s", after, oracle.Diff(w, g))
	}
	var stuck int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.attach_stuck`).Scan(&stuck); err != nil || stuck != 0 {
		t.Errorf("%s: %d objects stuck (%v)", after, stuck, err)
	}
}

// TestTypedValuesRefusedTypes: a field of a type outside docs/attach.md's
// list (interval, inet, money, an enum, a domain over text, an array, jsonb,
// xml) is refused by recalc attach, naming the column but no value, and
// nothing is attached.
func TestTypedValuesRefusedTypes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app, tvTable, `GRANT SELECT, TRIGGER ON crm.typed TO `+ident(b.engineRole),
		`INSERT INTO crm.typed (id, owner_id, iv, ip, m, e, dom, arr, j, x8) VALUES (1, 'alice', '1 day', '10.0.0.1', 12.5, 'ok', 'SECRETtv', '{SECRETtv}', '{"a": "SECRETtv"}', '<a>SECRETtv</a>')`)
	if _, err := testkit.ImportString(context.Background(), b.engine, tvModel(0)); err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"iv", "ip", "m", "e", "dom", "arr", "j", "x8"} {
		t.Run(col, func(t *testing.T) {
			spec := strings.Replace(tvSpec, `"fields": [`, `"fields": ["`+col+`", `, 1)
			out, err := b.attach(t, spec)
			if err == nil || !strings.Contains(err.Error(), "which recalc cannot read") || !strings.Contains(err.Error(), `"`+col+`"`) {
				t.Fatalf("attaching field %s: %v (%s), want refused", col, err, out)
			}
			tvNoMarker(t, "the refusal", err.Error()+out)
		})
	}
	var n int
	if err := b.admin.QueryRow(context.Background(), `SELECT count(*) FROM recalc.attachment`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d attachments after refusals (%v)", n, err)
	}
}

// TestTypedValuesFieldsAndCriteria: rows holding edge values of every
// type a field may have, written in one statement by an application session
// with its own TimeZone, DateStyle and extra_float_digits, read by an engine
// whose role sets others. Each row's record gets the fields docs/attach.md
// gives (to_jsonb; NaN and infinities as strings; timestamptz in UTC;
// numbers that round past a double's range failing closed, alone), every criteria
// operator decides on them as docs/model.md says, and the access equals the
// oracle's: after the backfill and a full run, after incremental runs and
// after recalc watch's fast path, and a full run agrees. No error, log line,
// CLI output or notification carries a value.
func TestTypedValuesFieldsAndCriteria(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOwnRoles(t)
	// The engine's own sessions print timestamps and floats otherwise: the
	// capture pins its settings.
	b.exec(t, b.admin, `ALTER ROLE `+ident(b.engineRole)+` SET TimeZone = 'Pacific/Chatham'`,
		`ALTER ROLE `+ident(b.engineRole)+` SET extra_float_digits = -15`,
		`ALTER ROLE `+ident(b.engineRole)+` SET DateStyle = 'German'`)
	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))
	b.exec(t, b.app, tvTable, `GRANT SELECT, TRIGGER ON crm.typed TO `+ident(b.engineRole))
	if _, err := testkit.ImportString(ctx, b.engine, tvModel(0)); err != nil {
		t.Fatalf("import: %v", err)
	}
	tvWrite(t, b, true)

	listener, err := b.admin.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Release()
	if _, err := listener.Exec(ctx, `LISTEN recalc_changes`); err != nil {
		t.Fatal(err)
	}

	out, err := b.attach(t, tvSpec)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	tvNoMarker(t, "recalc attach", out)
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	if _, err := engine.Full(ctx, b.engine, engine.Options{Workers: 2}, log); err != nil {
		t.Fatal(err)
	}
	tvCheck(t, b, true, 0, "backfill and full run")
	full := testkit.AccessCSV(t, ctx, b.engine)

	// Incremental: every value gone, then back.
	tvWrite(t, b, false)
	if _, err := engine.Run(ctx, b.engine, engine.Options{}, log); err != nil {
		t.Fatal(err)
	}
	tvCheck(t, b, false, 0, "values set to NULL, incremental run")
	tvWrite(t, b, true)
	if _, err := engine.Run(ctx, b.engine, engine.Options{}, log); err != nil {
		t.Fatal(err)
	}
	tvCheck(t, b, true, 0, "values written again, incremental run")

	// recalc watch's fast path.
	live := engine.NewLive(engine.Options{}, 1000)
	if _, err := live.Step(ctx, b.engine, log); err != nil {
		t.Fatal(err)
	}
	for _, values := range []bool{false, true} {
		tvWrite(t, b, values)
		rep, err := live.Step(ctx, b.engine, log)
		if err != nil {
			t.Fatalf("watch step: %v", err)
		}
		if !rep.Fast {
			t.Errorf("watch step after writing the rows (values %v) was not on the fast path", values)
		}
		tvCheck(t, b, values, 0, fmt.Sprintf("values %v, watch fast path", values))
	}
	if got := testkit.AccessCSV(t, ctx, b.engine); got != full {
		t.Errorf("incremental and fast-path access differs from the first full run's\n%s", oracle.Diff(full, got))
	}
	if _, err := engine.Full(ctx, b.engine, engine.Options{Workers: 2}, log); err != nil {
		t.Fatal(err)
	}
	if got := testkit.AccessCSV(t, ctx, b.engine); got != full {
		t.Errorf("a second full run differs from the first\n%s", oracle.Diff(full, got))
	}

	// Every rule moves to another user: an incremental run re-evaluates the
	// rules on the stored fields (the SQL prefilter, then Go).
	if _, err := testkit.ImportString(ctx, b.engine, tvModel(1)); err != nil {
		t.Fatalf("import: %v", err)
	}
	if _, err := engine.Run(ctx, b.engine, engine.Options{}, log); err != nil {
		t.Fatal(err)
	}
	tvCheck(t, b, true, 1, "rules moved to other users, incremental run")
	moved := testkit.AccessCSV(t, ctx, b.engine)
	if _, err := engine.Full(ctx, b.engine, engine.Options{Workers: 2}, log); err != nil {
		t.Fatal(err)
	}
	if got := testkit.AccessCSV(t, ctx, b.engine); got != moved {
		t.Errorf("after the rules moved, a full run differs from the incremental one\n%s", oracle.Diff(got, moved))
	}
	if _, err := testkit.ImportString(ctx, b.engine, tvModel(0)); err != nil {
		t.Fatalf("import: %v", err)
	}
	b.run(t)

	// An attached column's type cannot change under the attachment; another
	// column's can, and capture goes on.
	if _, err := b.app.Exec(ctx, `ALTER TABLE crm.typed ALTER COLUMN n TYPE double precision USING n::float8`); err == nil {
		t.Error("changing an attached column's type succeeded")
	} else {
		tvNoMarker(t, "the ALTER TABLE error", err.Error())
	}
	b.exec(t, b.app, `ALTER TABLE crm.typed ALTER COLUMN iv TYPE text`, `UPDATE crm.typed SET i2 = 32766 WHERE id = 10`)
	b.run(t)
	var g string
	if err := b.admin.QueryRow(ctx, `SELECT fields->>'g' FROM recalc.record WHERE id = 'typed__c:10'`).Scan(&g); err != nil || g != "32767" {
		t.Errorf("after another column's type changed, the generated column reads %q (%v), want 32767", g, err)
	}
	b.exec(t, b.app, `UPDATE crm.typed SET i2 = 32767 WHERE id = 10`)
	b.run(t)

	tvNoMarker(t, "the engine's log", logs.String())
	for {
		nctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		n, err := listener.Conn().WaitForNotification(nctx)
		cancel()
		if err != nil {
			break
		}
		tvNoMarker(t, "a notification", n.Channel+" "+n.Payload)
	}
	var reasons []string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT reason), '{}') FROM recalc.invalid_record`).Scan(&reasons); err != nil {
		t.Fatal(err)
	}
	sort.Strings(reasons)
	tvNoMarker(t, "recalc.invalid_record", strings.Join(reasons, "; "))
	st, err := b.recalc("attach", "--list", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	tvNoMarker(t, "recalc attach --list", st)
}
