package attach_test

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/changes"
)

// catalogBlocks is what query reads of the shared buffers (pages hit or
// read) when it runs on conn, its statements planned and the catalogs
// cached by three runs before: EXPLAIN ANALYZE's count for the whole
// statement, the functions it calls and the statements they run included.
func catalogBlocks(t *testing.T, conn *pgxpool.Conn, query string) int {
	t.Helper()
	ctx := context.Background()
	for range 3 {
		if _, err := conn.Exec(ctx, query); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
	}
	var out string
	if err := conn.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+query).Scan(&out); err != nil {
		t.Fatalf("explain %s: %v", query, err)
	}
	var plans []struct {
		Plan struct {
			Hit  int `json:"Shared Hit Blocks"`
			Read int `json:"Shared Read Blocks"`
		}
	}
	if err := json.Unmarshal([]byte(out), &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain %s: %v\n%s", query, err, out)
	}
	return plans[0].Plan.Hit + plans[0].Plan.Read
}

// grownCatalog is what an application's schema adds to the catalogs that
// the checks of an attached table could read: 300 tables with a foreign
// key to crm.account (each gives it two triggers), and 60 enum types of
// 8 labels, one of them a column of each table.
const grownCatalog = `DO $$
BEGIN
    FOR i IN 1..60 LOOP
        EXECUTE format('CREATE TYPE crm.grown_e%s AS ENUM (%s)', i,
                       (SELECT string_agg(quote_literal('v' || j), ', ') FROM generate_series(1, 8) j));
    END LOOP;
    FOR i IN 1..300 LOOP
        EXECUTE format('CREATE TABLE crm.grown%s (id bigint PRIMARY KEY, account_id bigint REFERENCES crm.account, e crm.grown_e%s, name text)',
                       i, 1 + i % 60);
    END LOOP;
END $$`

// TestAbsorbChecksReadCatalogsByIndex: the checks of an absorb, that an
// object's capture is intact (attach_intact, at every absorb of the object)
// and the catalog fingerprints of every captured table (at every absorb
// and every idle check of recalc watch), read what they check by index:
// what they read does not grow with the database's catalogs. Before
// version 71 they read every trigger of an attached table (two for each
// foreign key that references it), the whole of pg_type at each level of
// the types they follow and the whole of pg_enum for each captured table,
// and scanned pg_class: one absorb of one id on an Odoo-style schema spent
// about 22 ms of its 25 to 40 in them (docs/attach.md).
func TestAbsorbChecksReadCatalogsByIndex(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// An enum column, so that the fingerprints follow the types.
	b.exec(t, b.app, `CREATE TYPE crm.mood AS ENUM ('sad', 'ok', 'happy')`, `ALTER TABLE crm.account ADD COLUMN mood crm.mood`)
	b.mustAttach(t, crmSpec)
	b.run(t)
	conn, err := b.engine.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	checks := []string{
		`SELECT recalc.attach_intact('account')`,
		`SELECT recalc.attach_intact('contact')`,
		`SELECT recalc.attach_fingerprints_changed()`,
	}
	before := make([]int, len(checks))
	for i, q := range checks {
		before[i] = catalogBlocks(t, conn, q)
	}
	b.exec(t, b.app, grownCatalog)
	for i, q := range checks {
		// An index may grow a level: a few blocks more.
		if after := catalogBlocks(t, conn, q); after > before[i]+before[i]/4 {
			t.Errorf("%s read %d blocks, %d before the catalogs grew: its reads grow with the catalogs", q, after, before[i])
		}
	}
}

