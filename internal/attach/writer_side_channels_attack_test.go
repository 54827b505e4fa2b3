package attach_test

import (
	"context"
	"strings"
	"testing"
)

// TestWriterSideChannelsShowNoAttachedValue: past the scans of
// TestWriterReadsNoAttachedRecord, a writer role tries the other ways a
// statement could read a hidden row of recalc.record: an upsert whose
// ON CONFLICT ... WHERE casts the existing row's fields (the cast's error
// would echo them) or returns them, a delete returning what it hit, a row
// lock (a wait would tell a locked row), and the planner's statistics
// (pg_stats, its most common values). None shows an attached record's
// owner or field: the upserts fail with row-level security's error, which
// names no value; the others see no row. What a writer still learns is
// that a key is taken (a unique violation, or an upsert refused), and
// counts and estimates (SECURITY.md, "What a writer still learns").
func TestWriterSideChannelsShowNoAttachedValue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	w, _ := b.writerPool(t)
	b.mustAttach(t, crmSpec)
	var owner, industry string
	if err := b.engine.QueryRow(ctx, `SELECT owner, fields ->> 'industry' FROM recalc.record WHERE id = 'account:1'`).Scan(&owner, &industry); err != nil || industry == "" {
		t.Fatalf("account:1 as the engine reads it: %v, industry %q", err, industry)
	}
	b.exec(t, b.engine, `ANALYZE recalc.record`)
	for _, sql := range []string{
		`INSERT INTO recalc.record (id, object, owner) VALUES ('account:1', 'note', 'x')
			ON CONFLICT (id) DO UPDATE SET owner = excluded.owner WHERE (recalc.record.fields ->> 'industry')::int = 1`,
		`INSERT INTO recalc.record (id, object, owner) VALUES ('account:1', 'note', 'x')
			ON CONFLICT (id) DO UPDATE SET owner = excluded.owner WHERE recalc.record.owner = 'nobody'`,
		`INSERT INTO recalc.record (id, object, owner) VALUES ('account:1', 'note', 'x')
			ON CONFLICT (id) DO UPDATE SET fields = recalc.record.fields RETURNING fields::text`,
	} {
		_, err := w.Exec(ctx, sql)
		if sqlState(err) != "42501" {
			t.Errorf("the writer's upsert onto account:1 %q: %v, want row-level security's refusal (42501)", sql, err)
		}
		if err != nil && (strings.Contains(err.Error(), industry) || strings.Contains(err.Error(), owner)) {
			t.Errorf("the writer's upsert onto account:1 says its owner or industry: %v", err)
		}
	}
	count := func(sql string) {
		t.Helper()
		var n int
		if err := w.QueryRow(ctx, sql).Scan(&n); err != nil || n != 0 {
			t.Errorf("the writer's %q: %d rows (%v), want none, at once", sql, n, err)
		}
	}
	holder, err := b.engine.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx) //nolint:errcheck // no-op once ended
	if _, err := holder.Exec(ctx, `SELECT FROM recalc.record WHERE id = 'account:1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	count(`SELECT count(*) FROM (SELECT FROM recalc.record WHERE id = 'account:1' FOR UPDATE NOWAIT) s`)
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	count(`WITH d AS (DELETE FROM recalc.record WHERE object = 'account' RETURNING owner) SELECT count(*) FROM d`)
	count(`SELECT count(*) FROM pg_stats WHERE schemaname = 'recalc' AND tablename = 'record'`)
}
