package model

import (
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// attackDecode reads doc within lim, as an import does, collecting records
// and checking the configuration; oneByte feeds it a byte at a time.
func attackDecode(doc string, lim Limits, merge, oneByte bool) (*Model, error) {
	var r io.Reader = strings.NewReader(doc)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	m := &Model{}
	f, err := DecodeLimited(r, Sink{
		Merge:  merge,
		Record: func(rec *Record) error { m.Records = append(m.Records, *rec); return nil },
		Share:  func(s *Share) error { m.Shares = append(m.Shares, *s); return nil },
		Team:   func(t *Team) error { m.Teams = append(m.Teams, *t); return nil },
	}, lim)
	if err != nil {
		return nil, err
	}
	m.Config = f.Config
	_, err = f.Config.ValidateLimited(lim)
	return m, err
}

// Edge cases of the surrogate walk (keys.go str): what encoding/json reads
// as U+FFFD is refused, whatever the escapes around it, and nothing else.
func TestAttackSurrogateWalk(t *testing.T) {
	t.Parallel()
	user := func(id string) string { return `{"users":[{"id":"` + id + `"}]}` }
	for _, tc := range []struct {
		name, doc string
		refused   bool
	}{
		{"a high half, then an escaped backslash and udc00", user(`\ud800\\udc00`), true},
		{"an escaped backslash, then ud800", user(`\\ud800`), false},
		{"a pair in capitals", user(`\uD800\uDC00`), false},
		{"the last pair", user(`\udbff\udfff`), false},
		{"a lone high half, then a pair", user(`\ud800\ud83d\ude00`), true},
		{"a pair, then a lone low half", user(`\ud83d\ude00\ude00`), true},
		{"a high half, then an escaped quote", user(`\ud800\"`), true},
		{"a high half at the end of the string", user(`x\ud800`), true},
		{"a high half, then a low half not escaped", user(`\ud800` + "\xed\xb0\x80"), true}, // also not UTF-8
		{"record owner vs user U+FFFD", `{` + account + `,"users":[{"id":"\ufffd"}],"records":[{"object":"account","id":"a1","owner":"\ud800"}]}`, true},
		{"rule target", `{` + account + `,"users":[{"id":"\ufffd"}],"rules":[{"id":"r","object":"account","type":"owner","source":"role:x","target":"user:\udfff","access":"read"}],"roles":[{"id":"x"}]}`, true},
		{"a deleted record", `{"delete":{"records":["\udc00"]}}`, true},
		{"a deleted rule", `{"delete":{"rules":["\udc00"]}}`, true},
		{"a team key", `{"teams":[{"record":"a1","user":"\ud800","access":"read"}]}`, true},
		{"a territory user", `{"territories":[{"id":"t","users":["\ud800"]}]}`, true},
		{"a field key in a map over 16 keys", `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{` + list(20, func(i int) string { return `"k` + strconv.Itoa(i) + `":1` }) + `,"\ud800":1}}]}`, true},
	} {
		for _, oneByte := range []bool{false, true} {
			_, err := attackDecode(tc.doc, DefaultLimits(), true, oneByte)
			refused := err != nil && (strings.Contains(err.Error(), "half a surrogate pair") || strings.Contains(err.Error(), "not UTF-8"))
			if refused != tc.refused || (tc.refused && err == nil) || (!tc.refused && err != nil && !strings.Contains(err.Error(), "does not exist")) {
				t.Errorf("%s (one byte %v): %v, want refused %v", tc.name, oneByte, err, tc.refused)
			}
		}
	}
}

// "A value of 0 lifts the limit (the UTF-8 and key checks above stay)", and
// U+0000 cannot be stored by PostgreSQL whatever the limits. With
// --max-id-bytes 0 --max-value-bytes 0, checkFields returns early and
// checkGrantee skips its check: recalc import fails in COPY with
// "stage model file: ERROR: unsupported Unicode escape sequence (SQLSTATE
// 22P05)", naming no record, or prints a raw NUL byte in "member user:u1
// does not exist".
func TestAttackNULWithLimitsLifted(t *testing.T) {
	t.Parallel()
	lifted := DefaultLimits()
	lifted.IDBytes, lifted.ValueBytes = 0, 0
	for _, tc := range []struct{ name, doc string }{
		{"field value", `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{"f":"a\u0000b"}}]}`},
		{"field name", `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{"f\u0000":1}}]}`},
		{"group member", `{"users":[{"id":"u1"}],"groups":[{"id":"g","members":["user:u1\u0000"]}]}`},
		{"share grantee", `{"shares":[{"object":"account","record":"a1","grantee":"user:u1\u0000","access":"read","cause":"manual"}]}`},
	} {
		for _, lim := range []Limits{lifted, {}} {
			var r io.Reader = strings.NewReader(tc.doc)
			_, err := DecodeLimited(r, Sink{}, lim)
			if err == nil || !strings.Contains(err.Error(), `\u0000`) {
				t.Errorf("%s (limits lifted: all %v): %v, want U+0000 refused", tc.name, lim == Limits{}, err)
			}
		}
	}
}

// The grouping check refuses AND and OR joined at one level of
// parentheses, and only that.
func TestAttackLogicGrouping(t *testing.T) {
	t.Parallel()
	conds := list(4, func(int) string { return `{"field":"f","op":"equals","value":"1"}` })
	deep := strings.Repeat("(", 99) + "1 AND 2" + strings.Repeat(")", 99) + " AND 3"
	for _, tc := range []struct {
		logic string
		ok    bool
	}{
		{"1 AND 2 AND 3", true},
		{"NOT 1 AND 2", true},
		{"NOT 1 OR NOT 2 OR 3", true},
		{"(1 OR 2) AND 3", true},
		{"1 OR (2 AND 3)", true},
		{"NOT (1 AND 2) OR 3", true},
		{"((1 OR 2)) AND (3 OR 4)", true},
		{"(1 AND 2) OR (3 AND 4)", true},
		{"1and2", true},
		{deep, true},
		{"1 OR 2 AND 3", false},
		{"1 and 2 or 3", false},
		{"1AND2OR3", false},
		{"NOT 1 OR 2 AND 3", false},
		{"(1 OR 2 AND 3)", false},
		{"(1 OR 2) AND 3 OR 4", false},
		{"1 AND (2 OR 3) OR 4", false},
		{"NOT (1) OR 2 AND 3", false},
		{"(1 AND (2 OR 3 AND 4))", false},
	} {
		for _, oneByte := range []bool{false, true} {
			_, err := attackDecode(rule(conds, tc.logic), DefaultLimits(), false, oneByte)
			switch {
			case tc.ok && err != nil:
				t.Errorf("%q: %v, want it accepted", tc.logic, err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "joins AND and OR")):
				t.Errorf("%q: %v, want it refused for joining AND and OR", tc.logic, err)
			}
		}
	}
	// A merge file's rules are checked too.
	if _, err := attackDecode(rule(conds, "1 OR 2 AND 3"), DefaultLimits(), true, false); err == nil {
		t.Errorf("merge file: mixed logic accepted")
	}
	// Trusted decoding (the stored configuration) keeps the old reading.
	if _, err := Decode(strings.NewReader(rule(conds, "1 OR 2 AND 3")), Sink{}); err != nil {
		t.Errorf("stored configuration: %v, want the old reading", err)
	}
}

