package queue_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// TestFailKeepsAnyError: a job's error goes into its NOTIFY payload, which
// PostgreSQL refuses from 8,000 bytes on. A longer error made the statement
// that marks the job failed fail with it, and so the job stayed running, to
// be resumed and fail again at every run. Fail keeps the error's first
// queue.MaxErrorBytes, cut between characters.
func TestFailKeepsAnyError(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	for _, n := range []int{0, 100, queue.MaxErrorBytes, 7000, 9000, 1 << 20} {
		msg := strings.Repeat("é", n/2) + strings.Repeat("x", n%2)
		var id int64
		var marked bool
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
			if id, err = queue.Create(ctx, tx, &queue.Job{Kind: queue.Full, Trigger: "test", Config: []byte("{}"), Plan: []byte("{}")}, nil); err != nil {
				return err
			}
			marked, err = queue.Fail(ctx, tx, id, msg)
			return err
		}); err != nil || !marked {
			t.Fatalf("error of %d bytes: marked %v, %v", n, marked, err)
		}
		j, err := queue.Get(ctx, pool, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != queue.Failed || !utf8.ValidString(j.Error) || len(j.Error) > queue.MaxErrorBytes+len(queue.ErrorCut) {
			t.Fatalf("error of %d bytes: job %s with an error of %d bytes (valid UTF-8: %v)", n, j.Status, len(j.Error), utf8.ValidString(j.Error))
		}
		kept := strings.TrimSuffix(j.Error, queue.ErrorCut)
		if !strings.HasPrefix(msg, kept) || (len(msg) <= queue.MaxErrorBytes) != (kept == j.Error) || len(kept) < min(len(msg), queue.MaxErrorBytes-1) {
			t.Fatalf("error of %d bytes kept as %d bytes: %.40q", n, len(j.Error), j.Error)
		}
		if _, err := pool.Exec(ctx, `DELETE FROM recalc.job WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
}
