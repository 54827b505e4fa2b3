package adversarial

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// Finding 1: the capture trigger function runs with the engine's rights. An
// application role that could attach it to a table of its own, whose id
// column casts to text through a function it wrote, would run that function
// as the engine. No role but the engine may use the function, and the
// function refuses to run for anything but recalc.record's AFTER statement
// triggers, even for the engine.
func TestCaptureTriggerCannotBeBorrowed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	attack := []string{
		`CREATE TEMP TABLE payload (v text)`,
		// Runs as whoever casts a payload to text: inside the trigger
		// function, that would be the engine.
		`CREATE FUNCTION pg_temp.payload_text(pg_temp.payload) RETURNS text LANGUAGE plpgsql AS $f$
		BEGIN
			INSERT INTO recalc.share_input (record, object, grantee, access, cause) VALUES ('a3', 'account', 'user:u2', 3, 'manual');
			INSERT INTO recalc.change (kind, keys) VALUES ('record', ARRAY['a3']);
			EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA recalc TO %I', session_user);
			RETURN ($1).v;
		END $f$`,
		`CREATE CAST (pg_temp.payload AS text) WITH FUNCTION pg_temp.payload_text(pg_temp.payload) AS IMPLICIT`,
		`CREATE TEMP TABLE bait (rid bigint, id pg_temp.payload, object text, owner text)`,
	}
	for _, role := range []string{b.writerRole, b.readerRole, b.outsiderRole} {
		t.Run(strings.SplitN(role, "_", 3)[1], func(t *testing.T) {
			c := b.connect(t, role)
			for _, sql := range attack {
				exec(t, c, sql)
			}
			_, err := c.Exec(ctx, `CREATE TRIGGER bait_log AFTER INSERT ON pg_temp.bait REFERENCING NEW TABLE AS new_rows
				FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change()`)
			if err == nil {
				// Attached after all: the function itself must refuse.
				_, err = c.Exec(ctx, `INSERT INTO pg_temp.bait VALUES (1, ROW('a3')::pg_temp.payload, 'account', 'u1')`)
				wantState(t, "insert into a table the capture trigger was attached to", err, raiseException)
			} else {
				wantState(t, "attach recalc.log_record_change() to a temporary table", err, insufficientPrivilege)
			}
			var granted bool
			if err := b.admin.QueryRow(ctx, `SELECT has_table_privilege($1, 'recalc.share_input', 'INSERT')`, role).Scan(&granted); err != nil {
				t.Fatal(err)
			}
			if granted {
				t.Errorf("%s gained INSERT on recalc.share_input", role)
			}
		})
	}
	if n := b.count(t, `SELECT count(*) FROM recalc.share_input WHERE record = 'a3'`); n != 0 {
		t.Errorf("the attack stored %d shares on a3", n)
	}
	if n := b.count(t, `SELECT count(*) FROM recalc.change WHERE 'a3' = ANY(keys)`); n != 0 {
		t.Errorf("the attack logged %d changes of a3", n)
	}
	b.run(t)
	b.wantAccess(t, map[string]string{"u2 a3": "none", "u1 a3": "all"})

	// The engine owns the function and may attach it anywhere; it must
	// still refuse to run for anything but recalc.record's AFTER statement
	// triggers.
	for _, tc := range []struct {
		name, setup, fire string
	}{
		{"another table",
			`CREATE TABLE recalc.decoy (rid bigint, id text, object text, owner text);
			 CREATE TRIGGER decoy_log AFTER INSERT ON recalc.decoy REFERENCING NEW TABLE AS new_rows
			 FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change()`,
			`INSERT INTO recalc.decoy VALUES (1, 'a3', 'account', 'u1')`},
		{"a temporary table",
			`CREATE TEMP TABLE decoy (rid bigint, id text, object text, owner text);
			 CREATE TRIGGER decoy_log AFTER DELETE ON pg_temp.decoy REFERENCING OLD TABLE AS old_rows
			 FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change();
			 INSERT INTO pg_temp.decoy VALUES (1, 'a3', 'account', 'u1')`,
			`DELETE FROM pg_temp.decoy`},
		{"a row trigger on recalc.record",
			`CREATE TRIGGER record_row_log AFTER UPDATE ON recalc.record FOR EACH ROW EXECUTE FUNCTION recalc.log_record_change()`,
			`UPDATE recalc.record SET owner = owner WHERE id = 'a3'`},
		{"a BEFORE trigger on recalc.record",
			`CREATE TRIGGER record_before_log BEFORE DELETE ON recalc.record FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change()`,
			`DELETE FROM recalc.record WHERE id = 'a3'`},
	} {
		t.Run("engine/"+tc.name, func(t *testing.T) {
			tx, err := b.engine.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			exec(t, tx, tc.setup)
			_, err = tx.Exec(ctx, tc.fire)
			wantState(t, tc.fire, err, raiseException)
			if err != nil && !strings.Contains(err.Error(), "log_record_change") {
				t.Errorf("%s: got %v, want the capture function's refusal", tc.fire, err)
			}
		})
	}
}

