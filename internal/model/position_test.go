package model

import (
	"strings"
	"testing"
)

// TestDecodeErrorPosition checks that malformed and mistyped files are
// reported with the line and column of the fault and the entry's path.
func TestDecodeErrorPosition(t *testing.T) {
	t.Parallel()
	big := strings.Repeat(`{"object": "account", "id": "a", "owner": "u"},`+"\n", 3000)
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"comma in record", "{\"records\": [\n" + big + `{"object": "account",, "id": "b"}]}`,
			[]string{"malformed JSON at line 3002, column 22 (in records[3000])", "invalid character ','", "fix the file there"}},
		{"comma in rules", "{\"objects\": [],\n \"rules\": [\n  {\"id\": \"r\",}\n]}",
			[]string{`malformed JSON at line 3, column 14 (in section "rules")`}},
		{"missing colon", "{\n\"users\" []}", []string{"malformed JSON at line 2, column 9"}},
		{"truncated", "{\"users\": [\n{\"id\": \"u\"", []string{"malformed JSON at line 2, column 11 (in section \"users\"): unexpected end of file"}},
		{"empty", "", []string{"malformed JSON at line 1, column 1: unexpected end of file"}},
		{"wrong type in config", "{\"users\": [\n{\"id\": \"u\"},\n  {\"id\": 5}]}", []string{`users[1]: field "id" must be a string, not number (at line 3, column 3)`}},
		{"wrong type in records", "{\"records\": [\n" + big + `  {"object": 1}]}`, []string{`records[3000]: field "object" must be a string, not number (at line 3002, column 3)`}},
		{"unknown field", "{\"users\": [\n{\"id\": \"u\", \"x\": 1}]}", []string{`users[0]: unknown field "x" (at line 2, column 1)`}},
		{"not a list", "{\n  \"users\": {}}", []string{`section "users" must be a list (at line 2, column 12)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeLimited(strings.NewReader(tc.file), Sink{Record: func(*Record) error { return nil }}, DefaultLimits())
			if err == nil {
				t.Fatal("decoded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
		})
	}
}
