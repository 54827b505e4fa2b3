package access_test

import (
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestReadPathUnderHistories holds the whole read path to the oracle
// along random model histories (each step 1 to 3 changed sections:
// records moved, owners changed, users deactivated, made external or
// given another role, rules, shares, teams, OWDs and controlled-by-parent
// switches), each step imported and recalculated incrementally, for text,
// bigint and uuid ids and both policies (both on one database per id
// type, along one history). After every step, for every user
// (an unknown one, "" and inactive ones included): checkModel's policy
// reads and writes and page walk; then, with text ids (they do not read the
// application table), the walks of
// visible_records at each level by 7, and at read by 1 and by the maximum
// too (continuation rows followed, each record once, in strictly
// increasing id order, no page longer than its limit, none short but the
// last, and a page of 1 asked past the last record), the same through
// access.VisiblePage (what `recalc access --object` prints), and
// access_level of every record.
func TestReadPathUnderHistories(t *testing.T) {
	t.Parallel()
	first, n := testkit.Seeds("RECALC_READ_PATH", 1, 1)
	for _, name := range []string{"text", "bigint", "uuid"} {
		for seed := first; seed < first+n; seed++ {
			t.Run(fmt.Sprintf("%s/seed=%d", name, seed), func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				rng := mrand.New(mrand.NewPCG(uint64(seed), 0x7ead))
				ids := map[string]string{}
				m := oracle.RandomModel(rng, 40)
				var stored *model.Model
				for step := range 3 {
					if step > 0 {
						next, file := oracle.Mutate(rng, m)
						m = oracle.Merge(m, next, file)
					}
					imported := renumbered(m, ids, schemes[name])
					testkit.ImportModel(t, b.ctx, b.pool, imported, nil)
					if _, err := engine.Run(b.ctx, b.pool, engine.Options{Workers: 2}, zerolog.Nop()); err != nil {
						t.Fatalf("step %d: run: %v", step, err)
					}
					stored = oracle.Merge(stored, imported, testkit.EverySection())
					b.checkModel(t, seed*100+step, stored, schemes[name])
					t.Logf("step %d: %d records, %d users checked", step, len(stored.Records), len(stored.Users))
					// The pages and levels do not read the policies, nor
					// depend on the application table's id type: walked once.
					if name == "text" {
						b.checkPages(t, step, stored)
					}
				}
			})
		}
	}
}

// renumbered returns a copy of m with its records given the scheme's ids,
// ids keeping each generated id's scheme id from step to step.
func renumbered(m *model.Model, ids map[string]string, s idScheme) *model.Model {
	out := &model.Model{Config: m.Config, Records: slices.Clone(m.Records), Shares: slices.Clone(m.Shares), Teams: slices.Clone(m.Teams)}
	id := func(gen string) string {
		if _, ok := ids[gen]; !ok {
			ids[gen] = s.id(len(ids) + 1)
		}
		return ids[gen]
	}
	for i := range out.Records {
		out.Records[i].ID = id(out.Records[i].ID)
		if out.Records[i].Parent != "" {
			out.Records[i].Parent = id(out.Records[i].Parent)
		}
	}
	for i := range out.Shares {
		out.Shares[i].Record = id(out.Shares[i].Record)
	}
	for i := range out.Teams {
		out.Teams[i].Record = id(out.Teams[i].Record)
	}
	return out
}

// checkPages walks every user's pages of every object of m at each level,
// raw and through access.VisiblePage, and reads every record's level, as
// the role, against the oracle.
func (b *bundle) checkPages(t *testing.T, step int, m *model.Model) {
	t.Helper()
	levels := map[[2]string]map[string]model.Level{}
	for _, r := range oracle.Access(m) {
		k := [2]string{r.Object, r.User}
		if levels[k] == nil {
			levels[k] = map[string]model.Level{}
		}
		levels[k][r.Record] = r.Level
	}
	users := []string{"nobody", ""}
	for _, u := range m.Users {
		users = append(users, u.ID)
	}
	for _, o := range m.Objects {
		for _, u := range users {
			for _, lv := range []model.Level{model.Read, model.Edit, model.All} {
				var want []string
				for rec, l := range levels[[2]string{o.Name, u}] {
					if l >= lv {
						want = append(want, rec+" "+l.String())
					}
				}
				want = sorted(want)
				for _, limit := range []int{1, 7, access.MaxPage} {
					if limit != 7 && lv != model.Read {
						continue // the walk of most pages is at read
					}
					what := fmt.Sprintf("step %d: %s's pages of %s at %s by %d", step, u, o.Name, lv, limit)
					if got := b.rawWalk(t, what, u, o.Name, lv.String(), limit); !slices.Equal(got, want) {
						t.Fatalf("%s list %v, oracle says %v", what, got, want)
					}
					if got := b.pageWalk(t, what, u, o.Name, lv.String(), limit); !slices.Equal(got, want) {
						t.Fatalf("%s through VisiblePage list %v, oracle says %v", what, got, want)
					}
				}
			}
		}
	}
	b.checkLevels(t, step, m, users)
}

