package model

import (
	"fmt"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/testkit/fixture"
)

// base is a valid model, one JSON list per section. Test cases replace
// sections to make it invalid in exactly one way.
var base = map[string]string{
	"objects": `[{"name":"account","internal_owd":"private"},
		{"name":"contact","parent":"account","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"},
		{"name":"opportunity","parent":"account","internal_owd":"private"},
		{"name":"case","parent":"account","internal_owd":"public_read_only","external_owd":"private"},
		{"name":"proj__c","internal_owd":"private","hierarchy":false},
		{"name":"task__c","parent":"proj__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}]`,
	"roles":       `[{"id":"ceo"},{"id":"vp","parent":"ceo","case_access":"edit"}]`,
	"users":       `[{"id":"u1","role":"vp"},{"id":"u2","type":"external"},{"id":"u3","active":false}]`,
	"groups":      `[{"id":"g1","members":["user:u1","role:ceo"]},{"id":"g2","members":["group:g1"],"include_bosses":false},{"id":"q1","queue":true,"members":["user:u1"]}]`,
	"territories": `[{"id":"t1","users":["u1"]},{"id":"t2","parent":"t1","account_access":"edit"}]`,
	"records": `[{"object":"account","id":"a1","owner":"u1","territories":["t1"],"fields":{"industry":"Tech","n":1,"b":true,"z":null}},
		{"object":"contact","id":"c1","owner":"u2","parent":"a1"},
		{"object":"opportunity","id":"o1","owner":"q1","parent":"a1"},
		{"object":"proj__c","id":"p1","owner":"u3"},
		{"object":"task__c","id":"k1","owner":"u1","parent":"p1"}]`,
	"rules": `[{"id":"r1","object":"account","type":"owner","source":"role_and_subordinates:ceo","target":"group:g1","access":"read","case_access":"edit"},
		{"id":"r2","object":"opportunity","type":"criteria","target":"all_internal_users","access":"edit",
		 "criteria":{"conditions":[{"field":"stage","op":"equals","value":"Won,Lost"},{"field":"amount","op":"ge","value":10}],"logic":"1 or not 2"}}]`,
	"shares": `[{"object":"account","record":"a1","grantee":"user:u2","access":"read","cause":"manual"},
		{"object":"proj__c","record":"p1","grantee":"role_and_internal_subordinates:ceo","access":"edit","cause":"apex:sync_1"}]`,
	"teams": `[{"record":"a1","user":"u2","access":"edit","contact_access":"read"},{"record":"o1","user":"u1","access":"read"}]`,
}

var sectionOrder = []string{"objects", "roles", "users", "groups", "territories", "records", "rules", "shares", "teams"}

// withSections returns the base model file with some sections replaced.
func withSections(repl map[string]string) string {
	var parts []string
	for _, s := range sectionOrder {
		v, ok := repl[s]
		if !ok {
			v = base[s]
		}
		parts = append(parts, fmt.Sprintf("%q: %s", s, v))
	}
	return "{" + strings.Join(parts, ",\n") + "}"
}

