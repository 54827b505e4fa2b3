package attach_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/dburl"
)

// TestUsersMarksDroppedInLinearTime: with a users table attached, the
// writer (recalc grant writer) deletes records that have a share to an
// attached user, one statement each: every statement leaves a row in
// recalc.attached_users_mark (migration 057). The watch's fast path then
// drops those marks, under the model lock (changes.UsersMarked).
//
// It told the marks left from those it dropped with `ctid NOT IN (SELECT
// ctid FROM dropped)`: once the dropped marks no longer fit work_mem's
// hash table, PostgreSQL checks every mark against the list one by one,
// quadratic in the marks. At the default work_mem that is past about
// 400,000 marks (700,000 took over two minutes, in a step that holds the
// model lock: imports, runs and the watch wait); here work_mem is 64 kB,
// so that 10,000 marks show it (about 6 s, against 0.1 s in linear time).
// Found by an attack helper.
func TestUsersMarksDroppedInLinearTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsers(t)
	const n = 10000
	var recs, shares []string
	for i := range n {
		recs = append(recs, fmt.Sprintf(`{"object": "lead", "id": "M%d", "owner": "alice"}`, i))
		shares = append(shares, fmt.Sprintf(`{"object": "lead", "record": "M%d", "grantee": "user:bob", "access": "read", "cause": "manual"}`, i))
	}
	if out, err := b.recalc("import", "--merge", tempFile(t, `{"objects": [{"name": "lead", "internal_owd": "private"}], "records": [`+
		strings.Join(recs, ",")+`]}`)); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if out, err := b.recalc("import", "--merge", tempFile(t, `{"shares": [`+strings.Join(shares, ",")+`]}`)); err != nil {
		t.Fatalf("import shares: %v\n%s", err, out)
	}
	b.run(t)
	if out, err := b.recalc("grant", "writer", b.appRole); err != nil {
		t.Fatalf("grant writer: %v\n%s", err, out)
	}
	// The writer: one DELETE statement per record, each firing the
	// statement trigger that leaves a mark.
	b.exec(t, b.app, fmt.Sprintf(`DO $$ BEGIN FOR i IN 0..%d LOOP DELETE FROM recalc.record WHERE id = 'M' || i; END LOOP; END $$`, n-1))
	var marks int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.attached_users_mark`).Scan(&marks); err != nil {
		t.Fatal(err)
	}
	if marks != n {
		t.Fatalf("%d marks after %d deletes, want %d", marks, n, n)
	}

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
	var marked bool
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		marked, err = changes.UsersMarked(ctx, tx)
		return err
	})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.attached_users_mark`).Scan(&marks); err != nil {
		t.Fatal(err)
	}
	if marked || marks != 0 {
		t.Errorf("marks naming only bob (attached): marked %v, %d left; want none", marked, marks)
	}
	if took > 2*time.Second {
		t.Errorf("dropping %d marks took %v; want linear time (well under 2 s)", n, took)
	}
}
