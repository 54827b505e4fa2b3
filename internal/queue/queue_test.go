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

// TestFailKeepsAnyErrorEscaped: the payload carries the error as JSON,
// where a control character takes six bytes (\u0001) and a quote or a
// backslash two, and PostgreSQL's text takes neither a NUL nor bytes that
// are not UTF-8. An error of 2,000 control characters made a payload of
// 12,000 bytes, which NOTIFY refused, and an error holding a NUL or a
// stray byte failed the UPDATE itself: either way the job stayed running.
func TestFailKeepsAnyErrorEscaped(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	for _, c := range []struct{ name, msg string }{
		{"control characters", strings.Repeat("\x01", 7000)},
		{"quotes", strings.Repeat(`"\`, 3500)},
		{"a NUL", "bad \x00 name"},
		{"not UTF-8", "bad \xff\xfe name"},
		{"mixed", strings.Repeat("é\x1f\"", 3000)},
	} {
		name, msg := c.name, c.msg
		if _, err := pool.Exec(ctx, `DELETE FROM recalc.job`); err != nil {
			t.Fatal(err)
		}
		var id int64
		var marked bool
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
			if id, err = queue.Create(ctx, tx, &queue.Job{Kind: queue.Full, Trigger: "test", Config: []byte("{}"), Plan: []byte("{}")}, nil); err != nil {
				return err
			}
			marked, err = queue.Fail(ctx, tx, id, msg)
			return err
		}); err != nil || !marked {
			t.Errorf("%s: marked %v, %v", name, marked, err)
			continue
		}
		p, err := queue.Payload(ctx, pool, id)
		if err != nil {
			t.Fatal(err)
		}
		if j, err := queue.Get(ctx, pool, id); err != nil || j.Status != queue.Failed || j.Error == "" || len(p) >= 8000 {
			t.Errorf("%s: job %v, payload of %d bytes, %v", name, j, len(p), err)
		}
	}
}