// load parses and validates a model file.
func load(src string) (*Model, error) {
	m, _, err := Parse(strings.NewReader(src))
	if err != nil {
		return nil, err
	}
	if _, err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func TestBaseIsValid(t *testing.T) {
	t.Parallel()
	if _, err := load(withSections(nil)); err != nil {
		t.Fatal(err)
	}
}

const interfaceExample = `{
  "version": 1,
  "objects": [
    {"name": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"},
    {"name": "opportunity", "parent": "account", "internal_owd": "private"},
    {"name": "case", "parent": "account", "internal_owd": "public_read_only"},
    {"name": "project__c", "internal_owd": "private", "hierarchy": false}
  ],
  "roles": [{"id": "ceo"}, {"id": "vp", "parent": "ceo", "opportunity_access": "read", "case_access": "edit"}],
  "users": [{"id": "u1", "role": "vp"}, {"id": "p1", "type": "external", "role": "vp"}, {"id": "old", "active": false}],
  "groups": [{"id": "emea", "members": ["user:u1", "role_and_subordinates:vp"], "include_bosses": false},
             {"id": "support_q", "queue": true, "members": ["user:u1"]}],
  "territories": [{"id": "west", "users": ["u1"], "account_access": "edit", "opportunity_access": "read"}],
  "records": [
    {"object": "account", "id": "a1", "owner": "u1", "territories": ["west"], "fields": {"industry": "Healthcare", "revenue": 5000000}},
    {"object": "case", "id": "c1", "owner": "support_q", "parent": "a1", "fields": {"status": "Escalated"}}
  ],
  "rules": [
    {"id": "r1", "object": "account", "type": "owner", "source": "role_and_subordinates:vp", "target": "group:emea", "access": "read", "opportunity_access": "read"},
    {"id": "r2", "object": "case", "type": "criteria", "target": "all_internal_users", "access": "edit",
     "criteria": {"conditions": [{"field": "status", "op": "equals", "value": "Escalated,New"}, {"field": "priority", "op": "ge", "value": 2}], "logic": "1 OR 2"}}
  ],
  "shares": [{"object": "account", "record": "a1", "grantee": "user:p1", "access": "edit", "cause": "manual"}],
  "teams": [{"record": "a1", "user": "u1", "access": "edit", "case_access": "read"}]
}`

func TestInterfaceExample(t *testing.T) {
	t.Parallel()
	m, f, err := Parse(strings.NewReader(interfaceExample))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Present(), ","); got != "objects,roles,users,groups,territories,records,rules,shares,teams" {
		t.Errorf("present = %s", got)
	}
	if len(m.Records) != 2 || len(m.Shares) != 1 || len(m.Teams) != 1 || len(m.Rules) != 2 {
		t.Errorf("counts: %d records, %d shares, %d teams, %d rules", len(m.Records), len(m.Shares), len(m.Teams), len(m.Rules))
	}
	o := m.Objects[2]
	if o.Name != Opportunity || o.ExternalOWD != Private || !o.Hierarchy {
		t.Errorf("opportunity defaults: %+v", o)
	}
	if m.Objects[4].Hierarchy {
		t.Error("project__c hierarchy should be false")
	}
	if g := m.Groups[0]; g.IncludeBosses || g.Queue || len(g.Members) != 2 {
		t.Errorf("group emea: %+v", g)
	}
	if g := m.Groups[1]; !g.IncludeBosses || !g.Queue {
		t.Errorf("queue support_q: %+v", g)
	}
	if u := m.Users[1]; !u.External || !u.Active {
		t.Errorf("user p1: %+v", u)
	}
	if u := m.Users[2]; u.Active || u.External {
		t.Errorf("user old: %+v", u)
	}
	if tr := m.Territories[0]; tr.AccountAccess != Edit || tr.Child != (ChildAccess{Opportunity: Read}) {
		t.Errorf("territory west: %+v", tr)
	}
	if r := m.Rules[0]; r.Type != OwnerRule || r.Source != (Grantee{GRoleAndSubordinates, "vp"}) || r.Child.Opportunity != Read {
		t.Errorf("rule r1: %+v", r)
	}
	if v := m.Records[0].Fields["revenue"]; v != Num(5000000) {
		t.Errorf("revenue = %+v", v)
	}
}

