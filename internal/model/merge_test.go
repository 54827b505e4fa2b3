package model

import (
	"strings"
	"testing"
)

// TestMergeSection checks that merged entries replace stored ones in
// place, new ones are appended, deletions go, and mistakes are refused.
func TestMergeSection(t *testing.T) {
	t.Parallel()
	stored := `[{"id": "a", "v": 1}, {"id": "b", "v": 1}, {"id": "c", "v": 1}]`
	for _, tc := range []struct {
		name, sec, stored, file string
		del                     []string
		want, err               string
	}{
		{"replace in place", "rules", stored, `[{"id": "b", "v": 2}]`, nil,
			`[{"id": "a", "v": 1},{"id": "b", "v": 2},{"id": "c", "v": 1}]`, ""},
		{"append and delete", "rules", stored, `[{"id": "d"}]`, []string{"a", "c"}, `[{"id": "b", "v": 1},{"id": "d"}]`, ""},
		{"objects by name", "objects", `[{"name": "account", "x": 1}]`, `[{"name": "account", "x": 2}]`, nil, `[{"name": "account", "x": 2}]`, ""},
		{"nothing stored yet", "users", "", `[{"id": "u"}]`, nil, `[{"id": "u"}]`, ""},
		{"delete all", "rules", stored, "", []string{"a", "b", "c"}, `[]`, ""},
		{"delete missing", "rules", stored, "", []string{"z"}, "", `delete.rules: rule "z" is not stored`},
		{"delete twice", "roles", stored, "", []string{"a", "a"}, "", `delete.roles: role "a" is listed twice`},
		{"listed twice", "territories", stored, `[{"id": "x"}, {"id": "x"}]`, nil, "", `territory "x" is listed twice in the merge file`},
		{"replace and delete", "groups", stored, `[{"id": "a"}]`, []string{"a"}, "", `group "a" is both in section groups and in delete.groups`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var file []byte
			if tc.file != "" {
				file = []byte(tc.file)
			}
			got, err := MergeSection(tc.sec, []byte(tc.stored), file, tc.del)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err == "" && string(got) != tc.want:
				t.Errorf("merged %s, want %s", got, tc.want)
			}
		})
	}
}

// TestDecodeDelete checks the "delete" section: accepted in a merge only,
// its entries streamed or collected, its mistakes named.
func TestDecodeDelete(t *testing.T) {
	t.Parallel()
	var records []string
	var shares []Share
	var teams []Team
	merge := Sink{Merge: true,
		DeleteRecord: func(id *string) error { records = append(records, *id); return nil },
		DeleteShare:  func(s *Share) error { shares = append(shares, *s); return nil },
		DeleteTeam:   func(tm *Team) error { teams = append(teams, *tm); return nil },
	}
	f, err := DecodeLimited(strings.NewReader(`{"delete": {"rules": ["r1", "r2"], "records": ["a1"],
		"shares": [{"record": "a1", "grantee": "user:u", "cause": "manual"}], "teams": [{"record": "a1", "user": "u"}]}}`), merge, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.Delete["rules"], ",") != "r1,r2" || strings.Join(records, ",") != "a1" ||
		len(shares) != 1 || shares[0].Grantee.String() != "user:u" || len(teams) != 1 || teams[0].User != "u" {
		t.Errorf("decoded deletions %v, records %v, shares %v, teams %v", f.Delete, records, shares, teams)
	}
	for _, tc := range []struct {
		name, file string
		sink       Sink
		want       string
	}{
		{"not a merge", `{"delete": {"rules": ["r1"]}}`, Sink{}, "recalc import --merge"},
		{"unknown section", `{"delete": {"people": ["x"]}}`, merge, `delete: unknown section "people"`},
		{"not an object", `{"delete": ["r1"]}`, merge, `section "delete" must be a JSON object of lists`},
		{"empty id", `{"delete": {"users": [""]}}`, merge, "delete.users[0]: id is required"},
		{"share without cause", `{"delete": {"shares": [{"record": "a1", "grantee": "user:u"}]}}`, merge, "record, grantee and cause are required"},
		{"team with extra key", `{"delete": {"teams": [{"record": "a1", "user": "u", "access": "read"}]}}`, merge, `unknown field "access"`},
		{"section twice", `{"delete": {"rules": [], "rules": []}}`, merge, `delete: "rules" appears twice`},
		{"bad revision", `{"revision": "XYZ"}`, merge, `"revision" must be the string that recalc export wrote`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeLimited(strings.NewReader(tc.file), tc.sink, DefaultLimits())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
