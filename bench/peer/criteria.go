package peer

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/recalc-dev/recalc/internal/model"
)

// fieldsExpr is the jsonb column the compiled predicates read.
const fieldsExpr = "r.fields"

// objectCriteria is one object's compiled criteria rules: Rules is the body
// of a SQL array with one element per rule, the rule's id when the record r
// satisfies its criteria and NULL otherwise.
type objectCriteria struct {
	Object, Rules string // Object as a SQL literal
}

// criteriaSQL compiles the criteria rules, grouped by object in the order
// objects first appear.
func criteriaSQL(rules []model.Rule) ([]objectCriteria, error) {
	var out []objectCriteria
	at := map[string]int{}
	for _, r := range rules {
		if r.Type != model.CriteriaRule {
			continue
		}
		pred, err := predicate(r.Criteria)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.ID, err)
		}
		id, err := quote(r.ID)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.ID, err)
		}
		i, ok := at[r.Object]
		if !ok {
			obj, err := quote(r.Object)
			if err != nil {
				return nil, fmt.Errorf("rule %q: %w", r.ID, err)
			}
			i = len(out)
			at[r.Object] = i
			out = append(out, objectCriteria{Object: obj})
		} else {
			out[i].Rules += ",\n"
		}
		out[i].Rules += "    CASE WHEN " + pred + " THEN " + id + " END"
	}
	return out, nil
}

// predicate compiles criteria into a SQL boolean expression over fieldsExpr
// that is never NULL. Conditions are compiled by condition; the filter logic
// is parsed with the model's own parser and printed back fully parenthesised
// (model.Expr.String), whose tokens are condition numbers, AND, OR, NOT and
// parentheses, the same operators with the same precedence in SQL.
func predicate(c *model.Criteria) (string, error) {
	conds := make([]string, len(c.Conditions))
	for i, cond := range c.Conditions {
		s, err := condition(cond)
		if err != nil {
			return "", fmt.Errorf("condition %d: %w", i+1, err)
		}
		conds[i] = s
	}
	if strings.TrimSpace(c.Logic) == "" {
		return "(" + strings.Join(conds, " AND ") + ")", nil
	}
	e, err := model.ParseLogic(c.Logic, len(conds))
	if err != nil {
		return "", err
	}
	var out strings.Builder
	src := e.String()
	for i := 0; i < len(src); {
		switch ch := src[i]; {
		case ch == ' ' || ch == '(' || ch == ')':
			out.WriteByte(ch)
			i++
		case ch >= '0' && ch <= '9':
			j := i
			for j < len(src) && src[j] >= '0' && src[j] <= '9' {
				j++
			}
			n, err := strconv.Atoi(src[i:j])
			if err != nil || n < 1 || n > len(conds) {
				return "", fmt.Errorf("logic %q: bad condition number %q", c.Logic, src[i:j])
			}
			out.WriteString(conds[n-1])
			i = j
		default:
			j := i
			for j < len(src) && src[j] >= 'A' && src[j] <= 'Z' {
				j++
			}
			switch kw := src[i:j]; kw {
			case "AND", "OR", "NOT":
				out.WriteString(kw)
			default:
				return "", fmt.Errorf("logic %q: unexpected %q in %q", c.Logic, src[i:], src)
			}
			i = j
		}
	}
	return "(" + out.String() + ")", nil
}

