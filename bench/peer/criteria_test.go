package peer

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestMain drops the tests' databases when they have all run (testdb.Main).
func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// Tricky field names and values: quotes, backslashes, commas with spaces,
// non-ASCII, case, prefixes of each other, and numbers that differ only
// beyond a decimal's or a float's precision.
var (
	fieldNames = []string{"f", "it's", `b\s`, "a b", "ü", "F"}
	strVals    = []string{"", "a", "A", "ab", "a'b", `a\b`, `\'`, "x,y", " y ", "x, y ,z", ",", "it's, ok",
		"Ümlaut", "ümlaut", "日本", "a b", "\t", "%_", "Z", "é", "e\u0301", "'; DROP TABLE x; --",
		"x,\u00a0a\u3000", "\u0085a", "x,\ufeffa", "\ufeffa", "x,\x1ca", "a,,b", " , "}
	numVals = []float64{0, 1, -1, 2.5, -3, 1e6, 1e-7, 0.1, 0.30000000000000004, 0.3, 1e300, -1e-300, 123456789012345680}
)

func randValue(rng *rand.Rand) model.Value {
	switch rng.IntN(7) {
	case 0:
		return model.Value{}
	case 1, 2:
		return model.Num(numVals[rng.IntN(len(numVals))])
	case 3:
		return model.Bol(rng.IntN(2) == 0)
	}
	return model.Str(strVals[rng.IntN(len(strVals))])
}

func randLogic(rng *rand.Rand, n, depth int) string {
	kw := []string{"AND", "and", "Or", "OR", "NOT", "not"}
	if depth == 0 || rng.IntN(3) == 0 {
		return strconv.Itoa(1 + rng.IntN(n))
	}
	switch rng.IntN(3) {
	case 0:
		return kw[4+rng.IntN(2)] + " " + randLogic(rng, n, depth-1)
	case 1:
		return "(" + randLogic(rng, n, depth-1) + " " + kw[rng.IntN(4)] + " " + randLogic(rng, n, depth-1) + ")"
	}
	return randLogic(rng, n, depth-1) + " " + kw[rng.IntN(4)] + " " + randLogic(rng, n, depth-1)
}

// TestCriteriaMatchesModel evaluates compiled criteria in PostgreSQL on
// random fields and compares with model.Criteria.Match on the same fields
// as read back from jsonb, which is what recalc evaluates.
func TestCriteriaMatchesModel(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	rng := rand.New(rand.NewPCG(11, 12))
	// Fields rows, stored once as jsonb and read back as recalc reads them.
	var docs []string
	for range 300 {
		f := model.Fields{}
		for _, name := range fieldNames {
			if rng.IntN(3) > 0 {
				f[name] = randValue(rng)
			}
		}
		doc, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(doc))
	}
	stored := testkit.FieldsTable(t, ctx, pool, docs)
	read := make([]model.Fields, len(stored))
	for i, s := range stored {
		if err := json.Unmarshal([]byte(s), &read[i]); err != nil {
			t.Fatal(err)
		}
	}
	matches := 0
	for i := range 400 {
		conds := make([]model.Condition, 1+rng.IntN(4))
		for j := range conds {
			conds[j] = model.Condition{Field: fieldNames[rng.IntN(len(fieldNames))], Op: model.Op(rng.IntN(9)), Value: randValue(rng)}
			if conds[j].Value.Kind == model.Null {
				conds[j].Value = model.Str(strVals[rng.IntN(len(strVals))])
			}
			// Shapes validation rejects; the compiler must still agree with Match.
			if i%2 == 0 {
				switch conds[j].Op {
				case model.OpContains, model.OpNotContains, model.OpStartsWith:
					conds[j].Value = model.Str(strVals[rng.IntN(len(strVals))])
				}
			}
		}
		logic := ""
		if rng.IntN(3) > 0 {
			logic = randLogic(rng, len(conds), 3)
		}
		c, err := model.NewCriteria(conds, logic)
		if err != nil {
			c = &model.Criteria{Conditions: conds} // a shape validation rejects: AND of all
			logic = ""
		}
		pred, err := predicate(c)
		if err != nil {
			t.Fatalf("compile %+v %q: %v", conds, logic, err)
		}
		var got []bool
		if err := pool.QueryRow(ctx, `SELECT array_agg(`+pred+` ORDER BY n) FROM fields_case r`).Scan(&got); err != nil {
			t.Fatalf("evaluate %s: %v", pred, err)
		}
		for k, f := range read {
			want := c.Match(f)
			if got[k] != want {
				cj, _ := json.Marshal(c.Conditions)
				t.Fatalf("criteria %s logic %q on fields %s: SQL says %v, model says %v\nSQL: %s", cj, logic, stored[k], got[k], want, pred)
			}
			if want {
				matches++
			}
		}
	}
	if matches == 0 {
		t.Fatal("no criteria matched any fields: the test proves nothing")
	}
}

