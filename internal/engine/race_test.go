package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// These tests race application transactions, on their own connections,
// against engine.Run. They stop the engine at chosen points without any test
// hook, with locks only: a row lock held on a family's materialized row
// (recalc.acl_record, as another writer holds it) makes that family's chunk
// wait before it reads (LockFamilies waits for a busy row up to the lock
// timeout), one held on a share row makes it wait before it writes, a lock
// on the job row makes the job's finish wait, and the model advisory lock
// makes planning wait. The application's own row locks never stop a chunk. The test sees that the engine waits in
// pg_stat_activity (pg_blocking_pids), then moves the application on.

// raceOrg has accounts a000.. with two cases each, owned by u4. Roles are
// flat, so a record's access comes only from its owner, its shares and its
// family. Account owners cycle u3, u1, u2: a001 is u1's, a002 is u2's, and a002
// has a manual edit share for u3. Object task__c (under case) has no records:
// rootless inserts use it for three-level families.
func raceOrg(accounts int) string {
	owners := []string{"u3", "u1", "u2"}
	var recs []string
	for i := 0; i < accounts; i++ {
		recs = append(recs, fmt.Sprintf(`{"object":"account","id":"a%03d","owner":"%s","fields":{"tier":%d}}`, i, owners[i%3], i%5))
		for j := 0; j < 2; j++ {
			recs = append(recs, fmt.Sprintf(`{"object":"case","id":"c%03d_%d","owner":"u4","parent":"a%03d"}`, i, j, i))
		}
	}
	return `{"objects":[{"name":"account","internal_owd":"private"},{"name":"case","parent":"account","internal_owd":"private"},
	             {"name":"task__c","parent":"case","internal_owd":"private"}],
	"roles":[{"id":"r1"},{"id":"r2"},{"id":"r3"},{"id":"r4"}],
	"users":[{"id":"u1","role":"r1"},{"id":"u2","role":"r2"},{"id":"u3","role":"r3"},{"id":"u4","role":"r4"}],
	"shares":[{"object":"account","record":"a002","grantee":"user:u3","access":"edit","cause":"manual"}],
	"records":[` + strings.Join(recs, ",") + `]}`
}

// racePool is a fresh database holding raceOrg(12), recalculated once.
func racePool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	return setupOrg(t, raceOrg(12), engine.Options{}).pool
}

// connect opens a connection of its own on pool's database, as an
// application would, closed when the test ends (rolling back what it holds).
func connect(t *testing.T, pool *pgxpool.Pool) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), pool.Config().ConnString())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func begin(t *testing.T, c *pgx.Conn) pgx.Tx {
	t.Helper()
	tx, err := c.Begin(context.Background())
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	return tx
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func mustExec(t *testing.T, q execer, sql string, args ...any) {
	t.Helper()
	if _, err := q.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func commit(t *testing.T, tx pgx.Tx, what string) {
	t.Helper()
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatalf("commit %s: %v", what, err)
	}
}

func rollback(t *testing.T, tx pgx.Tx, what string) {
	t.Helper()
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatalf("roll back %s: %v", what, err)
	}
}

// bgRun is an engine.Run in a goroutine, bounded to 30 s.
type bgRun struct {
	done chan struct{}
	rep  *engine.Report
	err  error
}