// condition compiles one condition into a parenthesised SQL boolean that is
// never NULL. The CASE guards the type (missing, null or another JSON type
// is false, whatever the op) and fixes evaluation order, so a cast never
// sees a value of the wrong type.
func condition(c model.Condition) (string, error) {
	field, err := quote(c.Field)
	if err != nil {
		return "", err
	}
	f := fieldsExpr + " -> " + field
	var jsonType, test string
	switch c.Value.Kind {
	case model.Bool:
		// Only equals and not_equals take booleans; any other op is false.
		jsonType, test = "boolean", "false"
		lit := "'" + strconv.FormatBool(c.Value.Bool) + "'::jsonb"
		switch c.Op {
		case model.OpEquals:
			test = "(" + f + ") = " + lit
		case model.OpNotEquals:
			test = "(" + f + ") <> " + lit
		}
	case model.Number:
		// float8 on both sides: the engine compares float64 values.
		jsonType, test = "number", "false"
		lit := "'" + strconv.FormatFloat(c.Value.Num, 'g', -1, 64) + "'::float8"
		if op, ok := cmpOps[c.Op]; ok {
			test = float8(f) + " " + op + " " + lit
		}
	case model.String:
		jsonType = "string"
		if test, err = stringTest(fieldsExpr+" ->> "+field, c); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("value must be a string, number or boolean")
	}
	return "(CASE WHEN jsonb_typeof(" + f + ") = '" + jsonType + "' THEN " + test + " ELSE false END)", nil
}

// float8 is the jsonb number f as a float8, as Go's strconv.ParseFloat
// reads it: a decimal PostgreSQL's cast would refuse as out of range
// because it rounds to zero (at most 2^-1075 in magnitude, such as 1e-400)
// is 0, where the cast failed the whole refresh.
func float8(f string) string {
	return "(CASE WHEN abs((" + f + ")::numeric) <= " + halfSubnormal + " THEN 0 ELSE (" + f + ")::float8 END)"
}

// halfSubnormal is 2^-1075, half the smallest float64, exactly: a decimal
// of at most its magnitude rounds to zero (ties to even).
var halfSubnormal = new(big.Rat).SetFrac(big.NewInt(1), new(big.Int).Lsh(big.NewInt(1), 1075)).FloatString(1075)

var cmpOps = map[model.Op]string{
	model.OpEquals: "=", model.OpNotEquals: "<>",
	model.OpLT: "<", model.OpLE: "<=", model.OpGT: ">", model.OpGE: ">=",
}

// stringTest compiles a condition with a string value over s, a text
// expression known not to be NULL. Comparisons use the "C" collation: byte
// order, case-sensitive.
func stringTest(s string, c model.Condition) (string, error) {
	s = "(" + s + ") COLLATE \"C\""
	want, err := quote(c.Value.Str)
	if err != nil {
		return "", err
	}
	switch c.Op {
	case model.OpEquals, model.OpNotEquals:
		not := ""
		if c.Op == model.OpNotEquals {
			not = "NOT "
		}
		if !strings.Contains(c.Value.Str, ",") {
			return not + "(" + s + " = " + want + ")", nil
		}
		var alts []string
		for _, alt := range strings.Split(c.Value.Str, ",") {
			q, err := quote(strings.TrimSpace(alt))
			if err != nil {
				return "", err
			}
			alts = append(alts, q)
		}
		return s + " " + not + "IN (" + strings.Join(alts, ", ") + ")", nil
	case model.OpContains:
		return "strpos(" + s + ", " + want + ") > 0", nil
	case model.OpNotContains:
		return "strpos(" + s + ", " + want + ") = 0", nil
	case model.OpStartsWith:
		return "starts_with(" + s + ", " + want + ")", nil
	}
	if op, ok := cmpOps[c.Op]; ok {
		return s + " " + op + " " + want, nil
	}
	return "", fmt.Errorf("unknown op %d", c.Op)
}

// quote returns s as a SQL string literal, as libpq's PQescapeLiteral does:
// quotes doubled, and backslashes doubled in an E” literal when there are
// any, so the result means s whatever standard_conforming_strings is.
func quote(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
		return "", fmt.Errorf("string %q is not valid UTF-8 text without NUL", s)
	}
	q := strings.ReplaceAll(s, "'", "''")
	if strings.Contains(s, `\`) {
		return "E'" + strings.ReplaceAll(q, `\`, `\\`) + "'", nil
	}
	return "'" + q + "'", nil
}
