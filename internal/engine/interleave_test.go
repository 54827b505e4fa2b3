package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/engine"
)

// keyMoves are application transactions that change which family a record
// is in, or which record an id names: moves, ids renamed or swapped, a
// record deleted and another inserted under its id, a family's root deleted
// (and inserted again). Each touches the families of a003 and a007 of
// raceOrg.
var keyMoves = []struct {
	name  string
	stmts []string
}{
	{"a case moves to another account", []string{`UPDATE recalc.record SET parent = 'a007' WHERE id = 'c003_0'`}},
	{"a case is deleted and another inserted under its id in another family", []string{
		`DELETE FROM recalc.record WHERE id = 'c003_0'`,
		`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c003_0', 'case', 'u1', 'a007')`}},
	{"two cases of two families swap ids", []string{
		`UPDATE recalc.record SET id = 'tmp' WHERE id = 'c003_0'`,
		`UPDATE recalc.record SET id = 'c003_0' WHERE id = 'c007_0'`,
		`UPDATE recalc.record SET id = 'c007_0' WHERE id = 'tmp'`}},
	{"a family's root is deleted and inserted again, another's", []string{
		`DELETE FROM recalc.record WHERE id = 'a003'`,
		`INSERT INTO recalc.record (id, object, owner, fields) VALUES ('a003', 'account', 'u2', '{"tier": 4}')`}},
	{"an account takes another's id", []string{
		`DELETE FROM recalc.record WHERE id = 'a007'`,
		`UPDATE recalc.record SET id = 'a007' WHERE id = 'a003'`}},
	{"a task is inserted under a case that moves", []string{
		`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('t1', 'task__c', 'u3', 'c003_0')`,
		`UPDATE recalc.record SET parent = 'a007' WHERE id = 'c003_0'`}},
}

// keyMovePoint is when the application's transaction writes and commits,
// relative to a job that recomputes the families of a003 and a007.
type keyMovePoint struct {
	name string
	// wroteBefore: it writes before the run starts (and so before its
	// plan), else at the commit point.
	wroteBefore bool
	at          commitPoint
}

var keyMovePoints = []keyMovePoint{
	{"wrote before the plan, commits while a003's chunk is between its reads and its writes", true, midChunk},
	{"writes and commits while a003's chunk is between its reads and its writes", false, midChunk},
	{"wrote before the plan, commits after the chunks, before the finish", true, beforeFinish},
	{"writes and commits after the chunks, before the finish", false, beforeFinish},
}

// TestInterleavedKeyMoves: the families of a003 and a007 are in a job
// (committed owner changes of c003_1 and c007_1), and an application
// transaction, READ COMMITTED or (when it writes in the middle of a chunk)
// REPEATABLE READ with its snapshot taken before those changes, moves
// records between them or changes which record an id names (keyMoves); it
// writes before the plan or in the middle of the job, and commits while
// a003's chunk is between its reads and its writes, or before the job's
// finish (after the job is TestRaceLostChange's case). Whatever the order,
// once one more run has taken its change the tables are what a
// from-scratch full run computes, and nothing is left pending.
func TestInterleavedKeyMoves(t *testing.T) {
	t.Parallel()
	for _, mv := range keyMoves {
		for _, pt := range keyMovePoints {
			for _, rr := range []bool{false, true} {
				// A snapshot older than the plan matters to what is written
				// after it; once, in the middle of a chunk.
				if rr && (pt.wroteBefore || pt.at != midChunk) {
					continue
				}
				name := mv.name + "/" + pt.name
				if rr {
					name += "/repeatable read"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					interleavedKeyMove(t, mv.stmts, pt, rr)
				})
			}
		}
	}
}