// rawWalk walks visible_records as the role, following continuation rows,
// and returns "record level" of each record listed, checking the pages'
// shape.
func (b *bundle) rawWalk(t *testing.T, what, user, object, minLevel string, limit int) []string {
	t.Helper()
	var all []string
	b.asRole(t, user, func(tx pgx.Tx) { all = b.rawPages(t, tx, what, user, object, minLevel, limit) })
	return all
}

// rawPages is rawWalk's walk in tx.
func (b *bundle) rawPages(t *testing.T, tx pgx.Tx, what, user, object, minLevel string, limit int) []string {
	t.Helper()
	var all []string
	var after *string
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatalf("%s: the pages never end", what)
		}
		type row struct{ rec, level, next *string }
		var page []row
		rows, err := tx.Query(b.ctx, `SELECT record, level, next_after FROM recalc.visible_records($1, $2, $3, $4, $5)`, user, object, minLevel, after, limit)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var r row
		if _, err := pgx.ForEachRow(rows, []any{&r.rec, &r.level, &r.next}, func() error {
			page = append(page, r)
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var cont *string
		n := 0
		for i, r := range page {
			switch {
			case r.next != nil && r.rec == nil && r.level == nil && i == len(page)-1:
				cont = r.next
			case r.rec != nil && r.level != nil && r.next == nil:
				if last := lastRecord(all); last != "" && *r.rec <= last {
					t.Fatalf("%s: %s listed after %s", what, *r.rec, last)
				}
				all = append(all, *r.rec+" "+*r.level)
				n++
			default:
				t.Fatalf("%s: a row neither a record nor the last row's continuation: %v", what, r)
			}
		}
		if n > limit {
			t.Fatalf("%s: a page of %d", what, n)
		}
		switch {
		case cont != nil:
			if after != nil && *cont <= *after {
				t.Fatalf("%s: the continuation %q does not move past %q", what, *cont, *after)
			}
			after = cont
		case n < limit:
			return all
		default:
			last, _, _ := strings.Cut(all[len(all)-1], " ")
			after = &last
		}
	}
}

// lastRecord returns the record of the last "record level" of all, or "".
func lastRecord(all []string) string {
	if len(all) == 0 {
		return ""
	}
	rec, _, _ := strings.Cut(all[len(all)-1], " ")
	return rec
}

// pageWalk walks access.VisiblePage as the role, page after page, as
// `recalc access --object` continues with --after, and then once past the
// last record.
func (b *bundle) pageWalk(t *testing.T, what, user, object, minLevel string, limit int) []string {
	t.Helper()
	var all []string
	b.asRole(t, user, func(tx pgx.Tx) { all = b.visiblePages(t, tx, what, user, object, minLevel, limit) })
	return all
}

// visiblePages is pageWalk's walk in tx.
func (b *bundle) visiblePages(t *testing.T, tx pgx.Tx, what, user, object, minLevel string, limit int) []string {
	t.Helper()
	var all []string
	var after *string
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatalf("%s: the pages never end", what)
		}
		page, err := access.VisiblePage(b.ctx, tx, user, object, minLevel, after, limit)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(page) > limit {
			t.Fatalf("%s: a page of %d", what, len(page))
		}
		for _, v := range page {
			if last := lastRecord(all); last != "" && v.Record <= last {
				t.Fatalf("%s: %s listed after %s", what, v.Record, last)
			}
			all = append(all, v.Record+" "+v.Level)
		}
		if len(page) < limit {
			return all
		}
		last := page[len(page)-1].Record
		after = &last
	}
}

// checkLevels reads access_level of every record of m for every user, as
// the role, against the oracle.
func (b *bundle) checkLevels(t *testing.T, step int, m *model.Model, users []string) {
	t.Helper()
	want := map[[2]string]string{}
	for _, r := range oracle.Access(m) {
		want[[2]string{r.User, r.Record}] = r.Level.String()
	}
	var records []string
	for _, r := range m.Records {
		records = append(records, r.ID)
	}
	for _, u := range users {
		var got []string
		b.asRole(t, u, func(tx pgx.Tx) {
			rows, err := tx.Query(b.ctx, `SELECT r || ' ' || recalc.access_level($1, r) FROM unnest($2::text[]) r ORDER BY r`, u, records)
			if err != nil {
				t.Fatal(err)
			}
			if got, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				t.Fatal(err)
			}
		})
		for _, g := range got {
			rec, level, _ := strings.Cut(g, " ")
			w := want[[2]string{u, rec}]
			if w == "" {
				w = "none"
			}
			if level != w {
				t.Fatalf("step %d: access_level(%q, %s) is %s, oracle says %s", step, u, rec, level, w)
			}
		}
	}
}

// asRole runs fn in a transaction as the role with app.user_id = user,
// rolled back after.
func (b *bundle) asRole(t *testing.T, user string, fn func(pgx.Tx)) {
	t.Helper()
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(b.ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
		t.Fatal(err)
	}
	fn(tx)
}
