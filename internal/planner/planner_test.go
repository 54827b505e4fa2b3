package planner_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/planner"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// baseConfig is the configuration every case changes one thing of:
//   - account and opportunity are private, contact is controlled by its
//     parent, task__c sits under project__c;
//   - roles ceo > vp > rep, and ops (no users) under ceo;
//   - u1 is a vp, u2, u3 and the external p1 are reps, u4 and u9 have no role;
//   - g2 (role rep) is the source of owner rule own, g1 only a target, q1 a
//     queue, g3 unused;
//   - territory east is under west;
//   - rule own shares accounts of g2's users, opp opportunities of vp and
//     below, crit project__c records with tier 1.
const baseConfig = `{
  "objects": [
    {"name": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"},
    {"name": "opportunity", "parent": "account", "internal_owd": "private"},
    {"name": "project__c", "internal_owd": "private"},
    {"name": "task__c", "parent": "project__c", "internal_owd": "private"}
  ],
  "roles": [{"id": "ceo"}, {"id": "vp", "parent": "ceo", "case_access": "edit"}, {"id": "rep", "parent": "vp"}, {"id": "ops", "parent": "ceo"}],
  "users": [{"id": "u1", "role": "vp"}, {"id": "u2", "role": "rep"}, {"id": "u3", "role": "rep"}, {"id": "p1", "type": "external", "role": "rep"},
            {"id": "u4"}, {"id": "u9"}],
  "groups": [{"id": "g1", "members": ["user:u1"]}, {"id": "g2", "members": ["role:rep"]}, {"id": "q1", "queue": true, "members": ["user:u4"]},
             {"id": "g3", "members": []}],
  "territories": [{"id": "west", "users": ["u3"], "account_access": "read"}, {"id": "east", "parent": "west", "users": ["u4"], "account_access": "edit"}],
  "rules": [
    {"id": "own", "object": "account", "type": "owner", "source": "group:g2", "target": "group:g1", "access": "read"},
    {"id": "opp", "object": "opportunity", "type": "owner", "source": "role_and_subordinates:vp", "target": "group:g2", "access": "read"},
    {"id": "crit", "object": "project__c", "type": "criteria", "target": "group:g1", "access": "read",
     "criteria": {"conditions": [{"field": "tier", "op": "equals", "value": 1}]}}
  ]
}`

// org parses baseConfig afresh, applies edit (when not nil), validates and
// derives the sharing lookups.
func org(t *testing.T, edit func(c *model.Config)) *sharing.Org {
	t.Helper()
	m, _, err := model.Parse(strings.NewReader(baseConfig))
	if err != nil {
		t.Fatalf("parse the base configuration: %v", err)
	}
	if edit != nil {
		edit(&m.Config)
	}
	ix, err := m.Config.Validate()
	if err != nil {
		t.Fatalf("the edited configuration is invalid: %v", err)
	}
	return sharing.NewOrg(ix)
}

// find returns a pointer to the element of s with id, failing the test if none.
func find[T any](t *testing.T, s []T, id func(*T) string, want string) *T {
	t.Helper()
	for i := range s {
		if id(&s[i]) == want {
			return &s[i]
		}
	}
	t.Fatalf("the base configuration has no %q", want)
	return nil
}

// Lookups into a configuration by id, for the cases' edits.
func object(t *testing.T, c *model.Config, name string) *model.Object {
	return find(t, c.Objects, func(o *model.Object) string { return o.Name }, name)
}
func role(t *testing.T, c *model.Config, id string) *model.Role {
	return find(t, c.Roles, func(r *model.Role) string { return r.ID }, id)
}
func user(t *testing.T, c *model.Config, id string) *model.User {
	return find(t, c.Users, func(u *model.User) string { return u.ID }, id)
}
func group(t *testing.T, c *model.Config, id string) *model.Group {
	return find(t, c.Groups, func(g *model.Group) string { return g.ID }, id)
}
func territory(t *testing.T, c *model.Config, id string) *model.Territory {
	return find(t, c.Territories, func(r *model.Territory) string { return r.ID }, id)
}
func rule(t *testing.T, c *model.Config, id string) *model.Rule {
	return find(t, c.Rules, func(r *model.Rule) string { return r.ID }, id)
}

