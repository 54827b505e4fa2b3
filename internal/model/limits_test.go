package model

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// decodeValidate reads a model file within lim, as an import does.
func decodeValidate(doc string, lim Limits) error {
	f, err := DecodeLimited(strings.NewReader(doc), Sink{}, lim)
	if err != nil {
		return err
	}
	_, err = f.Config.ValidateLimited(lim)
	return err
}

const account = `"objects":[{"name":"account","internal_owd":"private"}]`

// list returns n entries made by entry, comma-separated.
func list(n int, entry func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = entry(i)
	}
	return strings.Join(parts, ",")
}

// rule returns a model file with one criteria rule of conditions and logic.
func rule(conditions, logic string) string {
	return `{` + account + `,"rules":[{"id":"r","object":"account","type":"criteria","target":"all_internal_users","access":"read",
		"criteria":{"conditions":[` + conditions + `],"logic":"` + logic + `"}}]}`
}

// TestLimits checks each limit on a file built to sit exactly at it (k is
// the limit), which it accepts, and on one just past it (k+1), which it
// rejects, naming the limit and how to raise it.
func TestLimits(t *testing.T) {
	t.Parallel()
	const pad = `{"object":"account","id":"a1","owner":"u1","fields":{"f":""}}`
	cases := []struct {
		name  string
		limit string
		k     int64
		// doc returns a file whose measure (bytes, count or depth) is n.
		doc func(n int) string
		// entry is what the message must name.
		entry string
	}{
		{"file", LimitFileBytes, 100, func(n int) string { return `{"users":[]` + strings.Repeat(" ", n-12) + `}` }, "model file"},
		{"configuration", LimitConfigBytes, 100, func(n int) string {
			return `{"users":[` + strings.Repeat(" ", n-3) + `]}` // counted from the colon
		}, `section "users"`},
		{"entry", LimitEntryBytes, 200, func(n int) string {
			return `{"records":[{"object":"account","id":"a1","owner":"u1","fields":{"f":"` + strings.Repeat("x", n-len(pad)) + `"}}]}`
		}, "records[0]"},
		{"id", LimitIDBytes, 30, func(n int) string { return `{"users":[{"id":"` + strings.Repeat("u", n) + `"}]}` }, "users[0]"},
		{"reference", LimitIDBytes, 30, func(n int) string {
			r := strings.Repeat("r", n)
			return `{"users":[{"id":"u1","role":"` + r + `"}],"roles":[{"id":"` + r + `"}]}`
		}, `user "u1": role`},
		{"grantee", LimitIDBytes, 30, func(n int) string {
			r := strings.Repeat("r", n)
			return `{"groups":[{"id":"g","members":["role_and_internal_subordinates:` + r + `"]}],"roles":[{"id":"` + r + `"}]}`
		}, `group "g": member 1`},
		{"field name", LimitIDBytes, 30, func(n int) string {
			return `{"records":[{"object":"account","id":"a1","owner":"u1","fields":{"` + strings.Repeat("f", n) + `":1}}]}`
		}, `record "a1": a field name`},
		{"field value", LimitValueBytes, 50, func(n int) string {
			return `{"records":[{"object":"account","id":"a1","owner":"u1","fields":{"f":"` + strings.Repeat("é", n/2) + strings.Repeat("x", n%2) + `"}}]}`
		}, `record "a1": field "f"`},
		{"condition value", LimitValueBytes, 50, func(n int) string {
			return rule(`{"field":"f","op":"contains","value":"`+strings.Repeat("x", n)+`"}`, "")
		}, `rule "r": condition 1: value`},
		{"conditions", LimitConditions, 40, func(n int) string {
			return rule(list(n, func(int) string { return `{"field":"f","op":"equals","value":1}` }), "")
		}, `rule "r": 41 conditions`},
		{"logic", LimitLogicChars, 60, func(n int) string {
			return rule(`{"field":"f","op":"equals","value":1}`, "1"+strings.Repeat(" ", n-1))
		}, `rule "r": filter logic`},
		{"users", LimitUsers, 20, func(n int) string {
			return `{"users":[` + list(n, func(i int) string { return fmt.Sprintf(`{"id":"u%d"}`, i) }) + `]}`
		}, `section "users"`},
		{"roles", LimitRoles, 20, func(n int) string {
			return `{"roles":[` + list(n, func(i int) string { return fmt.Sprintf(`{"id":"r%d"}`, i) }) + `]}`
		}, `section "roles"`},
		{"role depth", LimitRoleDepth, 20, func(n int) string {
			// listed bottom first
			return `{"roles":[` + list(n, func(i int) string {
				if i == n-1 {
					return `{"id":"r0"}`
				}
				return fmt.Sprintf(`{"id":"r%d","parent":"r%d"}`, n-1-i, n-2-i)
			}) + `]}`
		}, `role "r20": 21 levels deep`},
		{"territories", LimitTerritories, 20, func(n int) string {
			return `{"territories":[` + list(n, func(i int) string { return fmt.Sprintf(`{"id":"t%d"}`, i) }) + `]}`
		}, `section "territories"`},
		{"territory depth", LimitTerritoryDepth, 20, func(n int) string {
			return `{"territories":[` + list(n, func(i int) string {
				if i == 0 {
					return `{"id":"t0"}`
				}
				return fmt.Sprintf(`{"id":"t%d","parent":"t%d"}`, i, i-1)
			}) + `]}`
		}, `territory "t20": 21 levels deep`},
		{"groups", LimitGroups, 20, func(n int) string {
			return `{"groups":[` + list(n, func(i int) string { return fmt.Sprintf(`{"id":"g%d"}`, i) }) + `]}`
		}, `section "groups"`},
		{"group depth", LimitGroupDepth, 20, func(n int) string {
			return `{"groups":[` + list(n, func(i int) string {
				if i == n-1 {
					return fmt.Sprintf(`{"id":"g%d"}`, i)
				}
				return fmt.Sprintf(`{"id":"g%d","members":["group:g%d"]}`, i, i+1)
			}) + `]}`
		}, `group "g0": nests groups 21 levels deep`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var lim Limits // only the limit under test
			for _, info := range LimitInfos() {
				if info.Name == tc.limit {
					*info.Field(&lim) = tc.k
				}
			}
			if err := decodeValidate(tc.doc(int(tc.k)), lim); err != nil {
				t.Fatalf("at the limit: %v", err)
			}
			if err := decodeValidate(tc.doc(int(tc.k)), DefaultLimits()); err != nil {
				t.Fatalf("within the defaults: %v", err)
			}
			err := decodeValidate(tc.doc(int(tc.k)+1), lim)
			var le *LimitError
			switch {
			case err == nil:
				t.Fatal("past the limit: accepted")
			case !errors.As(err, &le) || le.Limit != tc.limit || le.Max != tc.k:
				t.Fatalf("past the limit: %v, want a LimitError of %s = %d", err, tc.limit, tc.k)
			case !strings.HasPrefix(err.Error(), tc.entry) && !strings.Contains(err.Error(), ": "+tc.entry):
				t.Fatalf("past the limit: %q does not name %s", err, tc.entry)
			case !strings.Contains(err.Error(), "--"+tc.limit+" or "+EnvVar(tc.limit)):
				t.Fatalf("past the limit: %q does not say how to raise it", err)
			}
		})
	}
}

