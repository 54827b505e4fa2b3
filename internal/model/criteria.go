package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValueKind is the JSON type of a field or condition value.
type ValueKind uint8

// Value kinds.
const (
	Null ValueKind = iota
	String
	Number
	Bool
)

func (k ValueKind) String() string {
	return [...]string{"null", "string", "number", "boolean"}[k]
}

// Value is a scalar JSON value: a record field or a condition operand.
type Value struct {
	Kind ValueKind
	Str  string
	Num  float64
	Bool bool
}

// Str, Num and Bol build values; handy in tests and generators.
func Str(s string) Value  { return Value{Kind: String, Str: s} }
func Num(f float64) Value { return Value{Kind: Number, Num: f} }
func Bol(b bool) Value    { return Value{Kind: Bool, Bool: b} }

// UnmarshalJSON accepts only null, strings, finite numbers and booleans.
func (v *Value) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return fmt.Errorf("empty value")
	case string(b) == "null":
		*v = Value{}
	case string(b) == "true" || string(b) == "false":
		*v = Bol(b[0] == 't')
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*v = Str(s)
	case b[0] == '-' || (b[0] >= '0' && b[0] <= '9'):
		f, err := strconv.ParseFloat(string(b), 64)
		if err != nil || math.IsInf(f, 0) {
			return fmt.Errorf("number is out of range") // values stay out of messages
		}
		*v = Num(f)
	case b[0] == '{':
		return fmt.Errorf("must be a string, number, boolean or null, not an object")
	case b[0] == '[':
		return fmt.Errorf("must be a string, number, boolean or null, not a list")
	default:
		return fmt.Errorf("must be a string, number, boolean or null")
	}
	return nil
}

// MarshalJSON writes the canonical JSON form.
func (v Value) MarshalJSON() ([]byte, error) {
	switch v.Kind {
	case String:
		return json.Marshal(v.Str)
	case Number:
		return strconv.AppendFloat(nil, v.Num, 'g', -1, 64), nil
	case Bool:
		return strconv.AppendBool(nil, v.Bool), nil
	}
	return []byte("null"), nil
}

// Fields are a record's field values by name.
type Fields map[string]Value

// UnmarshalJSON reads a JSON object of scalar values, naming the field at fault.
func (f *Fields) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("fields must be a JSON object")
	}
	*f = make(Fields, len(raw))
	for k, v := range raw {
		var val Value
		if err := val.UnmarshalJSON(v); err != nil {
			return fmt.Errorf("field %.100q: %w", k, err) // a long name, cut
		}
		(*f)[k] = val
	}
	return nil
}

