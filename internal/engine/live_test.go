package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/watch"
)

// liveOrg is raceOrg with a criteria rule: accounts of tier 3 or more are
// shared with group g1 (u1), so field changes move access too.
func liveOrg(accounts int) string {
	org := raceOrg(accounts)
	return strings.Replace(org, `"shares":`, `"groups":[{"id":"g1","members":["user:u1"]}],
	"rules":[{"id":"tier","object":"account","type":"criteria","target":"group:g1","access":"read",
	          "criteria":{"conditions":[{"field":"tier","op":"ge","value":3}]}}],
	"shares":`, 1)
}

// liveRun is `recalc watch` in the background, as WatchCmd runs it: watch.Run
// stepping an engine.Live. It counts the fast steps that consumed changes.
type liveRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	fast   *atomic.Int64
}

func startWatch(pool *pgxpool.Pool, fast *atomic.Int64) *liveRun {
	return startWatchLogged(pool, fast, zerolog.Nop())
}

// startWatchLogged is startWatch with the watch loop's log.
func startWatchLogged(pool *pgxpool.Pool, fast *atomic.Int64, log zerolog.Logger) *liveRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &liveRun{cancel: cancel, done: make(chan struct{}), fast: fast}
	live := engine.NewLive(engine.Options{Trigger: "watch", LockTimeout: 2 * time.Second, Retries: 5}, 1000)
	opt := watch.Options{Debounce: time.Millisecond, MaxWait: 10 * time.Millisecond, Poll: 200 * time.Millisecond}
	go func() {
		defer close(r.done)
		_ = watch.Run(ctx, pool, opt, func(ctx context.Context) error {
			rep, err := live.Step(ctx, pool, zerolog.Nop())
			if err == nil && rep.Fast && rep.Changes > 0 {
				fast.Add(1)
			}
			return err
		}, log)
	}()
	return r
}

func (r *liveRun) stop() { r.cancel(); <-r.done }

// writeLoad writes records with plain SQL from conns connections at once,
// each its own random sequence of writes: owner changes, criteria field
// changes, new accounts and cases, re-parented and deleted cases, and
// two-statement transactions. A write that deadlocks is rolled back whole
// and skipped.
func writeLoad(ctx context.Context, conns []*pgx.Conn, seed uint64, writes int) error {
	g, ctx := errgroup.WithContext(ctx)
	for n, c := range conns {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(seed, uint64(n)))
			for i := 0; i < writes; i++ {
				if err := randomWrite(ctx, c, rng, n, i); err != nil && !pg.IsRetryable(err) {
					return fmt.Errorf("connection %d, write %d: %w", n, i, err)
				}
				time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
			}
			return nil
		})
	}
	return g.Wait()
}