func startRun(t *testing.T, pool *pgxpool.Pool, opt engine.Options) *bgRun {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	r := &bgRun{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.rep, r.err = engine.Run(ctx, pool, opt, zerolog.Nop())
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *bgRun) wait(t *testing.T) *engine.Report {
	t.Helper()
	<-r.done
	if r.err != nil {
		t.Fatalf("run: %v", r.err)
	}
	return r.rep
}

// waitBlockedBy waits until some session waits for a lock that session pid
// holds. It fails the test if done closes first (the run ended) or after 20 s.
func waitBlockedBy(t *testing.T, obs *pgx.Conn, pid uint32, done <-chan struct{}, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := obs.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`,
			int32(pid)).Scan(&n); err != nil {
			t.Fatalf("read lock waits: %v", err)
		}
		if n > 0 {
			return
		}
		select {
		case <-done:
			t.Fatalf("the run ended before %s", what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkSettled requires the materialized tables to be what the stored model
// means, with nothing pending: an empty change log, no unfinished job, no
// drift by Verify, and the same tables as a from-scratch full run.
func checkSettled(t *testing.T, ctx context.Context, pool *pgxpool.Pool) {
	t.Helper()
	var changes, unfinished int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.change), (SELECT count(*) FROM recalc.job WHERE status <> 'done')`).
		Scan(&changes, &unfinished); err != nil {
		t.Fatal(err)
	}
	if changes != 0 || unfinished != 0 {
		t.Errorf("%d change rows and %d unfinished jobs left, want none", changes, unfinished)
	}
	v, err := engine.Verify(ctx, pool, engine.VerifyOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if v.Drift() || v.Skipped > 0 {
		t.Errorf("verify: drift %v (share rows %+v, record rows %d, closure %d/%d, stray roots %d), %d families skipped as pending",
			v.Drift(), v.ShareRows, v.RecordRows, v.ClosureMissing, v.ClosureExtra, v.StrayRoots, v.Skipped)
	}
	got := testdb.Materialized(t, pool)
	if _, err := engine.Full(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("full run: %v", err)
	}
	if want := testdb.Materialized(t, pool); got != want {
		t.Errorf("materialized tables differ from a from-scratch full run:\n%s", lineDiff(got, want))
	}
}

// lineDiff lists the lines only in got (-) and only in want (+).
func lineDiff(got, want string) string {
	count := map[string]int{}
	for _, l := range strings.Split(got, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(want, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		switch {
		case n > 0:
			out = append(out, "- "+l)
		case n < 0:
			out = append(out, "+ "+l)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

type expect struct{ user, record, level string }

func checkAccess(t *testing.T, ctx context.Context, pool *pgxpool.Pool, want []expect) {
	t.Helper()
	for _, w := range want {
		got, err := access.Level(ctx, pool, w.user, w.record)
		if err != nil {
			t.Fatal(err)
		}
		if got != w.level {
			t.Errorf("access of %s to %s: %s, want %s", w.user, w.record, got, w.level)
		}
	}
}

// commitPoint is when application transaction A commits, relative to a run.
type commitPoint int

const (
	beforeRun    commitPoint = iota // before the run starts
	atModelLock                     // while the run waits for the model lock, before planning
	midChunk                        // while a chunk waits before it reads, or before it writes
	beforeFinish                    // every chunk done, the job's finish waiting for the job row
	afterJob                        // after the run returns
)

// TestRaceLostChange is the owner change of the hardening issue (finding 9):
// transaction A changes a002's owner from u2 to u1, which wipes u3's manual
// share, and stays open; B then commits an owner change of a001 (a higher
// seq); a run starts; A commits at each point of the run. Whatever the
// point, the job consumes only the change rows it planned from, and after
// one more run u1 owns a002 with 'all', u2 and u3 have nothing on it, and
// the tables are what a from-scratch run computes.
func TestRaceLostChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		at   commitPoint
		// inFamily: B also changes the owner of a case of a002, so a002's
		// family is in the job, and its chunk, which does not wait for A's
		// row lock, reads it before A commits and writes it after.
		inFamily bool
	}{
		{"A commits before the run", beforeRun, false},
		{"A commits while planning waits for the model lock", atModelLock, false},
		{"A commits while another family's chunk runs", midChunk, false},
		{"A commits while the chunk of its family is between its reads and its writes", midChunk, true},
		{"A commits after the chunks, before the finish", beforeFinish, false},
		{"A commits after the job", afterJob, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := racePool(t)
			obs, app, other, other2 := connect(t, pool), connect(t, pool), connect(t, pool), connect(t, pool)

			a := begin(t, app)
			defer a.Rollback(ctx) //nolint:errcheck // no-op once committed
			mustExec(t, a, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'a002'`)
			var seqA int64
			if err := a.QueryRow(ctx, `SELECT max(seq) FROM recalc.change WHERE 'a002' = ANY(keys)`).Scan(&seqA); err != nil {
				t.Fatal(err)
			}
			if tc.at == beforeRun {
				commit(t, a, "A")
			}
			mustExec(t, pool, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`) // B
			if tc.inFamily {
				mustExec(t, pool, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'c002_1'`)
			}
			var seqB int64
			if err := pool.QueryRow(ctx, `SELECT max(seq) FROM recalc.change`).Scan(&seqB); err != nil {
				t.Fatal(err)
			}
			if seqB <= seqA {
				t.Fatalf("B's seq %d is not above A's %d", seqB, seqA)
			}

			var holder pgx.Tx // stops the run where A is to commit
			switch {
			case tc.at == atModelLock:
				holder = begin(t, other)
				if err := locks.XactLock(ctx, holder, locks.Model); err != nil {
					t.Fatal(err)
				}
			case tc.at == midChunk && tc.inFamily: // the share rows the chunk deletes
				holder = begin(t, other)
				mustExec(t, holder, `SELECT FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'c002_1') FOR UPDATE`)
			case tc.at == midChunk, tc.at == beforeFinish:
				holder = begin(t, other)
				mustExec(t, holder, `SELECT FROM recalc.acl_record WHERE id = 'c001_0' FOR UPDATE`)
			}
			if holder != nil {
				defer holder.Rollback(ctx) //nolint:errcheck // no-op once ended
			}
			run := startRun(t, pool, engine.Options{Workers: 2, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 2})
			switch tc.at {
			case atModelLock:
				waitBlockedBy(t, obs, other.PgConn().PID(), run.done, "planning to wait for the model lock")
				commit(t, a, "A")
				rollback(t, holder, "the model lock")
			case midChunk:
				if tc.inFamily {
					waitBlockedBy(t, obs, other.PgConn().PID(), run.done, "the chunk of a002 to wait before its writes")
				} else {
					waitBlockedBy(t, obs, other.PgConn().PID(), run.done, "the chunk of a001 to wait for the held row")
				}
				commit(t, a, "A")
				rollback(t, holder, "the row lock")
			case beforeFinish:
				waitBlockedBy(t, obs, other.PgConn().PID(), run.done, "the chunk of a001 to wait for the held row")
				jobLock := begin(t, other2)
				defer jobLock.Rollback(ctx) //nolint:errcheck // no-op once ended
				mustExec(t, jobLock, `SELECT FROM recalc.job WHERE status = 'running' FOR NO KEY UPDATE`)
				rollback(t, holder, "the row lock")
				waitBlockedBy(t, obs, other2.PgConn().PID(), run.done, "the job's finish to wait for the job row")
				var pending int
				if err := obs.QueryRow(ctx, `SELECT count(*) FROM recalc.chunk c JOIN recalc.job j ON j.id = c.job_id
					WHERE j.status = 'running' AND c.status <> 'done'`).Scan(&pending); err != nil {
					t.Fatal(err)
				}
				if pending != 0 {
					t.Fatalf("%d chunks pending while the finish waits, want none", pending)
				}
				commit(t, a, "A")
				rollback(t, jobLock, "the job row lock")
			}
			rep := run.wait(t)
			if tc.at == afterJob {
				commit(t, a, "A")
			}

			// The job consumed exactly the change rows it planned from.
			var consumes []int64
			if err := pool.QueryRow(ctx, `SELECT consumes FROM recalc.job WHERE id = $1`, rep.Job).Scan(&consumes); err != nil {
				t.Fatal(err)
			}
			plannedFromA := tc.at == beforeRun || tc.at == atModelLock
			if !slices.Contains(consumes, seqB) || slices.Contains(consumes, seqA) != plannedFromA {
				t.Errorf("job %d consumes %v; want B's seq %d, and A's seq %d: %v", rep.Job, consumes, seqB, seqA, plannedFromA)
			}
			var kept bool
			if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.change WHERE seq = $1)`, seqA).Scan(&kept); err != nil {
				t.Fatal(err)
			}
			if kept == plannedFromA {
				t.Errorf("after job %d, A's change row (seq %d) kept: %v, want %v", rep.Job, seqA, kept, !plannedFromA)
			}

			if _, err := engine.Run(ctx, pool, engine.Options{ChunkSize: 3}, zerolog.Nop()); err != nil {
				t.Fatalf("follow-up run: %v", err)
			}
			checkAccess(t, ctx, pool, []expect{
				{"u1", "a002", "all"}, {"u2", "a002", "none"}, {"u3", "a002", "none"}, // A, and the wiped share
				{"u3", "a001", "all"}, {"u1", "a001", "none"}, // B
			})
			checkSettled(t, ctx, pool)
		})
	}
}

// TestRaceRootlessInserts inserts records without root_id with plain SQL
// (roots, children of stored records, children of rootless records in the
// same statement or transaction, three levels deep) and re-parents some,
// ~30 statements a second for 3 s, while incremental and full runs (swapping
// in new tables, or in place) repeat on two pools (finding 11). No run
// fails; after the load and one more run, every record is rooted and
// materialized, and nothing drifts.
func TestRaceRootlessInserts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		inPlace bool // the full runs work in place
	}{{"full runs swapping", false}, {"full runs in place", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := racePool(t)
			pool2, err := pgxpool.New(ctx, pool.Config().ConnString())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool2.Close)
			app := connect(t, pool)

			stop := make(chan struct{})
			var inserted []string // written by the inserter only, read after it ends
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error {
				rng := rand.New(rand.NewPCG(11, 11))
				var lastRoot, lastCase string // rootless, or rooted by a run meanwhile
				insert := func(sql string, args ...any) error {
					if _, err := app.Exec(gctx, sql, args...); err != nil {
						return fmt.Errorf("insert %v: %w", args, err)
					}
					return nil
				}
				tick := time.NewTicker(30 * time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return nil
					case <-gctx.Done():
						return gctx.Err()
					case <-tick.C:
					}
					acc, cas, task := fmt.Sprintf("ra%04d", i), fmt.Sprintf("rc%04d", i), fmt.Sprintf("rt%04d", i)
					owner := fmt.Sprintf("u%d", 1+rng.IntN(4))
					var err error
					switch k := i % 6; {
					case k == 0 || lastRoot == "": // a root
						err = insert(`INSERT INTO recalc.record (id, object, owner, fields) VALUES ($1, 'account', $2, '{"tier": 1}')`, acc, owner)
						inserted, lastRoot = append(inserted, acc), acc
					case k == 1: // a child of a stored, rooted account
						err = insert(`INSERT INTO recalc.record (id, object, owner, parent) VALUES ($1, 'case', $2, $3)`, cas, owner, fmt.Sprintf("a%03d", rng.IntN(12)))
						inserted, lastCase = append(inserted, cas), cas
					case k == 2: // a child of the last inserted account, perhaps still rootless
						err = insert(`INSERT INTO recalc.record (id, object, owner, parent) VALUES ($1, 'case', $2, $3)`, cas, owner, lastRoot)
						inserted, lastCase = append(inserted, cas), cas
					case k == 3: // a three-level family in one statement
						err = insert(`INSERT INTO recalc.record (id, object, owner, parent) VALUES ($1, 'account', $4, NULL), ($2, 'case', $4, $1), ($3, 'task__c', $4, $2)`,
							acc, cas, task, owner)
						inserted, lastRoot, lastCase = append(inserted, acc, cas, task), acc, cas
					case k == 4: // a family in one transaction, a task under the last case
						err = pgx.BeginFunc(gctx, app, func(tx pgx.Tx) error {
							if _, err := tx.Exec(gctx, `INSERT INTO recalc.record (id, object, owner) VALUES ($1, 'account', $2)`, acc, owner); err != nil {
								return err
							}
							if _, err := tx.Exec(gctx, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ($1, 'case', $2, $3)`, cas, owner, acc); err != nil {
								return err
							}
							if lastCase == "" {
								return nil
							}
							_, err := tx.Exec(gctx, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ($1, 'task__c', $2, $3)`, task, owner, lastCase)
							return err
						})
						inserted = append(inserted, acc, cas)
						if lastCase != "" {
							inserted = append(inserted, task)
						}
						lastRoot, lastCase = acc, cas
						if err != nil {
							err = fmt.Errorf("insert family %s: %w", acc, err)
						}
					default: // re-parent the last case under a stored account, leaving its root stale
						err = insert(`UPDATE recalc.record SET parent = $2 WHERE id = $1`, lastCase, fmt.Sprintf("a%03d", rng.IntN(12)))
					}
					if err != nil {
						return err
					}
				}
			})
			var incremental, full atomic.Int64
			loop := func(kind string, p *pgxpool.Pool, opt engine.Options, n *atomic.Int64) func() error {
				return func() error {
					for {
						select {
						case <-stop:
							return nil
						default:
						}
						if _, err := engine.Run(gctx, p, opt, zerolog.Nop()); err != nil {
							return fmt.Errorf("%s run number %d: %w", kind, n.Load()+1, err)
						}
						n.Add(1)
					}
				}
			}
			g.Go(loop("incremental", pool, engine.Options{Workers: 2, ChunkSize: 5, LockTimeout: 10 * time.Second, Retries: 5}, &incremental))
			g.Go(loop("full", pool2, engine.Options{Full: true, InPlace: tc.inPlace, Workers: 2, ChunkSize: 5, LockTimeout: 10 * time.Second, Retries: 5}, &full))
			select {
			case <-time.After(3 * time.Second):
			case <-gctx.Done(): // something failed: stop at once
			}
			close(stop)
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d records inserted; %d incremental and %d full runs during the load", len(inserted), incremental.Load(), full.Load())
			if incremental.Load() == 0 || full.Load() == 0 || len(inserted) == 0 {
				t.Fatal("the load ended before both kinds of run and inserts happened: nothing was raced")
			}

			if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
				t.Fatalf("run after the load: %v", err)
			}
			var present, rootless int
			var unmaterialized, invalid []string
			if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.record WHERE id = ANY($1)),
					(SELECT count(*) FROM recalc.record WHERE root_id IS NULL),
					(SELECT coalesce(array_agg(id), '{}') FROM recalc.record r WHERE NOT EXISTS (SELECT FROM recalc.acl_record a WHERE a.rid = r.rid AND a.id = r.id)),
					(SELECT coalesce(array_agg(id), '{}') FROM recalc.acl_record WHERE invalid IS NOT NULL)`, inserted).
				Scan(&present, &rootless, &unmaterialized, &invalid); err != nil {
				t.Fatal(err)
			}
			if present != len(inserted) || rootless != 0 || len(unmaterialized) != 0 || len(invalid) != 0 {
				t.Errorf("%d of %d inserted records stored, %d rootless, without an acl_record row: %v, invalid: %v",
					present, len(inserted), rootless, unmaterialized, invalid)
			}
			checkSettled(t, ctx, pool)
		})
	}
}

// TestRaceAppTransactionNeverWaitsForAJob holds two members of a family in
// one application transaction while that family's job runs (finding 13, and
// the live-integration issue's "jobs hold row locks only briefly"): the
// application updates one row, the job of the family runs to its end while
// the transaction is open, then the application updates the other row and
// commits. The job never waits for the application, the application never
// waits for the job, so they cannot deadlock; the next run materializes
// what the application committed.
func TestRaceAppTransactionNeverWaitsForAJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := racePool(t)
	app := connect(t, pool)
	for round := 0; round < 3; round++ {
		root := fmt.Sprintf("a%03d", 3+round)
		rows, err := pool.Query(ctx, `SELECT id FROM recalc.record WHERE root_id = $1 ORDER BY rid`, root)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(ids) < 2 {
			t.Fatalf("family of %s: %v, %v", root, ids, err)
		}
		first, second := ids[len(ids)-1], ids[0]
		if round%2 == 1 {
			first, second = second, first
		}
		// A committed change puts the family in the next job.
		mustExec(t, pool, `UPDATE recalc.record SET fields = fields || jsonb_build_object('round', $2::int) WHERE id = $1`, root, round)
		tx := begin(t, app)
		mustExec(t, tx, `UPDATE recalc.record SET owner = 'u1' WHERE id = $1`, first)
		rep := startRun(t, pool, engine.Options{Workers: 1, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 5}).wait(t)
		if rep.Kind != "incremental" || rep.Records == 0 {
			t.Fatalf("round %d: job %+v, want an incremental job of %s's family", round, rep, root)
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = tx.Exec(sctx, `UPDATE recalc.record SET owner = 'u2' WHERE id = $1`, second)
		cancel()
		if err != nil {
			t.Fatalf("round %d: the application's update of %s after %s, after the job of %s: %v", round, second, first, root, err)
		}
		commit(t, tx, "the application transaction")
		if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
			t.Fatalf("round %d: follow-up run: %v", round, err)
		}
		checkAccess(t, ctx, pool, []expect{{"u1", first, "all"}, {"u2", second, "all"}})
	}
	checkSettled(t, ctx, pool)
}

// TestPlanningWaitsBoundedForLockedRecords: planning fixes the family roots
// of records inserted without one, and an application transaction may hold
// such a record. The run then waits at most its lock timeout per attempt,
// retries, and fails with an error that says why; once the record is free
// the next run materializes it.
func TestPlanningWaitsBoundedForLockedRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := racePool(t)
	mustExec(t, pool, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c900', 'case', 'u1', 'a001')`)
	app := begin(t, connect(t, pool))
	mustExec(t, app, `SELECT FROM recalc.record WHERE id = 'c900' FOR UPDATE`)
	start := time.Now()
	_, err := engine.Run(ctx, pool, engine.Options{LockTimeout: 100 * time.Millisecond, Retries: 1}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "stayed locked") {
		t.Fatalf("run while a rootless record is locked: got %v, want a bounded wait that says the records stayed locked", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("run waited %s for a locked record, want about two lock timeouts", took)
	}
	rollback(t, app, "the application's lock")
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("run once the record is free: %v", err)
	}
	checkAccess(t, ctx, pool, []expect{{"u1", "c900", "all"}})
	checkSettled(t, ctx, pool)
}
