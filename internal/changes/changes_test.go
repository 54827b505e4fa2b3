package changes_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m, 4)) }

// bundle is what a change-log test works on: a database of its own with a
// family a1 <- c1 <- c2 and a lone record b1, all rooted, and an empty log.
type bundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{ctx: context.Background(), pool: testdb.Migrated(t)}
	b.exec(t, `INSERT INTO recalc.record (id, object, owner, parent, fields) VALUES
		('a1', 'account', 'u1', NULL, '{}'), ('c1', 'contact', 'u1', 'a1', '{}'),
		('c2', 'contact', 'u2', 'c1', '{}'), ('b1', 'account', 'u2', NULL, '{}')`)
	b.fix(t)
	b.exec(t, `DELETE FROM recalc.change`)
	return b
}

func (b *bundle) exec(t *testing.T, sql string) {
	t.Helper()
	if _, err := b.pool.Exec(b.ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// fix runs FixRoots over the whole log and returns the ids it re-rooted.
func (b *bundle) fix(t *testing.T) []string {
	t.Helper()
	var ids []string
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		log, err := changes.Read(b.ctx, tx)
		if err == nil {
			ids, err = changes.FixRoots(b.ctx, tx, log.Seqs, false)
		}
		return err
	})
	if err != nil {
		t.Fatalf("fix roots: %v", err)
	}
	slices.Sort(ids)
	return ids
}