func interleavedKeyMove(t *testing.T, stmts []string, pt keyMovePoint, rr bool) {
	ctx := context.Background()
	pool := racePool(t)
	obs, app, other, other2 := connect(t, pool), connect(t, pool), connect(t, pool), connect(t, pool)

	opts := pgx.TxOptions{}
	if rr {
		opts.IsoLevel = pgx.RepeatableRead
	}
	a, err := app.BeginTx(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Rollback(ctx) //nolint:errcheck // no-op once committed

	// The snapshot, for REPEATABLE READ.
	mustExec(t, a, `SELECT count(*) FROM recalc.record`)
	write := func() {
		for _, s := range stmts {
			mustExec(t, a, s)
		}
	}
	if pt.wroteBefore {
		write()
	}
	// B: the families of a003 and a007 are in the job, one chunk each.
	mustExec(t, pool, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'c003_1'`)
	mustExec(t, pool, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'c007_1'`)

	holder := begin(t, other)
	defer holder.Rollback(ctx) //nolint:errcheck // no-op once ended

	// Hold the share rows a003's chunk deletes, or a row of a007's family.
	if pt.at == midChunk {
		mustExec(t, holder, `SELECT FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'c003_1') FOR UPDATE`)
	} else {
		mustExec(t, holder, `SELECT FROM recalc.acl_record WHERE id = 'c007_0' FOR UPDATE`)
	}
	run := startRun(t, pool, engine.Options{Workers: 2, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 2})
	switch pt.at {
	case midChunk:
		waitBlockedBy(t, obs, other.PgConn().PID(), run.done, "the chunk of a003 to wait before its writes")
		if !pt.wroteBefore {
			write()
		}
		commit(t, a, "A")
		rollback(t, holder, "the share rows")
	case beforeFinish:
		waitBlockedBy(t, obs, other.PgConn().PID(), run.done, "the chunk of a007 to wait for the held row")
		jobLock := begin(t, other2)
		defer jobLock.Rollback(ctx) //nolint:errcheck // no-op once ended
		mustExec(t, jobLock, `SELECT FROM recalc.job WHERE status = 'running' FOR NO KEY UPDATE`)
		rollback(t, holder, "the row lock")
		waitBlockedBy(t, obs, other2.PgConn().PID(), run.done, "the job's finish to wait for the job row")
		if !pt.wroteBefore {
			write()
		}
		commit(t, a, "A")
		rollback(t, jobLock, "the job row lock")
	}
	rep := run.wait(t)
	if rep.Kind != "incremental" || rep.Chunks != 2 {
		t.Errorf("job %+v, want an incremental job of a003's and a007's families, a chunk each", rep)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{ChunkSize: 3}, zerolog.Nop()); err != nil {
		t.Fatalf("follow-up run: %v", err)
	}
	checkSettled(t, ctx, pool)
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM recalc.record WHERE root_id IS NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d records left without a family root", n)
	}
}

// TestInterleavedKeyMovesFastPath is TestInterleavedKeyMoves for the fast
// path of `recalc watch`: its step has read the change rows (the owner
// changes of c003_1 and c007_1) and waits for a row of a003's family when
// the application's transaction, written before the step or then, commits.
// After more steps, the tables are what a full run computes.
func TestInterleavedKeyMovesFastPath(t *testing.T) {
	t.Parallel()
	for _, mv := range keyMoves {
		for _, wroteBefore := range []bool{true, false} {
			name := mv.name + "/writes while the step waits"
			if wroteBefore {
				name = mv.name + "/wrote before the step"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				interleavedKeyMoveFast(t, mv.stmts, wroteBefore)
			})
		}
	}
}

