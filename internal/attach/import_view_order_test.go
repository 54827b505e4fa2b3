package attach_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// viewAccountSpec is crmSpec with account attached through a view over
// crm.account (viewAccount), which the engine owns.
var viewAccountSpec = strings.Replace(crmSpec,
	`"table": "crm.account", "id": "id", "owner": "owner_id", "parent": null,
   "fields": ["industry", "amount", "vip"], "territories": "territories"}`,
	`"table": "crm_recalc.account_v", "id": "id", "owner": "owner_id", "parent": null,
   "fields": ["industry", "amount", "vip"], "territories": "territories", "capture": [{"table": "crm.account", "id": "id"}]}`, 1)

const viewAccount = `CREATE VIEW crm_recalc.account_v AS SELECT id, owner_id, industry, amount, vip, territories FROM crm.account`

// TestImportBesideAViewOwnerChange is TestImportBesideAnOwnerChange for an
// object attached through a view: application transaction A changes the
// owner of account:1 in the view's base table while import T merges a
// manual share for erin on it. A capture of a view's base table cannot
// tell an owner change (the view makes the owner), so it marked none: T's
// last absorb left A's write alone, and A, committed after T's first
// absorb and before T, had its wipe absorbed at the next run, which took
// erin's share though A committed first (found by attacking migration 072
// as the application's role). Now every write a view's capture logs holds
// the effects lock, and T's last absorb takes the writes logged for
// objects attached through views: A's wipe comes before erin's share, as
// for a table.
func TestImportBesideAViewOwnerChange(t *testing.T) {
	t.Parallel()
	if viewAccountSpec == crmSpec {
		t.Fatal("premise: viewAccountSpec attaches account through its view")
	}
	afterAbsorb := func(sql string) bool { return strings.Contains(sql, "CREATE TEMP TABLE stage (") }
	const reown = `UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`
	for _, tc := range []struct {
		name        string
		endBlocking bool // A ends once T waits for it at its last absorb; else after T's first absorb
		endAfter    bool // A rolls back once T waits for it at its last absorb, and is written again after T commits
		wantErin    bool
	}{
		{name: "committed after the import's first absorb", wantErin: true},
		{name: "committed while the import waits for it at its last absorb", endBlocking: true, wantErin: true},
		{name: "rolled back while the import waits for it, written again after the import", endAfter: true, wantErin: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t)
			b.exec(t, b.engine, viewAccount)
			b.mustAttach(t, viewAccountSpec)
			b.run(t)
			if _, err := testkit.ImportString(ctx, b.engine,
				`{"shares": [{"object": "account", "record": "account:1", "grantee": "user:carol", "access": "edit", "cause": "manual"}]}`); err != nil {
				t.Fatal(err)
			}
			b.run(t)

			h := &holdSQL{match: afterAbsorb, reached: make(chan struct{}), release: make(chan struct{})}
			if tc.endBlocking {
				h.match = func(string) bool { return false }
			}
			pool := tracedPool(t, b, h)
			defer h.free()
			a, _ := hold(t, b.app, reown)
			done := make(chan error, 1)
			go func() {
				_, err := store.ImportWith(ctx, pool, strings.NewReader(
					`{"shares": [{"object": "account", "record": "account:1", "grantee": "user:erin", "access": "edit", "cause": "manual"}]}`),
					model.DefaultLimits(), zerolog.Nop(), nil, store.Options{Merge: true, LockTimeout: 20 * time.Second})
				done <- err
			}()
			if tc.endBlocking {
				waitLockWait(t, b.admin, done, "the import to wait for the owner change at its last absorb")
			} else {
				select {
				case <-h.reached:
				case err := <-done:
					t.Fatalf("the import ended before its hold: %v", err)
				case <-time.After(30 * time.Second):
					t.Fatal("the import never reached its hold")
				}
			}
			if !tc.endAfter {
				if err := a.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			h.free()
			if tc.endAfter {
				// A holds the effects lock: T waits for it, so A must end.
				waitLockWait(t, b.admin, done, "the import to wait for the owner change at its last absorb")
				if err := a.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				t.Fatalf("import: %v", err)
			}
			if tc.endAfter {
				b.exec(t, b.app, reown)
			}
			b.run(t)
			if _, owner := b.recordOf(t, "account:1"); owner != "dave" {
				t.Errorf("account:1 owned by %q, want dave", owner)
			}
			var carol, erin bool
			if err := b.admin.QueryRow(ctx, `SELECT
				EXISTS (SELECT FROM recalc.share_input WHERE record = 'account:1' AND grantee = 'user:carol'),
				EXISTS (SELECT FROM recalc.share_input WHERE record = 'account:1' AND grantee = 'user:erin')`).Scan(&carol, &erin); err != nil {
				t.Fatal(err)
			}
			if carol {
				t.Errorf("carol's manual share, older than the owner change, kept")
			}
			if erin != tc.wantErin {
				t.Errorf("erin's manual share, imported beside the owner change: kept %v, want %v", erin, tc.wantErin)
			}
		})
	}
}