// Keys hidden from a byte-level comparison: escapes, keys in nested
// objects, the delete section, a record's fields, split one byte at a time.
func TestAttackKeysEscapedAndNested(t *testing.T) {
	t.Parallel()
	rec := func(entry string) string {
		return `{` + account + `,"users":[{"id":"u1"},{"id":"u2"}],"records":[` + entry + `]}`
	}
	crit := func(c string) string {
		return `{` + account + `,"rules":[{"id":"r","object":"account","type":"criteria","target":"all_internal_users","access":"read","criteria":` + c + `}]}`
	}
	for _, tc := range []struct {
		name, doc, want string
		merge           bool
	}{
		{"escaped upper case", rec(`{"object":"account","id":"a1","\u004fwner":"u2","owner":"u1"}`), `key "Owner" is not "owner"`, false},
		{"escaped duplicate in fields", rec(`{"object":"account","id":"a1","owner":"u1","fields":{"tier":1,"ti\u0065r":3}}`), `fields: key "tier" appears twice`, false},
		{"escaped slash duplicate", rec(`{"object":"account","id":"a1","owner":"u1","fields":{"a/b":1,"a\/b":3}}`), `key "a/b" appears twice`, false},
		{"fields differing by case", rec(`{"object":"account","id":"a1","owner":"u1","fields":{"Tier":1,"tier":3,"TIER":4,"t\u0049er":5}}`), "", false},
		{"fields differing by Unicode fold", rec(`{"object":"account","id":"a1","owner":"u1","fields":{"ſ":1,"s":2,"K":3,"k":4}}`), "", false},
		{"precomposed and decomposed", rec(`{"object":"account","id":"a1","owner":"u1","fields":{"é":1,"e\u0301":2}}`), "", false},
		{"criteria twice", crit(`{"conditions":[{"field":"x","op":"equals","value":"1"}]},"criteria":{"conditions":[{"field":"x","op":"equals","value":"1"}]}`), `key "criteria" appears twice`, false},
		{"logic twice", crit(`{"conditions":[{"field":"x","op":"equals","value":"1"},{"field":"x","op":"equals","value":"2"}],"logic":"1 OR 2","logic":"1 AND 2"}`), `criteria: key "logic" appears twice`, false},
		{"condition value twice", crit(`{"conditions":[{"field":"x","op":"equals","value":"1","value":"2"}]}`), `criteria.conditions: key "value" appears twice`, false},
		{"a record key folded by Unicode", rec(`{"object":"account","id":"a1","owner":"u1","territorie\u017f":["t"]}`), `key "territorieſ" is not "territories"`, false},
		{"embedded child key twice", `{` + account + `,"roles":[{"id":"r","contact_access":"read","contact_access":"edit"}]}`, `key "contact_access" appears twice`, false},
		{"embedded child key case", `{` + account + `,"roles":[{"id":"r","Contact_access":"edit"}]}`, `key "Contact_access" is not "contact_access"`, false},
		{"delete team key case", `{"delete":{"teams":[{"record":"a1","User":"u1","user":"u2"}]}}`, `key "User" is not "user"`, true},
		{"delete records section twice", `{"delete":{"records":["a1"],"records":["a2"]}}`, `"records" appears twice`, true},
		{"delete config section twice", `{"delete":{"rules":["a1"],"rul\u0065s":["a2"]}}`, `"rules" appears twice`, true},
		{"section twice escaped", `{"users":[],"u\u0073ers":[{"id":"u1"}]}`, `section "users" appears twice`, false},
		{"section in other case", `{"Users":[{"id":"u1"}]}`, `unknown section "Users"`, false},
		{"version twice", `{"version":1,"version":1}`, `appears twice`, false},
		{"territory users key case", `{"territories":[{"id":"t","Users":["u"]}]}`, `key "Users" is not "users"`, false},
		{"many keys then a dup", rec(`{"object":"account","id":"a1","owner":"u1","fields":{` + list(40, func(i int) string { return `"k` + strings.Repeat("x", i) + `":1` }) + `,"kxxx":2}}`), `key "kxxx" appears twice`, false},
	} {
		for _, lim := range []Limits{DefaultLimits(), {}} {
			for _, oneByte := range []bool{false, true} {
				_, err := attackDecode(tc.doc, lim, tc.merge, oneByte)
				switch {
				case tc.want == "" && err != nil:
					t.Errorf("%s (one byte %v): %v, want it accepted", tc.name, oneByte, err)
				case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
					t.Errorf("%s (one byte %v): %v, want an error containing %q", tc.name, oneByte, err, tc.want)
				}
			}
		}
	}
}

