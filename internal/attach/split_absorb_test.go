package attach_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TestParentAndChildrenSplitAcrossAbsorbs: application transaction A
// changes an account's owner (3, carol to erin) and moves a contact
// (controlled by its parent, through the view's join table) and a case
// under it, all in one commit, and stays open with the older xid while B
// commits writes to an account, a case and a contact, so that the step's
// absorb lists the three objects. A commits while the engine's step (a
// watch's fast path, a full run swapping or in place) is held before the
// n-th object's absorb (account, case, contact, in order): before the
// second or third, the account's absorb did not see A and the children's
// do (or the contact's alone), so the step materializes the children
// under the account's old owner and A's account row (and the case's)
// waits for the next step. The step must record that split as it is, and a
// token taken right after A's commit, once wait_fresh returns with steps
// of a watch, must find access equal to the oracle's for the
// application's rows and recalc.record mirroring them. Forced with a held
// query of the engine's (holdNth), each history a database of its own.
func TestParentAndChildrenSplitAcrossAbsorbs(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"fast", "full", "in place"} {
		for n := 1; n <= 3; n++ {
			t.Run(fmt.Sprintf("%s/absorb %d", mode, n), func(t *testing.T) {
				t.Parallel()
				splitAcrossAbsorbs(t, mode, n)
			})
		}
	}
}

// splitAcrossAbsorbs is one history of TestParentAndChildrenSplitAcrossAbsorbs:
// A commits while mode's step is held before its n-th object's absorb.
func splitAcrossAbsorbs(t *testing.T, mode string, n int) {
	ctx := context.Background()
	const contact = `'00000000-0000-0000-0000-000000000001'`
	b := setupAttached(t, `INSERT INTO crm.contact VALUES (`+contact+`, 'bob', 'CFO')`,
		`INSERT INTO crm.contact_account VALUES (`+contact+`, 1)`)
	a, _ := hold(t, b.app, `UPDATE crm.account SET owner_id = 'erin' WHERE id = 3`)
	for _, s := range []string{`UPDATE crm.contact_account SET account_id = 3 WHERE contact_id = ` + contact,
		`UPDATE support."case" SET account_id = 3 WHERE id = 1`} {
		if _, err := a.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id) VALUES (8, 'B', 'erin')`, // B
		`UPDATE support."case" SET priority = 5 WHERE id = 2`, `UPDATE crm.contact SET title = 'CEO' WHERE id = `+contact)
	var token int64
	commitA := commitThenToken(t, b, a, &token)
	stepCommitting(t, b, fmt.Sprintf("recalc.attach_absorb_one#%d", n), func(pool *pgxpool.Pool) error { return commitPointStep(ctx, pool, mode) }, commitA)
	// What the step absorbed of A: all of it held before the first
	// absorb; the children before the second; the contact before the third.
	want := []string{"erin", "account:3", "account:3"}
	switch n {
	case 2:
		want[0] = "carol"
	case 3:
		want[0], want[1] = "carol", "account:1"
	}
	got := make([]string, 3)
	if err := b.admin.QueryRow(ctx, `SELECT (SELECT owner FROM recalc.record WHERE id = 'account:3'),
		(SELECT parent FROM recalc.record WHERE id = 'case:1'),
		(SELECT parent FROM recalc.record WHERE id = 'contact:' || `+contact+`)`).Scan(&got[0], &got[1], &got[2]); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("after the step held before absorb %d: account:3's owner, case:1's and the contact's parents %v, want %v", n, got, want)
	}
	waitFreshStepping(t, b, token)
	b.checkOracle(t, "once wait_fresh returned")
	b.checkMirror(t, "once wait_fresh returned")
}
