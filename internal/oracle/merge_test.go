package oracle

import (
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
)

func parse(t *testing.T, s string) (*model.Model, *model.File) {
	t.Helper()
	m, f, err := model.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return m, f
}

func shareList(m *model.Model) string {
	var out []string
	for _, s := range m.Shares {
		out = append(out, s.Record+"/"+s.Grantee.String()+"/"+s.Cause+"/"+s.Access.String())
	}
	return strings.Join(out, " ")
}

func TestMerge(t *testing.T) {
	t.Parallel()
	const base = `{"objects":[{"name":"account","internal_owd":"private"},{"name":"doc__c","internal_owd":"private"}],
	"users":[{"id":"a"},{"id":"b"},{"id":"c"}],
	"records":[{"object":"account","id":"r1","owner":"a"},{"object":"doc__c","id":"d1","owner":"a"}],
	"shares":[{"object":"account","record":"r1","grantee":"user:c","access":"read","cause":"manual"},
	          {"object":"doc__c","record":"d1","grantee":"user:c","access":"read","cause":"manual"},
	          {"object":"doc__c","record":"d1","grantee":"user:c","access":"edit","cause":"apex:sync"}]}`
	for _, tc := range []struct {
		name, step, shares string
	}{{
		name:   "owner change wipes manual shares, keeps apex",
		step:   `{"records":[{"object":"account","id":"r1","owner":"a"},{"object":"doc__c","id":"d1","owner":"b"}]}`,
		shares: "r1/user:c/manual/read d1/user:c/apex:sync/edit",
	}, {
		name: "wiped even when the file lists it again; new manual shares survive",
		step: `{"records":[{"object":"account","id":"r1","owner":"b"},{"object":"doc__c","id":"d1","owner":"a"}],
			"shares":[{"object":"account","record":"r1","grantee":"user:c","access":"edit","cause":"manual"},
			          {"object":"account","record":"r1","grantee":"user:b","access":"read","cause":"manual"}]}`,
		shares: "r1/user:b/manual/read",
	}, {
		name:   "no owner change, shares replaced wholesale",
		step:   `{"shares":[{"object":"doc__c","record":"d1","grantee":"user:b","access":"edit","cause":"manual"}]}`,
		shares: "d1/user:b/manual/edit",
	}, {
		name:   "absent sections are kept",
		step:   `{"users":[{"id":"a"},{"id":"b"},{"id":"c","active":false}]}`,
		shares: "r1/user:c/manual/read d1/user:c/manual/read d1/user:c/apex:sync/edit",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			prev, pf := parse(t, base)
			prev = Merge(nil, prev, pf)
			file, present := parse(t, tc.step)
			got := Merge(prev, file, present)
			if _, err := got.Validate(); err != nil {
				t.Fatal(err)
			}
			if s := shareList(got); s != tc.shares {
				t.Errorf("shares = %s\nwant     %s", s, tc.shares)
			}
			if len(got.Objects) != 2 || len(got.Records) != 2 {
				t.Errorf("absent sections lost: %d objects, %d records", len(got.Objects), len(got.Records))
			}
			if s := shareList(prev); !strings.Contains(s, "d1/user:c/manual/read") {
				t.Errorf("Merge changed prev: %s", s)
			}
		})
	}
}