func randomWrite(ctx context.Context, c *pgx.Conn, rng *rand.Rand, n, i int) error {
	acct := fmt.Sprintf("a%03d", rng.IntN(12))
	user := fmt.Sprintf("u%d", 1+rng.IntN(4))
	tier := rng.IntN(5)
	mine := fmt.Sprintf("n%d_%d", n, i)
	type stmt struct {
		sql  string
		args []any
	}
	someCase := `(SELECT id FROM recalc.record WHERE object = 'case' ORDER BY md5(id || $2) LIMIT 1)`
	stmts := [][]stmt{
		{{`UPDATE recalc.record SET owner = $2 WHERE id = $1`, []any{acct, user}}},
		{{`UPDATE recalc.record SET fields = jsonb_build_object('tier', $2::int) WHERE id = $1`, []any{acct, tier}}},
		{{`INSERT INTO recalc.record (id, object, owner, parent) VALUES ($1, 'case', $2, $3)`, []any{mine, user, acct}}},
		{{`INSERT INTO recalc.record (id, object, owner, fields) VALUES ($1, 'account', $2, jsonb_build_object('tier', $3::int))`,
			[]any{mine, user, tier}}},
		{{`UPDATE recalc.record SET parent = $1 WHERE id = ` + someCase, []any{acct, mine}}},
		{{`DELETE FROM recalc.record WHERE id = ` + strings.ReplaceAll(someCase, "$2", "$1"), []any{mine}}},
		{{`UPDATE recalc.record SET owner = $2 WHERE id = $1`, []any{acct, user}}, {`SELECT pg_sleep(0.002)`, nil},
			{`UPDATE recalc.record SET fields = jsonb_build_object('tier', $2::int) WHERE id = $1`, []any{acct, tier}}},
	}[rng.IntN(7)]
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// conns opens n application connections on pool's database.
func conns(t *testing.T, pool *pgxpool.Pool, n int) []*pgx.Conn {
	out := make([]*pgx.Conn, n)
	for i := range out {
		out[i] = connect(t, pool)
	}
	return out
}

// checkFull fails the test unless the materialized tables are exactly what
// a full recalculation makes of what is stored.
func checkFull(t *testing.T, b *bundle, what string) {
	t.Helper()
	got := testdb.Materialized(t, b.pool)
	b.full(t, engine.Options{})
	if want := testdb.Materialized(t, b.pool); got != want {
		t.Fatalf("%s: the share tables differ from a full recalculation's:\n%s", what, oracle.Diff(want, got))
	}
}

// TestLiveMatchesFull: random record writes from four connections
// interleave with the watch loop's fast path; once fresh, the share tables
// are exactly a full recalculation's.
func TestLiveMatchesFull(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, liveOrg(12), engine.Options{})
			var fast atomic.Int64
			w := startWatch(b.pool, &fast)
			defer w.stop()
			if err := writeLoad(b.ctx, conns(t, b.pool, 4), seed, 60); err != nil {
				t.Fatal(err)
			}
			if err := changes.WaitFresh(b.ctx, b.pool, 0, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			w.stop()
			if fast.Load() == 0 {
				t.Fatal("no change went through the fast path")
			}
			checkFull(t, b, "after the writes")
		})
	}
}

// TestLiveKilledAndRestarted: the watch loop is stopped at random moments
// under write load, and restarted; nothing is lost.
func TestLiveKilledAndRestarted(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, liveOrg(12), engine.Options{})
	var fast atomic.Int64
	load := make(chan error, 1)
	apps := conns(t, b.pool, 3)
	go func() { load <- writeLoad(b.ctx, apps, 7, 80) }()
	rng := rand.New(rand.NewPCG(7, 7))
	for running := true; running; {
		w := startWatch(b.pool, &fast)
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		w.stop()
		select {
		case err := <-load:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		default:
		}
	}
	w := startWatch(b.pool, &fast)
	err := changes.WaitFresh(b.ctx, b.pool, 0, 10*time.Second)
	w.stop()
	if err != nil {
		t.Fatal(err)
	}
	checkFull(t, b, "after restarts")
}

