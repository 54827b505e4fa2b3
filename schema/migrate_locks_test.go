package schema_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/schema"
)

// TestMigrateBesideAppLocks: the application's role (no superuser) holds
// a lock on a table a migration locks (here recalc.record, which a
// writer role writes, standing for an attached table whose triggers a
// migration changes, or recalc.change, which a capture writes in the
// application's transaction): an open transaction that wrote it, a long
// SELECT, or a stream of short writes. A migration's lock wait lasted 5 s
// a try, five tries: every other write of the application's to the table
// queued behind it for as long, and the failure named no session. Now each
// wait lasts 100 ms (locks.TryWait): the application's write goes through
// while init tries; init fails within about 10 s, naming the session by
// pid and role and having migrated nothing, or, beside short writes, goes
// through.
func TestMigrateBesideAppLocks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		hold    string // run by the application in a transaction left open; "" for none
		query   string // run by the application while init runs, until it ends
		stream  bool   // query again and again, from several sessions, each its own transaction
		applies bool   // the migration goes through
	}{
		{name: "an open transaction that wrote the table", hold: `UPDATE recalc.record SET owner = owner WHERE id = 'a:1'`},
		{name: "a long SELECT", query: `SELECT pg_sleep(30) FROM recalc.record LIMIT 1`},
		{name: "a stream of short writes", query: `UPDATE recalc.record SET owner = owner WHERE id = 'a:1'`, stream: true, applies: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := migratedURL(t)
			admin := newPool(t, url, nil)
			role := fmt.Sprintf("schema_app_locks_%d", time.Now().UnixNano())
			exec(t, admin, `CREATE ROLE `+role+` LOGIN NOSUPERUSER NOBYPASSRLS`,
				`GRANT USAGE ON SCHEMA recalc TO `+role, `GRANT SELECT, UPDATE ON recalc.record TO `+role,
				`GRANT EXECUTE ON FUNCTION recalc.attached_objects() TO `+role, // as recalc grant writer (migration 082)
				`INSERT INTO recalc.record (id, object, owner, root_id) VALUES ('a:1', 'a', 'u1', 'a:1'), ('a:2', 'a', 'u1', 'a:2')`)
			t.Cleanup(func() { exec(t, admin, `DROP OWNED BY `+role, `DROP ROLE `+role) })
			app := newPool(t, dburl.WithUser(url, role), nil) // logged in as it: pg_stat_activity names it
			before := versions(t, admin)

			defer appLoad(t, app, admin, tc.hold, tc.query, tc.stream)()
			bystander := readerBeside(t, admin)
			probed := probeWrites(app) // the application's other writes, while init tries: each within 1 s
			ms := append(mustMigrations(t), schema.Migration{Version: schema.Latest() + 1, Name: "test_locks_record.up.sql",
				SQL: `LOCK TABLE recalc.record IN ACCESS EXCLUSIVE MODE`})
			start := time.Now()
			n, err := schema.MigrateWith(ctx, admin, ms)
			took := time.Since(start)
			if perr := probed(); perr != nil {
				t.Errorf("an application write while init tried: %v, want it through within 1 s", perr)
			}
			if took > 15*time.Second {
				t.Errorf("init took %s, want about 10 s at most", took)
			}
			if tc.applies {
				if err != nil || n != 1 {
					t.Fatalf("init beside short writes: applied %d, %v; want the migration applied", n, err)
				}
				return
			}
			if !pg.IsLockNotAvailable(err) || !strings.Contains(err.Error(), "(role "+role+")") || !strings.Contains(err.Error(), "nothing was migrated") ||
				!strings.Contains(err.Error(), "retry when it ends") {
				t.Fatalf("init beside the application's lock: applied %d, %v; want a lock timeout naming the application's session and saying what to do", n, err)
			}
			if strings.Contains(err.Error(), fmt.Sprintf("pid %d ", bystander)) {
				t.Errorf("init beside the application's lock: %v; names pid %d, which held a lock that blocked nothing", err, bystander)
			}
			if after := versions(t, admin); after != before {
				t.Errorf("schema versions after the refused init: %s, want %s, unchanged", after, before)
			}
		})
	}
}

