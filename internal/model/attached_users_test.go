package model_test

import (
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
)

// usersConfig names users u9 and u1 in groups, u8 in a territory and u7
// in a rule, and has a queue q.
const usersConfig = `{"objects": [{"name": "account", "internal_owd": "private"}],
  "roles": [{"id": "ceo"}, {"id": "vp", "parent": "ceo"}],
  "groups": [{"id": "g", "members": ["user:u9", "role:vp"]}, {"id": "q", "queue": true, "members": ["user:u1"]}],
  "territories": [{"id": "t", "users": ["u8"]}],
  "rules": [{"id": "r", "object": "account", "type": "criteria", "target": "user:u7", "access": "read",
             "criteria": {"conditions": [{"field": "x", "op": "equals", "value": "y"}]}}]}`

func TestAttachUsers(t *testing.T) {
	t.Parallel()
	s := func(v string) *string { return &v }
	b := func(v bool) *bool { return &v }
	yes := b(true)
	for _, tc := range []struct {
		name  string
		rows  []model.UserRow
		want  string // UsersJSON of the result
		fixes model.UserFixes
		err   string
	}{
		{name: "rows as they are, sorted, and the named users (u6 by a team) as stubs",
			rows: []model.UserRow{{ID: s("u2"), Role: s("vp"), Type: s("external"), Active: yes}, {ID: s("u1"), Role: s("ceo"), Type: s("internal"), Active: yes},
				{ID: s("u7"), Active: b(false)}, {ID: s("u8"), Role: s("vp"), Active: yes}},
			want:  `[{"id":"u1","role":"ceo"},{"id":"u2","role":"vp","type":"external"},{"id":"u6","active":false},{"id":"u7","active":false},{"id":"u8","role":"vp"},{"id":"u9","active":false}]`,
			fixes: model.UserFixes{Stubs: 2, StubIDs: []string{"u9", "u6"}}},
		{name: "an unknown role, an unknown type and a NULL active fail closed",
			rows: []model.UserRow{{ID: s("u1"), Role: s("nosuch"), Active: yes}, {ID: s("u7"), Role: s("vp"), Type: s("alien"), Active: yes},
				{ID: s("u8"), Role: s("vp")}, {ID: s("u9"), Role: s(""), Active: yes}},
			want:  `[{"id":"u1","active":false},{"id":"u6","active":false},{"id":"u7","active":false},{"id":"u8","active":false},{"id":"u9"}]`,
			fixes: model.UserFixes{Inactive: 3, Stubs: 1, StubIDs: []string{"u6"}}},
		{name: "no id, a queue's id, an id over the limit and a second row of an id are skipped",
			rows: []model.UserRow{{Active: yes}, {ID: s(""), Active: yes}, {ID: s("q"), Active: yes}, {ID: s(strings.Repeat("x", 2000)), Active: yes},
				{ID: s("u1"), Active: yes}, {ID: s("u1"), Role: s("ceo"), Active: yes}},
			want:  `[{"id":"u1"},{"id":"u6","active":false},{"id":"u7","active":false},{"id":"u8","active":false},{"id":"u9","active":false}]`,
			fixes: model.UserFixes{Skipped: 5, Stubs: 4, StubIDs: []string{"u9", "u8", "u7", "u6"}, QueueIDs: []string{"q"}}},
		{name: "more users than the limit", rows: make([]model.UserRow, 0), err: "more than the limit of 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, _, err := model.Parse(strings.NewReader(usersConfig))
			if err != nil {
				t.Fatal(err)
			}
			lim := model.DefaultLimits()
			if tc.err != "" {
				lim.Users = 2
			}
			fx, err := m.Config.AttachUsers(tc.rows, []string{"u6", "u9"}, lim)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Config.Validate(); err != nil {
				t.Fatalf("the configuration with the attached users is invalid: %v", err)
			}
			got, err := model.UsersJSON(m.Config.Users)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("users\n%s\nwant\n%s", got, tc.want)
			}
			if fx.Skipped != tc.fixes.Skipped || fx.Inactive != tc.fixes.Inactive || fx.Stubs != tc.fixes.Stubs ||
				strings.Join(fx.StubIDs, ",") != strings.Join(tc.fixes.StubIDs, ",") || strings.Join(fx.QueueIDs, ",") != strings.Join(tc.fixes.QueueIDs, ",") {
				t.Errorf("fixes %+v, want %+v", fx, tc.fixes)
			}
		})
	}
}
