package testdb

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// statementCounter counts the statements a pool's sessions send.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestMaterializedReadsInOneStatement: the property tests render the
// materialized tables twice a step, and a round trip to the server costs
// more than the rendering of a small model's tables; it took one a table.
// Each table still gives its own line, empty ones too.
func TestMaterializedReadsInOneStatement(t *testing.T) {
	t.Parallel()
	cfg := Migrated(t).Config()
	var count statementCounter
	cfg.ConnConfig.Tracer = &count
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	got := Materialized(t, pool)
	if n := count.n.Load(); n != 1 {
		t.Errorf("Materialized sent %d statements, want 1", n)
	}
	if want := strings.Repeat("\n", len(materializedParts)); got != want {
		t.Errorf("Materialized of empty tables = %q, want %q", got, want)
	}
}