// logged is the change log as (sorted keys, rooted) pairs, in seq order.
func (b *bundle) logged(t *testing.T) []string {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT array_to_string(ARRAY(SELECT unnest(keys) ORDER BY 1), ',')
		|| CASE WHEN rooted THEN ' rooted' ELSE '' END FROM recalc.change ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func (b *bundle) roots(t *testing.T) map[string]string {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT id, coalesce(root_id, '') FROM recalc.record`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var id, root string
	if _, err := pgx.ForEachRow(rows, []any{&id, &root}, func() error { out[id] = root; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUpdatesThatKeepTheFamilyAreRooted checks the marks the change-log
// trigger derives from the rows (migration 014), and that FixRoots, which
// skips rooted rows, still re-roots every record a statement moved.
func TestUpdatesThatKeepTheFamilyAreRooted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		sql    string
		logged []string
		fixed  []string          // the ids FixRoots re-roots
		roots  map[string]string // the roots afterwards, of the records listed
	}{
		{"owner change", `UPDATE recalc.record SET owner = 'u3' WHERE id = 'c1'`,
			[]string{"c1 rooted"}, nil, map[string]string{"c1": "a1", "c2": "a1"}},
		{"fields and object change", `UPDATE recalc.record SET fields = '{"x": 1}', object = 'case' WHERE id IN ('c2', 'b1')`,
			[]string{"b1,c2 rooted"}, nil, map[string]string{"c2": "a1", "b1": "b1"}},
		{"parent change moves the subtree", `UPDATE recalc.record SET parent = 'b1' WHERE id = 'c1'`,
			[]string{"c1"}, []string{"c1", "c2"}, map[string]string{"c1": "b1", "c2": "b1", "a1": "a1"}},
		{"parent cleared", `UPDATE recalc.record SET parent = NULL WHERE id = 'c1'`,
			[]string{"c1"}, []string{"c1", "c2"}, map[string]string{"c1": "c1", "c2": "c1"}},
		{"id change orphans the children", `UPDATE recalc.record SET id = 'a9' WHERE id = 'a1'`,
			[]string{"a1,a9"}, []string{"a9", "c1", "c2"}, map[string]string{"a9": "a9", "c1": "c1", "c2": "c1"}},
		{"one statement, both kinds", `UPDATE recalc.record SET owner = 'u4', parent = CASE id WHEN 'c2' THEN 'b1' ELSE parent END
			WHERE id IN ('c2', 'b1')`,
			[]string{"b1 rooted", "c2"}, []string{"c2"}, map[string]string{"c2": "b1", "b1": "b1", "c1": "a1"}},
		{"a new record adopts orphans", `INSERT INTO recalc.record (id, object, owner, parent, fields) VALUES ('z1', 'account', 'u1', NULL, '{}');
			UPDATE recalc.record SET parent = 'z1' WHERE id = 'b1'`,
			[]string{"b1", "z1"}, []string{"b1", "z1"}, map[string]string{"b1": "z1", "z1": "z1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.exec(t, tc.sql)
			if got := b.logged(t); !slices.Equal(got, tc.logged) {
				t.Errorf("change log %q, want %q", got, tc.logged)
			}
			if got := b.fix(t); !slices.Equal(got, tc.fixed) {
				t.Errorf("FixRoots re-rooted %q, want %q", got, tc.fixed)
			}
			roots := b.roots(t)
			for id, want := range tc.roots {
				if roots[id] != want {
					t.Errorf("root of %s is %q, want %q", id, roots[id], want)
				}
			}
		})
	}
}

// TestFixRootsWalksDeepChains checks that the walk up a long parent chain
// still finds the topmost record, and caps at 100 levels as before.
func TestFixRootsWalksDeepChains(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, `INSERT INTO recalc.record (id, object, owner, parent, fields)
		SELECT 'd' || i, 'contact', 'u1', CASE WHEN i > 0 THEN 'd' || (i - 1) END, '{}' FROM generate_series(0, 150) i`)
	b.fix(t)
	roots := b.roots(t)
	for id, want := range map[string]string{"d0": "d0", "d50": "d0", "d100": "d0", "d150": "d50"} {
		if roots[id] != want {
			t.Errorf("root of %s is %q, want %q", id, roots[id], want)
		}
	}
}

// TestStrayRoots: StrayRoots counts the records whose stored root differs
// from what root fixing computes, with no root fixing pending for them,
// and RepairStrayRoots fixes them as a full run does and logs them as one
// rooted change row. A root written wrong is written as a root fix is (no
// change row); a record whose root disagrees with its parent's but is
// what root fixing computes (below a wrong root, or in a parent loop) is
// not counted.
func TestStrayRoots(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		stray   string // written as a root fix is, then the log emptied
		app     string // written as the application does, logged
		fix     bool   // the log's roots fixed, and the log emptied, after app
		want    int64
		repairs []string // the change log after RepairStrayRoots, which fixes pending roots too, as a full run does
	}{
		{"clean", "", "", false, 0, nil},
		{"a leaf", `UPDATE recalc.record SET root_id = 'b1' WHERE id = 'c2'`, "", false, 1, []string{"c2 rooted"}},
		{"a subtree", `UPDATE recalc.record SET root_id = 'b1' WHERE id IN ('c1', 'c2')`, "", false, 2, []string{"c1,c2 rooted"}},
		{"a middle record, its child right", `UPDATE recalc.record SET root_id = 'b1' WHERE id = 'c1'`, "", false, 1, []string{"c1 rooted"}},
		{"a top record", `UPDATE recalc.record SET root_id = 'b1' WHERE id = 'a1'`, "", false, 1, []string{"a1 rooted"}},
		{"a reparent pending", "", `UPDATE recalc.record SET parent = 'b1' WHERE id = 'c1'`, false, 0, []string{"c1", "c1,c2 rooted"}},
		{"an orphan pending", "", `DELETE FROM recalc.record WHERE id = 'c1'`, false, 0, []string{"c1", "c2 rooted"}},
		{"a parent loop", "", `UPDATE recalc.record SET parent = 'c2' WHERE id = 'a1'`, true, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if tc.stray != "" {
				err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(b.ctx, `SELECT set_config('recalc.fixing_roots', 'on', true)`); err != nil {
						return err
					}
					_, err := tx.Exec(b.ctx, tc.stray)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				b.exec(t, `DELETE FROM recalc.change`)
			}
			if tc.app != "" {
				b.exec(t, tc.app)
			}
			if tc.fix {
				b.fix(t)
				b.exec(t, `DELETE FROM recalc.change`)
			}
			if n, err := changes.StrayRoots(b.ctx, b.pool); err != nil || n != tc.want {
				t.Fatalf("StrayRoots: %d, %v; want %d", n, err, tc.want)
			}
			var n int
			err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) (err error) {
				n, err = changes.RepairStrayRoots(b.ctx, tx)
				return err
			})
			if err != nil {
				t.Fatalf("RepairStrayRoots: %v", err)
			}
			if got := b.logged(t); !slices.Equal(got, tc.repairs) {
				t.Errorf("after RepairStrayRoots (%d), the change log is %q, want %q", n, got, tc.repairs)
			}
			if n, err := changes.StrayRoots(b.ctx, b.pool); err != nil || n != 0 {
				t.Errorf("StrayRoots after RepairStrayRoots: %d, %v; want 0", n, err)
			}
		})
	}
}

// TestKeepMovedWaiting: of the records a step gave no access, it logs
// (not rooted, with the oldest transaction id of the rows consumed) those
// whose stored root is not the one root fixing computes now, and only
// those: a record apart from its parent for good, whatever change rows
// name it, logs nothing.
func TestKeepMovedWaiting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		sql     string   // committed after the consumed row
		invalid []string // what the step gave no access
		want    []string // the row logged, as logged shows it ("" for none)
	}{
		{"moved to another family", `UPDATE recalc.record SET parent = 'b1' WHERE id = 'c2'`, []string{"c2"}, []string{"c2"}},
		{"its parent moved", `UPDATE recalc.record SET parent = 'b1' WHERE id = 'c1'`, []string{"c1", "c2"}, []string{"c1"}},
		{"moved within its family", `UPDATE recalc.record SET parent = 'a1' WHERE id = 'c2'`, []string{"c2"}, nil},
		{"not given no access", `UPDATE recalc.record SET parent = 'b1' WHERE id = 'c2'`, []string{"c1"}, nil},
		// x1 <-> x2 loops, x3 hangs off x1: x1 is its own root, x3 is in
		// x2's family. x1 moved under x3 is still its own root.
		{"a loop, moved within its root", `UPDATE recalc.record SET parent = 'x3' WHERE id = 'x1'`, []string{"x1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.exec(t, `INSERT INTO recalc.record (id, object, owner, parent, fields) VALUES
				('x1', 'contact', 'u1', 'x2', '{}'), ('x2', 'contact', 'u1', 'x1', '{}'), ('x3', 'contact', 'u1', 'x1', '{}')`)
			b.fix(t)
			b.exec(t, `DELETE FROM recalc.change`)
			b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'b1'`)
			var consumed []int64
			var oldest string
			if err := b.pool.QueryRow(b.ctx, `SELECT array_agg(seq), min(xid)::text FROM recalc.change`).Scan(&consumed, &oldest); err != nil {
				t.Fatal(err)
			}
			b.exec(t, tc.sql)
			var last int64
			if err := b.pool.QueryRow(b.ctx, `SELECT max(seq) FROM recalc.change`).Scan(&last); err != nil {
				t.Fatal(err)
			}
			err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error { return changes.KeepMovedWaiting(b.ctx, tx, tc.invalid, consumed) })
			if err != nil {
				t.Fatal(err)
			}
			rows, err := b.pool.Query(b.ctx, `SELECT array_to_string(keys, ',') || CASE WHEN rooted THEN ' rooted' ELSE '' END || ' ' || xid::text
				FROM recalc.change WHERE seq > $1 ORDER BY seq`, last)
			if err != nil {
				t.Fatal(err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, w := range tc.want {
				want = append(want, w+" "+oldest)
			}
			if !slices.Equal(got, want) {
				t.Errorf("logged %q, want %q", got, want)
			}
		})
	}
}

