package attach_test

import (
	"context"
	"testing"

	"github.com/recalc-dev/recalc/internal/changes"
)

// TestTypeChangesSeenByFingerprints: the application's role changes a type
// of its own that an attached view depends on, or a column of a table the
// view reads a row of whole, writing no row, and the view then shows
// another industry: the source's fingerprint changes, so that wait_fresh
// waits and the next run reads the view again. Frank reads an account only
// through the "tech" rule (vip is NULL). Before version 80 the
// fingerprints followed the enums among the columns' types only, no
// composite type's attributes, and of a view's base table its id column
// only: an enum the view casts a text column to, an attribute added to a
// composite type (whose text a view may read whole, docs/attach.md), and a
// column renamed or dropped under to_jsonb(a) or a::text changed nothing
// they read, wait_fresh returned at once and runs kept the old access
// until a full run. The catalog stamp `recalc watch` polls moves too, so
// that the watch reads the view again within --catalog-poll: before
// version 80 it moved for the labels swapped alone (its digest of every
// label), and the watch saw the others at its --poll only.
func TestTypeChangesSeenByFingerprints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		app      []string // as the application, before attaching
		industry string   // the view's industry, an expression of a (crm.account)
		change   []string // as the application, once attached
		record   string
		before   string // Frank's access once attached
		want     string // after the change: what a full run gives
	}{
		{
			name:     "labels of an enum the view casts to swapped",
			app:      []string{`CREATE TYPE crm.sector AS ENUM ('tech', 'energy')`},
			industry: `CASE WHEN a.industry::crm.sector = 'tech' THEN 'tech' END`,
			change: []string{`ALTER TYPE crm.sector RENAME VALUE 'tech' TO 'swap'`,
				`ALTER TYPE crm.sector RENAME VALUE 'energy' TO 'tech'`, `ALTER TYPE crm.sector RENAME VALUE 'swap' TO 'energy'`},
			record: "account:2", before: "none", want: "read",
		},
		{
			name: "attribute added to a column's composite type",
			app: []string{`CREATE TYPE crm.kind AS (s text)`, `ALTER TABLE crm.account ADD COLUMN kind crm.kind`,
				`UPDATE crm.account SET kind = ROW(industry)`},
			industry: `btrim(a.kind::text, '()')`,
			change:   []string{`ALTER TYPE crm.kind ADD ATTRIBUTE since date`},
			record:   "account:1", before: "read", want: "none",
		},
		{
			name:     "attribute added to a composite type the view casts to",
			app:      []string{`CREATE TYPE crm.kind AS (s text)`},
			industry: `btrim(ROW(a.industry)::crm.kind::text, '()')`,
			change:   []string{`ALTER TYPE crm.kind ADD ATTRIBUTE since date`},
			record:   "account:1", before: "read", want: "none",
		},
		{
			name:     "column renamed under a view's JSON of the row",
			industry: `to_jsonb(a) ->> 'industry'`,
			change:   []string{`ALTER TABLE crm.account RENAME COLUMN industry TO sector`},
			record:   "account:1", before: "read", want: "none",
		},
		{
			name:     "column dropped under a view's text of the row",
			industry: `split_part(btrim(a::text, '()'), ',', 4)`, // id, name, owner_id, industry
			change:   []string{`ALTER TABLE crm.account DROP COLUMN name`},
			record:   "account:1", before: "read", want: "none",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t)
			b.exec(t, b.app, tc.app...)
			b.exec(t, b.app, `UPDATE crm.account SET vip = NULL`)
			b.exec(t, b.engine, `CREATE VIEW crm_recalc.account_v AS
				SELECT a.id, a.owner_id, `+tc.industry+` AS industry, a.amount, a.vip, a.territories FROM crm.account a`)
			b.mustAttach(t, driftSpec)
			b.run(t)
			level := func() string {
				t.Helper()
				var l string
				if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('frank', $1)`, tc.record).Scan(&l); err != nil {
					t.Fatal(err)
				}
				return l
			}
			if got := level(); got != tc.before {
				t.Fatalf("frank's access to %s once attached: %s, want %s", tc.record, got, tc.before)
			}
			stamp, changed := b.stampAndPrints(t)
			if changed {
				t.Fatal("a fingerprint differs from the one last absorbed before the change")
			}
			b.exec(t, b.app, tc.change...)
			if after, changed := b.stampAndPrints(t); after == stamp || !changed {
				t.Errorf("after the change: stamp moved %v, fingerprint changed %v; want both", after != stamp, changed)
			}
			token, err := changes.FreshToken(ctx, b.engine)
			if err != nil {
				t.Fatal(err)
			}
			if err := changes.WaitFresh(ctx, b.engine, token, 0); !changes.IsNotFresh(err) {
				t.Errorf("wait_fresh after the change, nothing absorbed, with frank's access to %s %s: %v; want RC001", tc.record, level(), err)
			}
			b.run(t)
			if got := level(); got != tc.want {
				t.Errorf("after the change and a run: frank's access to %s is %s, want %s", tc.record, got, tc.want)
			}
			b.full(t)
			if got := level(); got != tc.want {
				t.Fatalf("after a full run: frank's access to %s is %s, want %s", tc.record, got, tc.want)
			}
		})
	}
}