// fingerprintCalls replaces recalc.attach_fingerprints with a function
// that counts its calls, then calls it; it returns the count so far.
func fingerprintCalls(t *testing.T, b *bundle) func() int64 {
	t.Helper()
	b.exec(t, b.engine, `CREATE SEQUENCE recalc.fingerprint_calls`,
		`ALTER FUNCTION recalc.attach_fingerprints() RENAME TO attach_fingerprints_counted`,
		`CREATE FUNCTION recalc.attach_fingerprints() RETURNS TABLE (object text, relid oid, fingerprint text)
		 LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
		 BEGIN
		     PERFORM nextval('recalc.fingerprint_calls');
		     RETURN QUERY SELECT * FROM recalc.attach_fingerprints_counted();
		 END $$`)
	return func() int64 {
		t.Helper()
		var n int64
		if err := b.engine.QueryRow(context.Background(),
			`SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM recalc.fingerprint_calls`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// TestFastPathFingerprintsOnce: recalc watch's fast path computes the
// catalog fingerprints once per absorb. It counted what waits, with them,
// and then attach_absorb_begin computed them again: every step that
// absorbed a write paid for them twice (version 71).
func TestFastPathFingerprintsOnce(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	calls := fingerprintCalls(t, b)
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`)
	var done []changes.Absorbed
	var ok bool
	if err := pgx.BeginFunc(context.Background(), b.engine, func(tx pgx.Tx) (err error) {
		done, ok, err = changes.Absorb(context.Background(), tx, 1000)
		return err
	}); err != nil || !ok || len(done) != 1 || !done[0].Absorbed {
		t.Fatalf("the fast path's absorb of one write: %v %v %v", done, ok, err)
	}
	if n := calls(); n != 1 {
		t.Errorf("the fast path's absorb of one write computed the fingerprints %d times, want once", n)
	}
	if _, owner := b.recordOf(t, "account:1"); owner != "dave" {
		t.Errorf("account:1 owned by %q after the absorb, want dave", owner)
	}
}

// TestFastPathLeavesWholeReadsToAJob: recalc watch's fast path absorbs no
// source whole and at most its batch of ids. Given more, its absorb returns
// ok false and changes nothing, a job's absorb does it: a captured table
// written without its capture (its fingerprint changed: here a GRANT, as
// benign as such a change gets), whether or not the object's absorb failed
// lately, a TRUNCATE, or more ids than the batch. The fingerprints, now
// counted in attach_absorb_begin (version 71), are not recorded then.
func TestFastPathLeavesWholeReadsToAJob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		app     []string // the application's statements
		stuck   bool     // account's absorb failed a moment ago
		maxKeys int
	}{
		{"fingerprint changed", []string{`GRANT SELECT ON crm.account TO PUBLIC`}, false, 1000},
		{"fingerprint changed, absorb failed lately", []string{`GRANT SELECT ON crm.account TO PUBLIC`}, true, 1000},
		{"truncate", []string{`TRUNCATE crm.opportunity`}, false, 1000},
		{"more ids than a batch", []string{`UPDATE crm.account SET vip = NOT coalesce(vip, false)`}, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t)
			b.exec(t, b.app, tc.app...)
			if tc.stuck {
				b.exec(t, b.engine, `INSERT INTO recalc.attach_stuck (object, error_code) VALUES ('account', '55P03')`)
			}
			state := func() string {
				t.Helper()
				var s string
				if err := b.admin.QueryRow(context.Background(), `SELECT
					(SELECT string_agg(object || ':' || relid || ':' || coalesce(fingerprint, '-'), ',' ORDER BY object, relid) FROM recalc.attach_capture)
					|| (SELECT coalesce(string_agg(seq || kind || coalesce(object, '-'), ',' ORDER BY seq), '') FROM recalc.change)`).Scan(&s); err != nil {
					t.Fatal(err)
				}
				return s
			}
			var pending bool
			if err := b.engine.QueryRow(context.Background(), `SELECT recalc.attach_fingerprints_changed()
				OR EXISTS (SELECT FROM recalc.change WHERE kind IN ('attached', 'attached_all'))`).Scan(&pending); err != nil || !pending {
				t.Fatalf("premise: a write waits to be absorbed: %v %v", pending, err)
			}
			was := state()
			var ok bool
			if err := pgx.BeginFunc(context.Background(), b.engine, func(tx pgx.Tx) (err error) {
				_, ok, err = changes.Absorb(context.Background(), tx, tc.maxKeys)
				return err
			}); err != nil || ok {
				t.Fatalf("the fast path's absorb: ok %v, %v; want ok false", ok, err)
			}
			if now := state(); now != was {
				t.Errorf("the fast path's absorb that handed over changed the fingerprints or the change log:\n%s\nwas\n%s", now, was)
			}
			b.run(t) // a job absorbs it
			b.checkOracle(t, "after the job")
		})
	}
}

// TestFingerprintsKeptByVersion71: version 71 computes the catalog
// fingerprints another way, and computes the same ones as version 48's
// definition did, so that the upgrade reads no source again: for a view
// over two tables, and enums reached through a domain over a domain, an
// array, a composite type and a multirange. Version 80 keeps them but for
// a source that has a composite type and the captures of a view that
// reads a row whole and casts to an enum no column has (crm.tone).
func TestFingerprintsKeptByVersion71(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app, `CREATE TYPE crm.mood AS ENUM ('sad', 'ok', 'happy')`,
		`CREATE DOMAIN crm.mood_d AS crm.mood`, `CREATE DOMAIN crm.mood_dd AS crm.mood_d`,
		`CREATE TYPE crm.mood_pair AS (a crm.mood_d[], b int)`, `CREATE TYPE crm.mood_range AS RANGE (subtype = crm.mood)`,
		`CREATE TYPE crm.stage AS ENUM ('new', 'won')`,
		`ALTER TABLE crm.opportunity ADD COLUMN m crm.mood_dd[]`, `ALTER TABLE crm.contact_account ADD COLUMN m crm.mood_pair`,
		`ALTER TABLE support."case" ADD COLUMN m crm.mood_multirange`,
		`ALTER TABLE crm.contact ADD COLUMN s crm.stage`, `ALTER TABLE crm.account ADD COLUMN m crm.mood`,
		`CREATE TYPE crm.tone AS ENUM ('calm', 'loud')`)
	b.exec(t, b.engine, `CREATE OR REPLACE VIEW crm_recalc.contact_v AS
		SELECT c.id, c.owner_id, CASE WHEN c.email = 'calm'::crm.tone::text THEN 'calm' ELSE coalesce(c.title, to_jsonb(c) ->> 'email') END AS title,
		       ca.account_id
		FROM crm.contact c LEFT JOIN crm.contact_account ca ON ca.contact_id = c.id`)
	b.mustAttach(t, crmSpec)
	b.run(t)
	ctx := context.Background()
	fingerprints := func() map[string]string {
		t.Helper()
		rows, err := b.engine.Query(ctx, `SELECT object || ':' || relid::regclass, fingerprint FROM recalc.attach_fingerprints()`)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		var k, v string
		if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { m[k] = v; return nil }); err != nil {
			t.Fatal(err)
		}
		return m
	}
	latest := fingerprints()
	b.exec(t, b.engine, migrationSQL(t, 71))
	now := fingerprints()
	b.exec(t, b.engine, migrationSQL(t, 48))
	before := fingerprints()
	if len(now) != 5 || !maps.Equal(now, before) {
		t.Fatalf("the fingerprints of version 71:\n%v\nof version 48:\n%v", now, before)
	}
	// Version 80 adds the attributes of the composite types followed, the
	// types a view's rule names and, under a whole-row read, every column:
	// only the source with a composite type (crm.mood_pair) and the
	// captures of the contact's view have other fingerprints.
	var tone string
	if err := b.engine.QueryRow(ctx, `SELECT string_agg(oid || ':' || xmin, ',' ORDER BY oid) FROM pg_enum WHERE enumtypid = 'crm.tone'::regtype`).Scan(&tone); err != nil {
		t.Fatal(err)
	}
	for k, fp := range now {
		if changed := latest[k] != fp; changed != strings.HasPrefix(k, "contact:") {
			t.Errorf("fingerprint of %s changed by version 80: %v (%q, was %q)", k, changed, latest[k], fp)
		}
		if strings.HasPrefix(k, "contact:") && (!strings.Contains(latest[k], tone) || !strings.Contains(latest[k], "|columns ")) {
			t.Errorf("version 80's fingerprint of %s: %q, want crm.tone's labels %q and every column", k, latest[k], tone)
		}
	}
	var labels [2]string
	if err := b.engine.QueryRow(ctx, `SELECT (SELECT string_agg(oid || ':' || xmin, ',' ORDER BY oid) FROM pg_enum WHERE enumtypid = 'crm.mood'::regtype),
		(SELECT string_agg(oid || ':' || xmin, ',' ORDER BY oid) FROM pg_enum WHERE enumtypid = 'crm.stage'::regtype)`).Scan(&labels[0], &labels[1]); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"account:crm.account": labels[0], "opportunity:crm.opportunity": labels[0],
		"contact:crm.contact_account": labels[0], `case:support."case"`: labels[0], "contact:crm.contact": labels[1]} {
		if fp := now[k]; !strings.HasSuffix(fp, "|"+want) {
			t.Errorf("fingerprint of %s: %q, want it to end with the enum's labels %q", k, fp, want)
		}
	}
}