// TestKeepMovedWaitingCost: a job that consumes 30,000 change rows, with
// 30,000 more written since, gives no access to c2, which a write since
// moved out of its family. Each call of KeepMovedWaiting under a generic
// plan, as a worker's cached statement may get, stays well under a second.
// Before, it scanned the change log comparing each seq with every one
// consumed, which a generic plan does not hash: 7.5 s a call.
func TestKeepMovedWaitingCost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, `INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', ARRAY['gone' || g], false FROM generate_series(1, 30000) g`)
	var consumed []int64
	if err := b.pool.QueryRow(b.ctx, `SELECT array_agg(seq) FROM recalc.change`).Scan(&consumed); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', ARRAY['later' || g], false FROM generate_series(1, 30000) g`)
	b.exec(t, `UPDATE recalc.record SET parent = 'b1' WHERE id = 'c2'`)
	b.exec(t, `ANALYZE recalc.change`)
	conn, err := b.pool.Acquire(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The server turns to a generic plan when its estimate is not worse
	// than the custom plans' (plan_cache_mode auto): force it, the case
	// a worker meets sooner or later.
	if _, err := conn.Exec(b.ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		tx, err := conn.Begin(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = changes.KeepMovedWaiting(b.ctx, tx, []string{"c2"}, consumed)
		d := time.Since(start)
		if rb := tx.Rollback(b.ctx); err == nil {
			err = rb
		}
		if err != nil {
			t.Fatal(err)
		}
		if d > time.Second {
			t.Errorf("call %d: %v, want well under a second", i+1, d)
		}
	}
}