// TestLimitInfos checks that every field of Limits has a name, a default
// above zero and an environment variable in the same style.
func TestLimitInfos(t *testing.T) {
	t.Parallel()
	def, seen := DefaultLimits(), map[*int64]bool{}
	for _, info := range LimitInfos() {
		p := info.Field(&def)
		if seen[p] || *p <= 0 {
			t.Errorf("%s: field listed twice, or default %d", info.Name, *p)
		}
		seen[p] = true
		if want := "RECALC_" + strings.ToUpper(strings.ReplaceAll(info.Name, "-", "_")); info.EnvVar() != want {
			t.Errorf("%s: env var %s, want %s", info.Name, info.EnvVar(), want)
		}
	}
	if n := len(seen); n != 16 {
		t.Errorf("%d limits listed, Limits has 16 fields", n)
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// repeat is an endless reader of one byte.
type repeat byte

func (b repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// TestHugeValuesAreNotBuffered feeds a field value, a configuration
// section and a section name of a hundred megabytes: the decoder must stop
// within a read buffer of the limit.
func TestHugeValuesAreNotBuffered(t *testing.T) {
	t.Parallel()
	const huge = 100 << 20
	lim := DefaultLimits()
	lim.ConfigBytes = 1 << 20 // under huge
	for _, tc := range []struct {
		name, prefix string
		limit        string
		max          int64
	}{
		{"field value", `{"records":[{"object":"account","id":"a1","owner":"u1","fields":{"f":"`, LimitEntryBytes, lim.EntryBytes},
		{"configuration", `{"users":[{"id":"`, LimitConfigBytes, lim.ConfigBytes},
		{"section name", `{"`, LimitIDBytes, lim.IDBytes + tokenSlack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &countingReader{r: io.MultiReader(strings.NewReader(tc.prefix), io.LimitReader(repeat('x'), huge))}
			_, err := DecodeLimited(r, Sink{}, lim)
			var le *LimitError
			if !errors.As(err, &le) || le.Limit != tc.limit {
				t.Fatalf("%v, want a LimitError of %s", err, tc.limit)
			}
			if r.n > tc.max+int64(len(tc.prefix))+64<<10 {
				t.Fatalf("read %d bytes for a limit of %d", r.n, tc.max)
			}
		})
	}
}

// TestLevelsIsLinear counts the parent links levels follows on a chain
// listed bottom first, the order where walking each entry's ancestors is
// quadratic.
func TestLevelsIsLinear(t *testing.T) {
	t.Parallel()
	const n = 20000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint(n - 1 - i) // id i has parent i-1
	}
	steps := 0
	parent := func(id string) string {
		steps++
		var i int
		fmt.Sscan(id, &i)
		if i == 0 {
			return ""
		}
		return fmt.Sprint(i - 1)
	}
	if _, err := levels(ids, parent, 0); err != nil {
		t.Fatal(err)
	}
	if steps > 2*n {
		t.Fatalf("%d parent links followed for %d entries", steps, n)
	}
	if start, err := levels(ids, parent, n-1); start != fmt.Sprint(n-1) || err == nil {
		t.Fatalf("a %d-level chain within %d levels: %q, %v", n, n-1, start, err)
	}
}

// TestDeepHierarchiesValidateFast validates 20,000-level role and territory
// chains and 20,000 nested groups, listed bottom first, with the limits
// raised. Each took seconds to minutes when every entry walked its
// ancestors (2 * 10^8 steps a hierarchy). Linear validation takes 0.2 to
// 1.3 s here under -race, and took 9.9 s with both cores loaded four
// times over: the bound is there to catch the quadratic walk, not to time
// the linear one.
func TestDeepHierarchiesValidateFast(t *testing.T) {
	t.Parallel()
	const n = 20000
	c := &Config{}
	for i := n - 1; i >= 0; i-- {
		r, tr, g := Role{ID: fmt.Sprint("r", i)}, Territory{ID: fmt.Sprint("t", i)}, Group{ID: fmt.Sprint("g", i)}
		if i > 0 {
			r.Parent, tr.Parent = fmt.Sprint("r", i-1), fmt.Sprint("t", i-1)
		}
		if i < n-1 {
			g.Members = []Grantee{{Kind: GGroup, ID: fmt.Sprint("g", i+1)}}
		}
		c.Roles, c.Territories, c.Groups = append(c.Roles, r), append(c.Territories, tr), append(c.Groups, g)
	}
	lim := DefaultLimits()
	lim.RoleDepth, lim.TerritoryDepth, lim.GroupDepth = n, n, n
	start := time.Now()
	if _, err := c.ValidateLimited(lim); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("validation took %s", d)
	}
	lim.GroupDepth = n - 1
	if _, err := c.ValidateLimited(lim); err == nil || !strings.Contains(err.Error(), `group "g0"`) {
		t.Fatalf("%d nested groups within %d levels: %v", n, n-1, err)
	}
}

