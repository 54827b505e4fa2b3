package engine_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestDryRunMatchesActualChange: for random change steps, `recalc plan FILE`
// (a dry run) predicts exactly the pairs that gain and lose access, by
// object, that importing the file and running then produce.
func TestDryRunMatchesActualChange(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, pool := b.ctx, b.pool
	first, n := testkit.Seeds("RECALC", 25, 0)
	for seed := first; seed < first+n; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 42))
		cur := oracle.RandomModel(rng, 20+rng.IntN(30))
		b.importModel(t, cur, nil)
		b.run(t, engine.Options{})
		for step := 0; step < 3; step++ {
			next, file := oracle.Mutate(rng, cur)
			var buf bytes.Buffer
			if err := model.Encode(&buf, next, file.Present()); err != nil {
				t.Fatal(err)
			}
			doc := buf.String()
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.ImportTx(ctx, tx, strings.NewReader(doc), model.DefaultLimits(), zerolog.Nop()); err != nil {
				t.Fatal(err)
			}
			im, err := engine.DryRun(ctx, tx, engine.Options{})
			if err != nil {
				t.Fatalf("seed %d step %d: dry run: %v", seed, step, err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			before := accessMap(t, ctx, pool)
			if _, err := testkit.ImportString(ctx, pool, doc); err != nil {
				t.Fatal(err)
			}
			cur = oracle.Merge(cur, next, file)
			if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
				t.Fatal(err)
			}
			after := accessMap(t, ctx, pool)
			exists := map[string]bool{}
			for _, r := range cur.Records {
				exists[r.ID] = true
			}
			gained, lost, deleted := map[string]int64{}, map[string]int64{}, int64(0)
			for k, a := range after {
				if a > before[k] {
					gained[k[0]]++
				}
			}
			for k, b := range before {
				switch a := after[k]; {
				case a >= b:
				case !exists[k[1]]:
					deleted++
				default:
					lost[k[0]]++
				}
			}
			predicted := map[string][2]int64{}
			for _, o := range im.Objects {
				predicted[o.Object] = [2]int64{o.Gained, o.Lost}
			}
			for _, o := range cur.Objects {
				if got, want := predicted[o.Name], [2]int64{gained[o.Name], lost[o.Name]}; got != want {
					t.Fatalf("seed %d step %d (%v): %s gained/lost predicted %v, actual %v\nplan: %s", seed, step, file.Present(), o.Name, got, want, b.lastPlan())
				}
			}
			if im.LostWithDeleted != deleted {
				t.Fatalf("seed %d step %d: pairs lost with deleted records predicted %d, actual %d", seed, step, im.LostWithDeleted, deleted)
			}
		}
	}
}

// accessMap reads the materialized access as (object, record, user) -> level.
func accessMap(t *testing.T, ctx context.Context, pool *pgxpool.Pool) map[[3]string]int {
	t.Helper()
	csv := testkit.AccessCSV(t, ctx, pool)
	out := map[[3]string]int{}
	for _, line := range strings.Split(strings.TrimSpace(csv), "\n")[1:] {
		f := strings.Split(line, ",")
		l, _ := model.ParseLevel(f[3])
		out[[3]string{f[0], f[1], f[2]}] = int(l)
	}
	return out
}
