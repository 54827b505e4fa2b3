package model

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

// conformanceFiles returns the step files of the public conformance cases.
func conformanceFiles(f *testing.F) [][]byte {
	paths, err := filepath.Glob("../../testdata/conformance/cases/*/steps/*.json")
	if err != nil || len(paths) == 0 {
		f.Fatalf("no conformance files: %v", err)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzDecode feeds arbitrary bytes to Parse and Validate, which must never
// panic. A model that validates must also survive evaluating its criteria on
// its records, and encode to a file that parses and validates again.
func FuzzDecode(f *testing.F) {
	for _, b := range conformanceFiles(f) {
		f.Add(b)
	}
	f.Add([]byte(interfaceExample))
	f.Add([]byte(withSections(nil)))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"rules":[{"id":"r","object":"account","type":"criteria","target":"all_internal_users","access":"read","criteria":{"conditions":[{"field":"a","op":"equals","value":"x, y"}],"logic":"NOT (1 OR 1) and 1"}}]}`))
	// Small limits, so that fuzzing reaches each of them.
	small := Limits{FileBytes: 1 << 12, ConfigBytes: 1 << 11, EntryBytes: 1 << 9, IDBytes: 16, ValueBytes: 32,
		Conditions: 3, LogicChars: 20, Users: 5, Roles: 5, RoleDepth: 3, Territories: 5, TerritoryDepth: 3, Groups: 5, GroupDepth: 3}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, _, err := Parse(bytes.NewReader(data))
		lf, lerr := DecodeLimited(bytes.NewReader(data), Sink{}, small)
		if lerr == nil {
			_, lerr = lf.Config.ValidateLimited(small)
		}
		switch {
		case lerr != nil && lerr.Error() == "":
			t.Fatal("empty error message within limits")
		case lerr == nil && err != nil:
			t.Fatalf("accepted within limits, rejected without: %v", err)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if _, err := m.Validate(); err != nil {
			return
		}
		for _, r := range m.Rules {
			for _, rec := range m.Records {
				if r.Type == CriteriaRule {
					r.Criteria.Match(rec.Fields)
				}
			}
		}
		var buf bytes.Buffer
		if err := Encode(&buf, m, nil); err != nil {
			t.Fatalf("encode: %v", err)
		}
		m2, _, err := Parse(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("re-parse encoded model: %v\n%s", err, buf.Bytes())
		}
		if _, err := m2.Validate(); err != nil {
			t.Fatalf("re-validate encoded model: %v\n%s", err, buf.Bytes())
		}
	})
}

// FuzzLogic checks that ParseLogic never panics and that the canonical form
// of an expression parses back to itself with the same meaning.
func FuzzLogic(f *testing.F) {
	for _, b := range conformanceFiles(f) {
		m, _, err := Parse(bytes.NewReader(b))
		if err != nil {
			continue
		}
		for _, r := range m.Rules {
			if r.Type == CriteriaRule && r.Criteria.Logic != "" {
				f.Add(r.Criteria.Logic, uint8(len(r.Criteria.Conditions)))
			}
		}
	}
	for _, s := range []string{"1", "1 AND (2 OR NOT 3)", "not 1 or 2 and 3", "((1))", "1 OR", "(1", "NOT NOT 2", "1 and 2 AND 3 or 4",
		"1\u00a0AND\u3000(2\u2028OR\vNOT\u00853)", "1 AND\u200b2"} {
		f.Add(s, uint8(4))
	}
	f.Fuzz(func(t *testing.T, s string, n uint8) {
		conds := int(n%20) + 1
		e, err := ParseLogic(s, conds)
		if err != nil {
			return
		}
		// One rule of white space: any unicode.IsSpace separates tokens
		// as a space does, so a logic an earlier version read with only
		// ASCII separators reads the same.
		spaced := strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) {
				return ' '
			}
			return r
		}, s)
		if e3, err := ParseLogic(spaced, conds); err != nil || e3.String() != e.String() {
			t.Fatalf("%q parsed as %s, with its white space as spaces %q as %v (%v)", s, e, spaced, e3, err)
		}
		canon := e.String()
		e2, err := ParseLogic(canon, conds)
		if err != nil {
			t.Fatalf("%q printed as %q, which does not parse: %v", s, canon, err)
		}
		if again := e2.String(); again != canon {
			t.Fatalf("%q printed as %q, then as %q", s, canon, again)
		}
		for bits := 0; bits < 64; bits++ {
			c := func(i int) bool { return bits&(1<<((i-1)%6)) != 0 }
			if e.eval(c) != e2.eval(c) {
				t.Fatalf("%q and %q differ on %b", s, canon, bits)
			}
		}
	})
}