// Finding 2: a record deleted, renamed or moved to another object with plain
// SQL kept its manual shares and team entries, and a new record that later
// took its id inherited them. They go in the writing statement's own
// transaction.
func TestDeletedRecordLosesShares(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.wantAccess(t, map[string]string{"u2 a1": "edit", "u3 a1": "read", "u2 a2": "edit", "u3 a2": "read", "u2 p1": "read"})

	t.Run("delete", func(t *testing.T) {
		exec(t, b.writer, `DELETE FROM recalc.record WHERE id = 'a1'`)
		// Before any run: the delete itself took them.
		if s, tm := b.inputsOf(t, "a1"); s != 0 || tm != 0 {
			t.Errorf("after DELETE, a1 still has %d shares and %d team entries", s, tm)
		}
		exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner) VALUES ('a1', 'account', 'u1')`)
		b.run(t)
		b.wantAccess(t, map[string]string{"u2 a1": "none", "u3 a1": "none", "u1 a1": "all"})
	})
	t.Run("id change", func(t *testing.T) {
		exec(t, b.writer, `UPDATE recalc.record SET id = 'a2x' WHERE id = 'a2'`)
		if s, tm := b.inputsOf(t, "a2", "a2x"); s != 0 || tm != 0 {
			t.Errorf("after the id change, a2 and a2x still have %d shares and %d team entries", s, tm)
		}
		exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner) VALUES ('a2', 'account', 'u1')`)
		b.run(t)
		b.wantAccess(t, map[string]string{"u2 a2": "none", "u3 a2": "none", "u2 a2x": "none", "u3 a2x": "none", "u1 a2x": "all"})
	})
	t.Run("object change", func(t *testing.T) {
		exec(t, b.writer, `UPDATE recalc.record SET object = 'other__c' WHERE id = 'p1'`)
		if s, tm := b.inputsOf(t, "p1"); s != 0 || tm != 0 {
			t.Errorf("after the object change, p1 still has %d shares and %d team entries", s, tm)
		}
		b.run(t)
		b.wantAccess(t, map[string]string{"u2 p1": "none", "u1 p1": "all"})
	})
	t.Run("imports keep working", func(t *testing.T) {
		b.importJSON(t, `{"version": 1, "users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}, {"id": "u4"}, {"id": "u5"}]}`)
		b.run(t)
		b.importJSON(t, baseModel) // the file's records, shares and teams again
		b.run(t)
		b.wantAccess(t, map[string]string{"u2 a1": "edit", "u3 a1": "read", "u2 a2": "edit", "u2 p1": "read", "u1 a2x": "none"})
		b.sameAsFull(t, "a2x")
	})
}

// Finding 3, first part: the application's writes are checked as it writes.
func TestConstraintsRefuseBadRecords(t *testing.T) {
	t.Parallel()
	b := setup(t)
	long := strings.Repeat("x", 1025)
	tooMany := make([]string, 1001)
	for i := range tooMany {
		tooMany[i] = "west"
	}
	for _, tc := range []struct {
		name, fields string
		ok           bool
	}{
		{"nested object", `{"a": {"b": 1}}`, false},
		{"nested array", `{"a": [1]}`, false},
		{"array", `[]`, false},
		{"string", `"x"`, false},
		{"number above float64", `{"priority": 1e400}`, false},
		{"number below float64", `{"priority": -1e400}`, false},
		{"over 1 MiB", `{"a": "` + strings.Repeat("x", 1<<20) + `"}`, false},
		{"scalars", `{"s": "x", "n": 1.7976931348623157e308, "b": true, "z": null}`, true},
		{"just under 1 MiB", `{"a": "` + strings.Repeat("x", 1<<20-16) + `"}`, true},
	} {
		t.Run("fields/"+tc.name, func(t *testing.T) {
			insErr := rolledBack(b.writer, `INSERT INTO recalc.record (id, object, owner, fields) VALUES ('bad', 'account', 'u1', $1::jsonb)`, tc.fields)
			updErr := rolledBack(b.writer, `UPDATE recalc.record SET fields = $1::jsonb WHERE id = 'a3'`, tc.fields)
			if tc.ok {
				if insErr != nil || updErr != nil {
					t.Errorf("valid fields refused: insert %v, update %v", insErr, updErr)
				}
				return
			}
			wantState(t, "insert", insErr, checkViolation)
			wantState(t, "update", updErr, checkViolation)
		})
	}
	for _, tc := range []struct {
		name, sql string
		args      []any
	}{
		{"id over 1024 bytes", `INSERT INTO recalc.record (id, object, owner) VALUES ($1, 'account', 'u1')`, []any{long}},
		{"empty id", `INSERT INTO recalc.record (id, object, owner) VALUES ('', 'account', 'u1')`, nil},
		{"owner over 1024 bytes", `UPDATE recalc.record SET owner = $1 WHERE id = 'a3'`, []any{long}},
		{"object over 1024 bytes", `UPDATE recalc.record SET object = $1 WHERE id = 'a3'`, []any{long}},
		{"parent over 1024 bytes", `UPDATE recalc.record SET parent = $1 WHERE id = 'k4'`, []any{long}},
		{"over 1000 territories", `UPDATE recalc.record SET territories = $1 WHERE id = 'a3'`, []any{tooMany}},
		{"a NULL territory", `UPDATE recalc.record SET territories = ARRAY[NULL, 'west']::text[] WHERE id = 'a3'`, nil},
		{"territories of two dimensions", `UPDATE recalc.record SET territories = '{{west},{west}}'::text[] WHERE id = 'a3'`, nil},
	} {
		t.Run("refs/"+tc.name, func(t *testing.T) {
			wantState(t, tc.name, rolledBack(b.writer, tc.sql, tc.args...), checkViolation)
		})
	}
}

// invalidRecords reads recalc.invalid_record as the reader: record -> "object: reason".
func (b *bundle) invalidRecords(t *testing.T) map[string]string {
	t.Helper()
	rows, err := b.reader.Query(context.Background(), `SELECT record, object, reason FROM recalc.invalid_record`)
	if err != nil {
		t.Fatalf("read recalc.invalid_record as the reader: %v", err)
	}
	out := map[string]string{}
	var rec, obj, reason string
	if _, err := pgx.ForEachRow(rows, []any{&rec, &obj, &reason}, func() error {
		out[rec] = obj + ": " + reason
		return nil
	}); err != nil {
		t.Fatalf("read recalc.invalid_record as the reader: %v", err)
	}
	return out
}

