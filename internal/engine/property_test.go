package engine_test

import (
	"math/rand/v2"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// shardSeeds is how many seeds of TestIncrementalMatchesFullAndOracle one
// parallel subtest runs, on a database of its own.
const shardSeeds = 20

// TestIncrementalMatchesFullAndOracle imports random models and random
// multi-step change sequences. After every step an incremental run must give
// the oracle's access, and a full run afterwards (by staging tables on a
// seed's first step, in place on the others) must find the materialized
// tables already identical, row for row.
//
// Each seed's model is imported over the last one's. The seeds run in
// shards, in parallel: a shard starts from the model the seed before it
// left, which it computes without a database (the steps are a function of
// the seed and that model) and imports whole.
func TestIncrementalMatchesFullAndOracle(t *testing.T) {
	t.Parallel()
	first, n := testkit.Seeds("RECALC", 200, 0)
	opt := engine.Options{Workers: 2, ChunkSize: 7} // small chunks: families must stay whole across many
	testkit.Shards(t, first, n, shardSeeds, func(t *testing.T, from, to int) {
		b := setup(t)
		if from > first {
			b.cur = testkit.StoredBefore(first, from, func(seed int, prev *model.Model) *model.Model {
				steps := propertySteps(seed, prev)
				return steps[len(steps)-1].cur
			})
			b.importModel(t, b.cur, nil)
			b.run(t, opt)
		}
		for seed := from; seed < to; seed++ {
			for i, s := range propertySteps(seed, b.cur) {
				b.importModel(t, s.file, s.present)
				b.cur = s.cur
				if _, err := b.cur.Validate(); err != nil {
					t.Fatalf("seed %d step %d: the merged model is invalid: %v", seed, i, err)
				}
				if _, err := engine.Run(b.ctx, b.pool, opt, zerolog.Nop()); err != nil {
					t.Fatalf("seed %d step %d: run: %v", seed, i, err)
				}
				rows := oracle.Access(b.cur)
				want := oracle.CSV(rows)
				if got := b.access(t); got != want {
					t.Fatalf("seed %d step %d: access differs from the oracle\n%s\nplan: %s", seed, i, oracle.Diff(want, got), b.lastPlan())
				}
				checkAccessLevel(t, b, rows, s.samples)
				incremental := testdb.Materialized(t, b.pool)
				// Both ways compute every family from scratch. A seed's first
				// step swaps new tables in, so that its four changes are
				// recalculated over swapped tables; the others recompute in
				// place, which writes nothing where the tables are right and
				// costs about a third of a swap (index builds, DDL, ANALYZE).
				// That a swap builds what an in-place run leaves is
				// TestInPlaceFullMatchesBlueGreen's.
				full := opt
				full.InPlace = i > 0
				if _, err := engine.Full(b.ctx, b.pool, full, zerolog.Nop()); err != nil {
					t.Fatalf("seed %d step %d: full run: %v", seed, i, err)
				}
				if got := testdb.Materialized(t, b.pool); got != incremental {
					t.Fatalf("seed %d step %d: incremental tables differ from a full run (in place: %v)\n%s", seed, i, full.InPlace, oracle.Diff(got, incremental))
				}
			}
		}
	})
}

// propertyStep is one import of a property test's seed.
type propertyStep struct {
	file    *model.Model
	present []string     // the file's sections (nil: every one)
	cur     *model.Model // the model stored after the import
	samples [][2]string  // (user, record) pairs to ask recalc.access_level about
}

// propertySteps generates seed's steps over the stored model prev: a fresh
// random model with every section, then four random changes.
func propertySteps(seed int, prev *model.Model) []propertyStep {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	fresh := oracle.RandomModel(rng, 10+rng.IntN(50))
	cur := oracle.Merge(prev, fresh, testkit.EverySection())
	steps := []propertyStep{{file: fresh, cur: cur, samples: accessSamples(rng, cur)}}
	for len(steps) < 5 {
		next, file := oracle.Mutate(rng, cur)
		cur = oracle.Merge(cur, next, file)
		steps = append(steps, propertyStep{file: next, present: file.Present(), cur: cur, samples: accessSamples(rng, cur)})
	}
	return steps
}

// accessSamples picks 30 random (user, record) pairs of m, inactive and
// unknown users included.
func accessSamples(rng *rand.Rand, m *model.Model) [][2]string {
	var out [][2]string
	for i := 0; i < 30 && len(m.Records) > 0; i++ {
		rec := m.Records[rng.IntN(len(m.Records))].ID
		user := "nobody"
		if len(m.Users) > 0 && rng.IntN(10) > 0 {
			user = m.Users[rng.IntN(len(m.Users))].ID
		}
		out = append(out, [2]string{user, rec})
	}
	return out
}

// checkAccessLevel asks recalc.access_level, the one-query SQL function,
// about pairs of users and records (all in one statement), and holds it to
// the oracle's rows.
func checkAccessLevel(t *testing.T, b *bundle, rows []oracle.Row, pairs [][2]string) {
	t.Helper()
	want := map[[2]string]model.Level{}
	for _, r := range rows {
		want[[2]string{r.User, r.Record}] = r.Level
	}
	for i, got := range testkit.AccessLevels(t, b.ctx, b.pool, pairs) {
		p := pairs[i]
		if w := want[p].String(); got != w {
			t.Fatalf("access_level(%s, %s) = %s, oracle says %s", p[0], p[1], got, w)
		}
	}
}

// TestInPlaceFullMatchesBlueGreen checks that a full run in place, over
// tables computed from an older model (records since deleted included),
// leaves exactly what a blue/green full run builds, and the oracle's access.
func TestInPlaceFullMatchesBlueGreen(t *testing.T) {
	t.Parallel()
	opt := engine.Options{Workers: 2, ChunkSize: 5}
	first, n := testkit.Seeds("RECALC", 40, 0)
	testkit.Shards(t, first, n, inPlaceShardSeeds, func(t *testing.T, from, to int) {
		b := setup(t)
		if from > first {
			b.cur = testkit.StoredBefore(first, from, func(seed int, prev *model.Model) *model.Model {
				return inPlaceStep(seed, prev)
			})
			b.importModel(t, b.cur, nil)
			b.run(t, opt)
		}
		for seed := from; seed < to; seed++ {
			fresh, next, file := inPlaceModels(seed, b.cur)
			b.importModel(t, fresh, nil)
			b.cur = oracle.Merge(b.cur, fresh, testkit.EverySection())
			if _, err := engine.Run(b.ctx, b.pool, opt, zerolog.Nop()); err != nil {
				t.Fatalf("seed %d: run: %v", seed, err)
			}
			b.importModel(t, next, file.Present())
			b.cur = oracle.Merge(b.cur, next, file)
			checkInPlaceFull(t, b, seed, opt)
		}
	})
}

// inPlaceShardSeeds is how many seeds of TestInPlaceFullMatchesBlueGreen
// one parallel subtest runs.
const inPlaceShardSeeds = 10

// inPlaceModels is what TestInPlaceFullMatchesBlueGreen imports for seed
// over prev: a fresh random model whole, then a mutation of the merge.
func inPlaceModels(seed int, prev *model.Model) (fresh, next *model.Model, file *model.File) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x1a9ace))
	fresh = oracle.RandomModel(rng, 10+rng.IntN(40))
	next, file = oracle.Mutate(rng, oracle.Merge(prev, fresh, testkit.EverySection()))
	return fresh, next, file
}

