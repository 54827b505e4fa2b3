package model

import (
	"reflect"
	"testing"
)

// TestParseFieldsAgreesWithUnmarshal holds the fast path to encoding/json's:
// the same fields, or an error from both.
func TestParseFieldsAgreesWithUnmarshal(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{}`, ` { } `, `{"a": "x", "b": 1.5, "c": true, "d": false, "e": null}`,
		`{"n": -0.25e3, "m": 12345678901234567890, "s": "comma, list", "u": "été"}`,
		`{"esc": "a\"b", "tab": "a\tb", "uni": "\u00e9"}`, `{"a": 1, "a": 2}`, `{"x": [1]}`, `{"x": {"y": 1}}`,
		`{"x": 01}`, `{"x": 1.}`, `{"x": -}`, `{"x": +1}`, `{"x": 1e}`, `{"x": tru}`, `{"x": nul}`, `[]`, `"s"`, `{`,
		`{"a" 1}`, `{"a": 1,}`, `{"a": 1} x`, `{"a": "unterminated}`, `{"a": 1e400}`, `{"a": 0x10}`, `{"a": Infinity}`,
	} {
		var want Fields
		werr := want.UnmarshalJSON([]byte(in))
		got, gerr := ParseFields([]byte(in))
		if (werr != nil) != (gerr != nil) {
			t.Errorf("%s: error %v, want %v", in, gerr, werr)
			continue
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %#v, want %#v", in, got, want)
		}
	}
}

func FuzzParseFields(f *testing.F) {
	f.Add(`{"a": "x", "b": 1.5, "c": true, "d": null}`)
	f.Add(`{"a": 1e5, "b": -2}`)
	f.Fuzz(func(t *testing.T, in string) {
		var want Fields
		werr := want.UnmarshalJSON([]byte(in))
		got, gerr := ParseFields([]byte(in))
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("%q: error %v, want %v", in, gerr, werr)
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: %#v, want %#v", in, got, want)
		}
	})
}
