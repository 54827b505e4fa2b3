package attach_test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// driftSpec attaches the account through crm_recalc.account_v, a view that
// reads the industry from an enum column, leaves out deleted accounts
// once redefined, and computes vip from the clock; the other objects as
// crmSpec.
var driftSpec = strings.Replace(crmSpec,
	`{"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "parent": null,
   "fields": ["industry", "amount", "vip"], "territories": "territories"}`,
	`{"object": "account", "table": "crm_recalc.account_v", "id": "id", "owner": "owner_id", "parent": null,
   "fields": ["industry", "amount", "vip"], "territories": "territories", "capture": [{"table": "crm.account", "id": "id"}]}`, 1)

const driftView = `CREATE OR REPLACE VIEW crm_recalc.account_v AS
    SELECT a.id, a.owner_id, a.sector::text AS industry, a.amount, coalesce(a.shared_until > now(), false) AS vip, a.territories
    FROM crm.account a`

// TestSourceDriftWithoutWrites: an attached view can show other rows while
// no row is written. A renamed enum label and a redefined view change the
// source's fingerprint, so the next run reads it again; a view that
// depends on the clock changes no catalog row, and a full run, which reads
// every attached source again, repairs it. Frank reads an account only
// through the "tech" rule (industry 'tech' or vip); Bob owns account 1.
func TestSourceDriftWithoutWrites(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		app    []string // as the application, before attaching
		change func(t *testing.T, b *bundle)
		user   string
		record string
		before string // the access once attached
		run    string // after the change and an incremental run
		full   string // after a full run
	}{
		{
			name: "enum label renamed",
			change: func(t *testing.T, b *bundle) {
				b.exec(t, b.app, `ALTER TYPE crm.sector RENAME VALUE 'tech' TO 'technology'`)
			},
			user: "frank", record: "account:1", before: "read", run: "none", full: "none",
		},
		{
			name: "view redefined",
			app:  []string{`UPDATE crm.account SET deleted = true WHERE id = 1`},
			change: func(t *testing.T, b *bundle) {
				b.exec(t, b.engine, driftView+` WHERE NOT a.deleted`)
			},
			user: "bob", record: "account:1", before: "all", run: "none", full: "none",
		},
		{
			name: "view reads the clock",
			app:  []string{`UPDATE crm.account SET shared_until = now() + interval '5 seconds' WHERE id = 3`},
			change: func(t *testing.T, b *bundle) {
				var until time.Time
				if err := b.admin.QueryRow(context.Background(), `SELECT shared_until FROM crm.account WHERE id = 3`).Scan(&until); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Until(until) + 100*time.Millisecond)
			},
			user: "frank", record: "account:3", before: "read", run: "read", full: "none",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.exec(t, b.app, `CREATE TYPE crm.sector AS ENUM ('tech', 'energy')`,
				`ALTER TABLE crm.account ADD COLUMN sector crm.sector, ADD COLUMN deleted boolean NOT NULL DEFAULT false,
				 ADD COLUMN shared_until timestamptz`,
				`UPDATE crm.account SET sector = industry::crm.sector, vip = NULL`)
			b.exec(t, b.app, tc.app...)
			b.exec(t, b.engine, driftView)
			b.mustAttach(t, driftSpec)
			b.run(t)
			level := func() string {
				t.Helper()
				var l string
				if err := b.admin.QueryRow(context.Background(), `SELECT recalc.access_level($1, $2)`, tc.user, tc.record).Scan(&l); err != nil {
					t.Fatal(err)
				}
				return l
			}
			if got := level(); got != tc.before {
				t.Fatalf("%s's access to %s once attached: %s, want %s", tc.user, tc.record, got, tc.before)
			}
			tc.change(t, b)
			b.run(t)
			if got := level(); got != tc.run {
				t.Errorf("after the change and a run: %s's access to %s is %s, want %s", tc.user, tc.record, got, tc.run)
			}
			b.full(t)
			if got := level(); got != tc.full {
				t.Errorf("after a full run: %s's access to %s is %s, want %s", tc.user, tc.record, got, tc.full)
			}
		})
	}
}