// inPlaceStep is the model stored once seed ran over prev.
func inPlaceStep(seed int, prev *model.Model) *model.Model {
	fresh, next, file := inPlaceModels(seed, prev)
	return oracle.Merge(oracle.Merge(prev, fresh, testkit.EverySection()), next, file)
}

// checkInPlaceFull runs a full recalculation in place and requires the
// oracle's access, then the tables a blue/green full run builds.
func checkInPlaceFull(t *testing.T, b *bundle, seed int, opt engine.Options) {
	t.Helper()
	inPlace := opt
	inPlace.InPlace = true
	rep, err := engine.Full(b.ctx, b.pool, inPlace, zerolog.Nop())
	if err != nil {
		t.Fatalf("seed %d: in-place full run: %v", seed, err)
	}
	if rep.Kind != "incremental" {
		t.Fatalf("seed %d: an in-place full run made a %q job", seed, rep.Kind)
	}
	if want, got := oracle.CSV(oracle.Access(b.cur)), b.access(t); got != want {
		t.Fatalf("seed %d: in-place access differs from the oracle\n%s", seed, oracle.Diff(want, got))
	}
	got := testdb.Materialized(t, b.pool)
	if _, err := engine.Full(b.ctx, b.pool, opt, zerolog.Nop()); err != nil {
		t.Fatalf("seed %d: full run: %v", seed, err)
	}
	if want := testdb.Materialized(t, b.pool); got != want {
		t.Fatalf("seed %d: in-place tables differ from a blue/green full run\n%s", seed, oracle.Diff(want, got))
	}
}
