package attach_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/store"
)

// commitBefore is a query tracer that, before the at-th statement its pool
// sends (counting from 0, on any connection), starts write and waits for it
// up to a moment: a write that waits for a lock the traced session holds
// commits later, once it is granted. It counts the statements.
type commitBefore struct {
	at    int64
	n     atomic.Int64
	write func() error
	done  chan error
	once  sync.Once
}

func (c *commitBefore) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	if c.n.Add(1)-1 == c.at {
		c.once.Do(func() {
			go func() { c.done <- c.write() }()
			select {
			case err := <-c.done:
				c.done <- err
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
	return ctx
}

func (c *commitBefore) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// resumeWrites are the application's writes committed before one statement
// of `recalc resume`, the k-th history the k-th modulo their number.
var resumeWrites = [][]string{
	{`UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`},
	{`INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000007', 3, 'frank', 'new', 2500, NULL)`},
	{`DELETE FROM support."case" WHERE id = 1`, `UPDATE crm.account SET industry = 'tech' WHERE id = 2`},
	{`INSERT INTO crm.account (id, name, owner_id, vip) VALUES (7, 'Soylent', 'dave', true)`,
		`UPDATE crm.opportunity SET account_id = 7 WHERE id = ` + opp3},
	{`UPDATE crm.contact_account SET account_id = 1 WHERE contact_id = '00000000-0000-0000-0000-0000000000c1'`,
		`UPDATE support."case" SET priority = 4, owner_id = 'alice' WHERE id = 2`},
}

// TestResumeCommitPoints: with the four objects attached, calculation is
// deferred (both sides, or the share rows only), the application writes its
// tables, and `recalc resume` lifts the deferral and recalculates, while a
// watch (engine.Live) steps beside it; before one of resume's statements
// (each in turn, in its own history) an application transaction commits a
// write (resumeWrites); when the watch took the work and resume sends
// fewer statements than that, the write commits after it. Whatever the statement, once a run follows nothing
// is logged, recalc.record mirrors the rows, and access is the oracle's and
// a full run's. Each side runs 6 histories, at statements spread evenly
// from the first to the last (a history sets up and attaches a database of
// its own: all of them, about 125 a side, took the package past 10
// minutes); RESUME_POINTS=N runs N a side, RESUME_POINTS=all (or
// RECALC_COMMIT_POINTS=all) every one.
func TestResumeCommitPoints(t *testing.T) {
	t.Parallel()
	for _, sides := range [][]string{{store.SideClosure, store.SideRules}, {store.SideRules}} {
		n := resumeStatements(t, sides)
		t.Logf("deferred %v: resume sends %d statements in all", sides, n)
		for _, k := range spread(n, os.Getenv("RESUME_POINTS"), 6) {
			t.Run(fmt.Sprintf("%v/statement %d", sides, k), func(t *testing.T) {
				t.Parallel()
				resumeCommitPoint(t, sides, int64(k), resumeWrites[k%len(resumeWrites)], true)
			})
		}
	}
}

// spread picks the statements of n to commit before: want of them ("all",
// or a count; def when empty), evenly spaced from the first to the last.
func spread(n int, want string, def int) []int {
	m := def
	if want == "all" || os.Getenv("RECALC_COMMIT_POINTS") == "all" {
		m = n
	} else if v, err := strconv.Atoi(want); err == nil && v > 0 {
		m = v
	}
	m = min(m, n)
	ks := make([]int, 0, m)
	for i := range m {
		k := 0
		if m > 1 {
			k = i * (n - 1) / (m - 1)
		}
		ks = append(ks, k)
	}
	return ks
}

// resumeStatements counts the statements of a resume with nothing beside.
func resumeStatements(t *testing.T, sides []string) int {
	t.Helper()
	c := resumeCommitPoint(t, sides, -1, nil, false)
	return int(c.n.Load())
}

// resumeCommitPoint is one history of TestResumeCommitPoints: the write
// committed before resume's statement at (none when negative), a watch
// stepping beside when watch is set.
func resumeCommitPoint(t *testing.T, sides []string, at int64, write []string, watch bool) *commitBefore {
	ctx := context.Background()
	b := setupAttached(t, raceOpps,
		`INSERT INTO crm.contact VALUES ('00000000-0000-0000-0000-0000000000c1', 'bob', 'cfo', NULL)`,
		`INSERT INTO crm.contact_account VALUES ('00000000-0000-0000-0000-0000000000c1', 2)`)
	if err := store.Defer(ctx, b.engine, sides); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'carol' WHERE id = 2`,
		`INSERT INTO support."case" VALUES (3, 3, 'dave', 5, 'New')`,
		`UPDATE crm.opportunity SET amount = 1500 WHERE id = `+opp1)
	b.run(t) // deferred: changes nothing
	c := &commitBefore{at: at, done: make(chan error, 1), write: func() error { return tx(ctx, b.app, write...) }}
	cfg, err := pgxpool.ParseConfig(dburl.WithUser(b.url, b.engineRole))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = c
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	stop := make(chan struct{})
	stepped := make(chan error, 1)
	go func() { // the watch
		live := engine.NewLive(engine.Options{Trigger: "watch", Retries: 5}, 1000)
		for {
			select {
			case <-stop:
				stepped <- nil
				return
			default:
			}
			if !watch {
				<-stop
				continue
			}
			if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil && !pg.IsRetryable(err) {
				stepped <- fmt.Errorf("watch step: %w", err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	// recalc resume: lift the deferral, then run (cli.ResumeCmd).
	err = store.Undefer(ctx, pool, sides)
	if err == nil {
		_, err = engine.Run(ctx, pool, engine.Options{Workers: 2, ChunkSize: 2, Retries: 5}, zerolog.Nop())
	}
	close(stop)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if err := <-stepped; err != nil {
		t.Fatal(err)
	}
	if at >= 0 {
		if c.n.Load() <= at {
			// The watch beside took the work: resume sent fewer statements
			// than with nothing beside. The write then commits after it.
			t.Logf("resume sent %d statements, none at %d: the write commits after it", c.n.Load(), at)
			c.done <- tx(ctx, b.app, write...)
		}
		if err := <-c.done; err != nil {
			t.Fatalf("the application's write: %v", err)
		}
	}
	b.raceCheckFull(t, "after the resume and a run")
	b.checkMirror(t, "after the resume and a run")
	b.checkOracle(t, "after the resume and a run")
	return c
}
