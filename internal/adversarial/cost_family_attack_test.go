package adversarial

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

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
// run takes about 4 s under -race on an idle machine (2 s at 20,000). The
// bound, 20 s, leaves a loaded machine room.
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
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	start := time.Now()
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("run: %v", err)
	}
	took := time.Since(start)
	if got := b.count(t, `SELECT count(*) FROM recalc.acl_record WHERE id IN ('big1', 'big2')`); got != 1 {
		t.Errorf("materialized rows of big1 and big2 (deleted): %d, want 1", got)
	}
	if got := b.access(t, "u2", "big1"); got != "all" {
		t.Errorf("u2 on big1, given to u2: %s, want all", got)
	}
	if took > 20*time.Second {
		t.Errorf("a run writing a family of %d records took %v; want linear time (well under 20 s)", n, took)
	}
}
