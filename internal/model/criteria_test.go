package model

import (
	"fmt"
	"strings"
	"testing"
)

func TestConditionMatch(t *testing.T) {
	t.Parallel()
	fields := Fields{
		"s":     Str("Tech"),
		"lower": Str("tech"),
		"spc":   Str(" Tech"),
		"empty": Str(""),
		"n":     Num(5),
		"neg":   Num(-2.5),
		"sn":    Str("5"),
		"b":     Bol(true),
		"f":     Bol(false),
		"null":  {},
		"utf":   Str("é"),
		"up":    Str("B"),
	}
	type tc struct {
		field string
		op    Op
		value Value
		want  bool
	}
	cases := []tc{
		// Missing and null fields: false for every op.
		{"missing", OpEquals, Str("x"), false},
		{"missing", OpNotEquals, Str("x"), false},
		{"missing", OpNotContains, Str("x"), false},
		{"missing", OpNotEquals, Bol(true), false},
		{"missing", OpLT, Num(1), false},
		{"null", OpEquals, Str(""), false},
		{"null", OpNotEquals, Str("x"), false},
		{"null", OpNotEquals, Num(1), false},
		{"null", OpNotEquals, Bol(false), false},
		{"null", OpNotContains, Str("x"), false},
		{"null", OpGE, Num(0), false},

		// Strings.
		{"s", OpEquals, Str("Tech"), true},
		{"s", OpEquals, Str("tech"), false},
		{"s", OpNotEquals, Str("tech"), true},
		{"s", OpNotEquals, Str("Tech"), false},
		{"s", OpContains, Str("ec"), true},
		{"s", OpContains, Str("EC"), false},
		{"s", OpContains, Str(""), true},
		{"s", OpNotContains, Str("EC"), true},
		{"s", OpNotContains, Str("ec"), false},
		{"s", OpStartsWith, Str("Te"), true},
		{"s", OpStartsWith, Str("te"), false},
		{"s", OpStartsWith, Str("ch"), false},
		{"empty", OpEquals, Str(""), true},

		// Comma lists: any of the trimmed values; the field itself is not trimmed.
		{"s", OpEquals, Str("Retail, Tech"), true},
		{"s", OpEquals, Str("Tech ,Retail"), true},
		{"s", OpEquals, Str("  Tech  ,  x"), true},
		{"s", OpEquals, Str("Retail,Health"), false},
		{"s", OpEquals, Str("tech,TECH"), false},
		{"s", OpNotEquals, Str("Retail, Tech"), false},
		{"s", OpNotEquals, Str("Retail,Health"), true},
		{"spc", OpEquals, Str("Tech,x"), false},
		{"spc", OpEquals, Str(" Tech"), true},
		{"s", OpContains, Str("Tech,x"), false}, // lists are for equals and not_equals only
		{"missing", OpNotEquals, Str("a,b"), false},

		// Byte-order string comparison.
		{"up", OpLT, Str("a"), true}, // 'B' < 'a'
		{"lower", OpGT, Str("Tech"), true},
		{"s", OpLT, Str("tech"), true},
		{"s", OpLE, Str("Tech"), true},
		{"s", OpLT, Str("Tech"), false},
		{"s", OpGE, Str("Tech"), true},
		{"s", OpGT, Str("Te"), true},
		{"utf", OpGT, Str("z"), true}, // 0xC3 > 'z'
		{"empty", OpLT, Str("a"), true},
		{"sn", OpLT, Str("10"), false}, // "5" > "10" as strings

		// Numbers.
		{"n", OpEquals, Num(5), true},
		{"n", OpNotEquals, Num(5), false},
		{"n", OpNotEquals, Num(4), true},
		{"n", OpLT, Num(10), true},
		{"n", OpLE, Num(5), true},
		{"n", OpGT, Num(5), false},
		{"n", OpGE, Num(5), true},
		{"neg", OpLT, Num(-2), true},
		{"neg", OpEquals, Num(-2.5), true},

		// Booleans.
		{"b", OpEquals, Bol(true), true},
		{"b", OpEquals, Bol(false), false},
		{"b", OpNotEquals, Bol(false), true},
		{"f", OpNotEquals, Bol(true), true},
		{"f", OpEquals, Bol(false), true},
	}
	// Type mismatch: false for every op, not_equals included.
	for _, op := range []Op{OpEquals, OpNotEquals, OpLT, OpLE, OpGT, OpGE} {
		cases = append(cases,
			tc{"sn", op, Num(5), false},
			tc{"n", op, Str("5"), false},
			tc{"sn", op, Num(7), false},
			tc{"n", op, Str("7"), false},
		)
	}
	for _, op := range []Op{OpEquals, OpNotEquals} {
		cases = append(cases,
			tc{"b", op, Str("true"), false},
			tc{"b", op, Num(1), false},
			tc{"s", op, Bol(true), false},
			tc{"s", op, Bol(false), false},
			tc{"n", op, Bol(true), false},
			tc{"b", op, Str("a,true"), false},
		)
	}
	for _, op := range []Op{OpContains, OpNotContains, OpStartsWith} {
		cases = append(cases,
			tc{"n", op, Str("5"), false},
			tc{"b", op, Str("t"), false},
			tc{"null", op, Str(""), false},
		)
	}
	for _, c := range cases {
		cond := Condition{Field: c.field, Op: c.op, Value: c.value}
		if got := cond.Match(fields); got != c.want {
			t.Errorf("%s %s %+v = %v, want %v", c.field, c.op, c.value, got, c.want)
		}
	}
}

