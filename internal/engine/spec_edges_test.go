package engine_test

import (
	"testing"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestSpecEdges holds sequences of imports where the contract
// (shared/spec/sharing-model.md, interface.md) decides the outcome:
// "Each section present replaces that section's stored contents wholesale,
// and sections absent are left alone"; "Every reference must resolve ...
// Otherwise the model is invalid. An invalid model is rejected whole ... and
// nothing stored changes"; section 5: the only change an import makes beyond
// the new version's access is the owner-change wipe of manual shares.
func TestSpecEdges(t *testing.T) {
	type step struct {
		file    string
		wantErr bool   // the import must fail and leave the access as it was
		want    string // access CSV after import + run (ignored when wantErr)
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{
			// A team entry on a record whose object changes from opportunity
			// to case (teams section absent) still resolves: case records
			// may have teams. The entry must survive.
			name: "team survives record object change",
			steps: []step{
				{file: `{"objects":[{"name":"account","internal_owd":"private"},{"name":"opportunity","parent":"account","internal_owd":"private"},{"name":"case","parent":"account","internal_owd":"private"}],
"users":[{"id":"o"},{"id":"t"}],
"records":[{"object":"account","id":"a1","owner":"o"},{"object":"opportunity","id":"x1","owner":"o","parent":"a1"}],
"teams":[{"record":"x1","user":"t","access":"edit"}]}`,
					want: "object,record,user,access\naccount,a1,o,all\naccount,a1,t,read\nopportunity,x1,o,all\nopportunity,x1,t,edit\n"},
				{file: `{"records":[{"object":"account","id":"a1","owner":"o"},{"object":"case","id":"x1","owner":"o","parent":"a1"}]}`,
					want: "object,record,user,access\naccount,a1,o,all\naccount,a1,t,read\ncase,x1,o,all\ncase,x1,t,edit\n"},
			},
		},
		{
			// Dropping a record that a stored (absent-section) team entry
			// names leaves a dangling reference: the import must be refused.
			name: "record delete orphaning a team entry is invalid",
			steps: []step{
				{file: `{"objects":[{"name":"account","internal_owd":"private"},{"name":"opportunity","parent":"account","internal_owd":"private"}],
"users":[{"id":"o"},{"id":"t"}],
"records":[{"object":"account","id":"a1","owner":"o"},{"object":"opportunity","id":"x1","owner":"o","parent":"a1"}],
"teams":[{"record":"x1","user":"t","access":"edit"}]}`,
					want: "object,record,user,access\naccount,a1,o,all\naccount,a1,t,read\nopportunity,x1,o,all\nopportunity,x1,t,edit\n"},
				{file: `{"records":[{"object":"account","id":"a1","owner":"o"}]}`, wantErr: true},
			},
		},
		{
			// Same for a stored apex share whose record is dropped, or whose
			// record changes object (the share still says doc__c).
			name: "record delete or object change orphaning a share is invalid",
			steps: []step{
				{file: `{"objects":[{"name":"doc__c","internal_owd":"private"},{"name":"note__c","internal_owd":"private"}],
"users":[{"id":"o"},{"id":"s"}],
"records":[{"object":"doc__c","id":"d1","owner":"o"},{"object":"doc__c","id":"d2","owner":"o"}],
"shares":[{"object":"doc__c","record":"d1","grantee":"user:s","access":"read","cause":"apex:x"}]}`,
					want: "object,record,user,access\ndoc__c,d1,o,all\ndoc__c,d1,s,read\ndoc__c,d2,o,all\n"},
				{file: `{"records":[{"object":"doc__c","id":"d2","owner":"o"}]}`, wantErr: true},
				{file: `{"records":[{"object":"note__c","id":"d1","owner":"o"},{"object":"doc__c","id":"d2","owner":"o"}]}`, wantErr: true},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			prev := ""
			for i, s := range tc.steps {
				_, err := testkit.ImportString(b.ctx, b.pool, s.file)
				switch {
				case s.wantErr && err == nil:
					t.Errorf("step %d: invalid model was accepted", i)
				case !s.wantErr && err != nil:
					t.Fatalf("step %d: import: %v", i, err)
				}
				b.run(t, engine.Options{})
				want := s.want
				if s.wantErr {
					want = prev
				}
				if got := b.access(t); got != want {
					t.Errorf("step %d: access\ngot:\n%s\nwant:\n%s", i, got, want)
				}
				prev = want
			}
		})
	}
}