// MarshalJSON writes the fields as a JSON object with sorted keys, so that
// equal fields always encode to equal bytes.
func (f Fields) MarshalJSON() ([]byte, error) {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		buf.Write(kb)
		buf.WriteByte(':')
		vb, _ := f[k].MarshalJSON()
		buf.Write(vb)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// Op is a condition operator.
type Op uint8

// Condition operators.
const (
	OpEquals Op = iota
	OpNotEquals
	OpLT
	OpLE
	OpGT
	OpGE
	OpContains
	OpNotContains
	OpStartsWith
)

var opNames = [...]string{"equals", "not_equals", "lt", "le", "gt", "ge", "contains", "not_contains", "starts_with"}

func (o Op) String() string { return opNames[o] }

// ParseOp parses an operator name.
func ParseOp(s string) (Op, bool) {
	for i, n := range opNames {
		if s == n {
			return Op(i), true
		}
	}
	return 0, false
}

// Condition compares one field with a value.
type Condition struct {
	Field string
	Op    Op
	Value Value
}

// checkCondition reports a condition that can never be well-formed.
func checkCondition(c Condition) error {
	switch {
	case c.Value.Kind == Null:
		return fmt.Errorf("value must be a string, number or boolean")
	case (c.Op == OpContains || c.Op == OpNotContains || c.Op == OpStartsWith) && c.Value.Kind != String:
		return fmt.Errorf("op %s takes a string value, not a %s", c.Op, c.Value.Kind)
	case c.Value.Kind == Bool && c.Op != OpEquals && c.Op != OpNotEquals:
		return fmt.Errorf("op %s does not take a boolean value", c.Op)
	}
	return nil
}

// Match evaluates the condition on a record's fields. It is false when the
// field is missing or null or of another JSON type than the value, whatever the op.
func (c Condition) Match(f Fields) bool {
	v, ok := f[c.Field]
	if !ok || v.Kind == Null || v.Kind != c.Value.Kind {
		return false
	}
	switch c.Value.Kind {
	case Bool:
		switch c.Op {
		case OpEquals:
			return v.Bool == c.Value.Bool
		case OpNotEquals:
			return v.Bool != c.Value.Bool
		}
		return false
	case Number:
		return compare(c.Op, cmpFloat(v.Num, c.Value.Num))
	}
	s, want := v.Str, c.Value.Str
	switch c.Op {
	case OpEquals, OpNotEquals:
		eq := s == want
		if strings.Contains(want, ",") {
			eq = false
			for _, alt := range strings.Split(want, ",") {
				if s == strings.TrimSpace(alt) {
					eq = true
					break
				}
			}
		}
		return eq == (c.Op == OpEquals)
	case OpContains:
		return strings.Contains(s, want)
	case OpNotContains:
		return !strings.Contains(s, want)
	case OpStartsWith:
		return strings.HasPrefix(s, want)
	}
	return compare(c.Op, strings.Compare(s, want))
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compare(op Op, c int) bool {
	switch op {
	case OpEquals:
		return c == 0
	case OpNotEquals:
		return c != 0
	case OpLT:
		return c < 0
	case OpLE:
		return c <= 0
	case OpGT:
		return c > 0
	case OpGE:
		return c >= 0
	}
	return false
}

// Criteria are a criteria-based rule's conditions and their filter logic.
type Criteria struct {
	Conditions []Condition
	Logic      string // as written; empty means AND of all conditions
	expr       *Expr
	// alts holds, for each condition that tests a string with commas for
	// equality, the set of its alternatives, built once by NewCriteria: a
	// match is then one lookup, where splitting the value at each match
	// cost a record time and garbage in the value's length (7 ms for a
	// value of 128 KiB of commas, against 4 µs without them).
	alts []map[string]struct{}
}

// NewCriteria checks the conditions and compiles the logic.
func NewCriteria(conds []Condition, logic string) (*Criteria, error) {
	if len(conds) == 0 {
		return nil, fmt.Errorf("criteria has no conditions")
	}
	for i, c := range conds {
		if err := checkCondition(c); err != nil {
			return nil, fmt.Errorf("condition %d (field %q): %w", i+1, c.Field, err)
		}
	}
	c := &Criteria{Conditions: conds, Logic: logic, alts: alternatives(conds)}
	if strings.TrimSpace(logic) == "" {
		return c, nil
	}
	e, err := ParseLogic(logic, len(conds))
	if err != nil {
		return nil, err
	}
	c.expr = e
	return c, nil
}

// AllRequired reports whether a record must match every condition: the
// criteria have no filter logic of their own.
func (c *Criteria) AllRequired() bool { return c.expr == nil }

// Match reports whether a record with these fields satisfies the criteria.
func (c *Criteria) Match(f Fields) bool {
	if c.expr == nil {
		for i := range c.Conditions {
			if !c.match(i, f) {
				return false
			}
		}
		return true
	}
	return c.expr.eval(func(n int) bool { return c.match(n-1, f) })
}

// match is c.Conditions[i].Match(f), looking the field up in the
// condition's set of alternatives when it has one.
func (c *Criteria) match(i int, f Fields) bool {
	cond := c.Conditions[i]
	if i >= len(c.alts) || c.alts[i] == nil {
		return cond.Match(f)
	}
	v, ok := f[cond.Field]
	if !ok || v.Kind != String {
		return false
	}
	_, eq := c.alts[i][v.Str]
	return eq == (cond.Op == OpEquals)
}

// alternatives returns, for each condition that compares a string holding
// commas with equals or not_equals, the set of its comma-separated parts,
// each stripped of surrounding white space, as Condition.Match reads them;
// nil for the others, and when no condition has any.
func alternatives(conds []Condition) []map[string]struct{} {
	var out []map[string]struct{}
	for i, c := range conds {
		if c.Value.Kind != String || (c.Op != OpEquals && c.Op != OpNotEquals) || !strings.Contains(c.Value.Str, ",") {
			continue
		}
		if out == nil {
			out = make([]map[string]struct{}, len(conds))
		}
		set := map[string]struct{}{}
		for _, alt := range strings.Split(c.Value.Str, ",") {
			set[strings.TrimSpace(alt)] = struct{}{}
		}
		out[i] = set
	}
	return out
}

// Expr is a parsed filter-logic expression.
type Expr struct {
	op   byte // 'n' number, '!' not, '&' and, '|' or
	n    int
	l, r *Expr
}

func (e *Expr) eval(cond func(int) bool) bool {
	switch e.op {
	case 'n':
		return cond(e.n)
	case '!':
		return !e.l.eval(cond)
	case '&':
		return e.l.eval(cond) && e.r.eval(cond)
	}
	return e.l.eval(cond) || e.r.eval(cond)
}

// String prints the expression fully parenthesised, for tests and fuzzing.
func (e *Expr) String() string {
	switch e.op {
	case 'n':
		return strconv.Itoa(e.n)
	case '!':
		return "NOT " + e.l.String()
	case '&':
		return "(" + e.l.String() + " AND " + e.r.String() + ")"
	}
	return "(" + e.l.String() + " OR " + e.r.String() + ")"
}

// ParseLogic parses filter logic such as "1 AND (2 OR NOT 3)" over n
// conditions. Keywords are case-insensitive; NOT binds tighter than AND, and
// AND tighter than OR. A number outside 1..n is an error.
func ParseLogic(s string, n int) (*Expr, error) {
	p := logicParser{src: s, n: n}
	p.next()
	e, err := p.or(0)
	if err != nil {
		return nil, fmt.Errorf("logic %q: %w", s, err)
	}
	if p.tok != "" {
		return nil, fmt.Errorf("logic %q: unexpected %q", s, p.tok)
	}
	return e, nil
}

// checkGrouping refuses filter logic that joins AND and OR at one level of
// parentheses, as Salesforce does ("1 OR 2 AND 3" could mean either
// grouping), and one that joins more than maxLogicChain operands. It
// applies to model files; logic stored by an earlier version, which read
// AND before OR, keeps that reading.
func checkGrouping(rules []Rule) error {
	for _, r := range rules {
		if r.Criteria == nil {
			continue
		}
		if err := grouping(r.Criteria.Logic); err != nil {
			return fmt.Errorf("rule %q: logic %.200q %w", r.ID, r.Criteria.Logic, err)
		}
	}
	return nil
}

// grouping checks the operators at each level of parentheses of logic.
func grouping(logic string) error {
	type level struct {
		ops byte // 1 for an AND seen, 2 for an OR
		n   int  // operators
	}
	p := logicParser{src: logic}
	levels := []level{{}}
	for p.next(); p.tok != ""; p.next() {
		top := &levels[len(levels)-1]
		switch {
		case p.tok == "(":
			levels = append(levels, level{})
			continue
		case p.tok == ")" && len(levels) > 1:
			levels = levels[:len(levels)-1]
			continue
		case strings.EqualFold(p.tok, "AND"):
			top.ops |= 1
		case strings.EqualFold(p.tok, "OR"):
			top.ops |= 2
		default:
			continue
		}
		top.n++
		switch {
		case top.ops == 3:
			return fmt.Errorf("joins AND and OR without parentheses: group them, as (1 AND 2) OR 3 or 1 AND (2 OR 3)")
		case top.n >= maxLogicChain:
			return fmt.Errorf("joins more than %d operands with one operator", maxLogicChain)
		}
	}
	return nil
}

type logicParser struct {
	src string
	pos int
	tok string
	n   int
}

// maxLogicDepth bounds nesting so hostile input cannot exhaust the stack.
const maxLogicDepth = 100

// maxLogicChain bounds the operands one AND or OR of a model file joins (a
// chain is a tree as deep as it is long): ten times the default limit of
// conditions, whatever the limits.
const maxLogicChain = 10000

// next reads the next token into p.tok ("" at the end). Tokens are
// separated by any white space unicode.IsSpace reports, the white space
// that makes a logic blank and that comma lists' parts are stripped of
// (docs/model.md).
func (p *logicParser) next() {
	for p.pos < len(p.src) {
		r, size := utf8.DecodeRuneInString(p.src[p.pos:])
		if !unicode.IsSpace(r) {
			break
		}
		p.pos += size
	}
	if p.pos >= len(p.src) {
		p.tok = ""
		return
	}
	start := p.pos
	c := p.src[p.pos]
	switch {
	case c == '(' || c == ')':
		p.pos++
	case c >= '0' && c <= '9':
		for p.pos < len(p.src) && p.src[p.pos] >= '0' && p.src[p.pos] <= '9' {
			p.pos++
		}
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		for p.pos < len(p.src) && (p.src[p.pos] >= 'a' && p.src[p.pos] <= 'z' || p.src[p.pos] >= 'A' && p.src[p.pos] <= 'Z') {
			p.pos++
		}
	default: // a whole character, for the error that names it
		_, size := utf8.DecodeRuneInString(p.src[p.pos:])
		p.pos += size
	}
	p.tok = p.src[start:p.pos]
}

func (p *logicParser) or(depth int) (*Expr, error) { return p.binary(depth, "OR", '|', p.and) }

func (p *logicParser) and(depth int) (*Expr, error) { return p.binary(depth, "AND", '&', p.unary) }

// binary parses operands (with operand) joined by keyword, left to right,
// into op nodes.
func (p *logicParser) binary(depth int, keyword string, op byte, operand func(int) (*Expr, error)) (*Expr, error) {
	l, err := operand(depth)
	if err != nil {
		return nil, err
	}
	for strings.EqualFold(p.tok, keyword) {
		p.next()
		r, err := operand(depth)
		if err != nil {
			return nil, err
		}
		l = &Expr{op: op, l: l, r: r}
	}
	return l, nil
}

func (p *logicParser) unary(depth int) (*Expr, error) {
	if depth > maxLogicDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxLogicDepth)
	}
	switch {
	case strings.EqualFold(p.tok, "NOT"):
		p.next()
		e, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return &Expr{op: '!', l: e}, nil
	case p.tok == "(":
		p.next()
		e, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.tok != ")" {
			return nil, fmt.Errorf("missing )")
		}
		p.next()
		return e, nil
	case p.tok != "" && p.tok[0] >= '0' && p.tok[0] <= '9':
		k, err := strconv.Atoi(p.tok)
		if err != nil || k < 1 || k > p.n {
			return nil, fmt.Errorf("condition %s does not exist (there are %d)", p.tok, p.n)
		}
		p.next()
		return &Expr{op: 'n', n: k}, nil
	case p.tok == "":
		return nil, fmt.Errorf("unexpected end")
	}
	return nil, fmt.Errorf("unexpected %q", p.tok)
}
