package peer_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/bench/gen"
	"github.com/recalc-dev/recalc/bench/peer"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

func fullRun(t testing.TB, ctx context.Context, pool *pgxpool.Pool) *engine.Report {
	t.Helper()
	rep, err := engine.Full(ctx, pool, engine.Options{Workers: 2, ChunkSize: 20000}, zerolog.Nop())
	if err != nil {
		t.Fatalf("full run: %v", err)
	}
	return rep
}

// createRefresh creates and refreshes the peer for the stored model.
func createRefresh(t testing.TB, ctx context.Context, pool *pgxpool.Pool) {
	t.Helper()
	if err := peer.Create(ctx, pool); err != nil {
		t.Fatalf("create peer: %v", err)
	}
	if _, err := peer.Refresh(ctx, pool); err != nil {
		t.Fatalf("refresh peer: %v", err)
	}
}

// shardSeeds is how many seeds of TestMatchesRecalcOnRandomModels one
// parallel subtest runs, on a database of its own.
const shardSeeds = 10

// TestMatchesRecalcOnRandomModels holds the peer against recalc's full run on
// random models that exercise every feature of the spec, and on a few
// random changes of each. PEER_SEEDS sets how many seeds (default 30, 5 with
// -short), PEER_SEED_START the first, to replay a failure.
//
// Each seed's model is imported over the last one's. The seeds run in
// shards, in parallel: a shard starts from the model the seed before it left
// stored, which it computes without a database and imports whole.
func TestMatchesRecalcOnRandomModels(t *testing.T) {
	t.Parallel()
	first, n := testkit.Seeds("PEER", 30, 5)
	testkit.Shards(t, first, n, shardSeeds, func(t *testing.T, from, to int) {
		ctx, pool := context.Background(), testdb.Migrated(t)
		stored := testkit.StoredBefore(first, from, func(seed int, prev *model.Model) *model.Model {
			steps := peerSteps(seed, prev)
			return steps[len(steps)-1].stored
		})
		if stored != nil {
			testkit.ImportModel(t, ctx, pool, stored, nil)
			fullRun(t, ctx, pool)
		}
		for seed := from; seed < to; seed++ {
			steps := peerSteps(seed, stored)
			for i, s := range steps {
				testkit.ImportModel(t, ctx, pool, s.file, s.present)
				fullRun(t, ctx, pool)
				createRefresh(t, ctx, pool)
				if err := peer.Check(ctx, pool); err != nil {
					t.Fatalf("seed %d step %d: %v", seed, i, err)
				}
			}
			stored = steps[len(steps)-1].stored
		}
	})
}

// peerStep is one import of TestMatchesRecalcOnRandomModels.
type peerStep struct {
	file    *model.Model
	present []string     // the file's sections (nil: every one)
	stored  *model.Model // the model stored after the import
}

// peerSteps generates seed's steps over the stored model prev: a random
// model with every section, then two random changes of it.
func peerSteps(seed int, prev *model.Model) []peerStep {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x9ee7))
	cur := oracle.RandomModel(rng, 10+rng.IntN(60))
	stored := oracle.Merge(prev, cur, testkit.EverySection())
	steps := []peerStep{{file: cur, stored: stored}}
	for len(steps) < 3 {
		next, file := oracle.Mutate(rng, cur)
		cur = oracle.Merge(cur, next, file)
		stored = oracle.Merge(stored, next, file)
		steps = append(steps, peerStep{file: next, present: file.Present(), stored: stored})
	}
	return steps
}

