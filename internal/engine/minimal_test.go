package engine_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// minimalOrg has 100 accounts, each with two cases. Account tier cycles
// through 0..4; rule acct_tier shares tier-1 accounts with group g1; rule
// case_rep shares cases owned by group g2's members (role rep) with g3.
func minimalOrg() string {
	var recs []string
	owners := []string{"u1", "u2", "u3", "u4"}
	for i := 0; i < 100; i++ {
		recs = append(recs, fmt.Sprintf(`{"object":"account","id":"a%03d","owner":"%s","fields":{"tier":%d}}`, i, owners[i%4], i%5))
		for j := 0; j < 2; j++ {
			recs = append(recs, fmt.Sprintf(`{"object":"case","id":"c%03d_%d","owner":"%s","parent":"a%03d"}`, i, j, owners[(i+j+1)%4], i))
		}
	}
	return `{"objects":[{"name":"account","internal_owd":"private"},{"name":"case","parent":"account","internal_owd":"private"}],
	"roles":[{"id":"ceo"},{"id":"vp","parent":"ceo","case_access":"read"},{"id":"rep","parent":"vp"},{"id":"ops","parent":"ceo"}],
	"users":[{"id":"u1","role":"vp"},{"id":"u2","role":"rep"},{"id":"u3","role":"rep"},{"id":"u4","role":"ops"},{"id":"u5","role":"ops"},{"id":"boss","role":"ceo"}],
	"groups":[{"id":"g1","members":["user:u4"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}],
	"rules":[{"id":"acct_tier","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"tier","op":"equals","value":1}]}},
	         {"id":"case_rep","object":"case","type":"owner","source":"group:g2","target":"group:g3","access":"edit"}],
	"records":[` + strings.Join(recs, ",") + `]}`
}

// TestMinimalRecalculation applies one change of each kind and checks, on
// the counts the run reports, that it rewrote no more than that change means,
// and that access still equals the oracle's.
func TestMinimalRecalculation(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{Workers: 2, ChunkSize: 10})
	for _, tc := range []struct {
		name    string
		file    string
		records int64 // records recomputed
		rows    bool  // whether share rows may change
		closure bool  // whether the closure must change
	}{
		{"group membership", `{"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`, 0, false, true},
		{"OWD tightened and opened", `{"objects":[{"name":"account","internal_owd":"public_read_only"},{"name":"case","parent":"account","internal_owd":"private"}]}`, 0, false, false},
		{"role move", `{"roles":[{"id":"ceo"},{"id":"vp","parent":"ceo","case_access":"read"},{"id":"rep","parent":"ops"},{"id":"ops","parent":"ceo"}]}`, 0, false, true},
		{"user deactivated", `{"users":[{"id":"u1","role":"vp"},{"id":"u2","role":"rep"},{"id":"u3","role":"rep"},{"id":"u4","role":"ops"},{"id":"u5","role":"ops","active":false},{"id":"boss","role":"ceo"}]}`, 0, false, true},
		// Tier 1 and tier 2 accounts (20 each) and their two cases: 120 records.
		{"criteria rule changed", `{"rules":[{"id":"acct_tier","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"tier","op":"equals","value":2}]}},
			{"id":"case_rep","object":"case","type":"owner","source":"group:g2","target":"group:g3","access":"edit"}]}`, 120, true, false},
		// vp's case access reaches cases of accounts owned by u1 (25 accounts, 75 records).
		{"role child access changed", `{"roles":[{"id":"ceo"},{"id":"vp","parent":"ceo","case_access":"edit"},{"id":"rep","parent":"ops"},{"id":"ops","parent":"ceo"}]}`, 75, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.importFile(t, tc.file)
			rep := b.run(t, engine.Options{Workers: 2, ChunkSize: 10})
			if rep.Kind != "incremental" {
				t.Fatalf("ran a %s job, want incremental; plan: %s", rep.Kind, b.lastPlan())
			}
			if rep.Records != tc.records {
				t.Errorf("recomputed %d records, want %d; plan: %s", rep.Records, tc.records, b.lastPlan())
			}
			written := rep.RowsAdded + rep.RowsRemoved + rep.RowsUpdated
			if !tc.rows && written != 0 {
				t.Errorf("wrote %d share rows, want 0", written)
			}
			if tc.rows && written == 0 {
				t.Errorf("wrote no share rows; the change should have changed some")
			}
			if got := rep.ClosureAdded + rep.ClosureRemoved; tc.closure != (got > 0) {
				t.Errorf("closure entries written: %d, want some: %v", got, tc.closure)
			}
			b.checkOracle(t, "after the change")
		})
	}
	// A run with nothing changed does nothing.
	rep, err := engine.Run(b.ctx, b.pool, engine.Options{}, zerolog.Nop())
	if err != nil || !rep.Nothing {
		t.Errorf("run after no change: %+v, %v; want nothing to do", rep, err)
	}
}
