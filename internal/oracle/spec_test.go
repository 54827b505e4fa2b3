package oracle

import (
	"strings"
	"testing"
)

// specObjects and specOrg are shared by the scenarios below: a role chain
// ceo > mgr > rep with one user each (plus an external user under rep and a
// user with no role), and one object of each kind.
const (
	specObjects = `"objects":[{"name":"account","internal_owd":"private"},
		{"name":"contact","parent":"account","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"},
		{"name":"opportunity","parent":"account","internal_owd":"private"},
		{"name":"case","parent":"account","internal_owd":"public_read_only"},
		{"name":"proj__c","internal_owd":"private"},
		{"name":"doc__c","internal_owd":"private","hierarchy":false},
		{"name":"task__c","parent":"proj__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent","hierarchy":false},
		{"name":"step__c","parent":"task__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}]`
	specOrg = `"roles":[{"id":"ceo"},{"id":"mgr","parent":"ceo"},{"id":"rep","parent":"mgr","opportunity_access":"edit","case_access":"read"}],
		"users":[{"id":"c","role":"ceo"},{"id":"m","role":"mgr"},{"id":"r","role":"rep"},{"id":"p","role":"rep","type":"external"},
		         {"id":"x"},{"id":"gone","role":"rep","active":false}]`
)