// msgCases are refused files; attackMessages checks each message.
func attackMessages(t *testing.T, cases []struct{ name, doc string }, check func(name, msg string)) {
	t.Helper()
	for _, tc := range cases {
		_, err := attackDecode(tc.doc, DefaultLimits(), true, false)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		check(tc.name, err.Error())
	}
}

// A message never carries a record's field value (pins what holds).
func TestAttackMessagesNoFieldValue(t *testing.T) {
	t.Parallel()
	rec := func(fields string) string {
		return `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{` + fields + `}}]}`
	}
	attackMessages(t, []struct{ name, doc string }{
		{"value an object", rec(`"f":{"SECRET":1}`)},
		{"value a list", rec(`"f":["SECRET"]`)},
		{"value an object with a key twice", rec(`"f":{"SECRET":1,"SECRET":2}`)},
		{"value too long", rec(`"f":"SECRET` + strings.Repeat("x", 200<<10) + `"`)},
		{"value with NUL", rec(`"f":"SECRET\u0000"`)},
		{"value with a lone surrogate", rec(`"f":"SECRET\ud800"`)},
		{"value a huge number", rec(`"f":1e999`)},
		{"value malformed", rec(`"f":"SECRET\x"`)},
		{"value then a key twice", rec(`"f":"SECRET","f":"SECRET"`)},
		{"value not UTF-8", rec(`"f":"SECRET` + "\xff" + `"`)},
		{"value with a control character", rec(`"f":"SECRET` + "\n" + `"`)},
	}, func(name, msg string) {
		if strings.Contains(msg, "SECRET") || strings.ContainsAny(msg, "\n\r\x00") {
			t.Errorf("%s: %q carries the field's value or is not one line", name, msg)
		}
	})
}