func interleavedKeyMoveFast(t *testing.T, stmts []string, wroteBefore bool) {
	ctx := context.Background()
	pool := racePool(t)
	obs, app, other := connect(t, pool), connect(t, pool), connect(t, pool)
	live := engine.NewLive(engine.Options{LockTimeout: 20 * time.Second}, 100)
	if _, err := live.Step(ctx, pool, zerolog.Nop()); err != nil { // loads the configuration
		t.Fatal(err)
	}
	a := begin(t, app)
	defer a.Rollback(ctx) //nolint:errcheck // no-op once committed
	write := func() {
		for _, s := range stmts {
			mustExec(t, a, s)
		}
	}
	if wroteBefore {
		write()
	}
	mustExec(t, pool, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'c003_1'`)
	mustExec(t, pool, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'c007_1'`)
	holder := begin(t, other)
	defer holder.Rollback(ctx) //nolint:errcheck // no-op once ended
	mustExec(t, holder, `SELECT FROM recalc.acl_record WHERE id = 'c003_0' FOR UPDATE`)

	done := make(chan struct{})
	var rep *engine.LiveReport
	var err error
	go func() {
		defer close(done)
		rep, err = live.Step(ctx, pool, zerolog.Nop())
	}()
	waitBlockedBy(t, obs, other.PgConn().PID(), done, "the fast path to wait for a row of a003's family")
	if !wroteBefore {
		write()
	}
	commit(t, a, "A")
	rollback(t, holder, "the row lock")
	<-done
	if err != nil {
		t.Fatalf("step: %v", err)
	}
	if !rep.Fast || rep.Changes != 2 {
		t.Errorf("step %+v, want the fast path to take the two owner changes", rep)
	}
	for i := 0; ; i++ {
		rep, err := live.Step(ctx, pool, zerolog.Nop())
		if err != nil {
			t.Fatalf("step: %v", err)
		}
		if rep.Changes == 0 && rep.Run == nil {
			break
		}
		if i == 5 {
			t.Fatal("steps still find changes after 5 of them")
		}
	}
	checkSettled(t, ctx, pool)
}

// TestInterleavedLongWriters: three application connections write records
// with plain SQL in transactions that stay open across the engine's work
// (READ COMMITTED and REPEATABLE READ, a random pause inside each, some
// rolled back): owner changes, moves between families, cases renamed,
// deleted, and deleted and inserted again under their id in another family,
// new cases and tasks. Meanwhile a `recalc watch` (engine.Live, two records
// a fast batch) and `recalc run` (incremental, and now and then full in
// place) materialize them. Once the writers stop and one more run has
// taken what is left, the tables are what a from-scratch full run
// computes.
func TestInterleavedLongWriters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := racePool(t)
	stop := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	var committed, failed atomic.Int64
	for w := 0; w < 3; w++ {
		app := connect(t, pool)
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 144))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return nil
				default:
				}
				if err := longWrite(gctx, app, rng, fmt.Sprintf("w%d_%d", w, i)); err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					failed.Add(1)
					continue
				}
				committed.Add(1)
			}
		})
	}
	var steps, runs atomic.Int64
	g.Go(func() error {
		live := engine.NewLive(engine.Options{Workers: 1, ChunkSize: 3, LockTimeout: 10 * time.Second, Retries: 5}, 2)
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			if _, err := live.Step(gctx, pool, zerolog.Nop()); err != nil {
				return fmt.Errorf("watch step %d: %w", steps.Load()+1, err)
			}
			steps.Add(1)
		}
	})
	g.Go(func() error {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return nil
			case <-time.After(20 * time.Millisecond):
			}
			opt := engine.Options{Workers: 2, ChunkSize: 3, LockTimeout: 10 * time.Second, Retries: 5, Full: n%5 == 4, InPlace: true}
			if _, err := engine.Run(gctx, pool, opt, zerolog.Nop()); err != nil {
				return fmt.Errorf("run %d: %w", n+1, err)
			}
			runs.Add(1)
		}
	})
	select {
	case <-time.After(4 * time.Second):
	case <-gctx.Done():
	}
	close(stop)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d transactions committed, %d rolled back or failed; %d watch steps, %d runs", committed.Load(), failed.Load(), steps.Load(), runs.Load())
	if committed.Load() < 10 || steps.Load() == 0 || runs.Load() == 0 {
		t.Fatal("too little happened: nothing was raced")
	}
	if _, err := engine.Run(ctx, pool, engine.Options{ChunkSize: 3}, zerolog.Nop()); err != nil {
		t.Fatalf("run after the writers: %v", err)
	}
	checkSettled(t, ctx, pool)
}

