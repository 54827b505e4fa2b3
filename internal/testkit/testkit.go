// Package testkit holds the helpers tests of several packages share: import
// a model or a file into a test database, read the materialized access,
// how many random models a property test tries, and run recalc's command
// line in-process beside other tests (RunApp). Only tests import it.
// Databases come from internal/testdb; model documents that need nothing
// of recalc, so that the model package's own tests can use them too, from
// internal/testkit/fixture.
package testkit

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// Seeds says which random models a property test tries: n from the
// environment variable PREFIX_SEEDS, or def (short under -short, when
// short > 0), starting at seed PREFIX_SEED_START (0 unless set), to replay
// a failure.
func Seeds(prefix string, def, short int) (first, n int) {
	first, _ = strconv.Atoi(os.Getenv(prefix + "_SEED_START"))
	if v, err := strconv.Atoi(os.Getenv(prefix + "_SEEDS")); err == nil && v > 0 {
		return first, v
	}
	if short > 0 && testing.Short() {
		return first, short
	}
	return first, def
}

// ImportModel encodes m, with only the sections in present (every section
// when nil), and imports it as `recalc import` does.
func ImportModel(t testing.TB, ctx context.Context, pool *pgxpool.Pool, m *model.Model, present []string) {
	t.Helper()
	var buf bytes.Buffer
	if err := model.Encode(&buf, m, present); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Import(ctx, pool, &buf, model.DefaultLimits(), zerolog.Nop(), nil); err != nil {
		t.Fatalf("import: %v", err)
	}
}

// ImportString imports a model file given as text, with the default limits.
func ImportString(ctx context.Context, pool *pgxpool.Pool, file string) (*store.Result, error) {
	return store.Import(ctx, pool, strings.NewReader(file), model.DefaultLimits(), zerolog.Nop(), nil)
}

// Import imports file over the stored model prev (nil before the first
// import) and returns the model now stored, as the oracle merges it.
func Import(t testing.TB, ctx context.Context, pool *pgxpool.Pool, prev *model.Model, file string) *model.Model {
	t.Helper()
	m, f, err := model.Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ImportString(ctx, pool, file); err != nil {
		t.Fatalf("import: %v", err)
	}
	return oracle.Merge(prev, m, f)
}

// AccessCSV reads the materialized access as `recalc access --format csv`
// prints it.
func AccessCSV(t testing.TB, ctx context.Context, pool *pgxpool.Pool) string {
	t.Helper()
	var out strings.Builder
	if err := access.WriteCSV(ctx, pool, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// AccessLevels asks recalc.access_level, the one-query SQL function, about
// each (user, record) pair and returns its answers in order. It asks in
// one statement: a property test asks about 30 pairs a step, and a round
// trip a pair cost more than the answers.
func AccessLevels(t testing.TB, ctx context.Context, pool *pgxpool.Pool, pairs [][2]string) []string {
	t.Helper()
	users, records := make([]string, len(pairs)), make([]string, len(pairs))
	for i, p := range pairs {
		users[i], records[i] = p[0], p[1]
	}
	var levels []string
	if err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(recalc.access_level(u, r) ORDER BY n), '{}')
		FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS p (u, r, n)`, users, records).Scan(&levels); err != nil {
		t.Fatalf("access levels of %d pairs: %v", len(pairs), err)
	}
	if len(levels) != len(pairs) {
		t.Fatalf("access levels of %d pairs: %d answers", len(pairs), len(levels))
	}
	return levels
}

// CheckOracle fails the test when the materialized access differs from
// what the oracle computes for m, saying after what.
func CheckOracle(t testing.TB, ctx context.Context, pool *pgxpool.Pool, m *model.Model, after string) {
	t.Helper()
	if got, want := AccessCSV(t, ctx, pool), oracle.CSV(oracle.Access(m)); got != want {
		t.Fatalf("%s, access differs from the oracle\n%s", after, oracle.Diff(want, got))
	}
}

// EverySection says a file holds every section, as oracle.Merge takes it.
func EverySection() *model.File {
	return &model.File{Config: model.Config{Objects: []model.Object{}, Roles: []model.Role{}, Users: []model.User{},
		Groups: []model.Group{}, Territories: []model.Territory{}, Rules: []model.Rule{}}, HasRecords: true, HasShares: true, HasTeams: true}
}

// Shards runs seeds first..first+n-1 of a property test in parallel
// subtests of size seeds each, from and to (excluded) bounding each one's.
func Shards(t *testing.T, first, n, size int, run func(t *testing.T, from, to int)) {
	t.Helper()
	for from := first; from < first+n; from += size {
		to := min(from+size, first+n)
		t.Run(fmt.Sprintf("seeds %d-%d", from, to-1), func(t *testing.T) {
			t.Parallel()
			run(t, from, to)
		})
	}
}

// StoredBefore is the model stored once seeds first..from-1 have run, each
// over the model the last one left, where left(seed, prev) is what seed
// leaves over prev; nil when from is first. A shard of a property test whose
// seeds import over one another starts from it.
func StoredBefore(first, from int, left func(seed int, prev *model.Model) *model.Model) *model.Model {
	var m *model.Model
	for seed := first; seed < from; seed++ {
		m = left(seed, m)
	}
	return m
}

// Main runs a package's tests with testdb.Main, for its TestMain, with at
// least parallel tests at a time unless -parallel is given. Tests that wait
// on PostgreSQL more than they use Go's CPU leave the machine half idle at
// go test's default of GOMAXPROCS.
func Main(m *testing.M, parallel int) int {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if f := flag.Lookup("test.parallel"); f != nil && !given {
		if err := f.Value.Set(strconv.Itoa(max(parallel, runtime.GOMAXPROCS(0)))); err != nil {
			panic(fmt.Sprintf("set -test.parallel: %v", err))
		}
	}
	return testdb.Main(m)
}

// FieldsTable stores each JSON object of docs as a row of a new table
// fields_case (n, its position from 1, and fields jsonb) and returns the
// fields as PostgreSQL gives them back, in order: what recalc reads.
func FieldsTable(t testing.TB, ctx context.Context, pool *pgxpool.Pool, docs []string) []string {
	t.Helper()
	if _, err := pool.Exec(ctx, `CREATE TABLE fields_case AS
		SELECT n, d::jsonb AS fields FROM unnest($1::text[]) WITH ORDINALITY x (d, n)`, docs); err != nil {
		t.Fatalf("store fields: %v", err)
	}
	var stored []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(fields::text ORDER BY n) FROM fields_case`).Scan(&stored); err != nil {
		t.Fatalf("read fields back: %v", err)
	}
	return stored
}

// WaitBlocked waits, up to 20 s, until the backend pid waits for a lock
// another transaction holds; what names the wait in the failure.
func WaitBlocked(t testing.TB, ctx context.Context, pool *pgxpool.Pool, pid uint32, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var blocked bool
		if err := pool.QueryRow(ctx, `SELECT cardinality(pg_blocking_pids($1)) > 0`, int32(pid)).Scan(&blocked); err != nil {
			t.Fatalf("read lock waits: %v", err)
		}
		if blocked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
