package attach_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recalc-dev/recalc/internal/sharing"
)

// TestCompressedFieldsFailClosedCheaply: an attached field is bounded at
// 1 MiB, but storage compresses: repeat('a', 100000000) is stored in about
// 400 kB with lz4, which the application may pick for its columns. Before
// migration 070 a field was bounded as stored (pg_column_size), so each
// read of such a row (the absorb, each read apart) converted the whole
// value with to_jsonb before finding it over 1 MiB as text: seconds a
// field, so that three of them ran the absorb past its timeout, the object
// stuck and the revocation beside them waited. A string field is now
// bounded by its size as written (octet_length, read from the value's
// header without decompressing it): the row fails closed at once. The
// values are built as repeat(repeat(c, 10000), 10000), the same string:
// repeat copies its argument once an iteration, and the backend spent
// 0.95 s of processor time on repeat('a', 100000000), 0.70 s on this (most
// of it allocating and filling the 100 MB either way).
func TestCompressedFieldsFailClosedCheaply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, types, value string
	}{
		{"text and varchar", "text,varchar,text", `repeat(repeat('%c', 10000), 10000)`}, // repeat('%c', 100000000)
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			types := strings.Split(tc.types, ",")
			b.exec(t, b.app, fmt.Sprintf(`ALTER TABLE crm.account ADD COLUMN note1 %s COMPRESSION lz4, ADD COLUMN note2 %s COMPRESSION lz4,
				ADD COLUMN note3 %s COMPRESSION lz4`, types[0], types[1], types[2]))
			b.mustAttach(t, strings.Replace(crmSpec, `"fields": ["industry", "amount", "vip"], "territories"`,
				`"fields": ["industry", "amount", "vip", "note1", "note2", "note3"], "territories"`, 1))
			b.run(t)
			value := func(c string) string { return strings.ReplaceAll(tc.value, "%c", c) }
			appTx(t, b, `UPDATE crm.account SET note1 = `+value("a")+`, note2 = `+value("b")+`, note3 = `+value("c")+` WHERE id = 1`,
				`UPDATE crm.account SET owner_id = 'frank' WHERE id = 3`) // a revocation: account 3 leaves carol
			var stored int64
			if err := b.admin.QueryRow(context.Background(), `SELECT greatest(pg_column_size(note1), pg_column_size(note2), pg_column_size(note3))
				FROM crm.account WHERE id = 1`).Scan(&stored); err != nil || stored > 1<<20 {
				t.Fatalf("premise: the fields are stored in %d bytes (%v), want each under 1 MiB", stored, err)
			}
			start := time.Now()
			b.run(t)
			took := time.Since(start)
			t.Logf("the run absorbing 300 MB of compressed fields took %v", took)
			invalid, stuck := b.uaState(t, "account")
			if l := levelOf(t, b, "carol", "account:3"); l != "none" || stuck != "" || invalid != "account:1 values out of bounds or unreadable" {
				t.Errorf("after 300 MB of fields stored compressed and a revocation beside them: carol has %s to account:3 (want none), stuck %q (want none), invalid %q (want account:1 values out of bounds or unreadable)",
					l, stuck, invalid)
			}
			// Reading the values costs seconds each (7 s for 200 MB on a busy
			// 2-CPU machine); their headers, milliseconds.
			if took > 2*time.Second {
				t.Errorf("the run absorbing them took %v, want under 2 s: the values were decompressed", took)
			}
		})
	}
}