// longWrite is one application transaction of TestInterleavedLongWriters:
// one to three random writes, with a pause of up to 60 ms before each and
// before the commit; a tenth roll back. fresh names records it inserts.
func longWrite(ctx context.Context, c *pgx.Conn, rng *rand.Rand, fresh string) error {
	opts := pgx.TxOptions{}
	if rng.IntN(2) == 0 {
		opts.IsoLevel = pgx.RepeatableRead
	}
	tx, err := c.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)                                                        //nolint:errcheck // no-op once committed
	if _, err := tx.Exec(ctx, `SELECT count(*) FROM recalc.record`); err != nil { // the snapshot
		return err
	}
	acc := func() string { return fmt.Sprintf("a%03d", []int{0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11}[rng.IntN(11)]) }
	kase := func() string {
		return fmt.Sprintf("c%03d_%d", []int{0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11}[rng.IntN(11)], rng.IntN(2))
	}
	user := func() string { return fmt.Sprintf("u%d", 1+rng.IntN(4)) }
	for n := 1 + rng.IntN(3); n > 0; n-- {
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		var stmts []string
		switch rng.IntN(8) {
		case 0:
			stmts = []string{fmt.Sprintf(`UPDATE recalc.record SET owner = '%s' WHERE id = '%s'`, user(), acc())}
		case 1:
			stmts = []string{fmt.Sprintf(`UPDATE recalc.record SET owner = '%s' WHERE id IN (SELECT id FROM recalc.record WHERE id LIKE '%s%%')`, user(), kase()[:4])}
		case 2:
			stmts = []string{fmt.Sprintf(`UPDATE recalc.record SET parent = '%s' WHERE id = '%s'`, acc(), kase())}
		case 3:
			stmts = []string{fmt.Sprintf(`UPDATE recalc.record SET id = '%s' WHERE id = '%s'`, fresh+"_"+fmt.Sprint(n), kase())}
		case 4:
			k := kase()
			stmts = []string{fmt.Sprintf(`DELETE FROM recalc.record WHERE id = '%s'`, k),
				fmt.Sprintf(`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('%s', 'case', '%s', '%s')`, k, user(), acc())}
		case 5:
			id := fmt.Sprintf("%s_%d", fresh, n)
			stmts = []string{fmt.Sprintf(`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('%s', 'case', '%s', '%s')`, id, user(), acc()),
				fmt.Sprintf(`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('%s_t', 'task__c', '%s', '%s')`, id, user(), id)}
		case 6:
			stmts = []string{fmt.Sprintf(`DELETE FROM recalc.record WHERE id = '%s'`, kase())}
		default:
			stmts = []string{fmt.Sprintf(`UPDATE recalc.record SET fields = jsonb_build_object('tier', %d) WHERE id = '%s'`, rng.IntN(5), acc())}
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
	}
	time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
	if rng.IntN(10) == 0 {
		return tx.Rollback(ctx)
	}
	return tx.Commit(ctx)
}