// boolCriteria returns n conditions, condition i matching when field "ci"
// is true, and fields that make condition i true when bit i-1 of bits is set.
func boolCriteria(n int, bits int) ([]Condition, Fields) {
	conds := make([]Condition, n)
	f := Fields{}
	for i := range conds {
		name := fmt.Sprintf("c%d", i+1)
		conds[i] = Condition{Field: name, Op: OpEquals, Value: Bol(true)}
		f[name] = Bol(bits&(1<<i) != 0)
	}
	return conds, f
}

func TestLogicSemantics(t *testing.T) {
	t.Parallel()
	type env func(int) bool
	cases := []struct {
		logic string
		n     int
		want  func(c env) bool
	}{
		{"", 3, func(c env) bool { return c(1) && c(2) && c(3) }},
		{"  ", 2, func(c env) bool { return c(1) && c(2) }},
		{"1", 3, func(c env) bool { return c(1) }},
		{"1 OR 2", 2, func(c env) bool { return c(1) || c(2) }},
		{"1 OR 2 AND 3", 3, func(c env) bool { return c(1) || (c(2) && c(3)) }},
		{"1 AND 2 OR 3", 3, func(c env) bool { return (c(1) && c(2)) || c(3) }},
		{"(1 OR 2) AND 3", 3, func(c env) bool { return (c(1) || c(2)) && c(3) }},
		{"NOT 1 AND 2", 2, func(c env) bool { return !c(1) && c(2) }},
		{"NOT 1 OR 2", 2, func(c env) bool { return !c(1) || c(2) }},
		{"NOT (1 OR 2)", 2, func(c env) bool { return !(c(1) || c(2)) }},
		{"NOT NOT 1", 1, func(c env) bool { return c(1) }},
		{"1 AND (2 OR NOT 3)", 3, func(c env) bool { return c(1) && (c(2) || !c(3)) }},
		{"1 and (2 or not 3)", 3, func(c env) bool { return c(1) && (c(2) || !c(3)) }},
		{"1 And (2 oR NoT 3)", 3, func(c env) bool { return c(1) && (c(2) || !c(3)) }},
		{"1 OR NOT 2 AND 3 OR 4", 4, func(c env) bool { return c(1) || (!c(2) && c(3)) || c(4) }},
		{"((1))", 1, func(c env) bool { return c(1) }},
		{"\t1\nAND\r2 ", 2, func(c env) bool { return c(1) && c(2) }},
		{"(1)AND(2)", 2, func(c env) bool { return c(1) && c(2) }},
		{"01 OR 2", 2, func(c env) bool { return c(1) || c(2) }},
		{"2", 3, func(c env) bool { return c(2) }}, // conditions need not all be used
	}
	for _, tc := range cases {
		for bits := 0; bits < 1<<tc.n; bits++ {
			conds, f := boolCriteria(tc.n, bits)
			crit, err := NewCriteria(conds, tc.logic)
			if err != nil {
				t.Fatalf("%q: %v", tc.logic, err)
			}
			want := tc.want(func(i int) bool { return bits&(1<<(i-1)) != 0 })
			if got := crit.Match(f); got != want {
				t.Errorf("%q with bits %b = %v, want %v", tc.logic, bits, got, want)
			}
		}
	}
}