// without returns s without the element with id.
func without[T any](s []T, id func(*T) string, drop string) []T {
	return slices.DeleteFunc(s, func(x T) bool { return id(&x) == drop })
}

// render writes a change as "what => effect => selector; selector", each
// selector as "kind object ids" or, for criteria, "kind object conditions".
func render(t *testing.T, c planner.Change) string {
	t.Helper()
	var sels []string
	for _, s := range c.Selectors {
		out := string(s.Kind) + " " + s.Object
		switch {
		case s.Kind == planner.ByCriteria:
			if s.Criteria == nil || len(s.IDs) > 0 {
				t.Errorf("criteria selector %+v: want criteria and no ids", s)
				break
			}
			for _, cond := range s.Criteria.Conditions {
				v, err := json.Marshal(cond.Value)
				if err != nil {
					t.Fatal(err)
				}
				out += fmt.Sprintf(" [%s %s %s]", cond.Field, cond.Op, v)
			}
		case s.Criteria != nil:
			t.Errorf("%s selector with criteria: %+v", s.Kind, s)
		default:
			out += " " + strings.Join(s.IDs, ",")
		}
		sels = append(sels, out)
	}
	return c.What + " => " + c.Effect + " => " + strings.Join(sels, "; ")
}

// Effects, as the planner words them.
const (
	closureOnly  = "closure only, no share row"
	ownerChecked = "records they own (invalid while their owner does not exist)"
	readTime     = "applied at read time, no share row"
)

