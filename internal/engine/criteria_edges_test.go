package engine_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// critEdgeFields are field values at the edges of docs/model.md's criteria
// semantics, as JSON stored in recalc.record by plain SQL (an import would
// round the numbers to float64 first): white space Go's strings.TrimSpace
// trims and white space it keeps, empty strings, strings that look like
// numbers or booleans, decimals beyond float64's precision and range,
// subnormals and integers past 2^53 and 2^63.
var critEdgeFields = []string{
	`"a"`, `" a"`, `"a "`, `"\ta"`, `"a\n"`, `"\u000ba"`, `"\fa"`, `"\ra"`, `"\u0085a"`, `"\u00a0a"`,
	`"\u1680a"`, `"\u2028a"`, `"\u3000a"`, `"\ufeffa"`, `"\u200ba"`, `"\u001ca"`, `"\u001fa"`,
	`""`, `" "`, `","`, `"a,b"`, `"b"`, `"ab   "`, `"A"`, `"1"`, `"-0"`, `"true"`, `"9007199254740993"`, `"NaN"`,
	`0`, `-0`, `0.0`, `1e-400`, `-1e-400`, `5e-324`, `1e-320`, `0.1`, `0.1000000000000000000001`,
	`0.30000000000000004`, `0.3`, `1`, `1.0`, `9007199254740992`, `9007199254740993`, `9223372036854775807`,
	`9223372036854775808`, `123456789012345678901234567890`, `1e308`, `1.7976931348623157e308`,
	`1.7976931348623158e308`, `-1.7976931348623158e308`, `true`, `false`, `null`,
}

// critEdgeConds are conditions on field f at the same edges: lists whose parts
// are wrapped in each kind of white space, empty parts, and thresholds
// that a SQL filter and Go's float64 could read differently.
var critEdgeConds = []string{
	`"equals", "value": "a"`, `"equals", "value": "x,a"`, `"equals", "value": "x, a "`,
	`"equals", "value": "x,\ta\n"`, `"equals", "value": "x,\u000ba\f"`, `"equals", "value": "x,\ra"`,
	`"equals", "value": "x,\u0085a"`, `"equals", "value": "x,\u00a0a"`, `"equals", "value": "x,\u1680a\u2028"`,
	`"equals", "value": "x,\u3000a"`, `"equals", "value": "x,\ufeffa"`, `"equals", "value": "x,\u200ba"`,
	`"equals", "value": "x,\u001ca"`, `"equals", "value": "x,\u001fa\u001f"`, `"equals", "value": "a,,b"`,
	`"equals", "value": ","`, `"equals", "value": " , "`, `"equals", "value": "\u00a0,\u3000"`,
	`"not_equals", "value": "x, a"`, `"not_equals", "value": "a,,b"`, `"not_equals", "value": " a"`,
	`"equals", "value": "1"`, `"equals", "value": "true"`, `"equals", "value": "ab"`, `"equals", "value": "ab   "`,
	`"lt", "value": "a"`, `"ge", "value": " "`, `"contains", "value": ","`, `"starts_with", "value": " "`,
	`"not_contains", "value": "a"`,
	`"equals", "value": 0`, `"equals", "value": -0`, `"lt", "value": 0`, `"le", "value": 0`, `"gt", "value": 0`,
	`"ge", "value": 0`, `"not_equals", "value": 0`, `"equals", "value": 5e-324`, `"gt", "value": 5e-324`,
	`"equals", "value": 0.1`, `"gt", "value": 0.1`, `"equals", "value": 0.3`, `"equals", "value": 0.30000000000000004`,
	`"lt", "value": 0.30000000000000004`, `"equals", "value": 1`, `"equals", "value": 9007199254740993`,
	`"lt", "value": 9007199254740993`, `"equals", "value": 9223372036854775808`, `"ge", "value": 9223372036854775807`,
	`"equals", "value": 1.2345678901234568e29`, `"equals", "value": 1e308`, `"ge", "value": 1e308`,
	`"equals", "value": 1.7976931348623157e308`, `"le", "value": -1.7976931348623157e308`,
	`"equals", "value": true`, `"not_equals", "value": true`, `"equals", "value": false`,
}