// TestCriteriaStoredDecimals compiles number conditions and evaluates them
// on decimals stored as an application writes them (not rounded to float64
// first, as an import does): past float64's precision, at and around 2^-1075,
// where float64 rounds to zero, and past 2^63. Each must give what
// model.Criteria.Match gives on the fields read back: a decimal that rounds
// to zero failed the peer's refresh (out of range for type double
// precision) where recalc reads 0.
func TestCriteriaStoredDecimals(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	half := halfSubnormal
	values := []string{"0", "-0", "1e-400", "-1e-400", half, "-" + half, half + "1", "2.4703282292062328e-324",
		"4.9406564584124654e-324", "5e-324", "1e-320", "0.1", "0.1000000000000000000001", "0.30000000000000004",
		"9007199254740993", "9223372036854775808", "123456789012345678901234567890", "1.7976931348623158e308",
		`"0"`, "true", "null"}
	docs := make([]string, len(values))
	for i, v := range values {
		docs[i] = `{"f": ` + v + `}`
	}
	stored := testkit.FieldsTable(t, ctx, pool, docs)
	read := make([]model.Fields, len(stored))
	for i, s := range stored {
		f, err := model.ParseFields([]byte(s))
		if err != nil {
			t.Fatalf("fields %.80s: %v", s, err)
		}
		read[i] = f
	}
	thresholds := []float64{0, 5e-324, 1e-320, 0.1, 0.30000000000000004, 9007199254740992, 9223372036854775807, 1.2345678901234568e29, 1.7976931348623157e308}
	matches := 0
	for _, n := range thresholds {
		for _, op := range []model.Op{model.OpEquals, model.OpNotEquals, model.OpLT, model.OpLE, model.OpGT, model.OpGE} {
			c, err := model.NewCriteria([]model.Condition{{Field: "f", Op: op, Value: model.Num(n)}}, "")
			if err != nil {
				t.Fatal(err)
			}
			pred, err := predicate(c)
			if err != nil {
				t.Fatal(err)
			}
			var got []bool
			if err := pool.QueryRow(ctx, `SELECT array_agg(`+pred+` ORDER BY n) FROM fields_case r`).Scan(&got); err != nil {
				t.Fatalf("f %s %v: evaluate: %v", op, n, err)
			}
			for k, f := range read {
				want := c.Match(f)
				if got[k] != want {
					t.Errorf("f %s %v on fields %.80s: SQL says %v, model says %v", op, n, stored[k], got[k], want)
				}
				if want {
					matches++
				}
			}
		}
	}
	if matches == 0 {
		t.Fatal("no condition matched any fields: the test proves nothing")
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"a":      "'a'",
		"it's":   "'it''s'",
		`a\b`:    `E'a\\b'`,
		`\'`:     `E'\\'''`,
		"":       "''",
		"日本":     "'日本'",
		"x\x00y": "",
	} {
		got, err := quote(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("quote(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := quote(string([]byte{0xff})); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("quote of invalid UTF-8: %v", err)
	}
}