func TestLogicString(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"1":                  "1",
		"1 OR 2 AND 3":       "(1 OR (2 AND 3))",
		"1 AND 2 AND 3":      "((1 AND 2) AND 3)",
		"1 OR 2 OR 3":        "((1 OR 2) OR 3)",
		"NOT 1 AND 2":        "(NOT 1 AND 2)",
		"not (1 or 2)":       "NOT (1 OR 2)",
		"1 AND (2 OR NOT 3)": "(1 AND (2 OR NOT 3))",
	} {
		e, err := ParseLogic(in, 3)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := e.String(); got != want {
			t.Errorf("%q parsed as %s, want %s", in, got, want)
		}
	}
}

func TestLogicErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"1 AND", "AND 1", "OR", "NOT", "(1", "1)", "()", "(", ")", "1 2", "1 AND AND 2",
		"1 XOR 2", "1 && 2", "1 | 2", "1 AND NOT", "4", "0", "1 OR 4", "-1", "1.5", "1e1",
		"one", "1 ANDNOT 2", strings.Repeat("(", 200) + "1" + strings.Repeat(")", 200),
		strings.Repeat("NOT ", 200) + "1", "99999999999999999999999",
	} {
		if e, err := ParseLogic(in, 3); err == nil {
			t.Errorf("%q parsed as %s", in, e)
		}
	}
}

func TestNewCriteriaErrors(t *testing.T) {
	t.Parallel()
	ok := Condition{Field: "f", Op: OpEquals, Value: Str("x")}
	for name, tc := range map[string]struct {
		conds []Condition
		logic string
	}{
		"no conditions":        {nil, ""},
		"no conditions, logic": {[]Condition{}, "1"},
		"logic names 2 of 1":   {[]Condition{ok}, "1 OR 2"},
		"unparsable logic":     {[]Condition{ok, ok}, "1 OR"},
		"null value":           {[]Condition{{Field: "f", Op: OpEquals}}, ""},
		"contains number":      {[]Condition{{Field: "f", Op: OpContains, Value: Num(1)}}, ""},
		"not_contains bool":    {[]Condition{{Field: "f", Op: OpNotContains, Value: Bol(true)}}, ""},
		"starts_with number":   {[]Condition{{Field: "f", Op: OpStartsWith, Value: Num(1)}}, ""},
		"ge bool":              {[]Condition{{Field: "f", Op: OpGE, Value: Bol(true)}}, ""},
	} {
		if _, err := NewCriteria(tc.conds, tc.logic); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A model file may not join AND and OR at one level of parentheses, as in
// Salesforce; the stored configuration (decoded as trusted) keeps reading
// AND before OR, as rules stored before the check were read.
func TestLogicGrouping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		logic   string
		refused bool
	}{
		{"1 OR 2 AND 3", true},
		{"1 and 2 or 3", true},
		{"1 OR NOT 2 AND 3", true},
		{"(1 OR 2) AND 3 OR 1", true},
		{"1 AND (2 OR 3 AND 1)", true},
		{"(1 OR 2) AND 3", false},
		{"1 OR (2 AND 3)", false},
		{"1 AND 2 AND 3", false},
		{"1 or 2 OR 3", false},
		{"NOT 1 AND 2", false},
		{"NOT (1 OR 2) AND NOT 3", false},
		{"((1 AND 2)) OR (3)", false},
		{"", false},
	} {
		doc := `{"objects":[{"name":"account","internal_owd":"private"}],"groups":[{"id":"g"}],"rules":[{"id":"r","object":"account","type":"criteria",
			"target":"group:g","access":"read","criteria":{"conditions":[{"field":"a","op":"equals","value":"x"},{"field":"b","op":"equals","value":"y"},
			{"field":"c","op":"equals","value":"z"}],"logic":"` + tc.logic + `"}}]}`
		_, err := DecodeLimited(strings.NewReader(doc), Sink{}, DefaultLimits())
		if refused := err != nil && strings.Contains(err.Error(), "joins AND and OR without parentheses"); refused != tc.refused || (err != nil && !refused) {
			t.Errorf("logic %q in a model file: %v, want refused %v", tc.logic, err, tc.refused)
		}
		if _, err := Decode(strings.NewReader(doc), Sink{}); err != nil {
			t.Errorf("logic %q stored: %v, want it read", tc.logic, err)
		}
	}
}

