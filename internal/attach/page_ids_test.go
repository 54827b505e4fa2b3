package attach_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// textIDSpec attaches account alone to a table with text ids.
const textIDSpec = `{"objects": [
  {"object": "account", "table": "crm.tacct", "id": "id", "owner": "owner_id", "parent": null,
   "fields": ["industry", "amount", "vip"], "territories": "territories"}]}`

// awkwardTextIDs are awkward text ids: the empty string, colons, case, blanks,
// digits in text order.
var awkwardTextIDs = []string{"", "x:5", "account:1", "a", "A", "b ", "b", " b", "10", "9", "09", ":", "::"}

// setupTextIDs attaches account to crm.tacct (text ids) holding awkwardTextIDs,
// owners rotating over the users.
func setupTextIDs(t *testing.T) *bundle {
	t.Helper()
	b := setup(t)
	b.exec(t, b.app, `CREATE TABLE crm.tacct (id text PRIMARY KEY, owner_id text NOT NULL REFERENCES crm.app_user,
		industry text, amount numeric, vip boolean, territories text[])`,
		`GRANT SELECT, TRIGGER ON crm.tacct TO `+ident(b.engineRole))
	owners := []string{"bob", "dave", "frank", "erin", "carol", "zed"}
	for i, id := range awkwardTextIDs {
		if _, err := b.app.Exec(context.Background(), `INSERT INTO crm.tacct VALUES ($1, $2, $3, NULL, NULL, NULL)`,
			id, owners[i%len(owners)], []string{"tech", "energy"}[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	b.mustAttach(t, textIDSpec)
	b.run(t)
	return b
}

// readableIDs is the ids of crm.tacct that access_level (by the application's
// id) says user may read, sorted in byte order.
func (b *bundle) readableIDs(t *testing.T, table, user string) []string {
	t.Helper()
	var want []string
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(array_agg(id::text ORDER BY id::text COLLATE "C"), '{}') FROM `+table+`
		WHERE recalc.access_level($1, 'account', id) <> 'none'`, user).Scan(&want); err != nil {
		t.Fatal(err)
	}
	return want
}

// walkAccessPages walks `recalc access --user U --object account --format json`
// with pages of limit, returning the ids in the order listed.
func (b *bundle) walkAccessPages(t *testing.T, user string, limit int) []string {
	t.Helper()
	var got []string
	after := ""
	for page := 0; page < 100; page++ {
		args := []string{"access", "--user", user, "--object", "account", "--format", "json", "--limit", itoa(limit)}
		if page > 0 {
			args = append(args, "--after", after)
		}
		out, err := b.recalc(args...)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		var p struct {
			Records []struct {
				Record, Level string
			} `json:"records"`
			NextAfter *string `json:"next_after"`
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("%q: %v\n%s", args, err, out)
		}
		for _, r := range p.Records {
			got = append(got, r.Record)
		}
		if p.NextAfter == nil {
			return got
		}
		after = *p.NextAfter
	}
	t.Fatalf("%s: the walk did not end", user)
	return nil
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestAccessPagesTextIDs: `recalc access --user U --object O` on an
// attached object with text ids lists, page by page, exactly the ids
// access_level says U may read, in byte order, each once: the empty id
// (key "account:") too, which the first page once took for "from the
// start" and skipped.
func TestAccessPagesTextIDs(t *testing.T) {
	t.Parallel()
	b := setupTextIDs(t)
	for _, u := range crmUsers {
		want := b.readableIDs(t, "crm.tacct", u)
		for _, limit := range []int{1, 3, 1000} {
			got := b.walkAccessPages(t, u, limit)
			if !slices.Equal(got, want) {
				t.Errorf("%s, pages of %d: recalc access lists %q, access_level gives %q", u, limit, got, want)
			}
		}
		// visible_ids, as docs/attach.md says to call it (a typed NULL first).
		var viaSQL []string
		if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(array_agg(id ORDER BY n), '{}')
			FROM recalc.visible_ids($1, 'account', 'read', NULL::text, 1000) WITH ORDINALITY v(id, level, next_after, n) WHERE id IS NOT NULL`, u).Scan(&viaSQL); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(viaSQL, want) {
			t.Errorf("%s: visible_ids(NULL::text) lists %q, access_level gives %q", u, viaSQL, want)
		}
	}
}

// TestAccessAfterInAnyForm: `recalc access --after ID` continues after
// the record the application calls ID, in whatever form access_level
// accepts for it ('01' is bigint 1, an upper-case uuid its record): the
// page after "01" is the page after "1" (it once listed 1 again, and a
// braced uuid skipped every later contact). An id that is not of the
// object's type is refused.
func TestAccessAfterInAnyForm(t *testing.T) {
	t.Parallel()
	b := setupAttachedNotRun(t)
	b.exec(t, b.app,
		`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (10, 'Umbrella', 'alice', 'tech'), (100, 'Hooli', 'alice', NULL)`,
		`INSERT INTO crm.contact VALUES ('3f0c7a52-0c3e-4c1e-9a55-4b2d8f1e6a01', 'alice', 'CTO', NULL),
		                                ('9a1b2c3d-0000-4000-8000-00000000000b', 'alice', 'Buyer', NULL)`,
		`INSERT INTO crm.contact_account VALUES ('3f0c7a52-0c3e-4c1e-9a55-4b2d8f1e6a01', 1), ('9a1b2c3d-0000-4000-8000-00000000000b', 2)`)
	b.run(t)
	page := func(object, after string) []string {
		out, err := b.recalc("access", "--user", "alice", "--object", object, "--format", "csv", "--after", after)
		if err != nil {
			t.Fatalf("--after %q: %v", after, err)
		}
		return []string{out}
	}
	var lv [2]string
	if err := b.admin.QueryRow(context.Background(), `SELECT recalc.access_level('alice', 'account', '01'),
		recalc.access_level('alice', 'contact', '3F0C7A52-0C3E-4C1E-9A55-4B2D8F1E6A01')`).Scan(&lv[0], &lv[1]); err != nil || lv[0] == "none" || lv[1] == "none" {
		t.Fatalf("access_level by '01' and an upper-case uuid: %q (%v), want levels", lv, err)
	}
	for _, c := range []struct {
		object, canonical string
		forms             []string
	}{
		{"account", "1", []string{"01", "+1", " 1"}},
		{"account", "10", []string{"010"}},
		{"contact", "3f0c7a52-0c3e-4c1e-9a55-4b2d8f1e6a01", []string{"3F0C7A52-0C3E-4C1E-9A55-4B2D8F1E6A01", "{3f0c7a52-0c3e-4c1e-9a55-4b2d8f1e6a01}", "3f0c7a520c3e4c1e9a554b2d8f1e6a01"}},
	} {
		want := page(c.object, c.canonical)
		if len(want) != 1 || want[0] == "" {
			t.Fatalf("%s --after %s: no page", c.object, c.canonical)
		}
		for _, f := range c.forms {
			if got := page(c.object, f); !slices.Equal(got, want) {
				t.Errorf("%s --after %q: %q, want the page after %q: %q", c.object, f, got, c.canonical, want)
			}
		}
	}
	if out, err := b.recalc("access", "--user", "alice", "--object", "account", "--after", "abc"); err == nil || !strings.Contains(err.Error(), "not an id of object") {
		t.Errorf("--after abc on bigint ids: %v\n%s, want it refused", err, out)
	}
}
