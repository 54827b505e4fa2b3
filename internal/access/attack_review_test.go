package access_test

import (
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestAttackVisibleRecordsPlans walks visible_records for every user,
// object, min level and a few page sizes under forced planner settings and
// compares the levels with the oracle and with access_level.
func TestAttackVisibleRecordsPlans(t *testing.T) {
	seeds := 6
	if s := os.Getenv("ATK_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	pool := testdb.Migrated(t)
	ctx := t.Context()
	settings := []string{
		"",
		"SET enable_nestloop = off",
		"SET enable_hashjoin = off; SET enable_mergejoin = off",
		"SET enable_seqscan = off; SET enable_bitmapscan = off",
		"SET enable_indexscan = off; SET enable_indexonlyscan = off",
		"SET enable_sort = off; SET enable_hashagg = off",
	}
	for seed := 1; seed <= seeds; seed++ {
		m := oracle.RandomModel(mrand.New(mrand.NewPCG(uint64(seed), 0xa77)), 40+seed*15)
		testkit.ImportModel(t, ctx, pool, m, nil)
		if _, err := engine.Full(ctx, pool, engine.Options{Workers: 2}, zerolog.Nop()); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if _, err := pool.Exec(ctx, `ANALYZE`); err != nil {
			t.Fatal(err)
		}
		levels := map[[2]string]map[string]model.Level{}
		for _, r := range oracle.Access(m) {
			k := [2]string{r.Object, r.User}
			if levels[k] == nil {
				levels[k] = map[string]model.Level{}
			}
			levels[k][r.Record] = r.Level
		}
		users := []string{"nobody"}
		for _, u := range m.Users {
			users = append(users, u.ID)
		}
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, set := range settings {
			if _, err := conn.Exec(ctx, `RESET ALL`); err != nil {
				t.Fatal(err)
			}
			if set != "" {
				if _, err := conn.Exec(ctx, set); err != nil {
					t.Fatal(err)
				}
			}
			for _, o := range m.Objects {
				for _, u := range users {
					k := [2]string{o.Name, u}
					for mi, min := range []string{"read", "edit", "all"} {
						var want []string
						for rec, lv := range levels[k] {
							if int(lv) >= mi+1 {
								want = append(want, rec+" "+lv.String())
							}
						}
						slices.Sort(want)
						if want == nil {
							want = []string{}
						}
						for _, limit := range []int{1, 2, 3, 1000} {
							got := walkConn(t, conn.Conn(), u, o.Name, min, limit)
							if !slices.Equal(got, want) {
								t.Errorf("seed %d [%s]: visible_records(%s, %s, %s, limit %d) = %v, oracle %v", seed, set, u, o.Name, min, limit, got, want)
							}
						}
					}
					// access_level per record
					rows, err := conn.Query(ctx, `SELECT r.id, recalc.access_level($1, r.id) FROM recalc.acl_record r WHERE r.object = $2`, u, o.Name)
					if err != nil {
						t.Fatal(err)
					}
					al, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
						var a, b string
						err := r.Scan(&a, &b)
						return [2]string{a, b}, err
					})
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range al {
						lv, ok := levels[k][p[0]]
						w := "none"
						if ok {
							w = lv.String()
						}
						if p[1] != w {
							t.Errorf("seed %d [%s]: access_level(%s, %s) = %s, oracle %s", seed, set, u, p[0], p[1], w)
						}
					}
				}
			}
		}
		conn.Release()
		if t.Failed() {
			return
		}
	}
}

func walkConn(t *testing.T, c *pgx.Conn, user, object, min string, limit int) []string {
	t.Helper()
	all := []string{}
	after := ""
	seen := map[string]bool{}
	for pages := 0; pages < 100000; pages++ {
		rows, err := c.Query(t.Context(), `SELECT record, level, next_after FROM recalc.visible_records($1, $2, $3, $4, $5)`, user, object, min, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var cont *string
		for rows.Next() {
			var rec, lv, next *string
			if err := rows.Scan(&rec, &lv, &next); err != nil {
				t.Fatal(err)
			}
			if rec == nil {
				cont = next
				continue
			}
			n++
			if seen[*rec] {
				t.Fatalf("%s listed twice", *rec)
			}
			seen[*rec] = true
			all = append(all, *rec+" "+*lv)
			after = max(after, *rec)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if cont != nil {
			after = *cont
			continue
		}
		if n < limit {
			slices.Sort(all)
			return all
		}
	}
	t.Fatal(fmt.Sprintf("no end for %s %s", user, object))
	return nil
}
