package sharetable

import (
	"fmt"
	"math"
	"strings"

	"github.com/recalc-dev/recalc/internal/model"
)

// maxBounded is the largest threshold criteriaFilter bounds: decimals a
// little past the largest float64 still round to it in Go.
const maxBounded = 1e300

// criteriaFilter returns a SQL condition on the record r that holds for
// every record crit matches, and for few others: Go's Criteria.Match
// decides, the filter only spares reading and parsing the rest. Field
// names and values are query parameters, numbered after args.
//
// A condition is false when its field is missing or of another JSON type,
// whatever the operator, so each one requires the type. Numbers are also
// bounded, widened by a relative 1e-9 since SQL compares decimals where
// Go compares their float64 roundings (thresholds near float64's limits
// get no bound), and equal strings must be one of the alternatives.
// Other operators, and criteria with filter logic of
// their own (a NOT would turn the widening around), filter nothing more.
func criteriaFilter(crit *model.Criteria, args []any) (string, []any) {
	if !crit.AllRequired() {
		return "true", args
	}
	param := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var conds []string
	for _, c := range crit.Conditions {
		field := "r.fields -> " + param(c.Field) + "::text"
		kind := map[model.ValueKind]string{model.String: "string", model.Number: "number", model.Bool: "boolean"}[c.Value.Kind]
		test := "true"
		switch {
		case c.Value.Kind == model.Number && c.Op != model.OpNotEquals && math.Abs(c.Value.Num) < maxBounded:
			t := c.Value.Num
			eps := math.Abs(t)*1e-9 + 1e-300
			lo, hi := t-eps, t+eps
			n := "(" + field + ")::numeric"
			switch c.Op {
			case model.OpEquals:
				test = n + " BETWEEN " + param(lo) + "::numeric AND " + param(hi) + "::numeric"
			case model.OpLT, model.OpLE:
				test = n + " <= " + param(hi) + "::numeric"
			case model.OpGT, model.OpGE:
				test = n + " >= " + param(lo) + "::numeric"
			}
		case c.Value.Kind == model.String && c.Op == model.OpEquals:
			alts := []string{c.Value.Str}
			for _, a := range strings.Split(c.Value.Str, ",") {
				alts = append(alts, strings.TrimSpace(a))
			}
			test = "(r.fields ->> " + param(c.Field) + "::text) = ANY(" + param(alts) + "::text[])"
		}
		conds = append(conds, "CASE WHEN jsonb_typeof("+field+") = '"+kind+"' THEN "+test+" ELSE false END")
	}
	return strings.Join(conds, " AND "), args
}
