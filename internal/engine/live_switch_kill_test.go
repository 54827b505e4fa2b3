package engine_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// switchWrites are what application transaction A commits in the middle
// of a watch step: a write the fast path takes (one record), one statement
// naming more records than a batch may (the job path), and an account
// inserted with a case moved under it from another account (a family
// move, the fast path's if it fits a batch).
var switchWrites = map[string][]string{
	"one owner change":    {`UPDATE recalc.record SET owner = 'u2' WHERE id = 'a004'`},
	"every case's fields": {`UPDATE recalc.record SET fields = jsonb_build_object('tier', 4) WHERE object = 'case'`},
	"a case moves to a new account": {
		`INSERT INTO recalc.record (id, object, owner, fields) VALUES ('a900', 'account', 'u1', '{"tier": 3}')`,
		`UPDATE recalc.record SET parent = 'a900' WHERE id = 'c005_1'`},
}

// TestLiveSwitchKillPoints: the watch's step (engine.Live, at most three
// records a batch) is held at a point of its fast path or of the job it
// switches to when a batch is too large: waiting for the model lock with
// a one-record change logged; the fast path's families waiting for a
// locked share row; the job's chunk waiting for one (a statement naming
// every case logged, after a one-record change the fast path takes
// first); the job's finish waiting for the job row. There application
// transaction A (switchWrites) commits, and the step's waiting backend is
// terminated, A committing before the kill or after it. The step fails or
// not; steps then follow until nothing is logged, and the share tables are
// a full run's and access is the oracle's for the stored model.
func TestLiveSwitchKillPoints(t *testing.T) {
	t.Parallel()
	points := []struct {
		name, holder string
		before       []string // committed before the step starts
	}{
		{"the fast path waits for the model lock", "model",
			[]string{`UPDATE recalc.record SET fields = '{"tier": 4}' WHERE id = 'a001'`}},
		{"the fast path's families wait", `SELECT FROM recalc.acl_record WHERE id = 'a001' FOR UPDATE`,
			[]string{`UPDATE recalc.record SET fields = '{"tier": 4}' WHERE id = 'a001'`}},
		{"the job's chunk waits", `SELECT FROM recalc.acl_record WHERE id = 'a003' FOR UPDATE`,
			[]string{`UPDATE recalc.record SET owner = 'u1' WHERE id = 'a002'`,
				`UPDATE recalc.record SET owner = 'u3' WHERE object = 'case' AND parent IN ('a003', 'a006', 'a007')`}},
		{"the job's finish waits", "finish",
			[]string{`UPDATE recalc.record SET owner = 'u3' WHERE object = 'case' AND parent IN ('a003', 'a006', 'a007')`}},
	}
	for _, p := range points {
		for name, stmts := range switchWrites {
			for _, killFirst := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/kill first %v", p.name, name, killFirst), func(t *testing.T) {
					t.Parallel()
					switchKillPoint(t, p.holder, p.before, stmts, killFirst)
				})
			}
		}
	}
}

func switchKillPoint(t *testing.T, point string, before, stmts []string, killFirst bool) {
	b := setupOrg(t, liveOrg(12), engine.Options{})
	b.exec(t, before...)
	ctx := b.ctx
	stepPool := killPool(t, b)
	admin := connect(t, b.pool)
	a := begin(t, connect(t, b.pool))
	for _, s := range stmts {
		if _, err := a.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	var holder pgx.Tx
	switch point {
	case "model":
		holder = begin(t, connect(t, b.pool))
		if err := locks.XactLock(ctx, holder, locks.Model); err != nil {
			t.Fatal(err)
		}
	case "finish": // a chunk waits first, then the job row is held
		holder = holdStmt(t, b, `SELECT FROM recalc.acl_record WHERE id = 'a003' FOR UPDATE`)
	default:
		holder = holdStmt(t, b, point)
	}
	live := engine.NewLive(engine.Options{Trigger: "watch", Workers: 2, ChunkSize: 4, LockTimeout: 20 * time.Second, Retries: 3}, 3)
	done := make(chan error, 1)
	go func() {
		_, err := live.Step(ctx, stepPool, zerolog.Nop())
		done <- err
	}()
	holderPid := holder.Conn().PgConn().PID()
	waitStepBlockedBy(t, b, holderPid, "the step to wait")
	if point == "finish" {
		jobLock := holdStmt(t, b, `SELECT FROM recalc.job WHERE status = 'running' FOR NO KEY UPDATE`)
		if err := holder.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		holder, holderPid = jobLock, jobLock.Conn().PgConn().PID()
		waitStepBlockedBy(t, b, holderPid, "the finish to wait")
	}
	kill := func() {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1 AND $2::int = ANY (pg_blocking_pids(pid))`, killApp, holderPid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("no waiting backend of the step to terminate")
		}
	}
	if killFirst {
		kill()
	}
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !killFirst {
		kill()
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	err := <-done
	t.Logf("the step held and killed: %v", err)
	settleSteps(t, b, live, stepPool)
	checkFull(t, b, "after the steps")
	checkStoredOracle(t, b, "after the steps")
}

// waitStepBlockedBy waits, up to 20 s, until a backend of the step
// (named killApp) waits for a lock that the backend pid holds.
func waitStepBlockedBy(t *testing.T, b *bundle, pid uint32, what string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var blocked bool
		if err := b.pool.QueryRow(b.ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()
			AND application_name = $1 AND $2::int = ANY (pg_blocking_pids(pid)))`, killApp, int32(pid)).Scan(&blocked); err != nil {
			t.Fatalf("read lock waits: %v", err)
		}
		if blocked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// killPool is a pool on b's database whose connections are named killApp.
func killPool(t *testing.T, b *bundle) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(b.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = killApp
	cfg.MaxConns = 6
	pool, err := pgxpool.NewWithConfig(b.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// holdStmt runs stmt in a transaction of its own connection, left open.
func holdStmt(t *testing.T, b *bundle, stmt string) pgx.Tx {
	t.Helper()
	tx := begin(t, connect(t, b.pool))
	if _, err := tx.Exec(b.ctx, stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
	return tx
}

// settleSteps steps live, as the watch retries, until a step succeeds with
// nothing logged and no job unfinished; ten steps at most.
func settleSteps(t *testing.T, b *bundle, live *engine.Live, pool *pgxpool.Pool) {
	t.Helper()
	var last error
	for i := 0; i < 10; i++ {
		_, last = live.Step(b.ctx, pool, zerolog.Nop())
		if last != nil {
			continue
		}
		var left, unfinished int
		if err := b.pool.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM recalc.change), (SELECT count(*) FROM recalc.job WHERE status <> 'done')`).
			Scan(&left, &unfinished); err != nil {
			t.Fatal(err)
		}
		if left == 0 && unfinished == 0 {
			return
		}
	}
	t.Fatalf("ten steps left changes logged or a job unfinished (last: %v)", last)
}

// checkStoredOracle fails unless the materialized access is the oracle's
// for the model as stored now (exported), records written with SQL
// included.
func checkStoredOracle(t *testing.T, b *bundle, after string) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := store.Export(b.ctx, b.pool, &buf, nil); err != nil {
		t.Fatalf("export: %v", err)
	}
	m, _, err := model.Parse(strings.NewReader(buf.String()))
	if err != nil {
		t.Fatalf("parse the exported model: %v", err)
	}
	testkit.CheckOracle(t, b.ctx, b.pool, m, after)
}
