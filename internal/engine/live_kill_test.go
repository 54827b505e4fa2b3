package engine_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/attach"
	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/watch"
	"github.com/recalc-dev/recalc/schema"
)

// The watch of these tests connects with this application_name, so that the
// tests terminate or cancel its backends, and only its, in their own
// database.
const killApp = "recalc_live_kill_watch"

// syncBuf is a log sink safe for the watch's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if os.Getenv("KILL_DEBUG") != "" {
		os.Stderr.Write(p)
	}
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuf) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(s.b.String()), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// killWatch is `recalc watch` (watch.Run stepping an engine.Live) on a pool
// of its own, whose connections are named killApp.
type killWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	pool   *pgxpool.Pool
	log    *syncBuf
}

type killWatchOpts struct {
	engine     engine.Options
	maxRecords int
	connString string // "" for the test database's
	describe   bool   // send every statement's text (for the proxy)
	poll       time.Duration
}

func startKillWatch(t *testing.T, b *bundle, o killWatchOpts) *killWatch {
	t.Helper()
	cs := o.connString
	if cs == "" {
		cs = b.pool.Config().ConnString()
	}
	cfg, err := pgxpool.ParseConfig(cs)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = killApp
	cfg.MaxConns = 6
	if o.describe {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeDescribeExec
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o.maxRecords == 0 {
		o.maxRecords = 1000
	}
	if o.engine.Trigger == "" {
		o.engine.Trigger = "watch"
	}
	if o.engine.LockTimeout == 0 {
		o.engine.LockTimeout = time.Second
	}
	if o.engine.Retries == 0 {
		o.engine.Retries = 3
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &killWatch{cancel: cancel, done: make(chan struct{}), pool: pool, log: &syncBuf{}}
	live := engine.NewLive(o.engine, o.maxRecords)
	lg := zerolog.New(w.log).With().Timestamp().Logger()
	if o.poll == 0 {
		o.poll = 100 * time.Millisecond
	}
	wo := watch.Options{Debounce: time.Millisecond, MaxWait: 10 * time.Millisecond, Poll: o.poll}
	go func() {
		defer close(w.done)
		_ = watch.Run(ctx, pool, wo, func(ctx context.Context) error {
			rep, err := live.Step(ctx, pool, lg)
			if err == nil && (rep.Changes > 0 || rep.Run != nil || len(rep.NotAbsorbed) > 0) {
				// What each step did, so that a failure's log tells a step
				// that hangs from one that leaves changes behind.
				lg.Debug().Bool("fast", rep.Fast).Int("changes", rep.Changes).Bool("job", rep.Run != nil).
					Int("not_absorbed", len(rep.NotAbsorbed)).Msg("step")
			}
			return err
		}, lg)
	}()
	t.Cleanup(func() { w.stop(); pool.Close() })
	return w
}

func (w *killWatch) stop() { w.cancel(); <-w.done }

func (w *killWatch) alive() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// killBackends calls fn (pg_terminate_backend or pg_cancel_backend) on the
// watch's backends in the test database that match the extra condition.
func killBackends(ctx context.Context, admin *pgx.Conn, fn, cond string) (int, error) {
	if cond == "" {
		cond = "true"
	}
	var n int
	err := admin.QueryRow(ctx, `SELECT count(`+fn+`(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid() AND (`+cond+`)`, killApp).Scan(&n)
	return n, err
}

// settled fails the test unless, within timeout, everything committed is
// materialized, the watch still runs, the change log is empty and no job is
// unfinished, and the share tables are what a full recalculation makes.
func settled(t *testing.T, b *bundle, w *killWatch, admin *pgx.Conn, timeout time.Duration) {
	t.Helper()
	if err := changes.WaitFresh(b.ctx, admin, 0, timeout); err != nil {
		t.Fatalf("not fresh after the storm: %v\nwatch log:\n%s\n%s", err, w.log.tail(30), liveState(b, admin))
	}
	if !w.alive() {
		t.Fatalf("the watch exited\nwatch log:\n%s", w.log.tail(30))
	}
	var left, unfinished int
	if err := admin.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM recalc.change), (SELECT count(*) FROM recalc.job WHERE status <> 'done')`).
		Scan(&left, &unfinished); err != nil {
		t.Fatal(err)
	}
	if left != 0 || unfinished != 0 {
		t.Fatalf("after the storm: %d change rows left, %d unfinished jobs\nwatch log:\n%s", left, unfinished, w.log.tail(30))
	}
	w.stop()
	checkFull(t, b, "after the storm")
}

// liveState describes, for a failure's message, what keeps the database
// from being fresh: the change rows left, the objects whose writes could
// not be absorbed, unfinished jobs, and what the watch's backends do.
func liveState(b *bundle, admin *pgx.Conn) string {
	var out string
	err := admin.QueryRow(b.ctx, `SELECT concat_ws(E'\n',
		'change rows: ' || (SELECT coalesce(string_agg(kind || '/' || coalesce(object, '-') || ' x' || n, ', '), 'none')
			FROM (SELECT kind, object, count(*) n FROM recalc.change GROUP BY 1, 2) c),
		'stuck: ' || (SELECT coalesce(string_agg(object || ' ' || coalesce(error_code, '-') || ' checked ' || (now() - checked_at)::text || ' ago', ', '), 'none')
			FROM recalc.attach_stuck),
		'unfinished jobs: ' || (SELECT coalesce(string_agg(id || ' ' || status, ', '), 'none') FROM recalc.job WHERE status <> 'done'),
		'watch backends: ' || (SELECT coalesce(string_agg(state || ' ' || coalesce(wait_event_type || ':' || wait_event, '-') || ' ' || left(query, 60), E'\n  '), 'none')
			FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1))`, killApp).Scan(&out)
	if err != nil {
		return "state unreadable: " + err.Error()
	}
	return out
}

// killOrg is liveOrg with a top-level object deal, attached to app.deal.
func killOrg() string {
	return strings.Replace(liveOrg(12), `"objects":[`, `"objects":[{"name":"deal__c","internal_owd":"private"},`, 1)
}

func attachDeals(t *testing.T, b *bundle) {
	t.Helper()
	b.exec(t, `CREATE SCHEMA app`,
		`CREATE TABLE app.deal (id bigint PRIMARY KEY, owner_id text NOT NULL, tier int)`,
		`INSERT INTO app.deal SELECT i, 'u' || (1 + i % 4), i % 5 FROM generate_series(1, 20) i`)
	spec, err := attach.Parse(strings.NewReader(`{"objects": [{"object": "deal__c", "table": "app.deal", "id": "id", "owner": "owner_id", "parent": null, "fields": ["tier"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attach.Apply(b.ctx, b.pool, spec); err != nil {
		t.Fatal(err)
	}
	b.run(t, engine.Options{})
}

// dealWrites writes app.deal until ctx ends.
func dealWrites(ctx context.Context, c *pgx.Conn, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 99))
	for i := 0; ctx.Err() == nil; i++ {
		id := 1 + rng.IntN(30)
		var err error
		switch rng.IntN(4) {
		case 0:
			_, err = c.Exec(ctx, `INSERT INTO app.deal VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id`,
				id, fmt.Sprintf("u%d", 1+rng.IntN(4)), rng.IntN(5))
		case 1:
			_, err = c.Exec(ctx, `UPDATE app.deal SET tier = $2 WHERE id = $1`, id, rng.IntN(5))
		case 2:
			_, err = c.Exec(ctx, `DELETE FROM app.deal WHERE id = $1`, id)
		case 3:
			err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `UPDATE app.deal SET owner_id = $2 WHERE id = $1`, id, fmt.Sprintf("u%d", 1+rng.IntN(4))); err != nil {
					return err
				}
				time.Sleep(time.Millisecond)
				_, err := tx.Exec(ctx, `UPDATE app.deal SET tier = tier + 1 WHERE id = $1`, 1+rng.IntN(30))
				return err
			})
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("deal write %d: %w", i, err)
		}
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
	}
	return nil
}

// checkDealMirror fails the test unless recalc.record holds exactly app.deal.
func checkDealMirror(t *testing.T, b *bundle) {
	t.Helper()
	var diff string
	err := b.pool.QueryRow(b.ctx, `SELECT coalesce(string_agg(x, ', '), '') FROM (
		(SELECT 'deal__c:' || id || ' ' || owner_id || ' ' || coalesce(tier::text, 'null') x FROM app.deal
		 EXCEPT SELECT id || ' ' || owner || ' ' || coalesce(fields->>'tier', 'null') FROM recalc.record WHERE object = 'deal__c')
		UNION ALL
		(SELECT 'extra ' || id || ' ' || owner || ' ' || coalesce(fields->>'tier', 'null') FROM recalc.record WHERE object = 'deal__c'
		 EXCEPT SELECT 'extra deal__c:' || id || ' ' || owner_id || ' ' || coalesce(tier::text, 'null') FROM app.deal)) d`).Scan(&diff)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Fatalf("recalc.record does not mirror app.deal: %s", diff)
	}
}

// TestLiveKillStorm: while four connections commit writes to recalc.record
// and to an attached table, the watch's backends are terminated at random
// moments (all of them, one of them, or the one running a given step);
// once the storm stops, nothing is lost and the watch still runs.
func TestLiveKillStorm(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, killOrg(), engine.Options{})
	attachDeals(t, b)
	w := startKillWatch(t, b, killWatchOpts{})
	admin := connect(t, b.pool)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	// Every connection is opened before a writer starts: a failed connect
	// ends the test, which must not close a connection a writer still uses.
	dc := connect(t, b.pool)
	apps := conns(t, b.pool, 3)
	dealDone := make(chan error, 1)
	go func() { dealDone <- dealWrites(ctx, dc, 3) }()
	load := make(chan error, 1)
	go func() {
		g, gctx := errgroup.WithContext(b.ctx)
		for n, c := range apps {
			g.Go(func() error {
				rng := rand.New(rand.NewPCG(11, uint64(n)))
				for i := 0; ctx.Err() == nil; i++ {
					if err := randomWrite(gctx, c, rng, n, i); err != nil && !pg.IsRetryable(err) {
						return fmt.Errorf("connection %d, write %d: %w", n, i, err)
					}
					time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
				}
				return nil
			})
		}
		load <- g.Wait()
	}()
	rng := rand.New(rand.NewPCG(5, 5))
	conds := []string{"", "state = 'active'", "query ILIKE '%recalc.change%'", "query ILIKE '%attach_absorb%'",
		"query ILIKE '%acl_%'", "query ILIKE 'LISTEN%'", "query = 'commit'", "state = 'idle in transaction'"}
	kills := 0
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); {
		n, err := killBackends(b.ctx, admin, "pg_terminate_backend", conds[rng.IntN(len(conds))])
		if err != nil {
			t.Fatal(err)
		}
		kills += n
		time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
	}
	cancel()
	if err := <-load; err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-dealDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d backends terminated", kills)
	if kills == 0 {
		t.Fatal("no backend of the watch was terminated: the test covers nothing")
	}
	settled(t, b, w, admin, 15*time.Second)
	checkDealMirror(t, b)
}