// critEdgeLogics are whole criteria on field f whose filter logic
// separates its tokens with each kind of white space docs/model.md names
// (unicode.IsSpace), or is blank with it: the engine's Go, its SQL filter
// (none for logic of its own) and the oracle must read them alike.
var critEdgeLogics = []string{
	`{"conditions": [{"field": "f", "op": "equals", "value": "a"}, {"field": "f", "op": "equals", "value": "x,\u00a0a"}], "logic": "1\u00a0OR\u30002"}`,
	`{"conditions": [{"field": "f", "op": "equals", "value": "a"}], "logic": "NOT\u20281"}`,
	`{"conditions": [{"field": "f", "op": "not_equals", "value": "b"}, {"field": "f", "op": "lt", "value": 1}], "logic": "\u0085(1\u2029AND\u202fNOT\u205f2)\u1680"}`,
	`{"conditions": [{"field": "f", "op": "equals", "value": "a"}, {"field": "f", "op": "ge", "value": 0}], "logic": "\u000b1\u000cOR\u2000\u200a2\t"}`,
	`{"conditions": [{"field": "f", "op": "equals", "value": "x, a"}, {"field": "f", "op": "gt", "value": 0.1}], "logic": "\u00a0\u3000"}`,
}

// edgeConds are critEdgeConds, then critEdgeLogics.
func edgeConds() []string {
	return append(critEdgeConds[:len(critEdgeConds):len(critEdgeConds)], critEdgeLogics...)
}

// edgeRulesPerObject stays under model.MaxCriteriaRulesPerObject.
const edgeRulesPerObject = 40

// edgeBatch is how many conditions TestCriteriaEdgeRuleChanges moves
// rules to in one import, each rule on an object of its own: the plan
// selects a changed rule's records on its object alone (a criteria
// selector), so no rule's SQL filter lets through a record another rule's
// filter dropped; and at most 16 × 55 records are selected, under the
// 1,000 families past which a plan may become full. One condition an import
// took 126 jobs over 55 records.
const edgeBatch = 16

// edgeOptions run the edge tests' jobs in small chunks.
var edgeOptions = engine.Options{Workers: 2, ChunkSize: 7}

// TestCriteriaEdgeRuleChanges moves rules back and forth between a
// condition that matches no record and each edge condition: rule rj, alone
// on object edgej__c with a record for each edge field value, takes
// condition k*edgeBatch+j in the k-th round. The incremental run
// recomputes the records the old or the new condition matches, selected by
// the planner's SQL filter (sharetable's criteriaFilter) before Go's
// Criteria.Match decides: a record the filter drops keeps the access the
// old condition gave it. After every run the access must be the oracle's,
// on the fields as Go reads them back, and a full run must find the tables
// identical.
func TestCriteriaEdgeRuleChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	none := `"equals", "value": "matches no record"`
	nones := slices.Repeat([]string{none}, edgeBatch)
	b.importFile(t, edgeModel(edgeBatch, 1, nones))
	b.writeEdgeFields(t, 0)
	b.run(t, edgeOptions)
	conds := edgeConds()
	for from := 0; from < len(conds); from += edgeBatch {
		moved := slices.Clone(nones)
		copy(moved, conds[from:min(from+edgeBatch, len(conds))])
		for _, step := range []struct {
			how   string
			rules []string
		}{{"to", moved}, {"from", nones}} {
			b.importFile(t, edgeRules(edgeBatch, 1, step.rules))
			b.checkEdgeRun(t, fmt.Sprintf("rules moved %s conditions %d.. (rule rj on object edgej__c: condition %d+j)", step.how, from, from), true)
		}
	}
}

// TestCriteriaEdgeRecordChanges gives rules every edge condition and moves
// every record, written with plain SQL as an application or an attached
// table writes it, from one edge field value to another. After every run
// the access must be the oracle's, on the fields as Go reads them back,
// and a full run must find the tables identical.
func TestCriteriaEdgeRecordChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	objects := (len(edgeConds()) + edgeRulesPerObject - 1) / edgeRulesPerObject
	b.importFile(t, edgeModel(objects, edgeRulesPerObject, edgeConds()))
	b.writeEdgeFields(t, 0)
	b.run(t, edgeOptions)
	b.checkEdgeRun(t, "first run", true)
	for step := 1; step < 6; step++ {
		b.writeEdgeFields(t, 7*step+3)
		b.checkEdgeRun(t, fmt.Sprintf("step %d", step), true)
	}
}

