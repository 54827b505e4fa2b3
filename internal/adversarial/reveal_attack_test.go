package adversarial

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
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

// TestRevealFeedAndContinuations shows what SECURITY.md says a reader
// learns beyond access levels ("A reader sees which records' access
// changed, and some of why", "A reader can ask about any user"): the feed
// names a group whose members changed, and a record whose criteria rule's
// share changed after a field edit though no user's access did; revoking
// the feed from the reader takes that away; a continuation row of
// visible_records, for a user the session notes as broad, names a record
// that user may not access.
func TestRevealFeedAndContinuations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var recs []string
	for i := range 60 {
		recs = append(recs, fmt.Sprintf(`{"object": "account", "id": "zz%02d", "owner": "u1"}`, i))
	}
	model := strings.Replace(baseModel, `{"object": "project__c", "id": "p1", "owner": "u1"}`,
		`{"object": "project__c", "id": "p1", "owner": "u1"}, `+strings.Join(recs, ", "), 1)
	model = strings.Replace(model, `"groups": [{"id": "crit", "members": ["user:u4"]}]`,
		`"groups": [{"id": "crit", "members": ["user:u4"]}, {"id": "audit", "members": []}]`, 1)
	model = strings.Replace(model, `"rules": [`, `"rules": [
		{"id": "big", "object": "account", "type": "criteria", "target": "group:audit", "access": "read",
		 "criteria": {"conditions": [{"field": "salary", "op": "ge", "value": 200000}]}},`, 1)
	b.importJSON(t, model)
	b.run(t)
	head := func() int64 {
		t.Helper()
		var h int64
		if err := b.reader.QueryRow(ctx, `SELECT recalc.access_changes_head()`).Scan(&h); err != nil {
			t.Fatalf("access_changes_head as the reader: %v", err)
		}
		return h
	}
	feed := func(since int64) string {
		t.Helper()
		var s string
		if err := b.reader.QueryRow(ctx, `SELECT coalesce(string_agg(kind || ' ' || key, ', ' ORDER BY cursor), '')
			FROM recalc.access_changes($1, 1000)`, since).Scan(&s); err != nil {
			t.Fatalf("access_changes as the reader: %v", err)
		}
		return s
	}

	// u2 joins group crit: the feed names the group.
	h := head()
	b.importJSON(t, strings.Replace(model, `{"id": "crit", "members": ["user:u4"]}`, `{"id": "crit", "members": ["user:u4", "user:u2"]}`, 1))
	b.run(t)
	if got := feed(h); !strings.Contains(got, "grantee group:crit") {
		t.Errorf("after u2 joined crit the feed reads %q: SECURITY.md says it names the group", got)
	}

	// a3's salary crosses the rule's bound: its share goes to a group that
	// reaches no user, so no access changes, and the feed names a3.
	before := b.accessAll(t)
	h = head()
	exec(t, b.writer, `UPDATE recalc.record SET fields = fields || '{"salary": 250000}' WHERE id = 'a3'`)
	b.run(t)
	if after := b.accessAll(t); after != before {
		t.Fatalf("the salary changed someone's access:\nbefore %s\nafter %s", before, after)
	}
	if got := feed(h); got != "record a3" {
		t.Errorf("after a3's salary crossed the rule's bound the feed reads %q, want %q (SECURITY.md says it tells)", got, "record a3")
	}
	// A field no rule reads publishes nothing.
	h = head()
	exec(t, b.writer, `UPDATE recalc.record SET fields = fields || '{"note": "x"}' WHERE id = 'a2'`)
	b.run(t)
	if got := feed(h); got != "" {
		t.Errorf("after a field no rule reads changed the feed reads %q, want nothing", got)
	}

	// Revoked, the feed tells the reader nothing.
	exec(t, b.engine, `REVOKE EXECUTE ON FUNCTION recalc.access_changes(bigint, integer), recalc.access_changes_head() FROM `+ident(b.readerRole))
	for _, q := range []string{`SELECT count(*) FROM recalc.access_changes(0, 10)`, `SELECT recalc.access_changes_head()`} {
		var n int64
		err := b.reader.QueryRow(ctx, q).Scan(&n)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != insufficientPrivilege {
			t.Errorf("%s as the reader after the revoke: %v, want %s", q, err, insufficientPrivilege)
		}
	}

	// u3 reads a1 and a2 only (a team and a territory without accounts).
	// A session noting every user as broad walks the accounts for u3, and
	// the continuation row names one u3 cannot read.
	conn := b.connect(t, b.readerRole)
	exec(t, conn, `SELECT set_config('recalc.rls_broad_uids', ',' || string_agg(i::text, ',') || ',', false) FROM generate_series(1, 100) i`)
	var rec, next *string
	if err := conn.QueryRow(ctx, `SELECT record, next_after FROM recalc.visible_records('u3', 'account', 'read', 'hot1', 1)`).Scan(&rec, &next); err != nil {
		t.Fatalf("visible_records as the reader: %v", err)
	}
	if rec != nil || next == nil || *next != "zz49" {
		t.Fatalf("visible_records(u3, account, read, hot1, 1) = (%v, %v), want a continuation row naming zz49", rec, next)
	}
	if got := b.access(t, "u3", *next); got != "none" {
		t.Errorf("u3's access to %s is %s: the continuation should name a record u3 cannot read", *next, got)
	}
}