// TestGenOrg holds the peer against recalc on a generated benchmark org.
func TestGenOrg(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	var buf bytes.Buffer
	if _, err := gen.Write(&buf, gen.NewOptions(3000, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Import(ctx, pool, &buf, model.DefaultLimits(), zerolog.Nop(), nil); err != nil {
		t.Fatalf("import: %v", err)
	}
	fullRun(t, ctx, pool)
	createRefresh(t, ctx, pool)
	if err := peer.Check(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var shares, members int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM peer.share), (SELECT count(*) FROM peer.member)`).Scan(&shares, &members); err != nil {
		t.Fatal(err)
	}
	if shares < 3000 || members == 0 {
		t.Fatalf("peer has %d share rows and %d closure rows: too few to mean anything", shares, members)
	}
}

// TestCheckReportsDifferences makes sure Check can fail: one share row
// missing, one closure flag flipped and one access root changed are each
// reported with a count and a sample.
func TestCheckReportsDifferences(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	m := oracle.RandomModel(rand.New(rand.NewPCG(7, 7)), 40)
	testkit.ImportModel(t, ctx, pool, m, nil)
	fullRun(t, ctx, pool)
	createRefresh(t, ctx, pool)
	if err := peer.Check(ctx, pool); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sql string
		want      func(*peer.DiffError) bool
	}{
		{"share row deleted", `DELETE FROM recalc.acl_share WHERE ctid = (SELECT min(ctid) FROM recalc.acl_share)`,
			func(e *peer.DiffError) bool { return e.Shares == 1 && e.Members == 0 && e.Records == 0 }},
		{"share level changed", `UPDATE recalc.acl_share SET level = level % 3 + 1 WHERE ctid = (SELECT min(ctid) FROM recalc.acl_share)`,
			func(e *peer.DiffError) bool { return e.Shares == 2 && e.Members == 0 && e.Records == 0 }}, // one row each way
		{"closure boss flipped", `UPDATE recalc.acl_member SET boss = NOT boss WHERE ctid = (SELECT min(ctid) FROM recalc.acl_member)`,
			func(e *peer.DiffError) bool { return e.Shares == 0 && e.Members == 2 && e.Records == 0 }},
		{"closure row added", `INSERT INTO recalc.acl_member SELECT gid, uid + 1000000, false FROM recalc.acl_member LIMIT 1`,
			func(e *peer.DiffError) bool { return e.Shares == 0 && e.Members == 1 && e.Records == 0 }},
		{"access root changed", `UPDATE recalc.acl_record SET access_root = NULL WHERE ctid = (SELECT min(ctid) FROM recalc.acl_record)`,
			func(e *peer.DiffError) bool { return e.Shares == 0 && e.Members == 0 && e.Records == 2 }},
	} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, tc.sql); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		err = peer.Check(ctx, pool)
		var de *peer.DiffError
		if !errors.As(err, &de) || !tc.want(de) || len(de.Samples) == 0 {
			t.Fatalf("%s: Check returned %v", tc.name, err)
		}
		t.Logf("%s: %v", tc.name, err)
		fullRun(t, ctx, pool) // repair
		if err := peer.Check(ctx, pool); err != nil {
			t.Fatalf("%s: after repair: %v", tc.name, err)
		}
	}
}

// TestRefreshRefusesChangedRules: the criteria predicates are compiled at
// Create, so a refresh after the rules changed would be silently wrong.
func TestRefreshRefusesChangedRules(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	rng := rand.New(rand.NewPCG(3, 3))
	m := oracle.RandomModel(rng, 30)
	testkit.ImportModel(t, ctx, pool, m, nil)
	fullRun(t, ctx, pool)
	createRefresh(t, ctx, pool)
	m.Rules = m.Rules[:len(m.Rules)-1]
	testkit.ImportModel(t, ctx, pool, m, []string{"rules"})
	if _, err := peer.Refresh(ctx, pool); err == nil {
		t.Fatal("refresh after a rules change succeeded")
	}
	fullRun(t, ctx, pool)
	createRefresh(t, ctx, pool)
	if err := peer.Check(ctx, pool); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRefreshVsFull compares recalc's full recalculation with a full
// refresh of the peer on a generated org of BENCH_SIZE records (default
// 100k), and checks that they agree.
func BenchmarkRefreshVsFull(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("BENCH_SIZE")); err == nil && v > 0 {
		n = v
	}
	ctx, pool := context.Background(), testdb.Migrated(b)
	path := filepath.Join(b.TempDir(), "org.json")
	if _, err := gen.WriteFile(path, gen.NewOptions(n, 1)); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := store.Import(ctx, pool, bufio.NewReaderSize(f, 1<<20), model.DefaultLimits(), zerolog.Nop(), nil); err != nil {
		b.Fatal(err)
	}
	f.Close()
	fullRun(b, ctx, pool)
	if err := peer.Create(ctx, pool); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var full, refresh float64
	for i := 0; i < b.N; i++ {
		rep := fullRun(b, ctx, pool)
		full += float64(rep.DurationMS) / 1000
		d, err := peer.Refresh(ctx, pool)
		if err != nil {
			b.Fatal(err)
		}
		refresh += d.Seconds()
	}
	b.StopTimer()
	if err := peer.Check(ctx, pool); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(full/float64(b.N), "full_s/op")
	b.ReportMetric(refresh/float64(b.N), "refresh_s/op")
}