// wantInvalid checks recalc.invalid_record (as the reader) and `recalc
// status` against want, and that no user has access to those records.
func (b *bundle) wantInvalid(t *testing.T, want map[string]string) {
	t.Helper()
	got := b.invalidRecords(t)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recalc.invalid_record:\n got %v\nwant %v", got, want)
	}
	st := b.status(t)
	if st.InvalidRecords != int64(len(want)) {
		t.Errorf("status counts %d invalid records, want %d", st.InvalidRecords, len(want))
	}
	for _, r := range st.Invalid {
		if want[r.Record] != r.Object+": "+r.Reason {
			t.Errorf("status lists invalid record %s (%s: %s), want %q", r.Record, r.Object, r.Reason, want[r.Record])
		}
	}
	for rec := range want {
		for _, u := range users {
			if l := b.access(t, u, rec); l != "none" {
				t.Errorf("invalid record %s gives %s %s access", rec, u, l)
			}
		}
	}
}

// Finding 3, second part: records the application wrote that name what does
// not exist fail closed: no access, listed with the reason, counted by the
// job and by `recalc status`, and they stop neither runs nor imports.
func TestInvalidRecordsFailClosed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, parent, territories, fields) VALUES
		('bad_owner', 'account', 'nobody', NULL, '{}', '{"priority": 9}'),
		('bad_parent', 'contact', 'u1', 'ghost', '{}', '{}'),
		('bad_object', 'widget__c', 'u1', NULL, '{}', '{}'),
		('bad_territory', 'account', 'u1', NULL, '{nowhere}', '{"priority": 9}'),
		('child_of_bad', 'contact', 'u1', 'bad_owner', '{}', '{}'),
		('wrong_parent', 'opportunity', 'u1', 'p1', '{}', '{}')`)
	want := map[string]string{
		"bad_owner":     "account: " + sharing.InvalidOwner,
		"bad_parent":    "contact: " + sharing.InvalidParent,
		"bad_object":    "widget__c: " + sharing.InvalidObject,
		"bad_territory": "account: " + sharing.InvalidTerritory,
		"child_of_bad":  "contact: " + sharing.InvalidParent,
		"wrong_parent":  "opportunity: " + sharing.InvalidParent,
	}
	rep := b.run(t)
	if rep.Kind != "incremental" || rep.InvalidRecords != int64(len(want)) {
		t.Errorf("run: %s job counted %d invalid records, want an incremental job counting %d", rep.Kind, rep.InvalidRecords, len(want))
	}
	b.wantInvalid(t, want)
	b.wantAccess(t, map[string]string{"u2 p1": "read", "u1 p1": "all", "u4 hot1": "read"}) // their valid family members

	// Later runs and imports go on.
	exec(t, b.writer, `UPDATE recalc.record SET fields = '{"priority": 1}' WHERE id = 'hot1'`)
	b.run(t)
	b.wantAccess(t, map[string]string{"u4 hot1": "none"})
	if rep := b.full(t); rep.InvalidRecords != int64(len(want)) {
		t.Errorf("full run counted %d invalid records, want %d", rep.InvalidRecords, len(want))
	}
	b.wantInvalid(t, want)
	b.importJSON(t, `{"version": 1, "users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}, {"id": "u4"}, {"id": "u5"}]}`)
	b.run(t)
	b.wantInvalid(t, want)

	// Fixed with SQL, a record gets its access at the next run.
	exec(t, b.writer, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'bad_owner'`)
	b.run(t)
	delete(want, "bad_owner")
	delete(want, "child_of_bad")
	b.wantInvalid(t, want)
	b.wantAccess(t, map[string]string{"u2 bad_owner": "all"})
	if l := b.access(t, "u2", "child_of_bad"); l == "none" {
		t.Errorf("access_level(u2, child_of_bad) = none once its parent is valid")
	}
	b.sameAsFull(t)
}

// Finding 3, third part: rows stored before the constraints existed (here:
// with the constraint dropped) with fields a run cannot read make their
// record invalid, and the run succeeds.
func TestLegacyBadFieldsFailClosed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.wantAccess(t, map[string]string{"u4 hot1": "read"})
	exec(t, b.engine, `ALTER TABLE recalc.record DROP CONSTRAINT record_fields_scalar`)
	exec(t, b.writer, `UPDATE recalc.record SET fields = '{"a": {"b": 1}}' WHERE id = 'hot1'`)
	want := map[string]string{"hot1": "account: " + sharing.InvalidFields}
	for i, fields := range []string{
		`{"priority": [3]}`,
		`[]`,
		`"x"`,
		`{"priority": 1e400}`,
		`{"a": "` + strings.Repeat("x", 1<<20) + `"}`,
	} {
		id := fmt.Sprintf("legacy%d", i)
		exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, fields) VALUES ($1, 'account', 'u1', $2::jsonb)`, id, fields)
		want[id] = "account: " + sharing.InvalidFields
	}
	rep := b.run(t)
	if rep.InvalidRecords != int64(len(want)) {
		t.Errorf("run counted %d invalid records, want %d", rep.InvalidRecords, len(want))
	}
	b.wantInvalid(t, want)
	if rep := b.full(t); rep.InvalidRecords != int64(len(want)) {
		t.Errorf("full run counted %d invalid records, want %d", rep.InvalidRecords, len(want))
	}
	b.wantInvalid(t, want)
	exec(t, b.writer, `UPDATE recalc.record SET fields = '{"priority": 5}' WHERE id = 'hot1'`)
	b.run(t)
	b.wantAccess(t, map[string]string{"u4 hot1": "read", "u1 hot1": "all"})
	b.sameAsFull(t)
}

