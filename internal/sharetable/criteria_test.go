package sharetable

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestCriteriaFilterKeepsEveryMatch stores random fields as jsonb and checks
// that criteriaFilter lets through every record model.Criteria.Match
// accepts, on the fields as read back: a record it dropped would keep stale
// share rows. Numbers sit on and around the thresholds, as decimals that
// differ from the thresholds only beyond float64's precision, and strings
// carry commas, spaces, quotes and non-ASCII text.
func TestCriteriaFilterKeepsEveryMatch(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	rng := rand.New(rand.NewPCG(5, 6))
	names := []string{"f", "it's", `b\s`, "ü"}
	strs := []string{"", "a", "A", "a'b", "x,y", " y ", "x, y ,z", ",", "日本", "'; DROP TABLE x; --"}
	nums := []string{"0", "1", "-1", "0.1", "0.1000000000000000000001", "0.0999999999999999999999", "0.3",
		"0.30000000000000004", "1e300", "-1e-300", "1e-320", "123456789012345678", "123456789012345679", "2.5",
		"1.7976931348623157e308", "1.7976931348623158e308", "-1.7976931348623158e308"}
	value := func() string {
		switch rng.IntN(6) {
		case 0:
			return "null"
		case 1:
			return []string{"true", "false"}[rng.IntN(2)]
		case 2, 3:
			return nums[rng.IntN(len(nums))]
		}
		b, _ := json.Marshal(strs[rng.IntN(len(strs))])
		return string(b)
	}
	var docs []string
	for range 400 {
		var kv []string
		for _, n := range names {
			if rng.IntN(4) > 0 {
				k, _ := json.Marshal(n)
				kv = append(kv, string(k)+": "+value())
			}
		}
		docs = append(docs, "{"+strings.Join(kv, ", ")+"}")
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE fields_case AS
		SELECT n, d::jsonb AS fields FROM unnest($1::text[]) WITH ORDINALITY x (d, n)`, docs); err != nil {
		t.Fatal(err)
	}
	var stored []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(fields::text ORDER BY n) FROM fields_case`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	read := make([]model.Fields, len(stored))
	for i, s := range stored {
		f, err := model.ParseFields([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		read[i] = f
	}
	matches, dropped := 0, 0
	for i := range 500 {
		conds := make([]model.Condition, 1+rng.IntN(3))
		for j := range conds {
			c := model.Condition{Field: names[rng.IntN(len(names))], Op: model.Op(rng.IntN(9))}
			switch rng.IntN(3) {
			case 0:
				f, _ := strconv.ParseFloat(nums[rng.IntN(len(nums))], 64)
				c.Value = model.Num(f)
			case 1:
				c.Value = model.Bol(rng.IntN(2) == 0)
			default:
				c.Value = model.Str(strs[rng.IntN(len(strs))])
			}
			conds[j] = c
		}
		logic := ""
		if i%4 == 0 && len(conds) > 1 {
			logic = "1 OR NOT 2"
		}
		crit, err := model.NewCriteria(conds, logic)
		if err != nil {
			crit = &model.Criteria{Conditions: conds} // a shape validation rejects: AND of all
		}
		filter, args := criteriaFilter(crit, nil)
		rows, err := pool.Query(ctx, `SELECT n FROM fields_case r WHERE `+filter, args...)
		if err != nil {
			t.Fatalf("filter %s: %v", filter, err)
		}
		kept := map[int64]bool{}
		for rows.Next() {
			var n int64
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			kept[n] = true
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("filter %s: %v", filter, err)
		}
		for k, f := range read {
			switch {
			case crit.Match(f) && !kept[int64(k+1)]:
				cj, _ := json.Marshal(crit.Conditions)
				t.Fatalf("criteria %s match fields %s, which the filter drops: %s %v", cj, stored[k], filter, args)
			case crit.Match(f):
				matches++
			case !kept[int64(k+1)]:
				dropped++
			}
		}
	}
	// Both must happen, or the test proves nothing.
	if matches == 0 || dropped == 0 {
		t.Fatalf("%d matches and %d records filtered out", matches, dropped)
	}
}