// One AND or OR of a model file joins at most maxLogicChain operands,
// whatever the limits: a chain is a tree as deep as it is long, and
// evaluating it recurses. A stored configuration is read as it was stored.
func TestLogicChainBounded(t *testing.T) {
	t.Parallel()
	for _, n := range []int{maxLogicChain, maxLogicChain + 1} {
		doc := `{"objects":[{"name":"account","internal_owd":"private"}],"groups":[{"id":"g"}],"rules":[{"id":"r","object":"account","type":"criteria",
			"target":"group:g","access":"read","criteria":{"conditions":[{"field":"a","op":"equals","value":"x"}],
			"logic":"` + strings.TrimSuffix(strings.Repeat("1 AND ", n), " AND ") + `"}}]}`
		_, err := DecodeLimited(strings.NewReader(doc), Sink{}, Limits{})
		if refused := err != nil && strings.Contains(err.Error(), "joins more than 10000 operands"); refused != (n > maxLogicChain) || (err != nil && !refused) {
			t.Errorf("a chain of %d operands in a model file: %v", n, err)
		}
		if _, err := Decode(strings.NewReader(doc), Sink{}); err != nil {
			t.Errorf("a chain of %d operands stored: %v, want it read", n, err)
		}
	}
}

// TestCriteriaCommaListsBuiltOnce: a criteria rule matches a string with
// commas against the set of its alternatives built once, as Condition.Match
// reads them, so that a match costs one lookup whatever the value's length.
// Split at each match, a value of 128 KiB of commas (the default
// --max-value-bytes) cost 7 ms and 1 MiB of garbage a record and condition:
// 20 such conditions over 500 records made a full run of 2.6 s take 31.6 s.
// Not parallel: AllocsPerRun counts the whole process's allocations.
func TestCriteriaCommaListsBuiltOnce(t *testing.T) {
	fields := Fields{"s": Str("Tech"), "spc": Str(" Tech"), "empty": Str(""), "n": Num(5), "null": {}, "b": Bol(true)}
	long := strings.Repeat("a,", 64<<10) + " Tech "
	for _, field := range []string{"s", "spc", "empty", "n", "null", "b", "missing"} {
		for _, op := range []Op{OpEquals, OpNotEquals} {
			for _, v := range []string{"Retail, Tech", "Tech ,Retail", "Retail,Health", "tech,TECH", ",", " , x", "Tech,x", " Tech,", long} {
				cond := Condition{Field: field, Op: op, Value: Str(v)}
				want := cond.Match(fields)
				for _, logic := range []string{"", "1", "NOT NOT 1"} {
					c, err := NewCriteria([]Condition{cond}, logic)
					if err != nil {
						t.Fatal(err)
					}
					if got := c.Match(fields); got != want {
						t.Errorf("field %s %s %.20q, logic %q: criteria match %v, condition match %v", field, op, v, logic, got, want)
					}
				}
			}
		}
	}
	c, err := NewCriteria([]Condition{{Field: "s", Op: OpEquals, Value: Str(long)}, {Field: "s", Op: OpNotEquals, Value: Str(long)}}, "1 OR 2")
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() { c.Match(fields) }); n != 0 {
		t.Errorf("matching a list of %d bytes allocates %v times a match, want 0 (the list split once)", len(long), n)
	}
}