// TestLongTerritoryFailsClosed: an attached territory name is at most
// 1,024 bytes, as an id (migration 070). Before, neither an attached row
// nor recalc.record bounded a name's length (only their number), so that
// an attached row stored names of up to 1 GB in recalc.record, which
// every run reads. Now the row fails closed (values out of bounds), and
// recalc.record refuses names over 1,024,000 bytes together (23514); a
// longer name written there names no territory of the model.
func TestLongTerritoryFailsClosed(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	appTx(t, b, `UPDATE crm.account SET territories = ARRAY['north', repeat('t', 1025)] WHERE id = 2`,
		`UPDATE crm.account SET territories = ARRAY[repeat('u', 1024)] WHERE id = 1`,
		`UPDATE crm.account SET owner_id = 'frank' WHERE id = 3`)
	b.run(t)
	invalid, stuck := b.uaState(t, "account")
	if want := "account:1 " + sharing.InvalidTerritory + ",account:2 values out of bounds or unreadable"; invalid != want || stuck != "" {
		t.Errorf("after territory names of 1,024 and 1,025 bytes: invalid %q, want %q; stuck %q, want none", invalid, want, stuck)
	}
	var longest int
	if err := b.admin.QueryRow(context.Background(), `SELECT coalesce(max(octet_length(t)), 0) FROM recalc.record, unnest(territories) t`).Scan(&longest); err != nil {
		t.Fatal(err)
	}
	if longest != 1024 {
		t.Errorf("the longest territory name stored is %d bytes, want 1024", longest)
	}
	for _, tc := range []struct {
		name, id, territory string
		code                string
	}{
		{"600 names of 2,000 bytes", "account:97", `ARRAY(SELECT repeat('t', 2000) FROM generate_series(1, 600))`, "23514"},
		{"one of 1,025 bytes", "account:98", `ARRAY[repeat('t', 1025)]`, ""},
		{"one of 1,024 bytes", "account:99", `ARRAY[repeat('t', 1024)]`, ""},
	} {
		_, err := b.engine.Exec(context.Background(), `INSERT INTO recalc.record (id, object, owner, territories)
			VALUES ($1, 'account', 'bob', array_prepend('north', `+tc.territory+`))`, tc.id)
		var pgErr *pgconn.PgError
		got := ""
		if errors.As(err, &pgErr) {
			got = pgErr.Code
		} else if err != nil {
			t.Fatal(err)
		}
		if got != tc.code {
			t.Errorf("recalc.record with territory names %s: %v, want SQLSTATE %q", tc.name, err, tc.code)
		}
	}
}

// longObject is an object name of 63 bytes, the most an attached object
// takes. Prefixed to a value of 1,073,741,759 bytes (the most an update
// stores: 64 bytes more is the 1 GB PostgreSQL allocates at most; pglz
// compresses it to 12 MB), it passes 1 GB.
var longObject = strings.Repeat("x", 60) + "__c"

// TestHugeParentFailsClosed: attach_rows_sql prefixed a row's parent with
// its object's name before checking its length (migration 027), so that a
// parent near 1 GB made the read fail with XX000 ("invalid memory alloc
// request size"), which no read apart takes: the object was stuck, and
// the revocation beside the row waited. Now the parent's length is checked
// first, from the value's header (migration 070): the row fails closed
// alone. Storing the value takes 2 GB of the server's memory: not under
// -short. It is built as 2,445,881 copies of 439 '1's (439 × 2,445,881 =
// 1,073,741,759), the string repeat('1', 1073741759) makes: repeat copies
// its argument once an iteration, about 2.5 ns of the backend's processor
// time each (0.25 s a 100 MB value of one byte repeated). Most of the
// test's server time is storing the value (pglz).
func TestHugeParentFailsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("stores a value of 1 GB")
	}
	t.Parallel()
	b := setup(t)
	if _, err := b.recalc("import", "--merge", tempFile(t, `{"objects": [{"name": "`+longObject+`", "internal_owd": "private"},
		{"name": "line__c", "parent": "`+longObject+`", "internal_owd": "private"}]}`)); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `CREATE TABLE crm.line_parent (id text PRIMARY KEY, owner_id text NOT NULL)`,
		`CREATE TABLE crm.line (id bigint PRIMARY KEY, owner_id text NOT NULL, ref text)`,
		`GRANT SELECT, TRIGGER ON crm.line_parent, crm.line TO `+ident(b.engineRole),
		`INSERT INTO crm.line_parent VALUES ('p1', 'bob')`, `INSERT INTO crm.line VALUES (1, 'bob', 'p1'), (2, 'dave', 'p1')`)
	b.mustAttach(t, `{"objects": [{"object": "`+longObject+`", "table": "crm.line_parent", "id": "id", "owner": "owner_id", "fields": []},
		{"object": "line__c", "table": "crm.line", "id": "id", "owner": "owner_id", "parent": "ref", "fields": []}]}`)
	b.run(t)
	if l := levelOf(t, b, "dave", "line__c:2"); l != "all" {
		t.Fatalf("premise: dave has %s to his line__c:2, want all", l)
	}
	appTx(t, b, `UPDATE crm.line SET ref = repeat(repeat('1', 439), 2445881) WHERE id = 1`, `UPDATE crm.line SET owner_id = 'erin' WHERE id = 2`)
	b.run(t)
	invalid, stuck := b.uaState(t, "line__c")
	if l := levelOf(t, b, "dave", "line__c:2"); l == "all" || stuck != "" || invalid != "line__c:1 values out of bounds or unreadable" {
		t.Errorf("after a parent of 1 GB and a revocation beside it: dave has %s to line__c:2, which erin owns now; stuck %q, want none; invalid %q, want line__c:1 values out of bounds or unreadable",
			l, stuck, invalid)
	}
}