// TestLegacyBadTerritoriesFailClosed: records stored before migration 027
// (here: with the constraint dropped) whose territories hold a NULL or
// have two dimensions are invalid, and every run goes on (every job failed
// reading such a record before).
func TestLegacyBadTerritoriesFailClosed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec(t, b.engine, `ALTER TABLE recalc.record DROP CONSTRAINT record_refs_bounded`)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, territories, fields) VALUES
		('null_territory', 'account', 'u1', ARRAY[NULL, 'west']::text[], '{"priority": 3}'),
		('flat_territories', 'account', 'u1', '{{west},{west}}'::text[], '{"priority": 3}')`)
	exec(t, b.writer, `UPDATE recalc.record SET territories = ARRAY['west', NULL]::text[] WHERE id = 'hot1'`)
	want := map[string]string{}
	for _, id := range []string{"null_territory", "flat_territories", "hot1"} {
		want[id] = "account: " + sharing.InvalidValues
	}
	if rep := b.run(t); rep.InvalidRecords != int64(len(want)) {
		t.Errorf("run counted %d invalid records, want %d", rep.InvalidRecords, len(want))
	}
	b.wantInvalid(t, want)
	if rep := b.full(t); rep.InvalidRecords != int64(len(want)) {
		t.Errorf("full run counted %d invalid records, want %d", rep.InvalidRecords, len(want))
	}
	b.wantInvalid(t, want)
	// Imports and exports go on too: each reads every stored record.
	b.importJSON(t, `{"version": 1, "users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}, {"id": "u4"}, {"id": "u5"}]}`)
	if out := b.recalc(t, "export"); !strings.Contains(out, `"id":"null_territory"`) {
		t.Errorf("export lacks the record null_territory:\n%.2000s", out)
	}
	exec(t, b.writer, `UPDATE recalc.record SET territories = '{}' WHERE id = 'hot1'`)
	b.run(t)
	b.wantAccess(t, map[string]string{"u4 hot1": "read", "u1 hot1": "all"})
	b.sameAsFull(t)
}

// Finding 4: a criteria rule's conditions are bounded (model.Limits); an
// import over the bound is refused with a message naming the limit, and
// stores nothing.
func TestConditionLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rule := func(id string, n int) string {
		conds := make([]string, n)
		for i := range conds {
			conds[i] = fmt.Sprintf(`{"field": "f%d", "op": "equals", "value": "v"}`, i)
		}
		return fmt.Sprintf(`{"version": 1, "rules": [{"id": %q, "object": "account", "type": "criteria", "target": "group:crit",
			"access": "read", "criteria": {"conditions": [%s]}}]}`, id, strings.Join(conds, ","))
	}
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	limit := model.DefaultLimits().Conditions
	_, err := b.recalcErr("import", write("over.json", rule("over_limit", int(limit)+1)))
	if err == nil || !strings.Contains(err.Error(), model.LimitConditions) {
		t.Errorf("import of a rule with %d conditions: got %v, want a refusal naming %s", limit+1, err, model.LimitConditions)
	}
	if n := b.count(t, `SELECT count(*) FROM recalc.model_section WHERE name = 'rules' AND doc::text LIKE '%over_limit%'`); n != 0 {
		t.Errorf("the refused rule was stored")
	}
	b.recalc(t, "import", write("at.json", rule("at_limit", int(limit))))
	b.run(t)
}

