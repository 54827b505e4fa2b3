package adversarial

import (
	"context"
	"strings"
	"testing"
)

// TestRevealRLSRecordsOnlyWhatAccessTells: a reader may learn a user's
// access level to a record, never why (SECURITY.md: no group, rule or share
// cause). rls_records listed the records of an object the user's share rows
// reached, whatever the object's defaults: on a public object, where every
// internal user reads every record, it told the reader which records a user
// held a share on (a manual share, a team entry, a territory, the owner's own
// row), which access_level, can_access and visible_records cannot tell apart
// from the default. Found by an attack helper. It now lists records only for
// an object whose defaults give the user less than the level and that is
// not controlled by its parent (rls_mode 1, the only case the policies and
// visible_records call it in), where its list is exactly access_level's.
func TestRevealRLSRecordsOnlyWhatAccessTells(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	model := strings.Replace(baseModel, `{"name": "other__c", "internal_owd": "private"}`,
		`{"name": "other__c", "internal_owd": "private"},
		{"name": "pub__c", "internal_owd": "public_read_only", "external_owd": "private"}`, 1)
	model = strings.Replace(model, `{"object": "project__c", "id": "p1", "owner": "u1"}`,
		`{"object": "project__c", "id": "p1", "owner": "u1"},
		{"object": "pub__c", "id": "pb1", "owner": "u1"},
		{"object": "pub__c", "id": "pb2", "owner": "u1"},
		{"object": "pub__c", "id": "pb3", "owner": "u1"}`, 1)
	model = strings.Replace(model, `{"object": "project__c", "record": "p1", "grantee": "user:u2", "access": "read", "cause": "manual"}`,
		`{"object": "project__c", "record": "p1", "grantee": "user:u2", "access": "read", "cause": "manual"},
		{"object": "pub__c", "record": "pb1", "grantee": "user:u2", "access": "read", "cause": "manual"},
		{"object": "pub__c", "record": "pb2", "grantee": "user:u2", "access": "edit", "cause": "manual"},
		{"object": "pub__c", "record": "pb3", "grantee": "group:crit", "access": "read", "cause": "manual"}`, 1)
	if !strings.Contains(model, `"pb3", "grantee": "group:crit"`) || !strings.Contains(model, `"id": "pb1"`) {
		t.Fatal("the model's edits did not apply")
	}
	b.importJSON(t, model)
	b.run(t)

	// What access tells: every user reads every record of pub__c; u2
	// edits pb2, u1 owns them all.
	b.wantAccess(t, map[string]string{
		"u2 pb1": "read", "u3 pb1": "read", "u4 pb1": "read",
		"u2 pb2": "edit", "u3 pb2": "read",
		"u2 pb3": "read", "u3 pb3": "read", "u4 pb3": "read",
		"u1 pb1": "all",
	})
	list := func(user, level string) string {
		t.Helper()
		var got string
		if err := b.reader.QueryRow(ctx, `SELECT coalesce(string_agg(r, ' ' ORDER BY r), '')
			FROM recalc.rls_records($1, 'pub__c', $2) r`, user, level).Scan(&got); err != nil {
			t.Fatalf("rls_records(%s, pub__c, %s) as the reader: %v", user, level, err)
		}
		return got
	}
	// At read, the defaults give everyone every record: a list must not
	// tell u2's shares, u4's group's share or u1's ownership apart.
	for _, u := range []string{"u1", "u2", "u3", "u4"} {
		if got := list(u, "read"); got != "" {
			t.Errorf("rls_records(%s, pub__c, read) = %q as the reader: it tells the records the user holds a share on, where every user reads every record (want nothing)", u, got)
		}
	}
	// At edit the defaults give nothing: the list is what access_level
	// tells, as the policies need it.
	for u, want := range map[string]string{"u1": "pb1 pb2 pb3", "u2": "pb2", "u3": "", "u4": ""} {
		if got := list(u, "edit"); got != want {
			t.Errorf("rls_records(%s, pub__c, edit) = %q, want %q (the records access_level gives edit)", u, got, want)
		}
	}
	// The policy's path for an object private to the user is unchanged.
	if got := b.asReader(t, "u2", `SELECT r FROM recalc.rls_records('u2', 'account', 'read') r`); got != "a1 a2" {
		t.Errorf("rls_records(u2, account, read) = %q, want %q", got, "a1 a2")
	}
	// A controlled-by-parent object's records take their access from their
	// parent, which rls_records does not read: nothing, as rls_keys says.
	if got := b.asReader(t, "u1", `SELECT r FROM recalc.rls_records('u1', 'contact', 'read') r`); got != "" {
		t.Errorf("rls_records(u1, contact, read) = %q, want nothing", got)
	}
}