// TestInterleavedRootFixWaits: case c900 was inserted under a003 with
// plain SQL and committed, so it has no family root yet; application
// transaction A (READ COMMITTED or REPEATABLE READ) then writes it and
// holds its row while a run's plan fixes family roots: the plan waits for
// A, A commits, and the plan's update goes on over A's row as committed
// (PostgreSQL re-checks it, with the root computed before). Whatever A did
// to c900 (moved it, renamed it, deleted it, put another record under its
// id elsewhere, gave it a child and moved it), once one more run has taken
// A's change the tables are what a from-scratch full run computes.
func TestInterleavedRootFixWaits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		stmts []string
	}{
		{"moved", []string{`UPDATE recalc.record SET parent = 'a007' WHERE id = 'c900'`}},
		{"renamed", []string{`UPDATE recalc.record SET id = 'c901' WHERE id = 'c900'`}},
		{"renamed and moved", []string{`UPDATE recalc.record SET id = 'c901', parent = 'a007' WHERE id = 'c900'`}},
		{"re-owned", []string{`UPDATE recalc.record SET owner = 'u2' WHERE id = 'c900'`}},
		{"deleted", []string{`DELETE FROM recalc.record WHERE id = 'c900'`}},
		{"deleted, and another inserted under its id elsewhere", []string{
			`DELETE FROM recalc.record WHERE id = 'c900'`,
			`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c900', 'case', 'u2', 'a007')`}},
		{"given a child, then moved", []string{
			`INSERT INTO recalc.record (id, object, owner, parent) VALUES ('t900', 'task__c', 'u3', 'c900')`,
			`UPDATE recalc.record SET parent = 'a007' WHERE id = 'c900'`}},
		{"its parent moved under it", []string{`UPDATE recalc.record SET parent = NULL WHERE id = 'c900'`}},
	} {
		for _, rr := range []bool{false, true} {
			if rr && tc.name != "moved" && tc.name != "renamed" {
				continue
			}
			name := tc.name
			if rr {
				name += "/repeatable read"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				pool := racePool(t)
				obs, app := connect(t, pool), connect(t, pool)
				mustExec(t, pool, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('c900', 'case', 'u1', 'a003')`)
				opts := pgx.TxOptions{}
				if rr {
					opts.IsoLevel = pgx.RepeatableRead
				}
				a, err := app.BeginTx(ctx, opts)
				if err != nil {
					t.Fatal(err)
				}
				defer a.Rollback(ctx) //nolint:errcheck // no-op once committed
				mustExec(t, a, `SELECT FROM recalc.record WHERE id = 'c900' FOR UPDATE`)
				for _, s := range tc.stmts {
					mustExec(t, a, s)
				}
				run := startRun(t, pool, engine.Options{Workers: 2, ChunkSize: 3, LockTimeout: 20 * time.Second, Retries: 2})
				waitBlockedBy(t, obs, app.PgConn().PID(), run.done, "the plan to wait for c900")
				commit(t, a, "A")
				run.wait(t)
				if _, err := engine.Run(ctx, pool, engine.Options{ChunkSize: 3}, zerolog.Nop()); err != nil {
					t.Fatalf("follow-up run: %v", err)
				}
				checkSettled(t, ctx, pool)
			})
		}
	}
}

// TestFullRunFixesStrayRoots: a record whose stored family root is not
// its parent's (as an import's last absorb left one, before the import's
// rooted mark was scoped to its own writes) is computed in the wrong
// family: its parent is not there, so it fails closed. Incremental runs
// take families by that root and have no change row naming it; a full run
// read families by it too and, like `recalc verify`, never saw it. A full
// run now fixes every root that is not its parent's before it computes.
func TestFullRunFixesStrayRoots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := racePool(t)
	app := connect(t, pool)
	rootOf := func() string {
		var root string
		if err := pool.QueryRow(ctx, `SELECT root_id FROM recalc.record WHERE id = 'c003_0'`).Scan(&root); err != nil {
			t.Fatal(err)
		}
		return root
	}
	for _, opt := range []engine.Options{{Full: true, InPlace: true}, {Full: true}} {
		// Written as a root fix is: no change row names it.
		tx := begin(t, app)
		mustExec(t, tx, `SELECT set_config('recalc.fixing_roots', 'on', true)`)
		mustExec(t, tx, `UPDATE recalc.record SET root_id = 'a007' WHERE id = 'c003_0'`)
		commit(t, tx, "the stray root")
		// Its family's next job computes it where its parent is not.
		mustExec(t, pool, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'c007_0'`)
		if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
		if root := rootOf(); root != "a007" {
			t.Fatalf("an incremental run changed the stray root to %s", root)
		}
		checkAccess(t, ctx, pool, []expect{{"u4", "c003_0", "none"}})
		if _, err := engine.Run(ctx, pool, opt, zerolog.Nop()); err != nil {
			t.Fatalf("full run (in place %v): %v", opt.InPlace, err)
		}
		if root := rootOf(); root != "a003" {
			t.Errorf("after a full run (in place %v), c003_0 has root %s, want a003", opt.InPlace, root)
		}
		checkAccess(t, ctx, pool, []expect{{"u4", "c003_0", "all"}})
		checkSettled(t, ctx, pool)
	}
}

// TestVerifyReportsStrayRoots: `recalc verify` counts the records whose
// stored family root is not their parent's, which no family read by its
// stored root shows (the share rows agree with the wrong root), as drift;
// a clean org and a root whose fixing is pending (the change row of a
// reparent waits for the next run) count 0. --repair fixes the root as a
// full run does and leaves the families it moves between to the next run.
func TestVerifyReportsStrayRoots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := racePool(t)
	app := connect(t, pool)
	verify := func(opt engine.VerifyOptions) *engine.VerifyReport {
		t.Helper()
		rep, err := engine.Verify(ctx, pool, opt, zerolog.Nop())
		if err != nil {
			t.Fatalf("verify (repair %v): %v", opt.Repair, err)
		}
		return rep
	}
	if rep := verify(engine.VerifyOptions{}); rep.StrayRoots != 0 || rep.Drift() {
		t.Fatalf("verify of a clean org: %d stray roots, drift %v; want 0, none", rep.StrayRoots, rep.Drift())
	}
	// Written as a root fix is (no change row), then materialized by an
	// incremental run of its wrong family: the share rows agree with it.
	tx := begin(t, app)
	mustExec(t, tx, `SELECT set_config('recalc.fixing_roots', 'on', true)`)
	mustExec(t, tx, `UPDATE recalc.record SET root_id = 'a007' WHERE id = 'c003_0'`)
	commit(t, tx, "the stray root")
	mustExec(t, pool, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'c007_0'`)
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	// A reparent whose root fixing is pending is no drift.
	mustExec(t, pool, `UPDATE recalc.record SET parent = 'a005' WHERE id = 'c004_0'`)
	rep := verify(engine.VerifyOptions{})
	if rep.StrayRoots != 1 || !rep.Drift() || len(rep.ShareRows) != 0 || rep.RecordRows != 0 {
		t.Fatalf("verify of a stray root: %d stray roots, drift %v, share rows %+v, record rows %d; want 1, drift, none, 0",
			rep.StrayRoots, rep.Drift(), rep.ShareRows, rep.RecordRows)
	}
	if rep := verify(engine.VerifyOptions{Repair: true}); rep.StrayRoots != 1 || !rep.Repaired {
		t.Fatalf("verify --repair: %d stray roots, repaired %v; want 1 repaired", rep.StrayRoots, rep.Repaired)
	}
	var root string
	if err := pool.QueryRow(ctx, `SELECT root_id FROM recalc.record WHERE id = 'c003_0'`).Scan(&root); err != nil || root != "a003" {
		t.Fatalf("after verify --repair, c003_0 has root %q (%v), want a003", root, err)
	}
	if rep := verify(engine.VerifyOptions{}); rep.StrayRoots != 0 || rep.Skipped == 0 {
		t.Errorf("verify after the repair: %d stray roots, %d families skipped; want 0, those re-rooted pending", rep.StrayRoots, rep.Skipped)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	checkAccess(t, ctx, pool, []expect{{"u4", "c003_0", "all"}})
	checkSettled(t, ctx, pool)
}
