package engine_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// seeds is how many random models a property test tries: RECALC_SEEDS, or
// def. RECALC_SEED_START sets the first seed, to replay a failure.
func seeds(def int) int {
	if n, err := strconv.Atoi(os.Getenv("RECALC_SEEDS")); err == nil && n > 0 {
		return n
	}
	return def
}

func importModel(t *testing.T, ctx context.Context, pool *pgxpool.Pool, m *model.Model, present []string) {
	t.Helper()
	var buf bytes.Buffer
	if err := model.Encode(&buf, m, present); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Import(ctx, pool, &buf, model.DefaultLimits(), zerolog.Nop(), nil); err != nil {
		t.Fatalf("import: %v", err)
	}
}

func accessCSV(t *testing.T, ctx context.Context, pool *pgxpool.Pool) string {
	t.Helper()
	var out strings.Builder
	if err := access.WriteCSV(ctx, pool, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestIncrementalMatchesFullAndOracle imports random models and random
// multi-step change sequences. After every step an incremental run must give
// the oracle's access, and a full run afterwards must find the materialized
// tables already identical, row for row.
func TestIncrementalMatchesFullAndOracle(t *testing.T) {
	ctx, pool := context.Background(), testdb.Migrated(t)
	opt := engine.Options{Workers: 2, ChunkSize: 7} // small chunks: families must stay whole across many
	first, _ := strconv.Atoi(os.Getenv("RECALC_SEED_START"))
	var cur *model.Model // what is stored: each seed's model is imported over the last one's
	for seed := first; seed < first+seeds(200); seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
		fresh := oracle.RandomModel(rng, 10+rng.IntN(50))
		importModel(t, ctx, pool, fresh, nil)
		cur = oracle.Merge(cur, fresh, everySection)
		if _, err := cur.Validate(); err != nil {
			t.Fatalf("seed %d: generator made an invalid model: %v", seed, err)
		}
		for step := 0; step < 5; step++ {
			if step > 0 {
				next, file := oracle.Mutate(rng, cur)
				importModel(t, ctx, pool, next, file.Present())
				cur = oracle.Merge(cur, next, file)
				if _, err := cur.Validate(); err != nil {
					t.Fatalf("seed %d step %d: merged model invalid: %v", seed, step, err)
				}
			}
			if _, err := engine.Run(ctx, pool, opt, zerolog.Nop()); err != nil {
				t.Fatalf("seed %d step %d: run: %v", seed, step, err)
			}
			want := oracle.CSV(oracle.Access(cur))
			if got := accessCSV(t, ctx, pool); got != want {
				t.Fatalf("seed %d step %d: access differs from the oracle\n%s\nplan: %s", seed, step, oracle.Diff(want, got), lastPlan(ctx, pool))
			}
			checkAccessLevel(t, ctx, pool, rng, cur)
			incremental := testdb.Materialized(t, pool)
			if _, err := engine.Full(ctx, pool, opt, zerolog.Nop()); err != nil {
				t.Fatalf("seed %d step %d: full run: %v", seed, step, err)
			}
			if full := testdb.Materialized(t, pool); full != incremental {
				t.Fatalf("seed %d step %d: incremental tables differ from a full run\n%s", seed, step, oracle.Diff(full, incremental))
			}
		}
	}
}

// everySection says a file holds every section.
var everySection = &model.File{Config: model.Config{Objects: []model.Object{}, Roles: []model.Role{}, Users: []model.User{},
	Groups: []model.Group{}, Territories: []model.Territory{}, Rules: []model.Rule{}}, HasRecords: true, HasShares: true, HasTeams: true}

// lastPlan returns the plan of the newest job, for failure messages.
func lastPlan(ctx context.Context, pool *pgxpool.Pool) string {
	var plan string
	_ = pool.QueryRow(ctx, `SELECT kind || ' ' || plan::text FROM recalc.job ORDER BY id DESC LIMIT 1`).Scan(&plan)
	return plan
}

// checkAccessLevel asks recalc.access_level, the one-query SQL function, about
// random (user, record) pairs, inactive and unknown users included, and holds
// it to the oracle.
func checkAccessLevel(t *testing.T, ctx context.Context, pool *pgxpool.Pool, rng *rand.Rand, m *model.Model) {
	t.Helper()
	want := map[[2]string]model.Level{}
	for _, r := range oracle.Access(m) {
		want[[2]string{r.User, r.Record}] = r.Level
	}
	for i := 0; i < 30 && len(m.Records) > 0; i++ {
		rec := m.Records[rng.IntN(len(m.Records))].ID
		user := "nobody"
		if len(m.Users) > 0 && rng.IntN(10) > 0 {
			user = m.Users[rng.IntN(len(m.Users))].ID
		}
		got, err := access.Level(ctx, pool, user, rec)
		if err != nil {
			t.Fatal(err)
		}
		if w := want[[2]string{user, rec}].String(); got != w {
			t.Fatalf("access_level(%s, %s) = %s, oracle says %s", user, rec, got, w)
		}
	}
}

// TestInPlaceFullMatchesBlueGreen checks that a full run in place, over
// tables computed from an older model (records since deleted included),
// leaves exactly what a blue/green full run builds, and the oracle's access.
func TestInPlaceFullMatchesBlueGreen(t *testing.T) {
	ctx, pool := context.Background(), testdb.Migrated(t)
	opt := engine.Options{Workers: 2, ChunkSize: 5}
	var cur *model.Model
	for seed := 0; seed < seeds(40); seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 0x1a9ace))
		fresh := oracle.RandomModel(rng, 10+rng.IntN(40))
		importModel(t, ctx, pool, fresh, nil)
		cur = oracle.Merge(cur, fresh, everySection)
		if _, err := engine.Run(ctx, pool, opt, zerolog.Nop()); err != nil {
			t.Fatalf("seed %d: run: %v", seed, err)
		}
		next, file := oracle.Mutate(rng, cur)
		importModel(t, ctx, pool, next, file.Present())
		cur = oracle.Merge(cur, next, file)
		inPlace := opt
		inPlace.InPlace = true
		rep, err := engine.Full(ctx, pool, inPlace, zerolog.Nop())
		if err != nil {
			t.Fatalf("seed %d: in-place full run: %v", seed, err)
		}
		if rep.Kind != "incremental" {
			t.Fatalf("seed %d: an in-place full run made a %q job", seed, rep.Kind)
		}
		if want, got := oracle.CSV(oracle.Access(cur)), accessCSV(t, ctx, pool); got != want {
			t.Fatalf("seed %d: in-place access differs from the oracle\n%s", seed, oracle.Diff(want, got))
		}
		got := testdb.Materialized(t, pool)
		if _, err := engine.Full(ctx, pool, opt, zerolog.Nop()); err != nil {
			t.Fatalf("seed %d: full run: %v", seed, err)
		}
		if want := testdb.Materialized(t, pool); got != want {
			t.Fatalf("seed %d: in-place tables differ from a blue/green full run\n%s", seed, oracle.Diff(want, got))
		}
	}
}
