package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/bench/gen"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// size is BENCH_SIZE, or def.
func size(def int) int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_SIZE")); err == nil && n > 0 {
		return n
	}
	return def
}

// orgFile generates an org of n records into a temporary file.
func orgFile(b *testing.B, n int) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "org.json")
	if _, err := gen.WriteFile(path, gen.NewOptions(n, 1)); err != nil {
		b.Fatal(err)
	}
	return path
}

func importFile(b *testing.B, pool *pgxpool.Pool, path string) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := store.Import(context.Background(), pool, bufio.NewReaderSize(f, 1<<20), model.DefaultLimits(), zerolog.Nop(), nil); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkImport measures `recalc import` of a whole org into an empty
// database: streaming parse, COPY, merge and reference checks.
func BenchmarkImport(b *testing.B) {
	n := size(100_000)
	path := orgFile(b, n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		pool := testdb.Migrated(b)
		b.StartTimer()
		importFile(b, pool, path)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkFullRecalc measures `recalc run --full` on an imported org.
func BenchmarkFullRecalc(b *testing.B) {
	n := size(100_000)
	pool := testdb.Migrated(b)
	importFile(b, pool, orgFile(b, n))
	b.ResetTimer()
	var rows int64
	for i := 0; i < b.N; i++ {
		rep, err := engine.Full(context.Background(), pool, engine.Options{Workers: 2, ChunkSize: 20000}, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		rows = rep.RowsAdded
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "share_rows/s")
	b.ReportMetric(float64(rows), "share_rows")
}

// BenchmarkBulkCopyCapture measures what change capture costs a bulk load
// done with plain SQL: one COPY of BENCH_SIZE records into recalc.record,
// with the change-log triggers on, and side by side with them disabled. It
// reports both times and the overhead.
func BenchmarkBulkCopyCapture(b *testing.B) {
	n := size(100_000)
	rows := make([][]any, n)
	for i := range rows {
		id := fmt.Sprintf("bulk%07d", i)
		rows[i] = []any{id, "account", "u0001", id, fmt.Sprintf(`{"tier": %d}`, i%5)}
	}
	ctx := context.Background()
	load := func(pool *pgxpool.Pool, capture bool) time.Duration {
		if !capture {
			if _, err := pool.Exec(ctx, `ALTER TABLE recalc.record DISABLE TRIGGER USER`); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"recalc", "record"}, []string{"id", "object", "owner", "root_id", "fields"},
			pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var with, without time.Duration
	for i := 0; i < b.N; i++ {
		without += load(testdb.Migrated(b), false)
		with += load(testdb.Migrated(b), true)
	}
	b.ReportMetric(without.Seconds()/float64(b.N), "s/copy-plain")
	b.ReportMetric(with.Seconds()/float64(b.N), "s/copy-captured")
	b.ReportMetric(100*(with.Seconds()/without.Seconds()-1), "%overhead")
}

// BenchmarkCompute measures the engine's hot path in Go alone: computing
// the share rows of every family of an imported org, as a full run's
// chunks do, with the families already read.
func BenchmarkCompute(b *testing.B) {
	n := size(100_000)
	pool := testdb.Migrated(b)
	importFile(b, pool, orgFile(b, n))
	ctx := context.Background()
	_, org, err := storedOrg(ctx, pool)
	if err != nil {
		b.Fatal(err)
	}
	in, err := sharetable.LoadFamilies(ctx, pool, org, "", "\U0010FFFF")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var rows int
	for b.Loop() {
		rows = len(org.Compute(in).Shares)
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "share_rows/s")
	b.ReportMetric(float64(rows), "share_rows")
}

// BenchmarkAccessCheck measures recalc.access_level for random (user,
// record) pairs of a fully computed org, one round trip each.
func BenchmarkAccessCheck(b *testing.B) {
	n := size(100_000)
	pool := testdb.Migrated(b)
	importFile(b, pool, orgFile(b, n))
	ctx := context.Background()
	if _, err := engine.Full(ctx, pool, engine.Options{Workers: 2}, zerolog.Nop()); err != nil {
		b.Fatal(err)
	}
	lat, err := accessChecks(ctx, pool, 1000, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		var level string
		if err := pool.QueryRow(ctx, `SELECT recalc.access_level('u0001', 'account', 'acc000001')`).Scan(&level); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(lat.P50ms, "p50_ms")
	b.ReportMetric(lat.P99ms, "p99_ms")
}