// TestDiff holds the plan of every kind of change to its least affected
// set: whether the closure or the OWD table changes, and which records,
// by selector, must be recomputed.
func TestDiff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		edit    func(t *testing.T, c *model.Config)
		records []string // changed records
		closure bool     // Plan.Closure
		objects bool     // Plan.Objects
		want    []string // rendered changes, in order
	}{
		{name: "nothing changed"},
		{
			name:    "records changed, ids sorted and deduplicated",
			records: []string{"b2", "a1", "b2"},
			want:    []string{"2 records inserted, updated or deleted, or their shares or team changed => those records => records  a1,b2"},
		},
		// Objects.
		{
			name:    "OWD opened: read time only, nothing to recompute",
			edit:    func(t *testing.T, c *model.Config) { object(t, c, "account").InternalOWD = model.PublicReadOnly },
			objects: true,
			want:    []string{"object account OWD changed from private/private to public_read_only/private => " + readTime + " => "},
		},
		{
			name: "external OWD tightened: read time only",
			edit: func(t *testing.T, c *model.Config) {
				o := object(t, c, "opportunity")
				o.InternalOWD, o.ExternalOWD = model.PublicReadWrite, model.PublicReadOnly
			},
			objects: true,
			want:    []string{"object opportunity OWD changed from private/private to public_read_write/public_read_only => " + readTime + " => "},
		},
		{
			name: "switch to controlled_by_parent: the whole object, no OWD change",
			edit: func(t *testing.T, c *model.Config) {
				o := object(t, c, "task__c")
				o.InternalOWD, o.ExternalOWD = model.ControlledByParent, model.ControlledByParent
			},
			objects: true,
			want:    []string{"object task__c switched to controlled_by_parent => every record of the object => object task__c "},
		},
		{
			name: "switch from controlled_by_parent: the whole object",
			edit: func(t *testing.T, c *model.Config) {
				o := object(t, c, "contact")
				o.InternalOWD, o.ExternalOWD = model.Private, model.Private
			},
			objects: true,
			want:    []string{"object contact switched from controlled_by_parent => every record of the object => object contact "},
		},
		{
			name:    "object parent changed: the whole object",
			edit:    func(t *testing.T, c *model.Config) { object(t, c, "task__c").Parent = "account" },
			objects: true,
			want:    []string{`object task__c parent changed from "project__c" to "account" => every record of the object (whole-object fallback) => object task__c `},
		},
		{
			name: "object parent and OWD changed: the whole object, and the OWD at read time",
			edit: func(t *testing.T, c *model.Config) {
				o := object(t, c, "task__c")
				o.Parent, o.InternalOWD = "", model.PublicReadOnly
			},
			objects: true,
			want: []string{
				`object task__c parent changed from "project__c" to "" => every record of the object (whole-object fallback) => object task__c `,
				"object task__c OWD changed from private/private to public_read_only/private => " + readTime + " => ",
			},
		},
		{
			name: "grant access using hierarchies switched: the whole object, OWD table unchanged",
			edit: func(t *testing.T, c *model.Config) { object(t, c, "project__c").Hierarchy = false },
			want: []string{"object project__c grant access using hierarchies set to false => every record of the object => object project__c "},
		},
		{
			name: "object added: its records, which an attached table may have written before",
			edit: func(t *testing.T, c *model.Config) {
				c.Objects = append(c.Objects, model.Object{Name: "x__c", Hierarchy: true})
			},
			objects: true,
			want:    []string{"object x__c added => every record of the object => object x__c "},
		},
		{
			name: "object removed: its records leave as record changes",
			edit: func(t *testing.T, c *model.Config) {
				c.Objects = without(c.Objects, func(o *model.Object) string { return o.Name }, "task__c")
			},
			objects: true,
			want:    []string{"object task__c removed => its records leave as record changes => "},
		},
		// Roles.
		{
			name:    "role without users moved: closure only",
			edit:    func(t *testing.T, c *model.Config) { role(t, c, "ops").Parent = "vp" },
			closure: true,
			want:    []string{`role ops moved from "ceo" to "vp" => ` + closureOnly + " => "},
		},
		{
			name:    "role moved out of an owner rule's source: closure, and the records the source's leavers own",
			edit:    func(t *testing.T, c *model.Config) { role(t, c, "rep").Parent = "ceo" },
			closure: true,
			want: []string{
				`role rep moved from "vp" to "ceo" => ` + closureOnly + " => ",
				"source role_and_subordinates:vp of owner rule opp gained or lost 3 users => records of opportunity those users own => owners opportunity p1,u2,u3",
			},
		},
		{
			name:    "role added: closure only",
			edit:    func(t *testing.T, c *model.Config) { c.Roles = append(c.Roles, model.Role{ID: "new", Parent: "ceo"}) },
			closure: true,
			want:    []string{"role new added => " + closureOnly + " => "},
		},
		{
			name: "role removed: closure only",
			edit: func(t *testing.T, c *model.Config) {
				c.Roles = without(c.Roles, func(r *model.Role) string { return r.ID }, "ops")
			},
			closure: true,
			want:    []string{"role ops removed => " + closureOnly + " => "},
		},
		{
			name: "role child access changed: accounts its users own, no closure",
			edit: func(t *testing.T, c *model.Config) { role(t, c, "vp").Child.Case = model.Read },
			want: []string{"role vp child access changed => children of accounts owned by the role's users => owners account u1"},
		},
		{
			name: "child access of a role without users: an empty owner set",
			edit: func(t *testing.T, c *model.Config) { role(t, c, "ops").Child.Opportunity = model.Edit },
			want: []string{"role ops child access changed => children of accounts owned by the role's users => owners account "},
		},
		// Users.
		{
			name:    "user's role changed: closure, and the accounts the user owns",
			edit:    func(t *testing.T, c *model.Config) { user(t, c, "u4").Role = "ops" },
			closure: true,
			want:    []string{"1 users changed role => closure, and children of accounts they own (their role's child access) => owners account u4"},
		},
		{
			name: "users' role changed into an owner rule's source: the accounts they own, and the rule's records they own",
			edit: func(t *testing.T, c *model.Config) {
				user(t, c, "u4").Role = "rep"
				user(t, c, "u9").Role = "ops"
			},
			closure: true,
			want: []string{
				"2 users changed role => closure, and children of accounts they own (their role's child access) => owners account u4,u9",
				"source role_and_subordinates:vp of owner rule opp gained or lost 1 users => records of opportunity those users own => owners opportunity u4",
				"source group:g2 of owner rule own gained or lost 1 users => records of account those users own => owners account u4",
			},
		},
		{
			name:    "user deactivated: closure only (owner rule sources keep inactive users)",
			edit:    func(t *testing.T, c *model.Config) { user(t, c, "u2").Active = false },
			closure: true,
			want:    []string{"user u2 active set to false => " + closureOnly + " => "},
		},
		{
			name:    "user made external: closure only",
			edit:    func(t *testing.T, c *model.Config) { user(t, c, "u3").External = true },
			closure: true,
			want:    []string{"user u3 external set to true => " + closureOnly + " => "},
		},
		{
			name:    "user added: closure, and the records naming it owner (invalid until it exists)",
			edit:    func(t *testing.T, c *model.Config) { c.Users = append(c.Users, model.User{ID: "u5", Active: true}) },
			closure: true,
			want:    []string{"user u5 added => " + closureOnly + " => ", "1 users added or removed => " + ownerChecked + " => owners  u5"},
		},
		{
			name: "user removed: closure, and the records naming it owner",
			edit: func(t *testing.T, c *model.Config) {
				c.Users = without(c.Users, func(u *model.User) string { return u.ID }, "u9")
			},
			closure: true,
			want:    []string{"user u9 removed => " + closureOnly + " => ", "1 users added or removed => " + ownerChecked + " => owners  u9"},
		},
		// Groups.
		{
			name: "membership of a group no owner rule reads: closure only",
			edit: func(t *testing.T, c *model.Config) {
				group(t, c, "g1").Members = append(group(t, c, "g1").Members, model.Grantee{Kind: model.GUser, ID: "u2"})
			},
			closure: true,
			want:    []string{"group g1 membership changed => " + closureOnly + " => "},
		},
		{
			name: "membership of an owner rule's source: closure, and that rule's records the joiner owns",
			edit: func(t *testing.T, c *model.Config) {
				group(t, c, "g2").Members = append(group(t, c, "g2").Members, model.Grantee{Kind: model.GUser, ID: "u4"})
			},
			closure: true,
			want: []string{
				"group g2 membership changed => " + closureOnly + " => ",
				"source group:g2 of owner rule own gained or lost 1 users => records of account those users own => owners account u4",
			},
		},
		{
			name:    "group's grant access using hierarchies switched: closure only",
			edit:    func(t *testing.T, c *model.Config) { group(t, c, "g1").IncludeBosses = false },
			closure: true,
			want:    []string{"group g1 grant access using hierarchies set to false => " + closureOnly + " => "},
		},
		{
			name: "queue flag switched: the records the group owns, no closure",
			edit: func(t *testing.T, c *model.Config) { group(t, c, "q1").Queue = false },
			want: []string{"group q1 queue set to false => records it owns => owners  q1"},
		},
		{
			name: "queue added: closure, and the records naming it owner (invalid until it exists)",
			edit: func(t *testing.T, c *model.Config) {
				c.Groups = append(c.Groups, model.Group{ID: "q2", Queue: true})
			},
			closure: true,
			want:    []string{"group q2 added => " + closureOnly + " => ", "queue q2 added or removed => " + ownerChecked + " => owners  q2"},
		},
		{
			name: "group added: closure only",
			edit: func(t *testing.T, c *model.Config) {
				c.Groups = append(c.Groups, model.Group{ID: "g9", Members: []model.Grantee{}})
			},
			closure: true,
			want:    []string{"group g9 added => " + closureOnly + " => "},
		},
		{
			name: "group removed: closure only",
			edit: func(t *testing.T, c *model.Config) {
				c.Groups = without(c.Groups, func(g *model.Group) string { return g.ID }, "g3")
			},
			closure: true,
			want:    []string{"group g3 removed => " + closureOnly + " => "},
		},
		// Territories.
		{
			name:    "territory membership changed: closure only",
			edit:    func(t *testing.T, c *model.Config) { territory(t, c, "west").Users = []string{"u3", "u1"} },
			closure: true,
			want:    []string{"territory west membership or parent changed => " + closureOnly + " => "},
		},
		{
			name:    "territory moved: closure only",
			edit:    func(t *testing.T, c *model.Config) { territory(t, c, "east").Parent = "" },
			closure: true,
			want:    []string{"territory east membership or parent changed => " + closureOnly + " => "},
		},
		{
			name: "territory account access changed: the accounts assigned to it, no closure",
			edit: func(t *testing.T, c *model.Config) { territory(t, c, "west").AccountAccess = model.Edit },
			want: []string{"territories [west] removed or changed access levels => accounts assigned to them => territories account west"},
		},
		{
			name: "territories' child access changed: one selector for all",
			edit: func(t *testing.T, c *model.Config) {
				territory(t, c, "west").Child.Case = model.Read
				territory(t, c, "east").Child.Contact = model.Edit
			},
			want: []string{"territories [east west] removed or changed access levels => accounts assigned to them => territories account east,west"},
		},
		{
			name: "territory added: closure, and the accounts naming it (invalid until it exists)",
			edit: func(t *testing.T, c *model.Config) {
				c.Territories = append(c.Territories, model.Territory{ID: "north", Parent: "west"})
			},
			closure: true,
			want: []string{"territory north added => " + closureOnly + " => ",
				"territories [north] added => accounts assigned to them (invalid until the territory exists) => territories account north"},
		},
		{
			name: "territory removed: closure, and the accounts assigned to it",
			edit: func(t *testing.T, c *model.Config) {
				c.Territories = without(c.Territories, func(r *model.Territory) string { return r.ID }, "east")
			},
			closure: true,
			want:    []string{"territories [east] removed or changed access levels => accounts assigned to them => territories account east"},
		},
		// Rules.
		{
			name: "criteria rule added: the records it applies to",
			edit: func(t *testing.T, c *model.Config) {
				crit := *rule(t, c, "crit")
				crit.ID, crit.Target = "crit2", model.Grantee{Kind: model.GGroup, ID: "g3"}
				c.Rules = append(c.Rules, crit)
			},
			want: []string{"rule crit2 on project__c added => records the rule applies to => criteria project__c [tier equals 1]"},
		},
		{
			name: "owner rule removed: the records of its source's users",
			edit: func(t *testing.T, c *model.Config) {
				c.Rules = without(c.Rules, func(r *model.Rule) string { return r.ID }, "own")
			},
			want: []string{"rule own on account removed => records the rule applied to => owners account p1,u2,u3"},
		},
		{
			name: "criteria rule changed: the records the old or the new criteria match",
			edit: func(t *testing.T, c *model.Config) { rule(t, c, "crit").Criteria.Conditions[0].Value = model.Num(2) },
			want: []string{"rule crit on project__c changed => records the old or the new rule applies to => criteria project__c [tier equals 1]; criteria project__c [tier equals 2]"},
		},
		{
			name: "owner rule's access changed: its source's records, old and new",
			edit: func(t *testing.T, c *model.Config) { rule(t, c, "opp").Access = model.Edit },
			want: []string{"rule opp on opportunity changed => records the old or the new rule applies to => owners opportunity p1,u1,u2,u3; owners opportunity p1,u1,u2,u3"},
		},
		{
			name: "owner rule's source changed: the old source's records and the new one's",
			edit: func(t *testing.T, c *model.Config) {
				rule(t, c, "own").Source = model.Grantee{Kind: model.GGroup, ID: "g1"}
			},
			want: []string{"rule own on account changed => records the old or the new rule applies to => owners account p1,u2,u3; owners account u1"},
		},
		// Several at once: objects, roles, users, groups, territories, rules
		// (each by id), then records, each change with its own set.
		{
			name: "OWD, membership, territory levels, a rule and records together",
			edit: func(t *testing.T, c *model.Config) {
				object(t, c, "project__c").InternalOWD = model.PublicReadWrite
				group(t, c, "g1").IncludeBosses = false
				territory(t, c, "east").AccountAccess = model.Read
				rule(t, c, "crit").Access = model.Edit
			},
			records: []string{"a1"},
			closure: true,
			objects: true,
			want: []string{
				"object project__c OWD changed from private/private to public_read_write/private => " + readTime + " => ",
				"group g1 grant access using hierarchies set to false => " + closureOnly + " => ",
				"territories [east] removed or changed access levels => accounts assigned to them => territories account east",
				"rule crit on project__c changed => records the old or the new rule applies to => criteria project__c [tier equals 1]; criteria project__c [tier equals 1]",
				"1 records inserted, updated or deleted, or their shares or team changed => those records => records  a1",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var edit func(*model.Config)
			if tc.edit != nil {
				edit = func(c *model.Config) { tc.edit(t, c) }
			}
			p := planner.Diff(org(t, nil), org(t, edit), tc.records)
			if p.Full || p.FullReason != "" {
				t.Errorf("full plan (%q), want an incremental one", p.FullReason)
			}
			if p.Closure != tc.closure || p.Objects != tc.objects {
				t.Errorf("closure %v, objects %v; want %v, %v", p.Closure, p.Objects, tc.closure, tc.objects)
			}
			got := make([]string, len(p.Changes))
			for i, c := range p.Changes {
				got[i] = render(t, c)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("changes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
			if empty := len(tc.want) == 0 && !tc.closure && !tc.objects; p.Empty() != empty {
				t.Errorf("Empty() = %v, want %v", p.Empty(), empty)
			}
		})
	}
}

// TestDiffNeverComputed: without a model the share tables were computed
// from, everything is recomputed, whatever changed.
func TestDiffNeverComputed(t *testing.T) {
	t.Parallel()
	p := planner.Diff(nil, org(t, nil), []string{"a1"})
	if !p.Full || p.FullReason != planner.NothingYet || p.Closure || p.Objects || len(p.Changes) != 0 || p.Empty() {
		t.Errorf("plan %+v, want a full one for %q and nothing else", p, planner.NothingYet)
	}
}

// TestChunker packs families into chunks of about Size records, never
// splitting one.
func TestChunker(t *testing.T) {
	t.Parallel()
	type fam struct {
		root string
		n    int64
	}
	for _, tc := range []struct {
		name      string
		size      int64
		listRoots bool
		families  []fam
		joined    []bool // Join, not Add, the family at the same index: into the last chunk, whatever its size
		want      []planner.Chunk
	}{
		{name: "nothing", size: 10},
		{
			name: "one small family", size: 10,
			families: []fam{{"a", 3}},
			want:     []planner.Chunk{{First: "a", Last: "a", Families: 1, Records: 3}},
		},
		{
			name: "fill until size, then a new chunk", size: 5,
			families: []fam{{"a", 2}, {"b", 2}, {"c", 2}, {"d", 1}, {"e", 4}, {"f", 1}},
			want: []planner.Chunk{
				{First: "a", Last: "c", Families: 3, Records: 6},
				{First: "d", Last: "e", Families: 2, Records: 5},
				{First: "f", Last: "f", Families: 1, Records: 1},
			},
		},
		{
			name: "a family bigger than size makes a chunk of its own", size: 3,
			families: []fam{{"a", 1}, {"big", 10}, {"c", 1}},
			want: []planner.Chunk{
				{First: "a", Last: "big", Families: 2, Records: 11},
				{First: "c", Last: "c", Families: 1, Records: 1},
			},
		},
		{
			name: "roots listed", size: 2, listRoots: true,
			families: []fam{{"a", 1}, {"b", 1}, {"c", 1}},
			want: []planner.Chunk{
				{First: "a", Last: "b", Families: 2, Records: 2, Roots: []string{"a", "b"}},
				{First: "c", Last: "c", Families: 1, Records: 1, Roots: []string{"c"}},
			},
		},
		{
			name: "joined families stay in the last chunk", size: 2, listRoots: true,
			families: []fam{{"a", 2}, {"b", 2}, {"c", 1}, {"d", 1}}, joined: []bool{false, true, true, false},
			want: []planner.Chunk{
				{First: "a", Last: "c", Families: 3, Records: 5, Roots: []string{"a", "b", "c"}},
				{First: "d", Last: "d", Families: 1, Records: 1, Roots: []string{"d"}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := &planner.Chunker{Size: tc.size, ListRoots: tc.listRoots}
			for i, f := range tc.families {
				if i < len(tc.joined) && tc.joined[i] {
					c.Join(f.root, f.n)
				} else {
					c.Add(f.root, f.n)
				}
			}
			got := c.Chunks()
			if len(got) != len(tc.want) {
				t.Fatalf("chunks %+v, want %+v", got, tc.want)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.First != w.First || g.Last != w.Last || g.Families != w.Families || g.Records != w.Records || !slices.Equal(g.Roots, w.Roots) {
					t.Errorf("chunk %d: %+v, want %+v", i, g, w)
				}
			}
			if c.Families() != len(tc.families) {
				t.Errorf("Families() = %d, want %d", c.Families(), len(tc.families))
			}
		})
	}
}