// TestInvalid covers every invalidity of docs/semantics.md and the file format
// errors of interface.md. Each error must name the offending entry.
func TestInvalid(t *testing.T) {
	t.Parallel()
	const (
		acc  = `{"name":"account","internal_owd":"private"}`
		proj = `{"name":"proj__c","internal_owd":"private"}`
	)
	cases := []struct {
		name string
		repl map[string]string // sections to replace; "" key = whole file
		want []string          // substrings of the error
	}{
		// Objects.
		{"external more open than internal", map[string]string{"objects": `[{"name":"account","internal_owd":"public_read_only","external_owd":"public_read_write"}]`, "records": `[]`, "rules": `[]`, "shares": `[]`, "teams": `[]`}, []string{`object "account"`, "more open"}},
		{"external read over internal private", map[string]string{"objects": `[{"name":"lead","internal_owd":"private","external_owd":"public_read_only"}]`}, []string{`object "lead"`, "more open"}},
		{"controlled_by_parent without parent", map[string]string{"objects": `[` + acc + `,{"name":"lead","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}]`}, []string{`object "lead"`, "parent"}},
		{"internal cbp external not", map[string]string{"objects": `[` + acc + `,{"name":"contact","parent":"account","internal_owd":"controlled_by_parent"}]`}, []string{`object "contact"`, "controlled_by_parent"}},
		{"external cbp internal not", map[string]string{"objects": `[` + acc + `,{"name":"contact","parent":"account","internal_owd":"private","external_owd":"controlled_by_parent"}]`}, []string{`object "contact"`, "controlled_by_parent"}},
		{"standard hierarchy false", map[string]string{"objects": `[{"name":"account","internal_owd":"private","hierarchy":false}]`}, []string{`object "account"`, "hierarchy"}},
		{"unknown parent object", map[string]string{"objects": `[` + acc + `,{"name":"x__c","parent":"nope__c","internal_owd":"private"}]`}, []string{`object "x__c"`, `"nope__c"`}},
		{"object defined twice", map[string]string{"objects": `[` + acc + `,` + acc + `]`}, []string{`object "account"`, "twice"}},
		{"object parent cycle", map[string]string{"objects": `[{"name":"a__c","parent":"b__c","internal_owd":"private"},{"name":"b__c","parent":"a__c","internal_owd":"private"}]`}, []string{`object "a__c"`, "cycle"}},
		{"bad object name", map[string]string{"objects": `[{"name":"Bad__c","internal_owd":"private"}]`}, []string{`object "Bad__c"`}},
		{"custom name without __c", map[string]string{"objects": `[{"name":"widget","internal_owd":"private"}]`}, []string{`object "widget"`, "__c"}},
		{"missing internal owd", map[string]string{"objects": `[{"name":"account"}]`}, []string{`object "account"`, "internal_owd"}},
		{"unknown owd", map[string]string{"objects": `[{"name":"account","internal_owd":"public"}]`}, []string{`object "account"`, `"public"`}},

		// Roles.
		{"role cycle", map[string]string{"roles": `[{"id":"a","parent":"b"},{"id":"b","parent":"a"}]`, "users": `[{"id":"u1"},{"id":"u2"},{"id":"u3"}]`, "groups": `[{"id":"g1","members":[]},{"id":"q1","queue":true,"members":[]}]`, "rules": `[]`, "shares": `[]`}, []string{`role "a"`, "cycle"}},
		{"role self parent", map[string]string{"roles": `[{"id":"ceo"},{"id":"vp","parent":"vp"}]`}, []string{`role "vp"`, "cycle"}},
		{"role unknown parent", map[string]string{"roles": `[{"id":"ceo","parent":"king"},{"id":"vp","parent":"ceo"}]`}, []string{`role "ceo"`, `"king"`}},
		{"role defined twice", map[string]string{"roles": `[{"id":"ceo"},{"id":"vp"},{"id":"vp"}]`}, []string{`role "vp"`, "twice"}},
		{"role child access all", map[string]string{"roles": `[{"id":"ceo","contact_access":"all"},{"id":"vp"}]`}, []string{`role "ceo"`, "contact_access"}},
		{"role child access unknown", map[string]string{"roles": `[{"id":"ceo","opportunity_access":"write"},{"id":"vp"}]`}, []string{`role "ceo"`, "opportunity_access"}},

		// Users.
		{"user unknown role", map[string]string{"users": `[{"id":"u1","role":"cto"},{"id":"u2"},{"id":"u3"}]`}, []string{`user "u1"`, `"cto"`}},
		{"user bad type", map[string]string{"users": `[{"id":"u1","type":"partner"},{"id":"u2"},{"id":"u3"}]`}, []string{`user "u1"`, `"partner"`}},
		{"user defined twice", map[string]string{"users": `[{"id":"u1"},{"id":"u2"},{"id":"u3"},{"id":"u2"}]`}, []string{`user "u2"`, "twice"}},
		{"user without id", map[string]string{"users": `[{"id":"u1"},{"id":"u2"},{"id":"u3"},{"role":"vp"}]`}, []string{"users[3]", "id"}},

		// Groups.
		{"group nesting cycle", map[string]string{"groups": `[{"id":"g1","members":["group:g2"]},{"id":"g2","members":["group:g1"]},{"id":"q1","queue":true,"members":[]}]`}, []string{`group "g1"`, "cycle"}},
		{"group contains itself", map[string]string{"groups": `[{"id":"g1","members":["group:g1"]},{"id":"q1","queue":true,"members":[]}]`}, []string{`group "g1"`, "cycle"}},
		{"group long cycle", map[string]string{"groups": `[{"id":"g1","members":["group:g3"]},{"id":"g2","members":["group:g1"]},{"id":"g3","members":["user:u1","group:g2"]},{"id":"q1","queue":true,"members":[]}]`}, []string{"cycle"}},
		{"group unknown member", map[string]string{"groups": `[{"id":"g1","members":["user:nobody"]},{"id":"q1","queue":true,"members":[]}]`}, []string{`group "g1"`, "user:nobody"}},
		{"group unknown nested group", map[string]string{"groups": `[{"id":"g1","members":["group:g9"]},{"id":"q1","queue":true,"members":[]}]`}, []string{`group "g1"`, "group:g9"}},
		{"group unknown role member", map[string]string{"groups": `[{"id":"g1","members":["role_and_subordinates:cto"]},{"id":"q1","queue":true,"members":[]}]`}, []string{`group "g1"`, "role_and_subordinates:cto"}},
		{"group bad grantee", map[string]string{"groups": `[{"id":"g1","members":["team:x"]},{"id":"q1","queue":true,"members":[]}]`}, []string{`group "g1"`, `"team:x"`}},
		{"group member territory", map[string]string{"groups": `[{"id":"g1","members":["territory:t1"]},{"id":"q1","queue":true,"members":[]}]`}, []string{`group "g1"`, `"territory:t1"`}},
		{"group defined twice", map[string]string{"groups": `[{"id":"g1","members":[]},{"id":"g1","members":[]},{"id":"q1","queue":true,"members":[]}]`}, []string{`group "g1"`, "twice"}},
		{"queue with a user's id", map[string]string{"groups": `[{"id":"g1","members":[]},{"id":"q1","queue":true,"members":[]},{"id":"u2","queue":true,"members":[]}]`}, []string{`group "u2"`}},

		// Territories.
		{"territory cycle", map[string]string{"territories": `[{"id":"t1","parent":"t2"},{"id":"t2","parent":"t1"}]`}, []string{`territory "t1"`, "cycle"}},
		{"territory unknown parent", map[string]string{"territories": `[{"id":"t1","parent":"t0"},{"id":"t2"}]`}, []string{`territory "t1"`, `"t0"`}},
		{"territory unknown user", map[string]string{"territories": `[{"id":"t1","users":["u9"]},{"id":"t2"}]`}, []string{`territory "t1"`, `"u9"`}},
		{"territory account access none", map[string]string{"territories": `[{"id":"t1","account_access":"none"},{"id":"t2"}]`}, []string{`territory "t1"`, "account_access"}},
		{"territory account access all", map[string]string{"territories": `[{"id":"t1","account_access":"all"},{"id":"t2"}]`}, []string{`territory "t1"`, "account_access"}},
		{"territory child access all", map[string]string{"territories": `[{"id":"t1","case_access":"all"},{"id":"t2"}]`}, []string{`territory "t1"`, "case_access"}},
		{"territory defined twice", map[string]string{"territories": `[{"id":"t1"},{"id":"t2"},{"id":"t1"}]`}, []string{`territory "t1"`, "twice"}},

		// Records.
		{"record id twice across objects", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1"},{"object":"proj__c","id":"a1","owner":"u1"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "a1"`, "twice"}},
		{"record unknown owner", map[string]string{"records": `[{"object":"account","id":"a1","owner":"nobody"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "a1"`, `"nobody"`}},
		{"record owned by non-queue group", map[string]string{"records": `[{"object":"account","id":"a1","owner":"g1"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "a1"`, `"g1"`}},
		{"record unknown object", map[string]string{"records": `[{"object":"lead","id":"l1","owner":"u1"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "l1"`, `"lead"`}},
		{"record unknown parent", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1"},{"object":"opportunity","id":"o1","owner":"u1","parent":"a9"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "o1"`, `"a9"`}},
		{"record parent of wrong object", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1"},{"object":"proj__c","id":"p1","owner":"u1"},{"object":"opportunity","id":"o1","owner":"u1","parent":"p1"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "o1"`, `"p1"`}},
		{"record parent on parentless object", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1"},{"object":"proj__c","id":"p1","owner":"u1","parent":"a1"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "p1"`, "parent"}},
		{"territories on a non-account", map[string]string{"records": `[{"object":"proj__c","id":"p1","owner":"u1","territories":["t1"]}]`, "shares": `[]`, "teams": `[]`}, []string{`record "p1"`, "territories"}},
		{"record unknown territory", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1","territories":["t9"]}]`, "shares": `[]`, "teams": `[]`}, []string{`record "a1"`, `"t9"`}},
		{"record field is an object", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1","fields":{"x":{"y":1}}}]`, "shares": `[]`, "teams": `[]`}, []string{"records[0]"}},
		{"record field is a list", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1","fields":{"x":[1]}}]`, "shares": `[]`, "teams": `[]`}, []string{"records[0]"}},
		{"record field number overflows", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1","fields":{"x":1e999}}]`, "shares": `[]`, "teams": `[]`}, []string{"records[0]"}},
		{"record without owner", map[string]string{"records": `[{"object":"account","id":"a1"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "a1"`, "owner"}},
		{"record without object", map[string]string{"records": `[{"id":"a1","owner":"u1"}]`, "shares": `[]`, "teams": `[]`}, []string{`record "a1"`, "object"}},
		{"record without id", map[string]string{"records": `[{"object":"account","owner":"u1"}]`, "shares": `[]`, "teams": `[]`}, []string{"records[0]", "id"}},

		// Rules.
		{"rule on cbp object", map[string]string{"rules": `[{"id":"rx","object":"contact","type":"owner","source":"group:g1","target":"group:g1","access":"read"}]`}, []string{`rule "rx"`, "controlled_by_parent"}},
		{"301 rules on an object", map[string]string{"rules": fixture.ManyRules(MaxRulesPerObject+1, false, "g1", "f")}, []string{`rule "x301"`, "300"}},
		{"51 criteria rules on an object", map[string]string{"rules": fixture.ManyRules(MaxCriteriaRulesPerObject+1, true, "g1", "f")}, []string{`rule "x51"`, "50"}},
		{"unknown op", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"matches","value":"a"}]}}]`}, []string{`rule "rx"`, `"matches"`}},
		{"empty conditions", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[]}}]`}, []string{`rule "rx"`, "conditions"}},
		{"missing conditions", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{}}]`}, []string{`rule "rx"`, "conditions"}},
		{"access none", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"group:g1","access":"none"}]`}, []string{`rule "rx"`, "access"}},
		{"access all", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"group:g1","access":"all"}]`}, []string{`rule "rx"`, "access"}},
		{"access missing", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"group:g1"}]`}, []string{`rule "rx"`, "access"}},
		{"child access on opportunity rule", map[string]string{"rules": `[{"id":"rx","object":"opportunity","type":"owner","source":"group:g1","target":"group:g1","access":"read","case_access":"read"}]`}, []string{`rule "rx"`, "child access"}},
		{"child access none on custom rule", map[string]string{"rules": `[{"id":"rx","object":"proj__c","type":"owner","source":"group:g1","target":"group:g1","access":"read","contact_access":"none"}]`}, []string{`rule "rx"`, "child access"}},
		{"rule child access all", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"group:g1","access":"read","contact_access":"all"}]`}, []string{`rule "rx"`, "contact_access"}},
		{"owner rule source is a user", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"user:u1","target":"group:g1","access":"read"}]`}, []string{`rule "rx"`, "source"}},
		{"owner rule without source", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","target":"group:g1","access":"read"}]`}, []string{`rule "rx"`, "source"}},
		{"owner rule with criteria", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":1}]}}]`}, []string{`rule "rx"`, "criteria"}},
		{"criteria rule without criteria", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read"}]`}, []string{`rule "rx"`, "criteria"}},
		{"unknown rule type", map[string]string{"rules": `[{"id":"rx","object":"account","type":"sharing","target":"group:g1","access":"read"}]`}, []string{`rule "rx"`, `"sharing"`}},
		{"rule on unknown object", map[string]string{"rules": `[{"id":"rx","object":"lead","type":"owner","source":"group:g1","target":"group:g1","access":"read"}]`}, []string{`rule "rx"`, `"lead"`}},
		{"rule unknown target", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"group:zz","access":"read"}]`}, []string{`rule "rx"`, "group:zz"}},
		{"rule unknown source", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"role:zz","target":"group:g1","access":"read"}]`}, []string{`rule "rx"`, "role:zz"}},
		{"rule bad target syntax", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"user:","access":"read"}]`}, []string{`rule "rx"`, "target"}},
		{"rule defined twice", map[string]string{"rules": `[{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"group:g1","access":"read"},{"id":"rx","object":"account","type":"owner","source":"group:g1","target":"group:g1","access":"edit"}]`}, []string{`rule "rx"`, "twice"}},
		{"contains with a number", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"contains","value":1}]}}]`}, []string{`rule "rx"`, "contains"}},
		{"starts_with with a boolean", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"starts_with","value":true}]}}]`}, []string{`rule "rx"`, "starts_with"}},
		{"lt with a boolean", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"lt","value":false}]}}]`}, []string{`rule "rx"`, "lt"}},
		{"null value", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":null}]}}]`}, []string{`rule "rx"`, "value"}},
		{"missing value", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals"}]}}]`}, []string{`rule "rx"`, "value"}},
		{"list value", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":["a"]}]}}]`}, []string{`rule "rx"`, "value must be a string, number or boolean, not a list"}},
		{"object value", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":{"a":1}}]}}]`}, []string{`rule "rx"`, "value must be a string, number or boolean, not an object"}},
		{"missing field", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"op":"equals","value":"a"}]}}]`}, []string{`rule "rx"`, "field"}},

		// Shares.
		{"share access none", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"user:u2","access":"none","cause":"manual"}]`}, []string{"shares[0]", "access"}},
		{"share access all", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"user:u2","access":"all","cause":"manual"}]`}, []string{"shares[0]", "access"}},
		{"share without cause", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"user:u2","access":"read"}]`}, []string{"shares[0]", "cause is required"}},
		{"share unknown cause", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"user:u2","access":"read","cause":"rule"}]`}, []string{"shares[0]", "cause"}},
		{"share apex without name", map[string]string{"shares": `[{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"apex:"}]`}, []string{"shares[0]", "cause"}},
		{"share apex name upper case", map[string]string{"shares": `[{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"apex:Sync"}]`}, []string{"shares[0]", "cause"}},
		{"share apex on standard object", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"user:u2","access":"read","cause":"apex:sync"}]`}, []string{`record "a1"`, "custom"}},
		{"share listed twice", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"user:u2","access":"read","cause":"manual"},{"object":"account","record":"a1","grantee":"user:u2","access":"edit","cause":"manual"}]`}, []string{`record "a1"`, "twice"}},
		{"share on cbp object", map[string]string{"shares": `[{"object":"contact","record":"c1","grantee":"user:u1","access":"read","cause":"manual"}]`}, []string{`record "c1"`, "controlled_by_parent"}},
		{"share on unknown record", map[string]string{"shares": `[{"object":"account","record":"a9","grantee":"user:u1","access":"read","cause":"manual"}]`}, []string{`record "a9"`, "does not exist"}},
		{"share object differs from record's", map[string]string{"shares": `[{"object":"proj__c","record":"a1","grantee":"user:u1","access":"read","cause":"manual"}]`}, []string{`record "a1"`, "account"}},
		{"share on unknown object", map[string]string{"shares": `[{"object":"lead","record":"a1","grantee":"user:u1","access":"read","cause":"manual"}]`}, []string{`record "a1"`, `"lead"`}},
		{"share unknown grantee", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"user:u9","access":"read","cause":"manual"}]`}, []string{`record "a1"`, "user:u9"}},
		{"share bad grantee", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"everyone","access":"read","cause":"manual"}]`}, []string{"shares[0]", `"everyone"`}},

		// Teams.
		{"team on a custom object", map[string]string{"teams": `[{"record":"p1","user":"u1","access":"read"}]`}, []string{`record "p1"`, "account, opportunity and case"}},
		{"team on a cbp object", map[string]string{"objects": strings.Replace(base["objects"], `"name":"case","parent":"account","internal_owd":"public_read_only","external_owd":"private"`, `"name":"case","parent":"account","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"`, 1), "records": `[{"object":"account","id":"a1","owner":"u1"},{"object":"case","id":"k2","owner":"u1","parent":"a1"},{"object":"opportunity","id":"o1","owner":"u1"},{"object":"proj__c","id":"p1","owner":"u1"}]`, "shares": `[]`, "teams": `[{"record":"k2","user":"u1","access":"read"}]`}, []string{`record "k2"`, "controlled_by_parent"}},
		{"team access none", map[string]string{"teams": `[{"record":"a1","user":"u1","access":"none"}]`}, []string{"teams[0]", "access"}},
		{"team access all", map[string]string{"teams": `[{"record":"a1","user":"u1","access":"all"}]`}, []string{"teams[0]", "access"}},
		{"team child access on opportunity", map[string]string{"teams": `[{"record":"o1","user":"u1","access":"read","case_access":"read"}]`}, []string{`record "o1"`, "child access"}},
		{"team child access none on opportunity", map[string]string{"teams": `[{"record":"o1","user":"u1","access":"read","contact_access":"none"}]`}, []string{`record "o1"`, "child access"}},
		{"team child access all", map[string]string{"teams": `[{"record":"a1","user":"u1","access":"read","case_access":"all"}]`}, []string{"teams[0]", "case_access"}},
		{"team listed twice", map[string]string{"teams": `[{"record":"a1","user":"u1","access":"read"},{"record":"a1","user":"u1","access":"edit"}]`}, []string{`record "a1"`, `"u1"`, "twice"}},
		{"team unknown user", map[string]string{"teams": `[{"record":"a1","user":"u9","access":"read"}]`}, []string{`record "a1"`, `"u9"`}},
		{"team unknown record", map[string]string{"teams": `[{"record":"a9","user":"u1","access":"read"}]`}, []string{`record "a9"`}},

		// File format.
		{"unknown section", map[string]string{"": `{"objects":[],"profiles":[]}`}, []string{`"profiles"`}},
		{"unknown object key", map[string]string{"objects": `[{"name":"account","internal_owd":"private","sharing":"x"}]`}, []string{"objects[0]", "sharing"}},
		{"unknown user key", map[string]string{"users": `[{"id":"u1","profile":"admin"},{"id":"u2"},{"id":"u3"}]`}, []string{"users[0]", "profile"}},
		{"unknown condition key", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":1,"negate":true}]}}]`}, []string{"rules[0]", "negate"}},
		{"unknown criteria key", map[string]string{"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":1}],"filter":"1"}}]`}, []string{"rules[0]", "filter"}},
		{"unknown share key", map[string]string{"shares": `[{"object":"account","record":"a1","grantee":"user:u2","access":"read","cause":"manual","reason":"x"}]`}, []string{"shares[0]", "reason"}},
		{"section not a list", map[string]string{"users": `{"id":"u1"}`}, []string{`"users"`, "list"}},
		{"section null", map[string]string{"roles": `null`}, []string{`"roles"`, "list"}},
		{"entry not an object", map[string]string{"roles": `["ceo"]`}, []string{"roles[0]", "JSON object"}},
		{"id is a number", map[string]string{"roles": `[{"id":1}]`}, []string{"roles[0]", "id"}},
		{"hierarchy is a string", map[string]string{"objects": `[{"name":"account","internal_owd":"private","hierarchy":"false"}]`}, []string{"objects[0]", "hierarchy"}},
		{"active is a string", map[string]string{"users": `[{"id":"u1","active":"yes"}]`}, []string{"users[0]", "active"}},
		{"members not a list", map[string]string{"groups": `[{"id":"g1","members":"user:u1"}]`}, []string{"groups[0]", "members"}},
		{"member not a string", map[string]string{"groups": `[{"id":"g1","members":[1]}]`}, []string{"groups[0]", "members"}},
		{"fields not an object", map[string]string{"records": `[{"object":"account","id":"a1","owner":"u1","fields":[]}]`}, []string{"records[0]", "fields"}},
		{"version 2", map[string]string{"": `{"version":2,"objects":[]}`}, []string{"version"}},
		{"version a string", map[string]string{"": `{"version":"1","objects":[]}`}, []string{"version"}},
		{"section twice", map[string]string{"": `{"objects":[],"objects":[]}`}, []string{`"objects"`, "twice"}},
		{"malformed json", map[string]string{"": `{"objects":[{"name":"account",}]}`}, []string{"malformed JSON"}},
		{"truncated json", map[string]string{"": `{"objects":[{"name":"account"`}, []string{"malformed JSON"}},
		{"empty file", map[string]string{"": ``}, []string{"malformed JSON"}},
		{"not an object", map[string]string{"": `[]`}, []string{"one JSON object"}},
		{"trailing object", map[string]string{"": `{"objects":[]} {}`}, []string{"after the model"}},
		{"trailing garbage", map[string]string{"": `{"objects":[]} x`}, []string{"after the model"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, ok := tc.repl[""]
			if !ok {
				src = withSections(tc.repl)
			}
			_, err := load(src)
			if err == nil {
				t.Fatalf("accepted:\n%s", src)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

// TestValid covers edge cases that must be accepted.
func TestValid(t *testing.T) {
	t.Parallel()
	for name, repl := range map[string]map[string]string{
		"empty file":                 {"": `{}`},
		"version only":               {"": `{"version":1}`},
		"whitespace around":          {"": " \n\t{\"version\": 1}\n\n"},
		"owd equal":                  {"objects": strings.Replace(base["objects"], `{"name":"account","internal_owd":"private"}`, `{"name":"account","internal_owd":"public_read_write","external_owd":"public_read_write"}`, 1)},
		"custom hierarchy false":     {"objects": `[{"name":"a__c","internal_owd":"private","hierarchy":false}]`, "records": `[]`, "rules": `[]`, "shares": `[]`, "teams": `[]`},
		"cbp record without parent":  {"records": `[{"object":"account","id":"a1","owner":"u1"},{"object":"opportunity","id":"o1","owner":"u1"},{"object":"proj__c","id":"p1","owner":"u1"},{"object":"task__c","id":"k1","owner":"q1"}]`},
		"inactive owner":             {"records": `[{"object":"account","id":"a1","owner":"u3"},{"object":"opportunity","id":"o1","owner":"u3"},{"object":"proj__c","id":"p1","owner":"u3"}]`},
		"same share, other cause":    {"shares": `[{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"manual"},{"object":"proj__c","record":"p1","grantee":"user:u2","access":"edit","cause":"apex:a"},{"object":"proj__c","record":"p1","grantee":"user:u2","access":"edit","cause":"apex:b"}]`},
		"same grantee, other record": {"shares": `[{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"manual"},{"object":"account","record":"a1","grantee":"user:u2","access":"read","cause":"manual"}]`},
		"300 owner rules":            {"rules": fixture.ManyRules(MaxRulesPerObject, false, "g1", "f")},
		"50 criteria rules":          {"rules": fixture.ManyRules(MaxCriteriaRulesPerObject, true, "g1", "f")},
		"empty sections":             {"objects": `[]`, "roles": `[]`, "users": `[]`, "groups": `[]`, "territories": `[]`, "records": `[]`, "rules": `[]`, "shares": `[]`, "teams": `[]`},
		"group with no members":      {"groups": `[{"id":"g1","members":[]},{"id":"q1","queue":true}]`},
		"diamond group nesting":      {"groups": `[{"id":"g0","members":["user:u1"]},{"id":"g1","members":["group:g0"]},{"id":"g2","members":["group:g0","group:g1"]},{"id":"q1","queue":true,"members":["group:g2"]}]`},
		"logic keywords any case":    {"rules": `[{"id":"rx","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"a","op":"lt","value":"x"},{"field":"b","op":"not_contains","value":"y"}],"logic":"not (1 AnD 2) oR 2"}}]`},
	} {
		t.Run(name, func(t *testing.T) {
			src, ok := repl[""]
			if !ok {
				src = withSections(repl)
			}
			if _, err := load(src); err != nil {
				t.Fatalf("%v\n%s", err, src)
			}
		})
	}
}