// TestWatchReconnects: the watch loop survives pg_terminate_backend of all
// its connections, materializes the next write, and logs that it reconnected.
func TestWatchReconnects(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, liveOrg(3), engine.Options{})
	var fast atomic.Int64
	var logged syncBuf
	w := startWatchLogged(b.pool, &fast, zerolog.New(&logged))
	defer w.stop()
	admin := connect(t, b.pool)
	for round := 0; round < 3; round++ {
		// Let it listen again: after a lost connection it waits out a
		// growing backoff before it reconnects.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var listening bool
			if err := admin.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE datname = current_database() AND starts_with(query, 'LISTEN '))`).Scan(&listening); err != nil {
				t.Fatal(err)
			}
			if listening {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the watch does not listen 10 s after its connections were killed", round)
			}
			time.Sleep(20 * time.Millisecond)
		}
		var killed int
		err := admin.QueryRow(b.ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&killed)
		if err != nil || killed == 0 {
			t.Fatalf("terminate the watch's connections: %d terminated, %v", killed, err)
		}
		owner := fmt.Sprintf("u%d", 1+round)
		mustExec(t, admin, `UPDATE recalc.record SET owner = $1 WHERE id = 'a000'`, owner)
		start := time.Now()
		if err := changes.WaitFresh(b.ctx, admin, 0, 10*time.Second); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		t.Logf("round %d: fresh %v after the connections were killed", round, time.Since(start))
		if l, err := access.Level(b.ctx, admin, owner, "a000"); err != nil || l != "all" {
			t.Fatalf("round %d: new owner %s has %q on a000 (%v), want all", round, owner, l, err)
		}
	}
	// Each loss is followed by a reconnection, logged (a round's write may
	// be materialized on a new pool connection before the listening one is
	// found lost, so the log may lag the rounds).
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logged.String(), `"reconnected: listening for changes again"`); {
		if time.Now().After(deadline) {
			t.Fatalf("the watch did not log a reconnection within 10 s:\n%s", logged.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLiveFallsBack: what the fast path leaves to a job, and deferral.
func TestLiveFallsBack(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, liveOrg(6), engine.Options{})
	live := engine.NewLive(engine.Options{}, 3)
	step := func(t *testing.T) *engine.LiveReport { return b.step(t, live) }
	for _, tc := range []struct {
		name  string
		sql   []string
		file  string
		check func(t *testing.T, rep *engine.LiveReport)
	}{
		{"a record change takes the fast path", []string{`UPDATE recalc.record SET owner = 'u2' WHERE id = 'a000'`}, "",
			func(t *testing.T, r *engine.LiveReport) {
				if !r.Fast || r.Changes != 1 || r.Run != nil {
					t.Fatalf("report %+v, want fast with 1 change", r)
				}
				var published int
				err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.feed WHERE kind = 'record' AND key = 'a000' AND job IS NULL`).Scan(&published)
				if err != nil || published == 0 {
					t.Fatalf("the fast path published %d feed entries for a000 (%v), want some", published, err)
				}
				var jobs, chunks int
				err = b.pool.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM recalc.job), (SELECT count(*) FROM recalc.chunk)`).Scan(&jobs, &chunks)
				if err != nil || jobs != 1 || chunks != 1 {
					t.Fatalf("%d jobs and %d chunks after the fast path (%v), want only the first full run's", jobs, chunks, err)
				}
			}},
		{"a model import runs a job", nil, `{"rules":[]}`, wantRun},
		{"after the import the fast path is back", []string{`UPDATE recalc.record SET fields = '{"tier":4}' WHERE id = 'a001'`}, "",
			func(t *testing.T, r *engine.LiveReport) {
				if !r.Fast || r.Changes != 1 {
					t.Fatalf("report %+v, want fast", r)
				}
			}},
		{"statements past the limit take the fast path in batches", []string{
			`UPDATE recalc.record SET owner = 'u4' WHERE id = 'a000'`, `UPDATE recalc.record SET owner = 'u4' WHERE id = 'a001'`,
			`UPDATE recalc.record SET owner = 'u4' WHERE id = 'a002'`, `UPDATE recalc.record SET owner = 'u4' WHERE id = 'a003'`,
			`UPDATE recalc.record SET owner = 'u4' WHERE id = 'a004'`}, "",
			func(t *testing.T, r *engine.LiveReport) {
				if !r.Fast || r.Changes != 5 || r.Run != nil || r.Written == nil || r.Written.Records < 5 {
					t.Fatalf("report %+v, want fast with 5 changes over 5 records, in batches of at most 3", r)
				}
			}},
		{"a statement naming more records than the limit runs a job", []string{`UPDATE recalc.record SET owner = 'u3' WHERE object = 'account'`}, "", wantRun},
		{"a truncate runs a job", []string{`TRUNCATE recalc.record`}, "", wantRun},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.exec(t, tc.sql...)
			if tc.file != "" {
				b.importFile(t, tc.file)
			}
			tc.check(t, step(t))
			checkFull(t, b, tc.name)
		})
	}
	t.Run("deferred", func(t *testing.T) {
		b.exec(t, `INSERT INTO recalc.deferral (side) VALUES ('rules')`,
			`INSERT INTO recalc.record (id, object, owner) VALUES ('d1', 'account', 'u1')`)
		for i := 0; i < 2; i++ {
			if r := step(t); r.Fast || r.Changes != 0 || (r.Run == nil && !r.Deferred) {
				t.Fatalf("step %d while deferred: %+v, want nothing done", i, r)
			}
		}
		err := changes.WaitFresh(b.ctx, b.pool, 0, 50*time.Millisecond)
		if !changes.IsNotFresh(err) || !strings.Contains(err.Error(), "deferred") {
			t.Fatalf("wait_fresh while deferred: %v, want the not-fresh error naming deferral", err)
		}
		b.exec(t, `DELETE FROM recalc.deferral`)
		step(t)
		if err := changes.WaitFresh(b.ctx, b.pool, 0, time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

func wantRun(t *testing.T, r *engine.LiveReport) {
	t.Helper()
	if r.Fast || r.Run == nil || r.Run.Nothing {
		t.Fatalf("report %+v, want a job", r)
	}
}

// TestWaitFresh: recalc.wait_fresh, as a real non-superuser reader role.
func TestWaitFresh(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, liveOrg(3), engine.Options{})
	app := freshRole(t, b)
	token := func(t *testing.T) int64 {
		tok, err := changes.FreshToken(b.ctx, app)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	write := func(t *testing.T) { mustExec(t, b.pool, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'a001'`) }
	for _, tc := range []struct {
		name string
		run  func(t *testing.T) error
		code string // expected SQLSTATE, "" for success
	}{
		{"nothing pending", func(t *testing.T) error { return changes.WaitFresh(b.ctx, app, token(t), time.Second) }, ""},
		{"a write and nothing running times out", func(t *testing.T) error {
			write(t)
			return changes.WaitFresh(b.ctx, app, token(t), 30*time.Millisecond)
		}, changes.NotFresh},
		{"a run materializes", func(t *testing.T) error {
			tok := token(t)
			b.run(t, engine.Options{})
			return changes.WaitFresh(b.ctx, app, tok, time.Second)
		}, ""},
		{"a token from before a later write", func(t *testing.T) error {
			tok := token(t)
			write(t)
			return changes.WaitFresh(b.ctx, app, tok, time.Second)
		}, ""},
		{"a made-up token", func(t *testing.T) error { return changes.WaitFresh(b.ctx, app, 1<<60, time.Second) }, "22023"},
		{"too long a timeout", func(t *testing.T) error { return changes.WaitFresh(b.ctx, app, token(t), time.Hour) }, "22023"},
		{"inside REPEATABLE READ", func(t *testing.T) error {
			return pgx.BeginTxFunc(b.ctx, app, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
				return changes.WaitFresh(b.ctx, tx, 0, time.Second)
			})
		}, "25000"},
		{"inside the writing transaction", func(t *testing.T) error {
			return pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
				mustExec(t, tx, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a002'`)
				return changes.WaitFresh(b.ctx, tx, 0, time.Second)
			})
		}, "25000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t)
			if got := pg.Code(err); got != tc.code || (err != nil && tc.code == "") {
				t.Fatalf("error %v (SQLSTATE %q), want SQLSTATE %q", err, got, tc.code)
			}
			if tc.code == changes.NotFresh && !strings.Contains(err.Error(), "recalc watch") {
				t.Fatalf("the timeout does not say what to do: %v", err)
			}
		})
	}
	t.Run("with the watch running, the new owner sees the record once fresh", func(t *testing.T) {
		var fast atomic.Int64
		w := startWatch(b.pool, &fast)
		defer w.stop()
		for _, owner := range []string{"u1", "u3", "u4"} {
			mustExec(t, b.pool, `UPDATE recalc.record SET owner = $1 WHERE id = 'a000'`, owner)
			if err := changes.WaitFresh(b.ctx, app, token(t), 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if l, err := access.Level(b.ctx, app, owner, "a000"); err != nil || l != "all" {
				t.Fatalf("owner %s has %q on a000 (%v), want all", owner, l, err)
			}
		}
	})
	t.Run("a role without the grant may not call it", func(t *testing.T) {
		denied := freshRoleConn(t, b, false)
		_, err := changes.FreshToken(b.ctx, denied)
		if pg.Code(err) != "42501" {
			t.Fatalf("fresh_token without the grant: %v, want insufficient privilege", err)
		}
		if err := changes.WaitFresh(b.ctx, denied, 0, time.Second); pg.Code(err) != "42501" {
			t.Fatalf("wait_fresh without the grant: %v, want insufficient privilege", err)
		}
	})
}

