package model

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// A model file's keys are taken as written: encoding/json alone would match
// "OWNER" to owner and let the second of two equal keys win, so that a
// reader of the file that takes keys as written would see another owner or
// access than recalc stores.
func TestKeysExactAndUnique(t *testing.T) {
	t.Parallel()
	rec := func(entry string) string {
		return `{` + account + `,"users":[{"id":"u1"},{"id":"u2"}],"records":[` + entry + `]}`
	}
	many := make([]string, 2000)
	for i := range many {
		many[i] = `"f` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `_` + strings.Repeat("9", i/26) + `":1`
	}
	for _, tc := range []struct {
		name, doc, want string // want: "" to accept
		merge           bool
	}{
		{"exact keys", rec(`{"object":"account","id":"a1","owner":"u1","fields":{"Owner":"x","owner":"y"}}`), "", false},
		{"a record of 2,000 fields", rec(`{"object":"account","id":"a1","owner":"u1","fields":{` + strings.Join(many, ",") + `}}`), "", false},
		{"a field twice", rec(`{"object":"account","id":"a1","owner":"u1","owner":"u2"}`), `record "a1": key "owner" appears twice`, false},
		{"a field in another case", rec(`{"object":"account","id":"a1","owner":"u1","OWNER":"u2"}`), `record "a1": key "OWNER" is not "owner" (keys are case-sensitive)`, false},
		{"a record field twice", rec(`{"object":"account","id":"a1","owner":"u1","fields":{"tier":1,"tier":3}}`), `record "a1": fields: key "tier" appears twice`, false},
		{"a key escaped", `{"users":[{"id":"u1","\u0069d":"u2"}]}`, `user "u2": key "id" appears twice`, false},
		{"a condition's key in another case", `{` + account + `,"rules":[{"id":"r","object":"account","type":"criteria","target":"all_internal_users","access":"read",
			"criteria":{"conditions":[{"field":"x","Op":"equals","value":"1"}]}}]}`, `rule "r": criteria.conditions: key "Op" is not "op"`, false},
		{"an object's name in another case", `{"objects":[{"Name":"account","internal_owd":"private"}]}`, `key "Name" is not "name"`, false},
		{"a byte order mark", "\xef\xbb\xbf" + `{"users":[{"id":"u1"}]}`, "starts with a byte order mark (EF BB BF)", false},
		{"a key folded by Unicode", `{"users":[{"id":"u1"}],"groups":[{"id":"g","memberſ":["user:u1"]}]}`, `group "g": key "memberſ" is not "members"`, false},
		{"a deleted share's key twice", `{"delete":{"shares":[{"record":"a1","grantee":"user:u1","grantee":"user:u2","cause":"manual"}]}}`, `key "grantee" appears twice`, true},
	} {
		for _, lim := range []Limits{DefaultLimits(), {}} { // every limit lifted: still checked
			for _, oneByte := range []bool{false, true} {
				var r io.Reader = strings.NewReader(tc.doc)
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				f, err := DecodeLimited(r, Sink{Merge: tc.merge}, lim)
				if err == nil {
					_, err = f.Config.ValidateLimited(lim)
				}
				switch {
				case tc.want == "" && err != nil:
					t.Errorf("%s (limits %v, one byte at a time: %v): %v, want it accepted", tc.name, lim != Limits{}, oneByte, err)
				case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
					t.Errorf("%s (limits %v, one byte at a time: %v): %v, want an error containing %q", tc.name, lim != Limits{}, oneByte, err, tc.want)
				}
			}
		}
	}
}

// A string may not escape half a surrogate pair: encoding/json reads it as
// U+FFFD, so "\ud800" and "\udc00" would be one id, and the id written
// "\ufffd".
func TestLoneSurrogates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, doc string
		refused   bool
	}{
		{"a pair", `{"users":[{"id":"\ud83d\ude00"},{"id":"\uD83D\uDE00x"}]}`, false},
		{"U+FFFD itself", `{"users":[{"id":"\ufffd"}]}`, false},
		{"other escapes", `{"users":[{"id":"a\\\"\u00e9\/"}]}`, false},
		{"a high half alone", `{"users":[{"id":"\ud800"}]}`, true},
		{"a high half before a character", `{"users":[{"id":"\ud800x"}]}`, true},
		{"a high half before another escape", `{"users":[{"id":"\ud800\n"}]}`, true},
		{"two high halves", `{"users":[{"id":"\ud800\ud800"}]}`, true},
		{"a low half alone", `{"users":[{"id":"\udc00"}]}`, true},
		{"in a field name", `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{"\ud800":1}}]}`, true},
		{"in a field value", `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{"f":"\udfff"}}]}`, true},
		{"in a condition value", `{` + account + `,"groups":[{"id":"g"}],"rules":[{"id":"r","object":"account","type":"criteria","target":"group:g","access":"read",
			"criteria":{"conditions":[{"field":"f","op":"equals","value":"a\ud800"}]}}]}`, true},
	} {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.doc)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			_, err := DecodeLimited(r, Sink{}, DefaultLimits())
			if refused := err != nil && strings.Contains(err.Error(), "half a surrogate pair"); refused != tc.refused || (err != nil && !refused) {
				t.Errorf("%s (one byte at a time: %v): %v, want refused %v", tc.name, oneByte, err, tc.refused)
			}
		}
	}
}

// A refused string's path names a field's name quoted: a name may hold a
// newline, which would otherwise forge a second line of the message.
func TestKeyPathQuoted(t *testing.T) {
	t.Parallel()
	doc := `{` + account + `,"users":[{"id":"u1"}],"records":[{"object":"account","id":"a1","owner":"u1","fields":{"evil\nrecalc: forged":"\ud800"}}]}`
	_, err := DecodeLimited(strings.NewReader(doc), Sink{}, DefaultLimits())
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), `record "a1": fields["evil\nrecalc: forged"]: a string escapes half a surrogate pair`) {
		t.Errorf("a bad value under a field name holding a newline: %q, want one line naming the field quoted", err)
	}
}