// TestLiveKillLongWriter: a writer transaction that took its change seq
// before the watch's steps commits after the watch consumed higher seqs
// (and after its connections were killed in between); its change is
// materialized all the same.
func TestLiveKillLongWriter(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, liveOrg(12), engine.Options{})
	w := startKillWatch(t, b, killWatchOpts{})
	admin := connect(t, b.pool)
	long, other := connect(t, b.pool), connect(t, b.pool)
	for round := 0; round < 4; round++ {
		tx, err := long.Begin(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		owner := fmt.Sprintf("u%d", 1+round)
		mustExec(t, tx, `UPDATE recalc.record SET owner = $1 WHERE id = 'a000'`, owner)
		mustExec(t, tx, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ($1, 'case', $2, 'a001')`, fmt.Sprintf("long%d", round), owner)
		for i := 0; i < 10; i++ {
			mustExec(t, other, `UPDATE recalc.record SET owner = $1 WHERE id = $2`, fmt.Sprintf("u%d", 1+i%4), fmt.Sprintf("a%03d", 2+i))
			if i == 5 {
				if _, err := killBackends(b.ctx, admin, "pg_terminate_backend", ""); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := changes.WaitFresh(b.ctx, admin, 0, 10*time.Second); err != nil {
			t.Fatalf("round %d: the others' writes: %v\n%s\n%s", round, err, w.log.tail(20), liveState(b, admin))
		}
		if err := tx.Commit(b.ctx); err != nil {
			t.Fatal(err)
		}
		if err := changes.WaitFresh(b.ctx, admin, 0, 10*time.Second); err != nil {
			t.Fatalf("round %d: the long writer's write: %v\n%s\n%s", round, err, w.log.tail(20), liveState(b, admin))
		}
		if l := b.level(t, owner, "a000"); l != "all" {
			t.Fatalf("round %d: the long writer's new owner %s has %q on a000, want all", round, owner, l)
		}
	}
	settled(t, b, w, admin, 10*time.Second)
}

// TestLiveKillLockHeld: an application transaction holds, past the watch's
// lock timeout, the row of a record whose family root the watch must fix;
// its backends are killed meanwhile. Once the lock goes, everything is
// materialized and the watch still runs.
func TestLiveKillLockHeld(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, liveOrg(12), engine.Options{})
	w := startKillWatch(t, b, killWatchOpts{engine: engine.Options{LockTimeout: 200 * time.Millisecond, Retries: 1}})
	admin, holder := connect(t, b.pool), connect(t, b.pool)
	mustExec(t, admin, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('held', 'case', 'u2', 'a003')`)
	// Whether or not the watch rooted it already, re-parent it in a held transaction
	// and keep it open, then write around it.
	tx, err := holder.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, `SELECT * FROM recalc.record WHERE id = 'held' FOR UPDATE`)
	mustExec(t, admin, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('held2', 'case', 'u3', 'a003')`)
	mustExec(t, admin, `UPDATE recalc.record SET parent = 'a004' WHERE id = 'c003_0'`) // the family the held record is in: roots to fix
	for i := 0; i < 15; i++ {
		mustExec(t, admin, `UPDATE recalc.record SET owner = $1 WHERE id = $2`, fmt.Sprintf("u%d", 1+i%4), fmt.Sprintf("a%03d", i%12))
		if i%5 == 2 {
			if _, err := killBackends(b.ctx, admin, "pg_terminate_backend", ""); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	settled(t, b, w, admin, 15*time.Second)
}

// TestLiveKillRoleTimeouts: the watch's role gets, in the test database, a
// statement_timeout, lock_timeout and idle_in_transaction_session_timeout
// so low that its statements fail midway, while writes commit; once they
// are reset, everything is materialized and the watch still runs.
func TestLiveKillRoleTimeouts(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, killOrg(), engine.Options{})
	attachDeals(t, b)
	admin := connect(t, b.pool)
	var db string
	if err := admin.QueryRow(b.ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	// The test's own sessions: opened before the settings, so unaffected.
	apps := conns(t, b.pool, 3)
	dc := connect(t, b.pool)
	w := startKillWatch(t, b, killWatchOpts{})
	ident := pgx.Identifier{db}.Sanitize()
	mustExec(t, admin, `ALTER ROLE CURRENT_USER IN DATABASE `+ident+` SET statement_timeout = '3ms'`)
	mustExec(t, admin, `ALTER ROLE CURRENT_USER IN DATABASE `+ident+` SET idle_in_transaction_session_timeout = '2ms'`)
	mustExec(t, admin, `ALTER ROLE CURRENT_USER IN DATABASE `+ident+` SET lock_timeout = '1ms'`)
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), `ALTER ROLE CURRENT_USER IN DATABASE `+ident+` RESET ALL`)
	})
	if _, err := killBackends(b.ctx, admin, "pg_terminate_backend", ""); err != nil { // new connections take the settings
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	dealDone := make(chan error, 1)
	go func() { dealDone <- dealWrites(ctx, dc, 8) }()
	if err := writeLoad(b.ctx, apps, 21, 60); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-dealDone; err != nil {
		t.Fatal(err)
	}
	mustExec(t, admin, `ALTER ROLE CURRENT_USER IN DATABASE `+ident+` RESET ALL`)
	if _, err := killBackends(b.ctx, admin, "pg_terminate_backend", ""); err != nil {
		t.Fatal(err)
	}
	settled(t, b, w, admin, 20*time.Second)
	checkDealMirror(t, b)
}

// TestLiveKillCancelDuringAbsorb: the watch's absorb of an attached table
// waits for a lock the application holds, and its statement is cancelled
// (pg_cancel_backend, as an operator or a statement_timeout would). A
// cancel is a passing cause, as a lock timeout is: once the lock is gone
// the next write is materialized when the watch tries the object again
// (changes.StuckRetry), and wait_fresh waits for it instead of reporting
// the object as needing repair (RC002, migration 037).
func TestLiveKillCancelDuringAbsorb(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, killOrg(), engine.Options{})
	attachDeals(t, b)
	w := startKillWatch(t, b, killWatchOpts{})
	admin, holder := connect(t, b.pool), connect(t, b.pool)
	if err := changes.WaitFresh(b.ctx, admin, 0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// The application's write commits while its lock request is queued, so
	// that the lock is granted at that commit, before the watch wakes.
	writer, err := admin.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, writer, `UPDATE app.deal SET owner_id = 'u3' WHERE id = 1`)
	tx, err := holder.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	locked := make(chan error, 1)
	go func() {
		_, err := tx.Exec(b.ctx, `LOCK TABLE app.deal IN ACCESS EXCLUSIVE MODE`)
		locked <- err
	}()
	obs := connect(t, b.pool)
	for waiting, deadline := false, time.Now().Add(10*time.Second); !waiting; time.Sleep(2 * time.Millisecond) {
		if err := obs.QueryRow(b.ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = 'app.deal'::regclass AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if !waiting && time.Now().After(deadline) {
			t.Fatal("the LOCK TABLE never queued behind the writer")
		}
	}
	if err := writer.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-locked; err != nil {
		t.Fatal(err)
	}
	// Wait until the watch's absorb waits for the lock, then cancel it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := killBackends(b.ctx, obs, "pg_cancel_backend", "wait_event_type = 'Lock' AND query ILIKE '%attach_absorb_one%'")
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watch's absorb never waited for the lock\n%s", w.log.tail(20))
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if err := tx.Rollback(b.ctx); err != nil {
		t.Fatal(err)
	}
	var code string
	_ = admin.QueryRow(b.ctx, `SELECT coalesce(error_code, '') FROM recalc.attach_stuck WHERE object = 'deal__c'`).Scan(&code)
	t.Logf("attach_stuck after the cancel: %q", code)
	mustExec(t, admin, `UPDATE app.deal SET owner_id = 'u2' WHERE id = 2`)
	start := time.Now()
	err = changes.WaitFresh(b.ctx, admin, 0, changes.StuckRetry+5*time.Second)
	if err != nil {
		t.Fatalf("after a cancelled absorb and the lock gone, a write to the attached table: %v after %v (attach_stuck %q), "+
			"want it materialized once the watch tries the object again", err, time.Since(start).Round(time.Millisecond), code)
	}
	settled(t, b, w, admin, 15*time.Second)
	checkDealMirror(t, b)
}

// cutProxy relays connections to the database server, and once (the first
// time a client sends the marker and then a COMMIT on one connection)
// relays that COMMIT to the server and closes the client's side before the
// server's answer: the client cannot tell whether it committed, as when the
// network goes away at that moment.
type cutProxy struct {
	ln     net.Listener
	target string
	marker []byte
	fired  atomic.Bool
}

func newCutProxy(t *testing.T, target, marker string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, marker: []byte(marker)}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.relay(c)
		}
	}()
	return p
}

func (p *cutProxy) relay(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	cut, answered := make(chan struct{}), make(chan struct{})
	go relayAnswers(server, client, cut, answered)
	buf := make([]byte, 64<<10)
	armed := false
	for {
		n, err := client.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if !p.fired.Load() && bytes.Contains(chunk, p.marker) {
				armed = true
			}
			commit := bytes.Contains(chunk, []byte("Q\x00\x00\x00\x0bcommit\x00"))
			if armed && commit && p.fired.CompareAndSwap(false, true) {
				close(cut)
				_, _ = server.Write(chunk)
				_ = client.Close()
				// Let the server commit: its answer, not passed on, says it
				// did. A fixed 500 ms stood in for it, which a loaded
				// machine may not schedule the backend within.
				select {
				case <-answered:
				case <-time.After(10 * time.Second):
				}
				_ = server.Close()
				return
			}
			if _, werr := server.Write(chunk); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = server.Close()
	_ = client.Close()
}

// relayAnswers passes the server's messages on to the client until either
// side ends. Once cut is closed (the COMMIT relayed, the client gone) it
// passes nothing on, and closes answered when the server has answered
// that COMMIT, whether it committed, rolled back or failed: at its
// ReadyForQuery, which ends every answer, or when the server's side ends.
func relayAnswers(server, client net.Conn, cut <-chan struct{}, answered chan<- struct{}) {
	defer func() { _ = client.Close() }()
	var after []byte // what the server sent once cut
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		select {
		case <-cut:
			after = append(after, buf[:n]...)
			if readyForQuery(after) || err != nil {
				close(answered)
				return
			}
		default:
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readyForQuery reports whether b, the server's messages from a message's
// start, holds a whole ReadyForQuery ('Z'): the end of the answer to a
// query, whatever the answer was (CommandComplete, ErrorResponse).
func readyForQuery(b []byte) bool {
	for len(b) >= 5 {
		size := 1 + int(binary.BigEndian.Uint32(b[1:5]))
		if size < 5 || len(b) < size {
			return false
		}
		if b[0] == 'Z' {
			return true
		}
		b = b[size:]
	}
	return false
}

// TestReadyForQuery: the commit-reply proxy sees the end of the server's
// answer to the COMMIT it cut, whether the COMMIT succeeded, failed or
// came in pieces; it waited its full 10 s when the answer was an error.
func TestReadyForQuery(t *testing.T) {
	t.Parallel()
	msg := func(typ byte, body string) string {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(4+len(body)))
		return string(typ) + string(n[:]) + body
	}
	commit, rollback := msg('C', "COMMIT\x00"), msg('C', "ROLLBACK\x00")
	failed := msg('E', "SERROR\x00C40001\x00Mcould not serialize access\x00\x00")
	ready, notice := msg('Z', "I"), msg('N', "SNOTICE\x00MZ\x00\x00")
	for _, tc := range []struct {
		name, b string
		want    bool
	}{
		{"committed", commit + ready, true},
		{"rolled back", rollback + ready, true},
		{"an error", failed + ready, true},
		{"a notice first", notice + commit + ready, true},
		{"the command's answer, not yet its end", commit, false},
		{"an error, not yet its end", failed, false},
		{"a ReadyForQuery cut short", commit + ready[:4], false},
		{"nothing", "", false},
	} {
		if got := readyForQuery([]byte(tc.b)); got != tc.want {
			t.Errorf("readyForQuery of %s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestLiveKillCommitReplyLost: the connection of a job's finish is lost
// after its COMMIT reached the server and before the answer came back
// (a network cut, a killed proxy). The job is done; the watch must not
// undo that, and must go on materializing the next writes.
func TestLiveKillCommitReplyLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		inPlace bool
	}{
		{"swap", false},
		{"in place", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, liveOrg(12), engine.Options{})
			cfg := b.pool.Config()
			target := fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port)
			proxy := newCutProxy(t, target, "UPDATE recalc.job j SET status = 'done'")
			port := proxy.ln.Addr().(*net.TCPAddr).Port
			cs := strings.Replace(cfg.ConnString(), fmt.Sprintf(":%d/", cfg.ConnConfig.Port), fmt.Sprintf(":%d/", port), 1)
			if cs == cfg.ConnString() {
				t.Fatalf("could not point %q at the proxy", cs)
			}
			w := startKillWatch(t, b, killWatchOpts{engine: engine.Options{InPlace: tc.inPlace}, maxRecords: 3, connString: cs, describe: true,
				poll: time.Second}) // failing steps retried at most every second: TestLiveKillBackoffOverflow's panic comes later than this test ends
			admin := connect(t, b.pool)
			mustExec(t, admin, `LISTEN recalc_jobs`)
			// A truncate: a full job.
			mustExec(t, admin, `TRUNCATE recalc.record`)
			deadline := time.Now().Add(10 * time.Second)
			for !proxy.fired.Load() {
				if time.Now().After(deadline) {
					t.Fatalf("no job finished through the proxy\n%s", w.log.tail(20))
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(time.Second) // the watch notices, and retries
			mustExec(t, admin, `INSERT INTO recalc.record (id, object, owner) VALUES ('after', 'account', 'u4')`)
			err := changes.WaitFresh(b.ctx, admin, 0, 8*time.Second)
			var jobs string
			_ = admin.QueryRow(b.ctx, `SELECT string_agg(id || ' ' || kind || ' ' || status || ' ' || coalesce(error, ''), '; ' ORDER BY id) FROM recalc.job`).Scan(&jobs)
			if err != nil {
				t.Fatalf("after the lost commit answer: %v\njobs: %s\nwatch log:\n%s", err, jobs, w.log.tail(12))
			}
			// No job may be announced failed after it was done.
			for {
				ctx, cancel := context.WithTimeout(b.ctx, 100*time.Millisecond)
				n, err := admin.WaitForNotification(ctx)
				cancel()
				if err != nil {
					break
				}
				if strings.Contains(n.Payload, `"status":"failed"`) {
					t.Errorf("a job was announced failed: %s\njobs: %s", n.Payload, jobs)
				}
			}
			t.Logf("jobs: %s\nwatch log:\n%s", jobs, w.log.tail(15))
			settled(t, b, w, admin, 10*time.Second)
		})
	}
}

// backoffOverflowSteps is how many failed steps TestLiveKillBackoffOverflow
// lets its watch take: the backoff overflowed past 38.
const backoffOverflowSteps = 100

// TestLiveKillBackoffOverflow: a step that keeps failing (here: a newer
// recalc upgraded the schema, which docs/operations.md says a running watch
// logs at each step until it is replaced; equally a database that stays
// unreachable) must never make the watch exit. The watch runs in a child
// process (this test binary again), so that its death is observed and
// does not take the other tests down.
func TestLiveKillBackoffOverflow(t *testing.T) {
	if url := os.Getenv("RECALC_LIVE_KILL_CHILD"); url != "" {
		pool, err := pgxpool.New(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		// The backoff overflowed past 38 failed steps: the watch is stopped
		// once 100 have failed, or after a minute.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		live := engine.NewLive(engine.Options{Trigger: "watch"}, 1000)
		steps := 0
		// --poll 20ms, as docs/operations.md recommends where writers turn notifications off.
		_ = watch.Run(ctx, pool, watch.Options{Debounce: 2 * time.Millisecond, MaxWait: 20 * time.Millisecond, Poll: 20 * time.Millisecond},
			func(ctx context.Context) error {
				_, err := live.Step(ctx, pool, zerolog.Nop())
				if steps++; steps == backoffOverflowSteps {
					cancel()
				}
				return err
			}, zerolog.Nop())
		fmt.Printf("watch returned after %d steps\n", steps)
		return
	}
	t.Parallel()
	b := setupOrg(t, liveOrg(3), engine.Options{})
	b.exec(t, fmt.Sprintf(`INSERT INTO recalc.schema_version (version, name) VALUES (%d, 'future.up.sql')`, schema.Latest()+1),
		`UPDATE recalc.record SET owner = 'u4' WHERE id = 'a001'`)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLiveKillBackoffOverflow$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "RECALC_LIVE_KILL_CHILD="+b.pool.Config().ConnString())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("watch returned after %d steps\n", backoffOverflowSteps)) {
		o := string(out)
		if i := strings.Index(o, "panic:"); i >= 0 {
			o = o[i:min(len(o), i+1200)]
		}
		t.Fatalf("the watch died while its steps kept failing: %v\n%s", err, o)
	}
}