// freshRole is a connection as a new non-superuser role given reader access.
func freshRole(t *testing.T, b *bundle) *pgx.Conn { return freshRoleConn(t, b, true) }

func freshRoleConn(t *testing.T, b *bundle, reader bool) *pgx.Conn {
	t.Helper()
	role := fmt.Sprintf("rc_fresh_%d", rand.Uint64())
	b.exec(t, `CREATE ROLE `+role+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = b.pool.Exec(ctx, `DROP OWNED BY `+role+` CASCADE`)
		_, _ = b.pool.Exec(ctx, `DROP ROLE `+role)
	})
	if reader {
		err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error { return access.Grant(b.ctx, tx, access.Reader, role) })
		if err != nil {
			t.Fatal(err)
		}
	} else {
		b.exec(t, `GRANT USAGE ON SCHEMA recalc TO `+role)
	}
	c, err := pgx.Connect(b.ctx, dburl.WithUser(b.pool.Config().ConnString(), role))
	if err != nil {
		t.Fatal(errors.Join(fmt.Errorf("connect as %s", role), err))
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// TestLiveFastAfterRuleChangeAlone: a job for a rule change that changes no
// group membership leaves the closure side's applied configuration as it
// was; the fast path still takes the next record change.
func TestLiveFastAfterRuleChangeAlone(t *testing.T) {
	t.Parallel()
	org := strings.Replace(liveOrg(6), `"rules":[`, `"rules":[{"id":"tier4","object":"account","type":"criteria","target":"group:g1","access":"edit",
	          "criteria":{"conditions":[{"field":"tier","op":"ge","value":4}]}},`, 1)
	b := setupOrg(t, org, engine.Options{})
	b.importFile(t, `{"rules":[{"id":"tier","object":"account","type":"criteria","target":"group:g1","access":"read",
	          "criteria":{"conditions":[{"field":"tier","op":"ge","value":3}]}}]}`)
	live := engine.NewLive(engine.Options{}, 10)
	step := func() *engine.LiveReport { return b.step(t, live) }
	wantRun(t, step())
	var stale []string
	if err := b.pool.QueryRow(b.ctx, `SELECT coalesce(array_agg(s.name), '{}') FROM recalc.model_section s
		LEFT JOIN recalc.applied_section a ON a.side = 'closure' AND a.name = s.name WHERE a.doc IS DISTINCT FROM s.doc`).Scan(&stale); err != nil {
		t.Fatal(err)
	}
	if len(stale) == 0 {
		t.Fatal("the rule change's job updated the closure side's applied configuration: this test no longer covers the case")
	}
	b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a000'`)
	if rep := step(); !rep.Fast || rep.Changes != 1 || rep.Run != nil {
		t.Fatalf("the record change after a rule change alone: %+v, want the fast path", rep)
	}
	checkFull(t, b, "after the fast path")
}

// TestQuietWritesAndIdleSteps: a write in a session with recalc.notify =
// off wakes no listener (migration 016), and the next step, a poll,
// materializes it all the same; a step with nothing new takes no lock and
// writes nothing (the model lock's row keeps its xmax).
func TestQuietWritesAndIdleSteps(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, liveOrg(6), engine.Options{})
	listener, writer := connect(t, b.pool), connect(t, b.pool)
	mustExec(t, listener, `LISTEN recalc_changes`)
	// heard reports whether the listener heard a notification within
	// wait: 300 ms where none is wanted, 10 s where one is, its delivery
	// being asynchronous (PostgreSQL signals the listening backend, which
	// a loaded machine may schedule late).
	heard := func(wait time.Duration) bool {
		ctx, cancel := context.WithTimeout(b.ctx, wait)
		defer cancel()
		_, err := listener.WaitForNotification(ctx)
		return err == nil
	}
	live := engine.NewLive(engine.Options{}, 10)
	lockXmax := func() string {
		var x string
		if err := b.pool.QueryRow(b.ctx, `SELECT xmax::text FROM recalc.engine_lock WHERE name = 'model'`).Scan(&x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	for _, tc := range []struct {
		setting string
		owner   string
		notify  bool
	}{
		{"off", "u2", false},
		{"on", "u3", true},
	} {
		mustExec(t, writer, `SELECT set_config('recalc.notify', $1, false)`, tc.setting)
		mustExec(t, writer, `UPDATE recalc.record SET owner = $1 WHERE id = 'a000'`, tc.owner)
		wait := 300 * time.Millisecond
		if tc.notify {
			wait = 10 * time.Second
		}
		if got := heard(wait); got != tc.notify {
			t.Errorf("recalc.notify = %s: a listener heard the write: %v, want %v", tc.setting, got, tc.notify)
		}
		rep, err := live.Step(b.ctx, b.pool, zerolog.Nop())
		if err != nil || !rep.Fast || rep.Changes != 1 {
			t.Fatalf("recalc.notify = %s: step %+v, %v; want the fast path with the write", tc.setting, rep, err)
		}
		checkAccess(t, b.ctx, b.pool, []expect{{tc.owner, "a000", "all"}})
		before := lockXmax()
		if rep, err := live.Step(b.ctx, b.pool, zerolog.Nop()); err != nil || rep.Changes != 0 || rep.Run != nil {
			t.Fatalf("idle step: %+v, %v; want nothing done", rep, err)
		}
		if after := lockXmax(); after != before {
			t.Errorf("an idle step locked the model lock's row (xmax %s, then %s)", before, after)
		}
	}
	checkFull(t, b, "after quiet writes")
}

// TestLiveIdleWhileDeferred: while a side is deferred and nothing new is
// committed, a step plans nothing, though the changes the deferred side
// waits for stay in the log; a record write is still materialized at the
// next step when the share rows are not deferred.
func TestLiveIdleWhileDeferred(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		sides []string
	}{
		{"nothing deferred", nil},
		{"rules deferred", []string{store.SideRules}},
		{"closure deferred", []string{store.SideClosure}},
		{"both deferred", []string{store.SideRules, store.SideClosure}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			if err := store.Defer(b.ctx, b.pool, tc.sides); err != nil {
				t.Fatal(err)
			}
			b.importFile(t, `{"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`)
			live := engine.NewLive(engine.Options{}, 50)
			step := func() *engine.LiveReport { return b.step(t, live) }
			step() // the import's job, if any side may run
			step()
			for i := range 10 {
				if rep := step(); rep.Run != nil {
					t.Fatalf("idle step %d ran a plan: %+v", i, rep.Run)
				}
			}
			want := "all"
			if slices.Contains(tc.sides, store.SideRules) {
				want = b.level(t, "u3", "a000") // the share rows wait for resume
			}
			b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a000'`)
			step()
			if got := b.level(t, "u3", "a000"); got != want {
				t.Fatalf("the new owner u3 has %s on a000 after a step, want %s", got, want)
			}
		})
	}
}