// Finding 6: anyone who could connect could ask about anyone's access. The
// access API is executable only by readers, and no function of the schema
// by PUBLIC.
func TestAccessAPINotPublic(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	calls := []struct {
		name, sql string
		reader    bool // a reader may
	}{
		{"access_level", `SELECT recalc.access_level('u2', 'a1')`, true},
		{"access_level by object", `SELECT recalc.access_level('u2', 'account', 'a1')`, true},
		{"visible_records", `SELECT * FROM recalc.visible_records('u2', 'account')`, true},
		{"visible_records at a level", `SELECT * FROM recalc.visible_records('u2', 'account', 'edit')`, true},
		{"invalid_records", `SELECT * FROM recalc.invalid_records()`, true},
		{"invalid_record view", `SELECT * FROM recalc.invalid_record`, true},
		{"job_payload", `SELECT recalc.job_payload(1)`, false},
		{"acl_share", `SELECT * FROM recalc.acl_share`, false},
		{"acl_member", `SELECT * FROM recalc.acl_member`, false},
		{"acl_record", `SELECT * FROM recalc.acl_record`, false},
		{"record", `SELECT * FROM recalc.record`, false},
		{"share_input", `SELECT * FROM recalc.share_input`, false},
		{"job", `SELECT * FROM recalc.job`, false},
	}
	check := func(t *testing.T, when string) {
		for _, c := range calls {
			wantState(t, when+": outsider: "+c.name, rolledBack(b.outsider, c.sql), insufficientPrivilege)
			err := rolledBack(b.reader, c.sql)
			if c.reader && err != nil {
				t.Errorf("%s: reader: %s: %v", when, c.name, err)
			}
			if !c.reader {
				wantState(t, when+": reader: "+c.name, err, insufficientPrivilege)
			}
		}
	}
	check(t, "connect only")
	exec(t, b.engine, `GRANT USAGE ON SCHEMA recalc TO `+ident(b.outsiderRole))
	check(t, "with USAGE on the schema")
	// A full run swaps in new share tables: the grants hold, and give no more.
	b.full(t)
	check(t, "after a full run")

	var levels []string
	rows, err := b.reader.Query(ctx, `SELECT record || ' ' || level FROM recalc.visible_records('u2', 'account') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	if levels, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(levels, ", "); got != "a1 edit, a2 edit" {
		t.Errorf("visible_records(u2, account) as the reader = %s, want a1 edit, a2 edit", got)
	}
}

// functionViolations lists the functions of schema recalc that break the
// rules SECURITY.md states: none is executable by PUBLIC, and every SECURITY
// DEFINER one pins search_path to pg_catalog and pg_temp, pg_temp last.
func functionViolations(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig, '{}'),
		       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
		               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
		FROM pg_proc p WHERE p.pronamespace = 'recalc'::regnamespace ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list functions: %w", err)
	}
	var out []string
	var name string
	var definer, public bool
	var config []string
	_, err = pgx.ForEachRow(rows, []any{&name, &definer, &config, &public}, func() error {
		if public {
			out = append(out, name+" is executable by PUBLIC")
		}
		if !definer {
			return nil
		}
		var path []string
		for _, c := range config {
			if v, ok := strings.CutPrefix(c, "search_path="); ok {
				for _, s := range strings.Split(v, ",") {
					path = append(path, strings.Trim(strings.TrimSpace(s), `"`))
				}
			}
		}
		switch {
		case path == nil:
			out = append(out, name+" is SECURITY DEFINER without a pinned search_path")
		case path[len(path)-1] != "pg_temp":
			out = append(out, fmt.Sprintf("%s is SECURITY DEFINER with search_path %v: pg_temp must be listed last", name, path))
		default:
			for _, s := range path {
				if s != "pg_catalog" && s != "pg_temp" {
					out = append(out, fmt.Sprintf("%s is SECURITY DEFINER with search_path %v: only pg_catalog and pg_temp may be listed", name, path))
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list functions: %w", err)
	}
	return out, nil
}

// Finding 6, second part: every function of the schema, enumerated, so a
// new one that breaks the rules fails here.
func TestSchemaFunctionsHardened(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var definers int64
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE pronamespace = 'recalc'::regnamespace AND prosecdef`).Scan(&definers); err != nil {
		t.Fatal(err)
	}
	if definers < 5 { // access_level twice, visible_records, invalid_records, log_record_change
		t.Fatalf("found %d SECURITY DEFINER functions in schema recalc, want at least 5", definers)
	}
	bad, err := functionViolations(ctx, b.admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range bad {
		t.Error(v)
	}

	// The check itself catches each kind of violation.
	t.Run("catches violations", func(t *testing.T) {
		tx, err := b.engine.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		exec(t, tx, `
			CREATE FUNCTION recalc.adv_open() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
			CREATE FUNCTION recalc.adv_public_path() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS 'SELECT 1';
			CREATE FUNCTION recalc.adv_temp_first() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = pg_temp, pg_catalog AS 'SELECT 1';
			CREATE FUNCTION recalc.adv_invoker() RETURNS int LANGUAGE sql AS 'SELECT 1';
			REVOKE EXECUTE ON FUNCTION recalc.adv_public_path(), recalc.adv_temp_first() FROM PUBLIC;
			GRANT EXECUTE ON FUNCTION recalc.access_level(text, text) TO PUBLIC`)
		bad, err := functionViolations(ctx, tx)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(bad, "\n")
		for _, want := range []string{
			"recalc.adv_open() is executable by PUBLIC",
			"recalc.adv_open() is SECURITY DEFINER without a pinned search_path",
			"recalc.adv_public_path() is SECURITY DEFINER with search_path [public pg_temp]: only",
			"recalc.adv_temp_first() is SECURITY DEFINER with search_path [pg_temp pg_catalog]: pg_temp must be listed last",
			"recalc.adv_invoker() is executable by PUBLIC",
			"recalc.access_level(text,text) is executable by PUBLIC",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("violations do not include %q; got:\n%s", want, got)
			}
		}
	})
}

// Finding 7: a record's field values never reach a job's error, a
// notification, the invalid-record reasons, the status or the logs; they
// name record ids only.
func TestNoFieldValuesLeak(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const secret = "123-45-6789"
	listener := b.connect(t, b.outsiderRole) // CONNECT only, enough to LISTEN
	exec(t, listener, `LISTEN recalc_jobs`)
	exec(t, listener, `LISTEN recalc_changes`)

	exec(t, b.engine, `ALTER TABLE recalc.record DROP CONSTRAINT record_fields_scalar`) // to store legacy shapes
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, fields) VALUES
		('leak_owner', 'account', 'nobody', jsonb_build_object('ssn', $1::text, 'priority', 3)),
		('leak_type', 'account', 'u1', jsonb_build_object('priority', $1::text)),
		('leak_nested', 'account', 'u1', jsonb_build_object('ssn', jsonb_build_object('v', $1::text))),
		('leak_string', 'account', 'u1', to_jsonb($1::text)),
		('leak_key', 'account', 'u1', jsonb_build_object($1::text, jsonb_build_array(1)))`, secret)
	exec(t, b.writer, `UPDATE recalc.record SET fields = jsonb_build_object('priority', jsonb_build_array($1::text)) WHERE id = 'hot1'`, secret)

	logs := newSyncBuffer()
	if _, err := engine.Run(ctx, b.engine, engine.Options{}, zerolog.New(logs)); err != nil {
		t.Fatalf("run: %v", err)
	}
	// A job fails: another writer holds a row lock the job's chunk needs.
	exec(t, b.writer, `UPDATE recalc.record SET fields = fields || '{"x": 1}' WHERE id = 'leak_type'`)
	lock, err := b.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, lock, `SELECT 1 FROM recalc.acl_record WHERE id = 'leak_type' FOR UPDATE`)
	_, runErr := engine.Run(ctx, b.engine, engine.Options{LockTimeout: 100 * time.Millisecond}, zerolog.New(logs))
	var jobErr string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(string_agg(error, E'\n'), '') FROM recalc.job WHERE status = 'failed'`).Scan(&jobErr); err != nil {
		t.Fatal(err)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if runErr == nil || jobErr == "" {
		t.Fatalf("a run blocked by a row lock should fail the job: run error %v, job error %q", runErr, jobErr)
	}
	if _, err := engine.Run(ctx, b.engine, engine.Options{}, zerolog.New(logs)); err != nil {
		t.Fatalf("run after the lock is released: %v", err)
	}
	b.wantInvalid(t, map[string]string{
		"leak_owner":  "account: " + sharing.InvalidOwner,
		"leak_nested": "account: " + sharing.InvalidFields,
		"leak_string": "account: " + sharing.InvalidFields,
		"leak_key":    "account: " + sharing.InvalidFields,
		"hot1":        "account: " + sharing.InvalidFields,
	})

	var payloads []string
	jobs := map[string]int{}
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if err != nil {
			break
		}
		payloads = append(payloads, n.Channel+": "+n.Payload)
		if n.Channel == "recalc_changes" && !strings.Contains(" INSERT UPDATE DELETE TRUNCATE import ", " "+n.Payload+" ") {
			t.Errorf("recalc_changes payload %q is not an operation", n.Payload)
		}
		if n.Channel == "recalc_jobs" {
			var p struct{ Status string }
			if err := json.Unmarshal([]byte(n.Payload), &p); err != nil {
				t.Errorf("job payload %q: %v", n.Payload, err)
			}
			jobs[p.Status]++
		}
	}
	if jobs["failed"] == 0 || jobs["done"] == 0 {
		t.Errorf("the outsider heard jobs %v, want a failed one and a done one", jobs)
	}
	status, err := json.Marshal(b.status(t))
	if err != nil {
		t.Fatal(err)
	}
	invalid, _ := json.Marshal(b.invalidRecords(t))
	for what, text := range map[string]string{
		"the failed run's error":        runErr.Error(),
		"recalc.job.error":              jobErr,
		"NOTIFY payloads":               strings.Join(payloads, "\n"),
		"recalc.invalid_record":         string(invalid),
		"status":                        string(status),
		"`recalc status`":               b.recalc(t, "status"),
		"the engine's logs":             logs.buf.String(),
		"the job rows (error and plan)": b.jobText(t),
	} {
		if strings.Contains(text, secret) {
			t.Errorf("%s contain the field value %s:\n%s", what, secret, text)
		}
	}
}

// jobText renders every job's error and plan.
func (b *bundle) jobText(t *testing.T) string {
	t.Helper()
	var s string
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(string_agg(coalesce(error, '') || plan::text, E'\n'), '') FROM recalc.job`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Finding 8: the writer could write any column and table. It may write only
// an application's columns of recalc.record; its writes are captured and
// the next run follows them.
func TestWriterConfinedToRecords(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	denied := []struct{ name, sql string }{
		{"insert with an explicit rid", `INSERT INTO recalc.record (rid, id, object, owner) OVERRIDING SYSTEM VALUE VALUES (999999, 'x1', 'account', 'u1')`},
		{"insert a root_id", `INSERT INTO recalc.record (id, object, owner, root_id) VALUES ('x2', 'account', 'u1', 'a1')`},
		{"update rid", `UPDATE recalc.record SET rid = DEFAULT WHERE id = 'a1'`},
		{"update root_id", `UPDATE recalc.record SET root_id = 'a4' WHERE id = 'a1'`},
		{"read root_id", `SELECT root_id FROM recalc.record WHERE id = 'a1'`}, // migration 084
		{"filter on root_id", `SELECT id FROM recalc.record WHERE root_id = 'a1'`},
		{"truncate recalc.record", `TRUNCATE recalc.record`},
		{"disable the capture triggers", `ALTER TABLE recalc.record DISABLE TRIGGER USER`},
		{"drop a capture trigger", `DROP TRIGGER record_delete_log ON recalc.record`},
		{"drop a constraint", `ALTER TABLE recalc.record DROP CONSTRAINT record_fields_scalar`},
		{"skip triggers as a replica", `SET session_replication_role = replica`},
		{"create a table in the schema", `CREATE TABLE recalc.mine (x int)`},
		{"create a function in the schema", `CREATE FUNCTION recalc.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'`},
	}
	// Every other table of the schema, enumerated so a new one is covered.
	// (An identity column can only be updated to DEFAULT: update another.)
	rows, err := b.admin.Query(ctx, `SELECT c.relname, a.attname FROM pg_class c
		CROSS JOIN LATERAL (SELECT attname FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped
			AND attidentity = '' AND attgenerated = '' ORDER BY attnum LIMIT 1) a
		WHERE c.relnamespace = 'recalc'::regnamespace AND c.relkind IN ('r', 'p') AND c.relname <> 'record' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var table, col string
	if _, err := pgx.ForEachRow(rows, []any{&table, &col}, func() error {
		seen[table] = true
		q, c := "recalc."+ident(table), ident(col)
		denied = append(denied,
			struct{ name, sql string }{"select " + table, `SELECT * FROM ` + q},
			struct{ name, sql string }{"insert into " + table, `INSERT INTO ` + q + ` DEFAULT VALUES`},
			struct{ name, sql string }{"update " + table, `UPDATE ` + q + ` SET ` + c + ` = ` + c},
			struct{ name, sql string }{"delete from " + table, `DELETE FROM ` + q},
			struct{ name, sql string }{"truncate " + table, `TRUNCATE ` + q})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"change", "share_input", "team", "principal", "grantee", "acl_share", "acl_record",
		"acl_member", "acl_object", "acl_user", "job", "chunk", "model_section", "applied_section", "deferral"} {
		if !seen[name] {
			t.Errorf("table recalc.%s not found", name)
		}
	}
	for _, d := range denied {
		t.Run(d.name, func(t *testing.T) {
			wantState(t, d.sql, rolledBack(b.writer, d.sql), insufficientPrivilege)
		})
	}

	// What it may do, captured even when it sets the engine's own session
	// marks (rooted: family roots already right; fixing_roots: not logged).
	tx, err := b.writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, tx, `SET LOCAL recalc.rooted = 'on'`)
	exec(t, tx, `SET LOCAL recalc.fixing_roots = 'on'`)
	exec(t, tx, `INSERT INTO recalc.record (id, object, owner) VALUES ('w1', 'account', 'u2')`)
	exec(t, tx, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('w1k', 'contact', 'u2', 'w1')`)
	exec(t, tx, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a1'`)
	exec(t, tx, `UPDATE recalc.record SET fields = '{"priority": 7}' WHERE id = 'a3'`)
	exec(t, tx, `DELETE FROM recalc.record WHERE id = 'a2'`)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Only the updates that kept id and parent are rooted, as the rows
	// themselves say (migration 014); the session mark counts for nothing.
	if n := b.count(t, `SELECT count(*) FROM recalc.change WHERE rooted AND NOT keys <@ '{a1,a3}'`); n != 0 {
		t.Errorf("%d of the writer's inserts and deletes are marked rooted", n)
	}
	if n := b.count(t, `SELECT count(*) FROM recalc.change WHERE keys && '{a1,a3}'`); n != 2 {
		t.Errorf("the writer's updates under recalc.fixing_roots logged %d changes, want 2", n)
	}
	b.run(t)
	b.wantAccess(t, map[string]string{
		"u2 w1": "all", "u3 a1": "all", "u1 a1": "none", "u2 a1": "none", // a new owner wipes manual shares
		"u4 a3": "read", "u2 a2": "none", "u3 a2": "none", "u1 a2": "none",
	})
	if l := b.access(t, "u2", "w1k"); l == "none" {
		t.Errorf("access_level(u2, w1k) = none, want the access of its parent's owner")
	}
	if n := b.count(t, `SELECT count(*) FROM recalc.record WHERE id = 'w1k' AND root_id = 'w1'`); n != 1 {
		t.Errorf("w1k's family root is not w1")
	}
	b.sameAsFull(t)
}

// Finding 10: TRUNCATE fired no capture trigger, so the share tables kept
// granting access to records that no longer existed.
func TestTruncateCaptured(t *testing.T) {
	t.Parallel()
	b := setup(t)
	before := b.accessAll(t)
	if before == "" {
		t.Fatal("no access before the truncate")
	}
	exec(t, b.engine, `TRUNCATE recalc.record`)
	if s, tm := b.count(t, `SELECT count(*) FROM recalc.share_input`), b.count(t, `SELECT count(*) FROM recalc.team`); s != 0 || tm != 0 {
		t.Errorf("after TRUNCATE, %d shares and %d team entries remain", s, tm)
	}
	rep := b.run(t)
	if rep.Kind != "full" {
		t.Errorf("the run after a truncate was %s, want full", rep.Kind)
	}
	ids := []string{"a1", "a2", "a3", "a4", "k4", "hot1", "p1"}
	if got := b.accessAll(t, ids...); got != "" {
		t.Errorf("truncated records still give access:\n%s", got)
	}
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner) VALUES ('a1', 'account', 'u1')`)
	b.run(t)
	b.wantAccess(t, map[string]string{"u1 a1": "all", "u2 a1": "none", "u3 a1": "none"})
	b.importJSON(t, baseModel)
	b.run(t)
	if got := b.accessAll(t); got != before {
		t.Errorf("after importing the model again, access differs from before the truncate\nbefore:\n%s\nafter:\n%s", before, got)
	}
	b.sameAsFull(t)
}

// Finding 11: records the writer inserts without a family root (it cannot
// set one) are materialized by the next run, incremental or full, exactly
// as if they had been imported.
func TestRootlessInserts(t *testing.T) {
	t.Parallel()
	for _, full := range []bool{false, true} {
		name := "incremental"
		if full {
			name = "full"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner) VALUES ('n1', 'account', 'u2')`)
			exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, parent) VALUES
				('n1k', 'contact', 'u2', 'n1'), ('n1o', 'opportunity', 'u3', 'n1'), ('a4k', 'contact', 'u3', 'a4')`)
			// A child before its parent, and a contact moved to a new account.
			exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('n2k', 'contact', 'u1', 'n2')`)
			exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, fields) VALUES ('n2', 'account', 'u4', '{"priority": 3}')`)
			exec(t, b.writer, `UPDATE recalc.record SET parent = 'n1' WHERE id = 'k4'`)
			if n := b.count(t, `SELECT count(*) FROM recalc.record WHERE root_id IS NULL`); n != 6 {
				t.Fatalf("%d records without a family root, want the 6 inserted", n)
			}
			if full {
				b.full(t)
			} else if rep := b.run(t); rep.Kind != "incremental" {
				t.Errorf("run was %s, want incremental", rep.Kind)
			}
			roots := map[string]string{}
			rows, err := b.admin.Query(context.Background(), `SELECT id, coalesce(root_id, '') FROM recalc.record`)
			if err != nil {
				t.Fatal(err)
			}
			var id, root string
			if _, err := pgx.ForEachRow(rows, []any{&id, &root}, func() error { roots[id] = root; return nil }); err != nil {
				t.Fatal(err)
			}
			for id, want := range map[string]string{"n1": "n1", "n1k": "n1", "n1o": "n1", "a4k": "a4", "n2k": "n2", "n2": "n2", "k4": "n1"} {
				if roots[id] != want {
					t.Errorf("family root of %s = %q, want %q", id, roots[id], want)
				}
			}
			b.wantAccess(t, map[string]string{"u2 n1": "all", "u3 n1o": "all", "u4 n2": "all", "u4 a4": "none", "u2 a4": "none"})
			for _, pair := range [][2]string{{"u2", "n1k"}, {"u2", "k4"}, {"u4", "n2k"}} {
				if l := b.access(t, pair[0], pair[1]); l == "none" {
					t.Errorf("access_level(%s, %s) = none, want the access of its parent's owner", pair[0], pair[1])
				}
			}
			got := b.accessAll(t)

			// The same records imported: the import computes the roots itself.
			var doc map[string]any
			if err := json.Unmarshal([]byte(baseModel), &doc); err != nil {
				t.Fatal(err)
			}
			var recs []map[string]any
			rows, err = b.admin.Query(context.Background(), `SELECT jsonb_strip_nulls(jsonb_build_object('id', id, 'object', object,
				'owner', owner, 'parent', parent, 'fields', fields))::text FROM recalc.record ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			var text string
			if _, err := pgx.ForEachRow(rows, []any{&text}, func() error {
				var r map[string]any
				recs = append(recs, r)
				return json.Unmarshal([]byte(text), &recs[len(recs)-1])
			}); err != nil {
				t.Fatal(err)
			}
			doc["records"] = recs
			raw, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			b.importJSON(t, string(raw))
			b.full(t)
			if imported := b.accessAll(t); imported != got {
				t.Errorf("access after plain-SQL inserts differs from the same records imported\nplain SQL:\n%s\nimported:\n%s", got, imported)
			}
		})
	}
}