// TestSpecScenarios pins one sentence of docs/semantics.md each, on small
// hand-checked models.
func TestSpecScenarios(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, model string
		want        []string // rows after the header
	}{{
		name:  "inactive owner: bosses still get all, the owner nothing",
		model: `"records":[{"object":"proj__c","id":"d1","owner":"gone"}]`,
		want:  []string{"proj__c,d1,c,all", "proj__c,d1,m,all"},
	}, {
		name:  "hierarchy false: bosses get nothing from ownership or shares",
		model: `"records":[{"object":"doc__c","id":"d1","owner":"r"}],"shares":[{"object":"doc__c","record":"d1","grantee":"role:mgr","access":"edit","cause":"manual"}]`,
		want:  []string{"doc__c,d1,m,edit", "doc__c,d1,r,all"},
	}, {
		name: "group bosses: only the outer group's include_bosses counts",
		model: `"groups":[{"id":"inner","members":["user:r"],"include_bosses":false},{"id":"outer","members":["group:inner"]}],
			"records":[{"object":"proj__c","id":"d1","owner":"x"},{"object":"proj__c","id":"d2","owner":"x"}],
			"shares":[{"object":"proj__c","record":"d1","grantee":"group:outer","access":"read","cause":"manual"},
			          {"object":"proj__c","record":"d2","grantee":"group:inner","access":"read","cause":"manual"}]`,
		want: []string{"proj__c,d1,c,read", "proj__c,d1,m,read", "proj__c,d1,r,read", "proj__c,d1,x,all", "proj__c,d2,r,read", "proj__c,d2,x,all"},
	}, {
		name: "role_and_internal_subordinates leaves out external subordinates",
		model: `"records":[{"object":"proj__c","id":"d1","owner":"x"}],
			"shares":[{"object":"proj__c","record":"d1","grantee":"role_and_internal_subordinates:mgr","access":"edit","cause":"apex:s"}]`,
		want: []string{"proj__c,d1,c,edit", "proj__c,d1,m,edit", "proj__c,d1,r,edit", "proj__c,d1,x,all"},
	}, {
		name: "owner rule: the source matches inactive owners, never queues",
		model: `"groups":[{"id":"q","queue":true,"members":["user:x"],"include_bosses":false}],
			"records":[{"object":"proj__c","id":"d1","owner":"gone"},{"object":"proj__c","id":"d2","owner":"q"}],
			"rules":[{"id":"ru","object":"proj__c","type":"owner","source":"role:rep","target":"user:x","access":"edit"},
			         {"id":"rq","object":"proj__c","type":"owner","source":"group:q","target":"user:p","access":"edit"}]`,
		want: []string{"proj__c,d1,c,all", "proj__c,d1,m,all", "proj__c,d1,x,edit", "proj__c,d2,x,all"},
	}, {
		name: "implicit child: account owner's role access, to the owner and bosses",
		model: `"records":[{"object":"account","id":"a1","owner":"r"},{"object":"opportunity","id":"o1","owner":"x","parent":"a1"},
			{"object":"case","id":"k1","owner":"x","parent":"a1"}]`,
		want: []string{"account,a1,c,all", "account,a1,m,all", "account,a1,r,all", "account,a1,x,read",
			"case,k1,c,read", "case,k1,m,read", "case,k1,r,read", "case,k1,x,all",
			"opportunity,o1,c,edit", "opportunity,o1,m,edit", "opportunity,o1,r,edit", "opportunity,o1,x,all"},
	}, {
		name:  "implicit child: an inactive account owner's bosses still get the role's access",
		model: `"records":[{"object":"account","id":"a1","owner":"gone"},{"object":"opportunity","id":"o1","owner":"x","parent":"a1"}]`,
		want: []string{"account,a1,c,all", "account,a1,m,all", "account,a1,x,read",
			"opportunity,o1,c,edit", "opportunity,o1,m,edit", "opportunity,o1,x,all"},
	}, {
		name: "implicit parent: not from OWD, implicit child or controlled-by-parent children",
		model: `"records":[{"object":"account","id":"a1","owner":"x"},{"object":"case","id":"k1","owner":"x","parent":"a1"},
			{"object":"contact","id":"t1","owner":"r","parent":"a1"}]`,
		want: []string{"account,a1,x,all",
			"case,k1,c,read", "case,k1,m,read", "case,k1,r,read", "case,k1,x,all",
			"contact,t1,c,all", "contact,t1,m,all", "contact,t1,r,all", "contact,t1,x,all"},
	}, {
		name: "implicit parent: read from a share on a child",
		model: `"records":[{"object":"account","id":"a1","owner":"x"},{"object":"opportunity","id":"o1","owner":"x","parent":"a1"}],
			"shares":[{"object":"opportunity","record":"o1","grantee":"user:p","access":"edit","cause":"manual"}]`,
		want: []string{"account,a1,c,read", "account,a1,m,read", "account,a1,p,read", "account,a1,x,all",
			"opportunity,o1,c,edit", "opportunity,o1,m,edit", "opportunity,o1,p,edit", "opportunity,o1,x,all"},
	}, {
		name: "controlled by parent: chains, each level's own owner grant with its object's hierarchy",
		model: `"records":[{"object":"proj__c","id":"p1","owner":"x"},{"object":"task__c","id":"t1","owner":"r","parent":"p1"},
			{"object":"step__c","id":"s1","owner":"p","parent":"t1"},{"object":"step__c","id":"s2","owner":"x"}],
			"shares":[{"object":"proj__c","record":"p1","grantee":"user:m","access":"edit","cause":"manual"}]`,
		want: []string{"proj__c,p1,c,edit", "proj__c,p1,m,edit", "proj__c,p1,x,all",
			"step__c,s1,c,all", "step__c,s1,m,all", "step__c,s1,p,all", "step__c,s1,r,all", "step__c,s1,x,all",
			"step__c,s2,x,all",
			"task__c,t1,c,edit", "task__c,t1,m,edit", "task__c,t1,r,all", "task__c,t1,x,all"},
	}, {
		name: "territories: users of the territory and its ancestors, no bosses, no inactive users",
		model: `"territories":[{"id":"top","users":["p","gone"]},{"id":"west","parent":"top","users":["r"],"account_access":"edit","case_access":"edit"}],
			"records":[{"object":"account","id":"a1","owner":"x","territories":["west"]},{"object":"case","id":"k1","owner":"x","parent":"a1"}]`,
		want: []string{"account,a1,p,edit", "account,a1,r,edit", "account,a1,x,all",
			"case,k1,c,read", "case,k1,m,read", "case,k1,p,edit", "case,k1,r,edit", "case,k1,x,all"},
	}, {
		name: "teams: member and bosses, child access to both",
		model: `"records":[{"object":"account","id":"a1","owner":"x"},{"object":"opportunity","id":"o1","owner":"x","parent":"a1"}],
			"teams":[{"record":"a1","user":"r","access":"read","opportunity_access":"edit"}]`,
		want: []string{"account,a1,c,read", "account,a1,m,read", "account,a1,r,read", "account,a1,x,all",
			"opportunity,o1,c,edit", "opportunity,o1,m,edit", "opportunity,o1,r,edit", "opportunity,o1,x,all"},
	}, {
		name: "account rule child access goes to the target and its bosses",
		model: `"records":[{"object":"account","id":"a1","owner":"x","fields":{"tier":1}},{"object":"case","id":"k1","owner":"x","parent":"a1"}],
			"rules":[{"id":"ru","object":"account","type":"criteria","target":"role:mgr","access":"read","case_access":"edit",
			          "criteria":{"conditions":[{"field":"tier","op":"le","value":1}]}}]`,
		want: []string{"account,a1,c,read", "account,a1,m,read", "account,a1,x,all",
			"case,k1,c,edit", "case,k1,m,edit", "case,k1,r,read", "case,k1,x,all"},
	}, {
		name:  "OWD: external users get external_owd, here private",
		model: `"records":[{"object":"case","id":"k1","owner":"x"}]`,
		want:  []string{"case,k1,c,read", "case,k1,m,read", "case,k1,r,read", "case,k1,x,all"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, f := parse(t, "{"+specObjects+","+specOrg+","+tc.model+"}")
			m = Merge(nil, m, f)
			if _, err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			want := "object,record,user,access\n" + strings.Join(tc.want, "\n") + "\n"
			if got := CSV(Access(m)); got != want {
				t.Errorf("access differs:\n%s", Diff(want, got))
			}
		})
	}
}
