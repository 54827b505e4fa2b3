package engine_test

import (
	"math/rand/v2"
	"testing"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// part maps an explain reason to the part of the spec the oracle's
// Breakdown names.
func part(r sharing.Reason, cbp bool) string {
	switch r.Kind {
	case "implicit_child", "implicit_parent", "owd":
		return r.Kind
	case "controlled_by_parent":
		return "parent"
	}
	if cbp {
		return "owner"
	}
	return "explicit"
}

// TestExplainIsComplete holds `recalc explain` to the oracle: for every
// (user, record) pair of random models, each part of the spec that grants
// access appears among the reasons at exactly the oracle's level, no reason
// claims more, every reason names how the user receives it, and the
// explanation agrees with the materialized level.
func TestExplainIsComplete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for seed := 0; seed < 3; seed++ {
		m := oracle.RandomModel(rand.New(rand.NewPCG(uint64(seed), 7)), 30)
		b.importModel(t, m, nil)
		b.full(t, engine.Options{})
		breakdown := oracle.Breakdown(m)
		cbp := map[string]bool{}
		for _, o := range m.Objects {
			cbp[o.Name] = o.CBP()
		}
		for _, r := range m.Records {
			for _, u := range m.Users {
				e, err := engine.Explain(b.ctx, b.pool, u.ID, r.ID)
				if err != nil {
					t.Fatal(err)
				}
				if e.Note != "" && u.Active {
					t.Fatalf("seed %d: explain %s on %s: %s", seed, u.ID, r.ID, e.Note)
				}
				got := map[string]model.Level{}
				for _, reason := range e.Reasons {
					p := part(reason, cbp[r.Object])
					got[p] = max(got[p], reason.Level)
					if reason.Detail == "" || (reason.Via == "" && reason.Kind != "controlled_by_parent") {
						t.Fatalf("seed %d: reason without provenance for %s on %s: %+v", seed, u.ID, r.ID, reason)
					}
				}
				want := breakdown(u.ID, r.ID)
				if len(got) != len(want) {
					t.Fatalf("seed %d: explain %s on %s %s gives parts %v, oracle %v\nreasons: %+v", seed, u.ID, r.Object, r.ID, got, want, e.Reasons)
				}
				for p, l := range want {
					if got[p] != l {
						t.Fatalf("seed %d: explain %s on %s %s: %s at %s, oracle %s\nreasons: %+v", seed, u.ID, r.Object, r.ID, p, got[p], l, e.Reasons)
					}
				}
			}
		}
	}
}