// A message is one line: an id is quoted wherever it appears. A grantee
// that does not exist is printed as written, so an id holding a newline
// (allowed, and escaped everywhere else) splits the message, and can
// forge a line: recalc import prints
//
//	recalc: invalid model: group "g": member user:u1
//	recalc: import ok does not exist
//
// (and store's duplicate-share and delete.shares messages do the same).
func TestAttackGranteeMessageOneLine(t *testing.T) {
	t.Parallel()
	attackMessages(t, []struct{ name, doc string }{
		{"rule target", `{` + account + `,"rules":[{"id":"r","object":"account","type":"owner","source":"role:x","target":"role:a\nrecalc: import ok","access":"read"}],"roles":[{"id":"x"}]}`},
		{"group member", `{"groups":[{"id":"g","members":["user:u1\nrecalc: import ok"]}]}`},
		{"rule source", `{` + account + `,"rules":[{"id":"r","object":"account","type":"owner","source":"role:x\ny","target":"all_internal_users","access":"read"}]}`},
	}, func(name, msg string) {
		if strings.ContainsAny(msg, "\n\r") {
			t.Errorf("%s: %q is not one line: quote the grantee's id", name, msg)
		}
	})
}

// A merge file's deleted configuration keys and record ids are strings; a
// wrong type was reported as "must be a JSON object, not object".
func TestAttackDeleteEntryTypeMessage(t *testing.T) {
	t.Parallel()
	attackMessages(t, []struct{ name, doc string }{
		{"deleted rule an object", `{"delete":{"rules":[{"id":"r1"}]}}`},
		{"deleted record a number", `{"delete":{"records":[5]}}`},
		{"deleted user a list", `{"delete":{"users":[["u1"]]}}`},
	}, func(name, msg string) {
		if !strings.Contains(msg, "must be a string, not") {
			t.Errorf("%s: %q, want it to say the entry must be a string", name, msg)
		}
	})
}

