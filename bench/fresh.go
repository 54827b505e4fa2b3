package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Freshness is how soon single-record writes show in recalc.access_level
// while `recalc watch` runs as its own process, at steady write rates, and
// how long recalc.wait_fresh waits after one write.
type Freshness struct {
	Seconds   float64     `json:"seconds_per_rate"`
	Rates     []FreshRate `json:"rates"`
	WaitFresh Latency     `json:"wait_fresh"`
}

// FreshRate is the freshness under one write rate: from each write's
// commit until access_level shows it (the new owner's all, the new
// record's owner's all, or a criteria rule's target member's access).
type FreshRate struct {
	PerS   int            `json:"writes_per_s"`
	Writes int            `json:"writes"`
	Kinds  map[string]int `json:"writes_by_kind"`
	Seen   int            `json:"seen"`
	Unseen int            `json:"not_observable"` // materialized, yet the expected level never showed (excluded)
	// Superseded writes were followed by another write to the same record
	// before their effect showed (excluded).
	Superseded int     `json:"superseded"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	Over1s     int     `json:"over_1s"`
	Lagged     int     `json:"writes_behind_schedule"` // the writers could not keep the rate
	Achieved   float64 `json:"achieved_per_s"`
}

// expect is one write's observable effect: user's level on rec becomes
// want ("any": above none), first seen at seen.
type expect struct {
	user, rec, want string
	committed, seen time.Time
}

// freshCandidates are what the writes pick from.
type freshCandidates struct {
	accounts []string // sample account ids
	owners   []string // users who own accounts
	rules    []freshRule
}

// freshRule is a one-condition "equals" criteria rule on account, with
// users its target reaches.
type freshRule struct {
	field, value string // value: JSON
	users        []string
}

// freshness measures at 100 and 1,000 writes/s for cfg.FreshFor each, then
// wait_fresh, against a `recalc watch` process.
func freshness(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool, records int) (*Freshness, error) {
	cand, err := loadCandidates(ctx, pool)
	if err != nil {
		return nil, err
	}
	stop, err := startWatch(ctx, rc)
	if err != nil {
		return nil, err
	}
	defer stop()
	if _, err := pool.Exec(ctx, `SELECT recalc.wait_fresh(interval '60 s')`); err != nil {
		return nil, fmt.Errorf("wait for recalc watch to catch up: %w", err)
	}
	f := &Freshness{Seconds: cfg.FreshFor.Seconds()}
	for i, rate := range []int{100, 1000} {
		cfg.logf("%d records: freshness at %d writes/s for %s", records, rate, cfg.FreshFor)
		fr, err := freshAtRate(ctx, pool, cand, rate, cfg.FreshFor, cfg.Seed+int64(i))
		if err != nil {
			return nil, err
		}
		f.Rates = append(f.Rates, *fr)
	}
	cfg.logf("%d records: wait_fresh after single writes", records)
	f.WaitFresh, err = waitFreshLatency(ctx, pool, cand, 200)
	return f, err
}

// startWatch starts `recalc watch` and returns what stops it (SIGTERM).
func startWatch(ctx context.Context, rc recalcCmd) (stop func(), err error) {
	cmd := exec.Command(rc.bin, "watch")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+rc.url, "RECALC_LOG_FORMAT=json", "RECALC_LOG_LEVEL=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start recalc watch: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return nil, fmt.Errorf("recalc watch exited at start: %v", err)
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}, nil
}

// loadCandidates samples accounts, their owners that are users, and the
// simple criteria rules on account with the users their targets reach.
func loadCandidates(ctx context.Context, pool *pgxpool.Pool) (*freshCandidates, error) {
	c := &freshCandidates{}
	err := pool.QueryRow(ctx, `SELECT array_agg(id) FROM (SELECT id FROM recalc.record WHERE object = 'account' ORDER BY md5(id) LIMIT 5000) x`).Scan(&c.accounts)
	if err == nil {
		err = pool.QueryRow(ctx, `SELECT array_agg(owner) FROM (SELECT DISTINCT r.owner FROM recalc.record r
			JOIN recalc.acl_user u ON u.id = r.owner WHERE r.object = 'account' LIMIT 200) x`).Scan(&c.owners)
	}
	if err != nil || len(c.accounts) == 0 || len(c.owners) < 2 {
		return nil, fmt.Errorf("sample accounts and owners: %d accounts, %d owners: %w", len(c.accounts), len(c.owners), err)
	}
	rows, err := pool.Query(ctx, `
		SELECT r->'criteria'->'conditions'->0->>'field', (r->'criteria'->'conditions'->0->'value')::text,
		       (SELECT array_agg(p.id) FROM (SELECT p.id FROM recalc.acl_member m JOIN recalc.grantee g USING (gid)
		            JOIN recalc.principal p USING (uid) JOIN recalc.acl_user u ON u.id = p.id
		            WHERE g.key = r->>'target' AND u.internal AND NOT m.boss LIMIT 20) p)
		FROM recalc.model_section s, jsonb_array_elements(s.doc) r
		WHERE s.name = 'rules' AND r->>'object' = 'account' AND r->>'type' = 'criteria'
		  AND jsonb_array_length(r->'criteria'->'conditions') = 1 AND r->'criteria'->'conditions'->0->>'op' = 'equals'`)
	if err != nil {
		return nil, fmt.Errorf("read criteria rules: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r freshRule
		if err := rows.Scan(&r.field, &r.value, &r.users); err != nil {
			return nil, fmt.Errorf("read criteria rules: %w", err)
		}
		if len(r.users) > 0 {
			c.rules = append(c.rules, r)
		}
	}
	return c, rows.Err()
}

// freshAtRate writes at rate per second for d from 8 connections, owner
// changes, new records and criteria field changes in turn, while a poller
// looks for each write's effect every millisecond.
func freshAtRate(ctx context.Context, pool *pgxpool.Pool, cand *freshCandidates, rate int, d time.Duration, seed int64) (*FreshRate, error) {
	fr := &FreshRate{PerS: rate, Kinds: map[string]int{}}
	var mu sync.Mutex
	var pending, done []*expect
	todo := make(chan int, 8)
	var wg sync.WaitGroup
	var writeErr error
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w)))
			for n := range todo {
				e, kind, err := freshWrite(ctx, pool, cand, rng, n, seed)
				mu.Lock()
				switch {
				case err != nil:
					writeErr = errors.Join(writeErr, err)
				case e != nil:
					// A later write to the same record supersedes what an
					// earlier one still expects: that may never show, or
					// show only when a third write restores it, which is
					// not its latency.
					pending = slices.DeleteFunc(pending, func(p *expect) bool {
						if p.rec == e.rec {
							fr.Superseded++
							return true
						}
						return false
					})
					pending, fr.Kinds[kind] = append(pending, e), fr.Kinds[kind]+1
				}
				mu.Unlock()
			}
		}()
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan error, 1)
	go func() { polled <- pollFresh(pollCtx, pool, &mu, &pending, &done) }()
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for n := 0; time.Since(start) < d && ctx.Err() == nil; n++ {
		select {
		case todo <- n:
		default:
			fr.Lagged++
			todo <- n
		}
		<-tick.C
	}
	tick.Stop()
	close(todo)
	wg.Wait()
	fr.Achieved = float64(len(pending)+len(done)+fr.Superseded) / time.Since(start).Seconds()
	// Everything written is materialized within this; what never showed is not observable.
	_, ferr := pool.Exec(ctx, `SELECT recalc.wait_fresh(interval '60 s')`)
	time.Sleep(20 * time.Millisecond)
	stopPoll()
	if err := errors.Join(writeErr, ferr, <-polled); err != nil {
		return nil, err
	}
	summarize(fr, done, len(pending))
	return fr, nil
}

// summarize turns the seen writes into percentiles.
func summarize(fr *FreshRate, done []*expect, unseen int) {
	lat := make([]time.Duration, len(done))
	for i, e := range done {
		lat[i] = e.seen.Sub(e.committed)
		if lat[i] > time.Second {
			fr.Over1s++
		}
	}
	fr.Seen, fr.Unseen, fr.Writes = len(done), unseen, len(done)+unseen
	if len(lat) > 0 {
		fr.P50ms, fr.P99ms = percentiles(lat)
		fr.MaxMs = float64(slices.Max(lat).Microseconds()) / 1000
	}
}

// pollFresh moves the pending expectations that access_level now shows to
// done, one query a millisecond for all of them, until ctx ends.
func pollFresh(ctx context.Context, pool *pgxpool.Pool, mu *sync.Mutex, pending, done *[]*expect) error {
	for ctx.Err() == nil {
		mu.Lock()
		batch := slices.Clone(*pending)
		mu.Unlock()
		if len(batch) > 0 {
			users, recs, wants := make([]string, len(batch)), make([]string, len(batch)), make([]string, len(batch))
			for i, e := range batch {
				users[i], recs[i], wants[i] = e.user, e.rec, e.want
			}
			rows, err := pool.Query(ctx, `SELECT i - 1 FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY p(u, rec, want, i)
				WHERE CASE WHEN want = 'any' THEN recalc.access_level(u, rec) <> 'none' ELSE recalc.access_level(u, rec) = want END`,
				users, recs, wants)
			if err != nil {
				return ignoreCancel(ctx, fmt.Errorf("poll access levels: %w", err))
			}
			now := time.Now()
			seen := map[*expect]bool{}
			for rows.Next() {
				var i int
				if err := rows.Scan(&i); err != nil {
					rows.Close()
					return fmt.Errorf("poll access levels: %w", err)
				}
				batch[i].seen, seen[batch[i]] = now, true
			}
			if err := rows.Err(); err != nil {
				return ignoreCancel(ctx, fmt.Errorf("poll access levels: %w", err))
			}
			mu.Lock() // only those still pending: a superseded one is gone
			*pending = slices.DeleteFunc(*pending, func(e *expect) bool {
				if seen[e] {
					*done = append(*done, e)
				}
				return seen[e]
			})
			mu.Unlock()
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

func ignoreCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// freshWrite makes write n: an owner change, a new record or a criteria
// field change, in turn, and returns what it should show (nil when no
// candidate fits).
func freshWrite(ctx context.Context, pool *pgxpool.Pool, c *freshCandidates, rng *rand.Rand, n int, seed int64) (*expect, string, error) {
	rec := c.accounts[rng.IntN(len(c.accounts))]
	kind := []string{"owner change", "new record", "criteria field change"}[n%3]
	if kind == "criteria field change" && len(c.rules) == 0 {
		kind = "owner change"
	}
	e := &expect{rec: rec, want: "all"}
	var sql string
	var args []any
	switch kind {
	case "owner change":
		users := []string{c.owners[rng.IntN(len(c.owners))], c.owners[rng.IntN(len(c.owners))], c.owners[rng.IntN(len(c.owners))]}
		if err := pool.QueryRow(ctx, `SELECT coalesce((SELECT u FROM unnest($1::text[]) u WHERE recalc.access_level(u, $2) <> 'all' LIMIT 1), '')`,
			users, rec).Scan(&e.user); err != nil || e.user == "" {
			return nil, "", err
		}
		sql, args = `UPDATE recalc.record SET owner = $1 WHERE id = $2`, []any{e.user, rec}
	case "new record":
		e.user, e.rec = c.owners[rng.IntN(len(c.owners))], fmt.Sprintf("fresh_%d_%d", seed, n)
		sql, args = `INSERT INTO recalc.record (id, object, owner, fields) SELECT $1, 'account', $2, fields FROM recalc.record WHERE id = $3`,
			[]any{e.rec, e.user, rec}
	default:
		r := c.rules[rng.IntN(len(c.rules))]
		if err := pool.QueryRow(ctx, `SELECT coalesce((SELECT u FROM unnest($1::text[]) u WHERE recalc.access_level(u, $2) = 'none' LIMIT 1), '')`,
			r.users, rec).Scan(&e.user); err != nil || e.user == "" {
			return nil, "", err
		}
		e.want = "any"
		sql, args = `UPDATE recalc.record SET fields = fields || jsonb_build_object($1::text, $2::jsonb) WHERE id = $3`, []any{r.field, r.value, rec}
	}
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		return nil, "", fmt.Errorf("%s: %w", kind, err)
	}
	e.committed = time.Now()
	return e, kind, nil
}

// waitFreshLatency times recalc.wait_fresh(token) right after n single
// owner changes, each on its own connection's commit.
func waitFreshLatency(ctx context.Context, pool *pgxpool.Pool, c *freshCandidates, n int) (Latency, error) {
	return timeWaitFresh(ctx, pool, "SELECT recalc.wait_fresh(recalc.fresh_token()) after a committed owner change", n, func(i int) error {
		_, err := pool.Exec(ctx, `UPDATE recalc.record SET owner = $1 WHERE id = $2`, c.owners[i%len(c.owners)], c.accounts[i%len(c.accounts)])
		return err
	})
}

// timeWaitFresh times recalc.wait_fresh(token) right after each of n
// committed writes (write(i)), 10 ms apart.
func timeWaitFresh(ctx context.Context, pool *pgxpool.Pool, query string, n int, write func(i int) error) (Latency, error) {
	lat := Latency{Query: query, Samples: n}
	var d []time.Duration
	for i := 0; i < n; i++ {
		if err := write(i); err != nil {
			return lat, fmt.Errorf("write: %w", err)
		}
		start := time.Now()
		if _, err := pool.Exec(ctx, `SELECT recalc.wait_fresh(recalc.fresh_token(), interval '5 s')`); err != nil {
			return lat, fmt.Errorf("wait_fresh: %w", err)
		}
		d = append(d, time.Since(start))
		time.Sleep(10 * time.Millisecond)
	}
	lat.P50ms, lat.P99ms = percentiles(d)
	return lat, nil
}

// freshTargets are the freshness goals of issue 12.
func freshTargets(f *Freshness) []TargetLine {
	if f == nil || len(f.Rates) < 2 {
		return nil
	}
	a, b := f.Rates[0], f.Rates[1]
	return []TargetLine{
		{fmt.Sprintf("freshness at %d writes/s (%d seen)", a.PerS, a.Seen), fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms", a.P50ms, a.P99ms, a.MaxMs),
			"p50 ≤ 20 ms, p99 ≤ 100 ms", a.Seen > 0 && a.P50ms <= 20 && a.P99ms <= 100},
		{fmt.Sprintf("freshness at %d writes/s (%d seen, %.0f/s achieved)", b.PerS, b.Seen, b.Achieved),
			fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms", b.P50ms, b.P99ms, b.MaxMs), "no wait > 1 s", b.Seen > 0 && b.Over1s == 0},
		{"wait_fresh after a single write p99", fmt.Sprintf("%.1f ms", f.WaitFresh.P99ms), "≤ 100 ms", f.WaitFresh.P99ms <= 100},
	}
}