// writeEdgeFields sets field f of record edgeO:k to critEdgeFields[k +
// shift], modulo their number, with plain SQL: an import would round its
// numbers to float64 first.
func (b *bundle) writeEdgeFields(t *testing.T, shift int) {
	t.Helper()
	parts := make([]string, len(critEdgeFields))
	for i, f := range critEdgeFields {
		parts[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'::jsonb"
	}
	b.exec(t, fmt.Sprintf(`UPDATE recalc.record SET fields = jsonb_build_object('f', (ARRAY[%s])[1 + (split_part(id, ':', 2)::int + %d) %% %d])
		WHERE object LIKE 'edge%%'`, strings.Join(parts, ", "), shift, len(critEdgeFields)))
}

// checkEdgeRun runs an incremental job, holds its access to the oracle's
// and, when full is set, its tables to those a full run then builds.
func (b *bundle) checkEdgeRun(t *testing.T, after string, full bool) {
	t.Helper()
	rep, err := engine.Run(b.ctx, b.pool, edgeOptions, zerolog.Nop())
	if err != nil {
		t.Fatalf("%s: run: %v", after, err)
	}
	if rep.Kind == queue.Full {
		t.Fatalf("%s: the run was full, not incremental: %s", after, b.lastPlan())
	}
	b.checkEdgeOracle(t, after)
	if !full {
		return
	}
	incremental := testdb.Materialized(t, b.pool)
	b.full(t, edgeOptions)
	if got := testdb.Materialized(t, b.pool); got != incremental {
		t.Fatalf("%s: incremental tables differ from a full run\n%s", after, oracle.Diff(got, incremental))
	}
}

// edgeModel is the model: objects edge0__c.., each with one record per
// edge field value (owned by o; the test writes their fields), and the
// rules of edgeRules(objects, perObject, conds).
func edgeModel(objects, perObject int, conds []string) string {
	users := []string{`{"id": "o"}`}
	for i := range conds {
		users = append(users, fmt.Sprintf(`{"id": "u%d"}`, i))
	}
	var objs, records []string
	for o := 0; o < objects; o++ {
		objs = append(objs, fmt.Sprintf(`{"name": "edge%d__c", "internal_owd": "private", "external_owd": "private"}`, o))
		for k := range critEdgeFields {
			records = append(records, fmt.Sprintf(`{"object": "edge%d__c", "id": "edge%d:%d", "owner": "o"}`, o, o, k))
		}
	}
	rules := strings.TrimSuffix(strings.TrimPrefix(edgeRules(objects, perObject, conds), "{"), "}")
	return `{"version": 1, "objects": [` + strings.Join(objs, ",") + `], "roles": [], "groups": [], "territories": [],
		"users": [` + strings.Join(users, ",") + `], ` + rules + `, "records": [` + strings.Join(records, ",\n") + `]}`
}

// edgeRules is a rules section: rule ri, on object edge(i /
// perObject)__c (the last object at most), tests field f with conds[i]
// (whole criteria when it is a JSON object) and grants read to user ui.
func edgeRules(objects, perObject int, conds []string) string {
	rules := make([]string, len(conds))
	for i, c := range conds {
		crit := `{"conditions": [{"field": "f", "op": ` + c + `}]}`
		if strings.HasPrefix(c, "{") {
			crit = c
		}
		rules[i] = fmt.Sprintf(`{"id": "r%d", "object": "edge%d__c", "type": "criteria", "target": "user:u%d", "access": "read",
			"criteria": %s}`, i, min(i/perObject, objects-1), i, crit)
	}
	return `{"rules": [` + strings.Join(rules, ",\n") + `]}`
}

// checkEdgeOracle holds the materialized access to the oracle's on the
// stored model, each record's fields as Go reads them from recalc.record.
func (b *bundle) checkEdgeOracle(t *testing.T, after string) {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT id, fields::text FROM recalc.record`)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]model.Fields{}
	var id, text string
	if _, err := pgx.ForEachRow(rows, []any{&id, &text}, func() error {
		f, err := model.ParseFields([]byte(text))
		if err != nil {
			return fmt.Errorf("record %s: fields %s: %w", id, text, err)
		}
		stored[id] = f
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m := *b.cur
	m.Records = append([]model.Record(nil), b.cur.Records...)
	for i := range m.Records {
		m.Records[i].Fields = stored[m.Records[i].ID]
	}
	if got, want := b.access(t), oracle.CSV(oracle.Access(&m)); got != want {
		t.Fatalf("%s: access differs from the oracle\n%s\nplan: %s", after, oracle.Diff(want, got), b.lastPlan())
	}
}