// chunkReader returns at most n bytes a read, so entries split across
// reads at every offset modulo n.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// Costly shapes within the default limits decode to the right answer: many
// keys in one record's fields, deep nesting in a condition's value, long
// logic. (Their cost is bounded by the limits, not timed here.)
func TestAttackCost(t *testing.T) {
	t.Parallel()
	lim := DefaultLimits()
	// ~1 MiB of fields, 90,000 keys, the last one a duplicate of the first.
	var b strings.Builder
	b.WriteString(`{"records":[{"object":"account","id":"a1","owner":"u1","fields":{`)
	for i := 0; b.Len() < 1<<20-40; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strings.Repeat("z", i%3) + strconv.Itoa(i) + `":1`)
	}
	many := b.String()
	conds := func(v string) string { return rule(`{"field":"f","op":"equals","value":`+v+`}`, "") }
	logicChain := "1" + strings.Repeat(" AND 1", (10000-1)/6)
	logicNest := strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100)
	logicNot := strings.Repeat("NOT ", 100) + "1"
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"90,000 fields, one twice", many + `,"k0":2}}]}`, `fields: key "k0" appears twice`},
		{"90,000 fields", many + `}}]}`, ``},
		{"list 9,000 deep in a value", conds(strings.Repeat("[", 9000) + strings.Repeat("]", 9000)), `not a list`},
		{"objects 9,000 deep in a value", conds(strings.Repeat(`{"a":`, 9000) + "1" + strings.Repeat("}", 9000)), `not an object`},
		{"list 20,000 deep in a value", conds(strings.Repeat("[", 20000) + strings.Repeat("]", 20000)), `exceeded max depth`},
		{"logic of 10,000 characters", rule(`{"field":"f","op":"equals","value":"1"}`, logicChain), ``},
		{"logic 100 deep", rule(`{"field":"f","op":"equals","value":"1"}`, logicNest), ``},
		{"logic 101 deep", rule(`{"field":"f","op":"equals","value":"1"}`, "("+logicNest+")"), `nested deeper than 100`},
		{"NOT 100 deep", rule(`{"field":"f","op":"equals","value":"1"}`, logicNot), ``},
		{"( 5,000 deep unclosed", rule(`{"field":"f","op":"equals","value":"1"}`, strings.Repeat("(", 5000)), `nested deeper`},
	} {
		for _, r := range []func(string) io.Reader{
			func(s string) io.Reader { return strings.NewReader(s) },
			func(s string) io.Reader { return chunkReader{strings.NewReader(s), 4093} },
		} {
			_, err := DecodeLimited(r(tc.doc), Sink{Record: func(*Record) error { return nil }}, lim)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s: %v, want it accepted", tc.name, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%s: %.300v, want an error containing %q", tc.name, err, tc.want)
			}
		}
	}
}

// An entry exactly at the entry limit, split across reads at every
// alignment, is read whole and its keys checked; one byte more is refused.
func TestAttackEntryAtLimitSplit(t *testing.T) {
	t.Parallel()
	lim := DefaultLimits()
	lim.EntryBytes = 4096
	head := `{"records":[`
	mk := func(n int, tail string) string {
		e := `{"object":"account","id":"a1","owner":"u1","fields":{"f":"` + "\u00e9" + `","g":"`
		e += strings.Repeat("x", n-len(e)-len(`"`+tail+`}}`)) + `"` + tail + `}}`
		return head + e + `]}`
	}
	for _, tail := range []string{``, `,"f":1`, `,"\u0066":1`, `,"F":1`} {
		for _, n := range []int{4096, 4097} {
			for _, chunk := range []int{1, 3, 7, 4093, 4096} {
				doc := mk(n, tail)
				_, err := DecodeLimited(chunkReader{strings.NewReader(doc), chunk}, Sink{Record: func(*Record) error { return nil }}, lim)
				var want string
				switch {
				case n > 4096:
					want = "max-entry-bytes"
				case tail == `,"f":1` || tail == `,"\u0066":1`:
					want = `key "f" appears twice`
				}
				if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
					t.Errorf("entry of %d bytes ending %q, reads of %d: %v, want %q", n, tail, chunk, err, want)
				}
			}
		}
	}
}
