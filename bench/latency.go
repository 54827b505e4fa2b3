package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Latency is the distribution of one query's round trips from a client on
// this machine.
type Latency struct {
	Query   string  `json:"query"`
	Samples int     `json:"samples"`
	Rows    int64   `json:"rows_per_call,omitempty"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
}

func percentiles(d []time.Duration) (p50, p99 float64) {
	slices.Sort(d)
	at := func(q float64) float64 {
		return float64(d[min(len(d)-1, int(q*float64(len(d))))].Microseconds()) / 1000
	}
	return at(0.5), at(0.99)
}

// accessChecks times recalc.access_level for n random (active user, record)
// pairs, after a warm-up pass.
func accessChecks(ctx context.Context, pool *pgxpool.Pool, n int, seed int64) (Latency, error) {
	lat := Latency{Query: "SELECT recalc.access_level($user, $object, $record)", Samples: n}
	var users, records, objects []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id) FROM recalc.acl_user`).Scan(&users); err != nil {
		return lat, err
	}
	if err := pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id), array_agg(object ORDER BY id) FROM (
		SELECT id, object FROM recalc.acl_record TABLESAMPLE BERNOULLI (1) REPEATABLE (1) LIMIT $1) s`, n).Scan(&records, &objects); err != nil {
		return lat, err
	}
	if len(users) == 0 || len(records) == 0 {
		return lat, fmt.Errorf("no users or records to check")
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return lat, err
	}
	defer conn.Release()
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	times := make([]time.Duration, 0, n)
	for pass := 0; pass < 2; pass++ { // the first pass warms the cache
		times = times[:0]
		for i := range n {
			j := rng.IntN(len(records))
			u := users[rng.IntN(len(users))]
			start := time.Now()
			var level string
			if err := conn.QueryRow(ctx, `SELECT recalc.access_level($1, $2, $3)`, u, objects[j], records[j]).Scan(&level); err != nil {
				return lat, fmt.Errorf("access check %d: %w", i, err)
			}
			times = append(times, time.Since(start))
		}
	}
	lat.P50ms, lat.P99ms = percentiles(times)
	return lat, nil
}

// visibleLists times n listings (after a warm-up one) of every record of
// its biggest object that the user owning the most records can see: at
// 10M records one lists over a million records, so n stays small.
func visibleLists(ctx context.Context, pool *pgxpool.Pool, n int) (Latency, error) {
	var user, object string
	err := pool.QueryRow(ctx, `
		WITH top AS (SELECT owner FROM recalc.record GROUP BY owner ORDER BY count(*) DESC, owner LIMIT 1)
		SELECT r.owner, r.object FROM recalc.record r JOIN top USING (owner)
		GROUP BY 1, 2 ORDER BY count(*) DESC, 2 LIMIT 1`).Scan(&user, &object)
	if err != nil {
		return Latency{}, fmt.Errorf("find the biggest owner: %w", err)
	}
	lat := Latency{Query: fmt.Sprintf("SELECT record FROM recalc.visible_records(%q, %q) -- the user owning the most records", user, object), Samples: n}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return lat, err
	}
	defer conn.Release()
	times := make([]time.Duration, 0, n)
	for i := range n + 1 { // the first call warms the cache
		start := time.Now()
		rows, err := conn.Query(ctx, `SELECT record FROM recalc.visible_records($1, $2)`, user, object)
		if err != nil {
			return lat, err
		}
		var count int64
		var id string
		if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { count++; return nil }); err != nil {
			return lat, fmt.Errorf("list visible records: %w", err)
		}
		if i > 0 {
			times = append(times, time.Since(start))
		}
		lat.Rows = count
	}
	lat.P50ms, lat.P99ms = percentiles(times)
	return lat, nil
}
