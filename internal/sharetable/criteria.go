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
// decides, the filter only spares reading and parsing the rest.
//
// A condition is false when its field is missing or of another JSON type,
// whatever the operator, so each one requires the type. Numbers are also
// bounded, widened by a relative 1e-9 since SQL compares decimals where
// Go compares their float64 roundings (thresholds near float64's limits
// get no bound), and equal strings must be one of the alternatives.
// Other operators, and criteria with filter logic of
// their own (a NOT would turn the widening around), filter nothing more.
//
// The conditions' field names, bounds and alternatives are query
// parameters, numbered after args: at most three jsonb arrays whatever the
// rule's size, so that no rule comes near PostgreSQL's 65,535 parameters.
// The SQL text holds constant SQL and array indexes, never a value.
func criteriaFilter(crit *model.Criteria, args []any) (string, []any) {
	return filterWith(crit, args, inlineMax)
}

// inlineMax is the most conditions a filter writes out one by one. Written
// out, each reads its array elements once, at planning, but planning copies
// each array at each reference, which is quadratic in the rule's size. A
// larger rule is one NOT EXISTS over its conditions: constant planning, a
// little more work per record. The default limit of conditions stays
// under inlineMax.
const inlineMax = 1000

// filterCond is one condition as the filter tests it, and as the jsonb
// parameter of a large rule carries it.
type filterCond struct {
	Field string   `json:"f"`
	Kind  string   `json:"k"`            // the JSON type the field must have
	Op    string   `json:"op,omitempty"` // "" (the type only), "between", "<=", ">=" or "in"
	Lo    *float64 `json:"lo,omitempty"`
	Hi    *float64 `json:"hi,omitempty"`
	// Alts are the strings "in" allows, as the keys of a JSON object,
	// which PostgreSQL looks a key up in by binary search: scanning a
	// JSON array cost each record the length of the list (a value of 128
	// KiB lists 65,536).
	Alts map[string]bool `json:"a,omitempty"`
}

// filterWith is criteriaFilter, writing out rules of at most inline conditions.
func filterWith(crit *model.Criteria, args []any, inline int) (string, []any) {
	if !crit.AllRequired() || len(crit.Conditions) == 0 {
		return "true", args
	}
	conds := make([]filterCond, len(crit.Conditions))
	for i, c := range crit.Conditions {
		conds[i] = newFilterCond(c)
	}
	p := &params{args: args}
	var sql string
	if len(conds) > inline {
		sql = notExistsFilter(conds, p)
	} else {
		sql = writtenOutFilter(conds, p)
	}
	return sql, p.args
}

// newFilterCond is what the filter tests of condition c: its field's type,
// and the bounds or alternatives it allows.
func newFilterCond(c model.Condition) filterCond {
	fc := filterCond{Field: c.Field, Kind: map[model.ValueKind]string{model.String: "string", model.Number: "number", model.Bool: "boolean"}[c.Value.Kind]}
	switch {
	case c.Value.Kind == model.Number && c.Op != model.OpNotEquals && math.Abs(c.Value.Num) < maxBounded:
		t := c.Value.Num
		eps := math.Abs(t)*1e-9 + 1e-300
		lo, hi := t-eps, t+eps
		switch c.Op {
		case model.OpEquals:
			fc.Op, fc.Lo, fc.Hi = "between", &lo, &hi
		case model.OpLT, model.OpLE:
			fc.Op, fc.Hi = "<=", &hi
		case model.OpGT, model.OpGE:
			fc.Op, fc.Lo = ">=", &lo
		}
	case c.Value.Kind == model.String && c.Op == model.OpEquals:
		fc.Op, fc.Alts = "in", map[string]bool{c.Value.Str: true}
		for _, a := range strings.Split(c.Value.Str, ",") {
			fc.Alts[strings.TrimSpace(a)] = true
		}
	}
	return fc
}

// params are a query's parameters, the filter's numbered after the caller's.
type params struct{ args []any }

// jsonb adds v as a jsonb parameter and returns its reference. pgx sends a
// Go value given for a jsonb parameter as its JSON: floats in their
// shortest exact form, as it sends a float64 for a numeric.
func (p *params) jsonb(v any) string {
	p.args = append(p.args, v)
	return fmt.Sprintf("$%d::jsonb", len(p.args))
}

// notExistsFilter is the filter of a large rule: one NOT EXISTS over its
// conditions, passed as one parameter. A condition that fails keeps the
// record out. jsonb_to_recordset reads the numbers as exact decimals.
func notExistsFilter(conds []filterCond, p *params) string {
	return `NOT EXISTS (SELECT FROM jsonb_to_recordset(` + p.jsonb(conds) + `) AS c (f text, k text, op text, lo numeric, hi numeric, a jsonb)
			WHERE NOT CASE WHEN jsonb_typeof(r.fields -> c.f) IS DISTINCT FROM c.k THEN false
				WHEN c.op = 'between' THEN (r.fields -> c.f)::numeric BETWEEN c.lo AND c.hi
				WHEN c.op = '<=' THEN (r.fields -> c.f)::numeric <= c.hi
				WHEN c.op = '>=' THEN (r.fields -> c.f)::numeric >= c.lo
				WHEN c.op = 'in' THEN c.a ? (r.fields ->> c.f)
				ELSE true END)`
}

// writtenOutFilter is the filter of a rule of at most inlineMax
// conditions: one test each, ANDed, over three parameters: the fields, the
// bounds and the alternatives. The alternatives of all conditions are the
// keys of one object, each prefixed with its condition's number and a
// colon: a list taken out of a jsonb array was a copy, made for every
// record, which made a record cost the length of the lists it passed.
func writtenOutFilter(conds []filterCond, p *params) string {
	fields := make([]string, len(conds))
	var bounds []float64
	alts := map[string]bool{}
	for i, c := range conds {
		fields[i] = c.Field
		if c.Lo != nil {
			bounds = append(bounds, *c.Lo)
		}
		if c.Hi != nil {
			bounds = append(bounds, *c.Hi)
		}
		for a := range c.Alts {
			alts[fmt.Sprintf("%d:%s", i, a)] = true
		}
	}
	fieldsP, boundsP, altsP := p.jsonb(fields), "", ""
	if len(bounds) > 0 {
		boundsP = p.jsonb(bounds)
	}
	if len(alts) > 0 {
		altsP = p.jsonb(alts)
	}
	var b strings.Builder
	nb := 0 // the next bound
	bound := func() string {
		nb++
		return fmt.Sprintf("(%s -> %d)::numeric", boundsP, nb-1)
	}
	for i, c := range conds {
		if i > 0 {
			b.WriteString(" AND ")
		}
		field := fmt.Sprintf("(r.fields -> (%s ->> %d))", fieldsP, i)
		test := "true"
		switch c.Op {
		case "between":
			test = field + "::numeric BETWEEN " + bound()
			test += " AND " + bound()
		case "<=", ">=":
			test = field + "::numeric " + c.Op + " " + bound()
		case "in": // a jsonb object has the string as a key, byte for byte
			test = fmt.Sprintf("%s ? ('%d:' || (r.fields ->> (%s ->> %d)))", altsP, i, fieldsP, i)
		}
		fmt.Fprintf(&b, "CASE WHEN jsonb_typeof(%s) = '%s' THEN %s ELSE false END", field, c.Kind, test)
	}
	return b.String()
}