// TestCommaListWhiteSpace pins the white space docs/model.md says the
// parts of a comma list are stripped of (Unicode's, as unicode.IsSpace
// has it) and what stays, through both ways Go evaluates a condition
// (Condition.Match and the alternatives NewCriteria builds), and blank
// logic, which is only that white space.
func TestCommaListWhiteSpace(t *testing.T) {
	t.Parallel()
	stripped := []string{"\t", "\n", "\v", "\f", "\r", " ", "\u0085", "\u00a0", "\u1680", "\u2000", "\u2005", "\u200a",
		"\u2028", "\u2029", "\u202f", "\u205f", "\u3000"}
	kept := []string{"\ufeff", "\u200b", "\u180e", "\x1c", "\x1d", "\x1e", "\x1f", "\x00", "\u00ad", "\u2060"}
	type tc struct {
		field, value string
		want         bool
	}
	cases := []tc{
		{"", "a,,b", true}, {"", ",", true}, {"", " , ", true}, {"", "\u00a0,\u3000", true}, {"", "a,b", false},
		{" a", "a", false}, {"a ", "x,a", false}, {"a", " a", false}, {"a,b", "a,b", false},
	}
	for _, ws := range stripped {
		cases = append(cases, tc{"a", "x," + ws + "a" + ws, true}, tc{ws + "a", "x," + ws + "a", false})
	}
	for _, ws := range kept {
		cases = append(cases, tc{"a", "x," + ws + "a", false}, tc{ws + "a", "x, " + ws + "a ", true})
	}
	for _, c := range cases {
		for _, op := range []Op{OpEquals, OpNotEquals} {
			cond := Condition{Field: "f", Op: op, Value: Str(c.value)}
			crit, err := NewCriteria([]Condition{cond}, "")
			if err != nil {
				t.Fatal(err)
			}
			fields := Fields{"f": Str(c.field)}
			want := c.want == (op == OpEquals)
			if got := cond.Match(fields); got != want {
				t.Errorf("%q %s %q: condition match %v, want %v", c.field, op, c.value, got, want)
			}
			if got := crit.Match(fields); got != want {
				t.Errorf("%q %s %q: criteria match %v, want %v", c.field, op, c.value, got, want)
			}
		}
	}
	for _, ws := range stripped {
		if c, err := NewCriteria([]Condition{{Field: "f", Op: OpEquals, Value: Str("a")}}, ws+ws); err != nil || !c.AllRequired() {
			t.Errorf("logic %q: %v, want blank logic, the same as none", ws+ws, err)
		}
	}
	for _, ws := range kept {
		if _, err := NewCriteria([]Condition{{Field: "f", Op: OpEquals, Value: Str("a")}}, ws); err == nil {
			t.Errorf("logic %q accepted, want refused: it is not white space", ws)
		}
	}
}

// TestLogicWhiteSpace: filter logic separates its tokens with the white
// space that makes it blank and that comma lists' parts are stripped of
// (unicode.IsSpace, docs/model.md). The tokenizer took only space, tab,
// line feed and carriage return, so "1 AND\u00a02" was refused while
// "\u00a0" alone was blank. Other characters are still refused, and
// logic of the four ASCII separators reads as before.
func TestLogicWhiteSpace(t *testing.T) {
	t.Parallel()
	stripped := []string{"\t", "\n", "\v", "\f", "\r", " ", "\u0085", "\u00a0", "\u1680", "\u2000", "\u2005", "\u200a",
		"\u2028", "\u2029", "\u202f", "\u205f", "\u3000"}
	kept := []string{"\ufeff", "\u200b", "\u180e", "\x1c", "\x1d", "\x1e", "\x1f", "\x00", "\u00ad", "\u2060"}
	logic := func(ws string) string {
		return ws + "1" + ws + "AND" + ws + "(" + ws + "NOT" + ws + "2" + ws + "OR" + ws + "3" + ws + ")" + ws
	}
	for _, ws := range stripped {
		e, err := ParseLogic(logic(ws), 3)
		if err != nil || e.String() != "(1 AND (NOT 2 OR 3))" {
			t.Errorf("logic %q: %v, %v; want (1 AND (NOT 2 OR 3))", logic(ws), e, err)
		}
		if err := grouping("1" + ws + "OR" + ws + "2" + ws + "AND" + ws + "3"); err == nil {
			t.Errorf("grouping of 1 OR 2 AND 3 separated by %q: accepted, want refused", ws)
		}
	}
	for _, ws := range kept {
		if e, err := ParseLogic("1 AND"+ws+"2", 3); err == nil {
			t.Errorf("logic %q parsed as %s, want refused: %q is not white space", "1 AND"+ws+"2", e, ws)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("unexpected %q", ws)) {
			t.Errorf("logic %q: %v, want it to name %q whole", "1 AND"+ws+"2", err, ws)
		}
	}
}
