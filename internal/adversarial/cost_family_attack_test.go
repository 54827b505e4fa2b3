package adversarial

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/cputime"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
)

// TestCostBigFamilyWriteLinear: the writer puts many records in one family
// with one statement (contacts under account a1), then changes one of
// them. The run writes the whole family's record rows again, in one
// chunk, deleting the rows of the records that left it.
//
// That delete kept the family's records with `rid NOT IN (SELECT
// unnest($2))`: under a custom plan (pgx's first five executions of it on
// a connection), once the family's records outgrew work_mem's hash table,
// PostgreSQL checked every materialized row against the whole list,
// quadratic in the family: 400,000 records took over a minute at the
// default work_mem, within the chunk's transaction (the family's rows
// locked, or on the watch's fast path the model lock held). Here work_mem
// is 64 kB, so that 40,000 records show it: about 40 s, where the linear
// run takes about 4 s under -race on an idle machine (2 s at 20,000), and
// 22 to 45 s on a loaded one. The bound is therefore on the processor time
// the run's PostgreSQL backends spend, which the load does not stretch:
// 1.25 s linear (45 s elapsed, the machine loaded), 41 s quadratic; 10 s
// catches the one and leaves the other room. Where the backends' time
// cannot be read (a server on another machine), the bound is 20 s of the
// time elapsed.
// A set difference in SQL joined back on root_id was no better: the
// statistics of a family the writer just grew say one row, and the
// planner rescanned the difference for each. Found by an attack helper.
func TestCostBigFamilyWriteLinear(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	const n = 40000
	exec(t, b.writer, fmt.Sprintf(`INSERT INTO recalc.record (id, object, owner, parent)
		SELECT 'big' || g, 'contact', 'u1', 'a1' FROM generate_series(1, %d) g`, n))
	b.run(t)
	exec(t, b.writer, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'big1'`)
	exec(t, b.writer, `DELETE FROM recalc.record WHERE id = 'big2'`)

	cfg, err := pgxpool.ParseConfig(dburl.WithUser(b.url, b.engineRole))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["work_mem"] = "64kB"
	var backends backendTime
	cfg.AfterConnect = backends.connected
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	start := time.Now()
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("run: %v", err)
	}
	took, what, bound := time.Since(start), "took", 20*time.Second
	if d, ok := backends.spent(); ok {
		took, what, bound = d, "cost its PostgreSQL backends", 10*time.Second
	}
	if got := b.count(t, `SELECT count(*) FROM recalc.acl_record WHERE id IN ('big1', 'big2')`); got != 1 {
		t.Errorf("materialized rows of big1 and big2 (deleted): %d, want 1", got)
	}
	if got := b.access(t, "u2", "big1"); got != "all" {
		t.Errorf("u2 on big1, given to u2: %s, want all", got)
	}
	if took > bound {
		t.Errorf("a run writing a family of %d records %s %v; want linear time (well under %v)", n, what, took, bound)
	}
}

// backendTime sums the processor time a pool's PostgreSQL backends spend
// after they connect, as /proc counts it when the server runs here (each
// pid names a process called postgres).
type backendTime struct {
	mu    sync.Mutex
	start map[int]time.Duration // by backend pid
	ok    bool
}

// connected is the pool's AfterConnect: it notes the backend's pid and
// the processor time it has spent so far.
func (b *backendTime) connected(ctx context.Context, conn *pgx.Conn) error {
	var pid int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return fmt.Errorf("read the backend's pid: %w", err)
	}
	d, name, ok := cputime.Process(pid)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.start == nil {
		b.start, b.ok = map[int]time.Duration{}, true
	}
	b.start[pid], b.ok = d, b.ok && ok && name == "postgres"
	return nil
}

// spent returns the processor time the backends spent since they
// connected, while they are still connected; ok is false when it could
// not be read for one of them.
func (b *backendTime) spent() (sum time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for pid, start := range b.start {
		d, _, ok := cputime.Process(pid)
		if !ok {
			return 0, false
		}
		sum += d - start
	}
	return sum, b.ok
}