// `recalc plan` failed after a plain-SQL record change ("cannot execute
// UPDATE in a read-only transaction"): it fixes family roots to plan. It now
// works, and stores nothing.
func TestPlanAfterPlainSQL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner) VALUES ('n1', 'account', 'u2')`)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('n1k', 'contact', 'u2', 'n1')`)
	exec(t, b.writer, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'a3'`)
	state := func() string {
		var s string
		if err := b.admin.QueryRow(ctx, `SELECT (SELECT coalesce(string_agg(seq || ':' || kind || ':' || array_to_string(keys, ','), ' ' ORDER BY seq), '') FROM recalc.change)
			|| ' | ' || (SELECT coalesce(string_agg(id, ',' ORDER BY id), '') FROM recalc.record WHERE root_id IS NULL)
			|| ' | ' || (SELECT count(*) FROM recalc.job)`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := state()
	if out := b.recalc(t, "plan"); !strings.Contains(out, "incremental") || !strings.Contains(out, "records inserted, updated or deleted") {
		t.Errorf("recalc plan shows no incremental plan of the record changes:\n%s", out)
	}
	var pl engine.Planned
	if err := json.Unmarshal([]byte(b.recalc(t, "plan", "--format", "json")), &pl); err != nil {
		t.Fatalf("recalc plan --format json: %v", err)
	}
	if pl.Kind != "incremental" || pl.Records["account"] < 2 {
		t.Errorf("recalc plan --format json: %s plan of %v records, want an incremental one with n1 and a3", pl.Kind, pl.Records)
	}
	if after := state(); after != before {
		t.Errorf("recalc plan stored something:\nbefore: %s\nafter:  %s", before, after)
	}
	b.wantAccess(t, map[string]string{"u2 a3": "none", "u2 n1": "none"})
	b.run(t)
	b.wantAccess(t, map[string]string{"u2 a3": "all", "u2 n1": "all"})
	b.sameAsFull(t)
}

// TestEngineLocksNotTakeable: the engine's model and staging locks are row
// locks that only the engine can take (migration 015). The writer, the
// reader and the outsider are refused the rows (42501), and one of them
// holding the advisory keys those locks once were stalls nothing: an import
// and a run finish while it holds them.
func TestEngineLocksNotTakeable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for role, pool := range map[string]*pgxpool.Pool{"writer": b.writer, "reader": b.reader, "outsider": b.outsider} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, `SELECT FROM recalc.engine_lock FOR UPDATE`)
		_ = tx.Rollback(ctx)
		if pg.Code(err) != insufficientPrivilege {
			t.Errorf("%s locking recalc.engine_lock: %v, want permission denied (%s)", role, err, insufficientPrivilege)
		}
	}
	hold, err := b.writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx) //nolint:errcheck // rolled back either way

	// 29283 is "rc": the old keys of the model (2) and staging (3) locks.
	exec(t, hold, `SELECT pg_advisory_xact_lock(29283, 2), pg_advisory_xact_lock(29283, 3)`)
	// Each waited without a timeout for the advisory lock it stood for.
	b.importJSON(t, baseModel)
	exec(t, b.writer, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'a1'`)
	b.run(t)
	b.wantAccess(t, map[string]string{"u2 a1": "all"})
	b.full(t)
	b.sameAsFull(t)
}