// readerBeside opens a transaction on pool that has read recalc.job and
// stays open until the test ends, a lock that blocks no migration of
// recalc.record, and returns its session's pid.
func readerBeside(t *testing.T, pool *pgxpool.Pool) (pid int) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid() FROM (SELECT count(*) FROM recalc.job) j`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// appLoad starts the application's work beside init: hold run in a
// transaction left open, query run until the returned stop is called
// (again and again from 4 sessions when stream, else once, waited for
// until it runs).
func appLoad(t *testing.T, app, admin *pgxpool.Pool, hold, query string, stream bool) (stop func()) {
	t.Helper()
	ctx := context.Background()
	qctx, cancel := context.WithCancel(ctx) // ends the application's queries
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	if hold != "" {
		holder, err := app.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = holder.Rollback(ctx) })
		if _, err := holder.Exec(ctx, hold); err != nil {
			t.Fatal(err)
		}
	}
	sessions := 0
	if query != "" {
		sessions = 1
	}
	if stream {
		sessions = 4
	}
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for qctx.Err() == nil {
				_, _ = app.Exec(qctx, query)
				if !stream {
					return
				}
			}
		}()
	}
	if query != "" && !stream {
		for running := false; !running; time.Sleep(20 * time.Millisecond) {
			if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()
				AND usename IS NOT NULL AND query LIKE 'SELECT pg_sleep%' AND state = 'active')`).Scan(&running); err != nil {
				stop()
				t.Fatal(err)
			}
		}
	}
	return stop
}

// probeWrites writes a row of recalc.record as app every 50 ms, each
// write within 1 s, until the returned function is called; that returns
// the first write's error.
func probeWrites(app *pgxpool.Pool) func() error {
	ctx := context.Background()
	probed := make(chan error, 1)
	probeStop := make(chan struct{})
	go func() {
		var worst error
		for {
			select {
			case <-probeStop:
				probed <- worst
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := app.Exec(ctx, `SET statement_timeout = '1s'; UPDATE recalc.record SET owner = owner WHERE id = 'a:2'`); err != nil && worst == nil {
				worst = err
			}
		}
	}()
	return func() error { close(probeStop); return <-probed }
}

// TestMigrateRetriesWithinMigrateWait: with the session's lock_timeout
// shorter than migrateWait (10 s), each try of the migrations waited the
// whole of it, the last one starting just before the 10 s ran out: with
// 7s, beside an application transaction holding recalc.record throughout,
// init failed after two tries, 14 s, the application's writes queued
// behind the second one for 4 s past the 10 s docs/operations.md gives.
// The retries wait what is left of the 10 s, so init fails after about
// 10 s, having migrated nothing.
func TestMigrateRetriesWithinMigrateWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := migratedURL(t)
	admin := newPool(t, url, map[string]string{"lock_timeout": "7s"})
	holder, err := newPool(t, url, nil).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, `UPDATE recalc.record SET owner = owner`); err != nil {
		t.Fatal(err)
	}
	before := versions(t, admin)
	ms := append(mustMigrations(t), schema.Migration{Version: schema.Latest() + 1, Name: "test_locks_record.up.sql",
		SQL: `LOCK TABLE recalc.record IN ACCESS EXCLUSIVE MODE`})
	start := time.Now()
	n, err := schema.MigrateWith(ctx, admin, ms)
	took := time.Since(start)
	if !pg.IsLockNotAvailable(err) || !strings.Contains(err.Error(), "nothing was migrated") || took < 9500*time.Millisecond || took > 12500*time.Millisecond {
		t.Errorf("init with lock_timeout 7s beside a transaction holding recalc.record throughout: applied %d, %v after %s; "+
			"want a lock timeout after about 10 s", n, err, took.Round(100*time.Millisecond))
	}
	if after := versions(t, admin); after != before {
		t.Errorf("schema versions after the refused init: %s, want %s, unchanged", after, before)
	}
}