// TestObjectDepthIsBounded: the object hierarchy may be MaxObjectDepth deep
// and no deeper, whatever the limits say, since family roots are found by a
// bounded walk.
func TestObjectDepthIsBounded(t *testing.T) {
	t.Parallel()
	chain := func(n int) *Config {
		c := &Config{}
		for i := 0; i < n; i++ {
			o := Object{Name: fmt.Sprintf("o%d__c", i), InternalOWD: Private, ExternalOWD: Private}
			if i > 0 {
				o.Parent = fmt.Sprintf("o%d__c", i-1)
			}
			c.Objects = append(c.Objects, o)
		}
		return c
	}
	if _, err := chain(MaxObjectDepth).ValidateLimited(Limits{}); err != nil {
		t.Fatalf("%d levels: %v", MaxObjectDepth, err)
	}
	_, err := chain(MaxObjectDepth + 1).ValidateLimited(Limits{})
	if err == nil || !strings.Contains(err.Error(), "fixed limit") {
		t.Fatalf("%d levels: got %v, want the fixed depth limit", MaxObjectDepth+1, err)
	}
}

// TestUntrustedText: a file must be UTF-8, byte for byte (encoding/json
// would read a stray byte as U+FFFD, so that "z\xff" and "z\xfe" read as
// the same id), and no id or string value may hold U+0000 (PostgreSQL
// stores neither in text nor in jsonb); each is refused with one message
// naming the byte or the entry. Read a byte at a time too, so that a
// character split across reads is told from a broken one.
func TestUntrustedText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, doc, want string // want: "" to accept
	}{
		{"a character of 2, 3 and 4 bytes", `{"users":[{"id":"é€😀"}]}`, ""},
		{"U+FFFD written as such", `{"users":[{"id":"\uFFFD�"}]}`, ""},
		{"a stray byte in an id", "{\"users\":[{\"id\":\"z\xff\"}]}", "model file: byte 19 is not UTF-8"},
		{"a character cut by the end of the file", "{\"users\":[{\"id\":\"z\xe2\x82", "byte 19 is not UTF-8"},
		{"a character cut by a quote", "{\"users\":[{\"id\":\"z\xe2\x82\"}]}", "byte 19 is not UTF-8"},
		{"a broken character in a field value", "{" + account + ",\"users\":[{\"id\":\"u1\"}],\"records\":[{\"object\":\"account\",\"id\":\"a1\",\"owner\":\"u1\",\"fields\":{\"f\":\"\xe2\x28\xa1\"}}]}", "is not UTF-8"},
		{"U+0000 in a user id", `{"users":[{"id":"u\u0000"}]}`, `user "u\x00": id holds the character \u0000`},
		{"U+0000 in a field name", `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{"f\u0000":1}}]}`, `a field name holds the character \u0000`},
		{"U+0000 in a field value", `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{"f":"\u0000"}}]}`, `field "f" holds the character \u0000`},
	} {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.doc)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			f, err := DecodeLimited(r, Sink{}, DefaultLimits())
			if err == nil {
				_, err = f.Config.ValidateLimited(DefaultLimits())
			}
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s (one byte at a time: %v): %v, want it accepted", tc.name, oneByte, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%s (one byte at a time: %v): %v, want an error containing %q", tc.name, oneByte, err, tc.want)
			}
		}
	}
}
