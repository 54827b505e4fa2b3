package attach_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestReadsTakeApplicationIDs: for attached objects, access_level,
// visible_ids, `recalc access` and `recalc explain` take the application's
// own ids, of their own types (bigint accounts and cases whose ids collide,
// uuid contacts and opportunities), and agree with the reads by record key.
// They are called as a reader role made by `recalc grant reader`.
func TestReadsTakeApplicationIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttachedNotRun(t)
	b.exec(t, b.app,
		`INSERT INTO crm.contact VALUES ('3f0c7a52-0c3e-4c1e-9a55-4b2d8f1e6a01', 'erin', 'CTO', NULL),
		                                ('9a1b2c3d-0000-4000-8000-00000000000b', 'bob', 'Buyer', NULL)`,
		`INSERT INTO crm.contact_account VALUES ('3f0c7a52-0c3e-4c1e-9a55-4b2d8f1e6a01', 1), ('9a1b2c3d-0000-4000-8000-00000000000b', 2)`,
		`INSERT INTO crm.opportunity VALUES ('0d9e8f7a-1111-4222-8333-444455556666', 1, 'carol', 'won', 5000, '2027-01-31'),
		                                    ('7e6d5c4b-aaaa-4bbb-8ccc-dddddddddddd', 3, 'dave', 'open', 10, NULL)`,
		`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (10, 'Umbrella', 'erin', 'tech'), (100, 'Hooli', 'frank', NULL)`)
	b.run(t)
	b.checkOracle(t, "after the writes")

	var tok [4]byte
	_, _ = rand.Read(tok[:])
	readerRole := "attach_reader_" + hex.EncodeToString(tok[:])
	testdb.DropRoles(t, b.url, readerRole)
	var db string
	if err := b.admin.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.admin, `CREATE ROLE `+ident(readerRole)+` LOGIN NOSUPERUSER`, `GRANT CONNECT ON DATABASE `+ident(db)+` TO `+ident(readerRole))
	if _, err := b.recalc("grant", "reader", readerRole); err != nil {
		t.Fatalf("grant reader: %v", err)
	}
	reader := openPool(t, dburl.WithUser(b.url, readerRole))

	for _, o := range []struct{ object, idType string }{
		{"account", "bigint"}, {"case", "bigint"}, {"contact", "uuid"}, {"opportunity", "uuid"}, {"account", "text"},
	} {
		var keys []string
		if err := b.admin.QueryRow(ctx, `SELECT array_agg(id ORDER BY id) FROM recalc.acl_record WHERE object = $1`, o.object).Scan(&keys); err != nil || len(keys) < 2 {
			t.Fatalf("%s: records %q (%v), want two or more", o.object, keys, err)
		}
		prefix := o.object + ":"
		for _, u := range crmUsers {
			// access_level by the application's id equals access_level by key.
			var differ []string
			if err := reader.QueryRow(ctx, `SELECT coalesce(array_agg(k), '{}') FROM unnest($3::text[]) k
				WHERE recalc.access_level($1, $2, substr(k, length($2) + 2)::`+o.idType+`) IS DISTINCT FROM recalc.access_level($1, k)`,
				u, o.object, keys).Scan(&differ); err != nil {
				t.Fatalf("%s %s by %s id: %v", u, o.object, o.idType, err)
			}
			if len(differ) > 0 {
				t.Errorf("%s: access_level by the %s id differs from by key for %q", u, o.idType, differ)
			}
			// visible_ids, a page of one at a time, walks exactly the
			// records visible_records lists, as the application's ids.
			var want []string
			if err := reader.QueryRow(ctx, `SELECT coalesce(array_agg(substr(record, length($2) + 2) ORDER BY n), '{}')
				FROM recalc.visible_records($1, $2, 'read', NULL, 1000) WITH ORDINALITY v(record, level, next_after, n)`,
				u, o.object).Scan(&want); err != nil {
				t.Fatal(err)
			}
			var got []string
			var after *string
			for page := 0; ; page++ {
				if page > len(keys) {
					t.Fatalf("%s %s: visible_ids did not end after %d pages", u, o.object, page)
				}
				var id, next *string
				err := reader.QueryRow(ctx, `SELECT id::text, next_after::text FROM recalc.visible_ids($1, $2, 'read', $3::`+o.idType+`, 1)`,
					u, o.object, after).Scan(&id, &next)
				if err == pgx.ErrNoRows {
					break
				}
				if err != nil {
					t.Fatalf("%s %s: visible_ids: %v", u, o.object, err)
				}
				if id != nil {
					got = append(got, *id)
					after = id
				} else {
					after = next
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s %s: visible_ids by %s pages of one %q, visible_records %q", u, o.object, o.idType, got, want)
			}
			for _, id := range got {
				if strings.HasPrefix(id, prefix) {
					t.Errorf("%s %s: visible_ids returned the key %q, not the application's id", u, o.object, id)
				}
			}
		}
	}

	// An after of another type than the object's ids is refused, saying
	// which type to pass (an object not attached has text ids).
	for _, c := range []struct{ object, after, msg, hint string }{
		{"account", "NULL::uuid", "the ids of object 'account' are bigint, not uuid",
			"pass the id to continue after as bigint or text, and NULL::bigint for the first page"},
		{"lead", "NULL::bigint", "the ids of object 'lead' are text, not bigint",
			"pass the id to continue after as text, and NULL::text for the first page"},
	} {
		_, err := reader.Exec(ctx, `SELECT * FROM recalc.visible_ids('bob', $1, 'read', `+c.after+`, 10)`, c.object)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "22023" || pe.Message != c.msg || pe.Hint != c.hint {
			t.Errorf("visible_ids of %s after %s: %v (hint %q), want 22023 %q, hint %q", c.object, c.after, err, pg.Hint(err), c.msg, c.hint)
		}
	}
	var key string
	if err := reader.QueryRow(ctx, `SELECT recalc.record_key('account', '42') || ' ' || recalc.record_key('nosuch', 'x')`).Scan(&key); err != nil || key != "account:42 x" {
		t.Errorf("record_key: %q (%v), want account:42 and x", key, err)
	}
	// A number of any length is answered, not an overflow (22003): NULL past
	// a bigint, the number when the digits are leading zeros; and
	// access_level of such an id is none.
	for _, c := range []struct{ id, want string }{
		{"repeat('1', 200000)", "<nil>"}, {"repeat('9', 20)", "<nil>"}, {"repeat('0', 200000) || '42'", "account:42"}, {"'-9223372036854775808'", "account:-9223372036854775808"},
	} {
		var got *string
		var level string
		err := reader.QueryRow(ctx, `SELECT recalc.record_key('account', `+c.id+`), recalc.access_level('bob', 'account', `+c.id+`)`).Scan(&got, &level)
		if err != nil || deref(got) != c.want || level != "none" { // no account 42
			t.Errorf("record_key of %s: %s, access %s (%v), want %s and none", c.id, deref(got), level, err, c.want)
		}
	}

	// The command line: --object and --id name a record by the application's id.
	byID, err := b.recalc("access", "--user", "bob", "--object", "account", "--id", "1")
	if err != nil {
		t.Fatal(err)
	}
	byKey, err := b.recalc("access", "--user", "bob", "--record", "account:1")
	if err != nil || byID != byKey || strings.TrimSpace(byKey) != "all" {
		t.Errorf("access by id %q, by key %q (%v), want both all (bob owns account 1)", byID, byKey, err)
	}
	if _, err := b.recalc("access", "--user", "bob", "--object", "account", "--id", "999"); err == nil || !strings.Contains(err.Error(), `record "999" of object account does not exist`) {
		t.Errorf("access to a missing account: %v, want it named as missing", err)
	}
	// An attached object's missing record says what may keep a row from
	// being one (a soft delete its view filters, a write not absorbed yet)
	// and what to do, naming the source and no row.
	if _, err := b.recalc("access", "--user", "bob", "--object", "account", "--id", "999"); err == nil ||
		!strings.Contains(err.Error(), "object account is attached to crm.account, and a row of it is a record once recalc has absorbed its write (`recalc watch`") ||
		!strings.Contains(err.Error(), "such as a soft-deleted one its view filters, is no record") {
		t.Errorf("access to a missing attached account: %v, want the hint at absorbing and soft deletes", err)
	}
	if _, err := b.recalc("explain", "--user", "bob", "--object", "account", "--id", "999"); err == nil || !strings.Contains(err.Error(), "is attached to crm.account") {
		t.Errorf("explain of a missing attached account: %v, want the hint", err)
	}
	if _, err := b.recalc("access", "--user", "bob", "--object", "account", "--id", "account:1"); err == nil || !strings.Contains(err.Error(), `--id takes the application's id (1), not the record's key; or give --record account:1`) {
		t.Errorf("access to an attached record by its key given as --id: %v, want a hint at the application's id", err)
	}
	// A model file names an attached record by its key: an entry giving the
	// application's id is refused with the key it meant.
	for _, c := range []struct{ name, file, want string }{
		{"share", `{"shares": [{"object": "account", "record": "1", "grantee": "user:bob", "access": "read", "cause": "manual"}]}`,
			`share on record "1": record does not exist: records of attached objects are named by their keys: give "account:1"`},
		{"team entry", `{"teams": [{"record": "01", "user": "bob", "access": "edit"}]}`,
			`team entry on record "01": record does not exist: records of attached objects are named by their keys: give "account:1"`},
		{"share on no record", `{"shares": [{"object": "account", "record": "999", "grantee": "user:bob", "access": "read", "cause": "manual"}]}`,
			`share on record "999": record does not exist`},
	} {
		_, err := b.recalc("import", "--merge", tempFile(t, c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) || (c.name == "share on no record" && strings.Contains(err.Error(), "give")) {
			t.Errorf("import of a %s by the application's id: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := b.recalc("access", "--user", "bob", "--record", "1"); err == nil || !strings.Contains(err.Error(), `an attached object's records are keyed OBJECT:ID`) {
		t.Errorf("access to an attached record by its bare id: %v, want a hint at keys", err)
	}
	if _, err := b.recalc("explain", "--user", "bob", "--object", "acount", "--id", "1"); err == nil || !strings.Contains(err.Error(), `object "acount" does not exist: give one of account, `) {
		t.Errorf("explain of a misspelled object: %v, want the object named as missing", err)
	}
	out, err := b.recalc("explain", "--user", "bob", "--object", "account", "--id", "1")
	if err != nil || !strings.Contains(out, "account:1") || !strings.Contains(out, "owner") {
		t.Errorf("explain by id: %v\n%s", err, out)
	}
	var want string
	if err := reader.QueryRow(ctx, `SELECT 'record,level' || string_agg(E'\n' || substr(record, 6) || ',' || level, '' ORDER BY n) || E'\n'
		FROM recalc.visible_records('alice', 'case', 'read', NULL, 100) WITH ORDINALITY v(record, level, next_after, n)`).Scan(&want); err != nil {
		t.Fatal(err)
	}
	out, err = b.recalc("access", "--user", "alice", "--object", "case", "--format", "csv")
	if err != nil || out != want || !strings.Contains(out, "\n1,") || !strings.Contains(out, "\n2,") {
		t.Errorf("alice's cases: %v\n%q, want %q: cases 1 and 2 by the application's ids", err, out, want)
	}
	for _, args := range [][]string{
		{"explain", "--user", "bob", "--object", "account"},
		{"explain", "--user", "bob", "--record", "account:1", "--id", "1"},
		{"access", "--user", "bob", "--id", "1"},
	} {
		if _, err := b.recalc(args...); err == nil || !strings.Contains(err.Error(), "--id") {
			t.Errorf("%q: %v, want a usage error naming --id", args, err)
		}
	}
}

// deref is *s, or "<nil>".
func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
