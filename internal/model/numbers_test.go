package model

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestRulesSectionStoresNumbersAsFloat64: a rules section is stored as it is
// read (File.Raw), as jsonb, whose numeric holds no scale past 16383. A
// condition's value written 1e-20000 (0 as a float64, a valid JSON number)
// failed the import with PostgreSQL's "value overflows numeric format".
// The stored section must hold each number in its float64 form, the form
// records' fields are stored in, and keep everything else.
func TestRulesSectionStoresNumbersAsFloat64(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ value, want string }{
		{`1e-20000`, `0`},
		{`-0e-99999`, `-0`},
		{`123456789012345678901234567890e-20000`, `0`},
		{`5e-324`, `5e-324`},
		{`1E2`, `100`},
		{`9007199254740993`, `9.007199254740992e+15`},
		{`0.1`, `0.1`},
		{`-1.5e300`, `-1.5e+300`},
		{`"1e-20000"`, `"1e-20000"`}, // a string stays a string
		{`true`, `true`},
	} {
		t.Run(tc.value, func(t *testing.T) {
			doc := `{"objects": [{"name": "doc__c", "internal_owd": "private"}],
			 "rules": [{"id": "r\u00e9<1>", "object": "doc__c", "type": "criteria", "target": "all_internal_users", "access": "read",
			  "criteria": {"conditions": [{"field": "n", "op": "equals", "value": ` + tc.value + `}], "logic": "1"}}]}`
			f, err := DecodeLimited(strings.NewReader(doc), Sink{}, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			var rules []struct {
				ID       string `json:"id"`
				Criteria struct {
					Conditions []struct {
						Value json.RawMessage `json:"value"`
					} `json:"conditions"`
					Logic string `json:"logic"`
				} `json:"criteria"`
			}
			dec := json.NewDecoder(bytes.NewReader(f.Raw["rules"]))
			if err := dec.Decode(&rules); err != nil {
				t.Fatalf("stored rules section %s: %v", f.Raw["rules"], err)
			}
			if len(rules) != 1 || rules[0].ID != "ré<1>" || rules[0].Criteria.Logic != "1" || len(rules[0].Criteria.Conditions) != 1 {
				t.Fatalf("stored rules section lost content: %s", f.Raw["rules"])
			}
			if got := string(rules[0].Criteria.Conditions[0].Value); got != tc.want {
				t.Errorf("value %s is stored as %s, want %s (section %s)", tc.value, got, tc.want, f.Raw["rules"])
			}
		})
	}
}
