package engine_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
)

// manyFamilies is a model file of n single-record families owned by
// owners in turn: more than the 1,000 families below which the planner
// never switches an incremental plan to a full one.
func manyFamilies(t *testing.T, n int, owners ...string) string {
	t.Helper()
	recs := make([]map[string]any, n)
	for i := range recs {
		recs[i] = map[string]any{"id": fmt.Sprintf("a%05d", i), "object": "account", "owner": owners[i%len(owners)]}
	}
	b, err := json.Marshal(map[string]any{"version": 1, "records": recs})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInPlacePlansStayIncremental: with Options.InPlace, a change to most
// families and a truncate of the records, which the planner otherwise
// turns into a full job swapping in new tables, are materialized by an
// incremental job rewriting the live tables; either way access equals the
// oracle's.
func TestInPlacePlansStayIncremental(t *testing.T) {
	t.Parallel()
	const base = `{"version": 1,
	  "objects": [{"name": "account", "internal_owd": "private", "external_owd": "private"}],
	  "roles": [{"id": "boss"}, {"id": "rep", "parent": "boss"}],
	  "users": [{"id": "ann", "role": "boss"}, {"id": "bo", "role": "rep"}, {"id": "cy", "role": "rep"}]}`
	for _, tc := range []struct {
		name    string
		inPlace bool
		change  func(t *testing.T, b *bundle)
		want    string // the job kind
	}{
		{"most families change, swapping", false, changeOwners, "full"},
		{"most families change, in place", true, changeOwners, "incremental"},
		{"a truncate, swapping", false, truncateRecords, "full"},
		{"a truncate, in place", true, truncateRecords, "incremental"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.importFile(t, base)
			b.importFile(t, manyFamilies(t, 1200, "bo", "cy"))
			b.run(t, engine.Options{Workers: 2, ChunkSize: 100})
			b.checkOracle(t, "after the first run")
			tc.change(t, b)
			rep := b.run(t, engine.Options{Workers: 2, ChunkSize: 100, InPlace: tc.inPlace})
			if string(rep.Kind) != tc.want {
				t.Fatalf("the run made a %q job, want %q: %s", rep.Kind, tc.want, b.lastPlan())
			}
			b.checkOracle(t, "after "+tc.name)
		})
	}
}

// changeOwners gives every record another owner.
func changeOwners(t *testing.T, b *bundle) {
	b.importFile(t, manyFamilies(t, 1200, "cy", "bo"))
}

// truncateRecords truncates recalc.record, as an application's bulk
// reload would.
func truncateRecords(t *testing.T, b *bundle) {
	b.exec(t, `TRUNCATE recalc.record`)
	m, f, err := model.Parse(strings.NewReader(`{"version": 1, "records": []}`))
	if err != nil {
		t.Fatal(err)
	}
	b.cur = oracle.Merge(b.cur, m, f)
}
