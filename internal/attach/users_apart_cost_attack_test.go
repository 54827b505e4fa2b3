package attach_test

import (
	"context"
	"testing"
	"time"
)

// TestUsersUnreadableRowsBoundedReads: the application's role writes its
// users table with values the engine's users view cannot read (here one
// row in 8 whose flag is 'maybe', under `(flag)::boolean`). Each such row
// fails closed (an inactive user), and the users' absorb reads the rows
// apart to find them, each read a sandboxed one of about 2 ms. Before
// migration 64 one unreadable row in every 8 made the absorb read every row
// alone: 10,000 users took 25 s an absorb, about 2.5 ms a user, so that
// past some 120,000 users every absorb ran past its 5 minutes and no user
// change, a deactivation included, was applied any more. The absorb now
// makes at most 1,000 reads apart, the ids left unread failing closed too,
// and the deactivation written beside the unreadable rows applies: carol,
// who read her account before, reads nothing after.
// pg_stat_user_functions counted 3,156 reads that returned here before
// migration 64 (a call that raises is not counted); sandboxedReads counts
// the failed reads too.
func TestUsersUnreadableRowsBoundedReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupFlagUsers(t, `SELECT u.id, u.role_id, (u.flag)::boolean AS active FROM crm.app_user u`)
	b.run(t)
	if l := levelOf(t, b, "carol", "account:3"); l != "all" {
		t.Fatalf("carol's access to her account:3 is %s before her deactivation, want all", l)
	}
	db := ident(dbName(t, b.url))
	b.exec(t, b.admin, `ALTER DATABASE `+db+` SET track_functions = 'pl'`)
	t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), `ALTER DATABASE `+db+` RESET track_functions`) })
	b.countFromHere(t)

	b.exec(t, b.app, `INSERT INTO crm.app_user (id, name, role_id, flag)
			SELECT 'n' || i, 'N', 'west', CASE WHEN i % 8 = 0 THEN 'maybe' ELSE 'true' END FROM generate_series(1, 4000) i`,
		`UPDATE crm.app_user SET flag = 'false' WHERE id = 'carol'`)
	start := time.Now()
	b.run(t)
	took := time.Since(start)
	reads := b.sandboxedReads(t)
	var stuck string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(string_agg(object || ' ' || coalesce(error_code, ''), ','), '') FROM recalc.attach_stuck`).Scan(&stuck); err != nil {
		t.Fatal(err)
	}
	t.Logf("absorb of 4,007 users, 500 of them unreadable: %d sandboxed reads, run took %v", reads, took)
	if reads == 0 || reads > 1010 {
		t.Errorf("%d sandboxed reads for 4,007 users, 500 of them unreadable; want at most 1,010", reads)
	}
	if stuck != "" || storedActive(t, b, "carol") || storedActive(t, b, "n8") {
		t.Errorf("stuck %q, carol active %v, n8 (unreadable) active %v; want nothing stuck, carol deactivated, n8 inactive",
			stuck, storedActive(t, b, "carol"), storedActive(t, b, "n8"))
	}
	// storedActive is false for a user that is not there at all: carol and
	// n8 must be users still, inactive (carol read as deactivated, or
	// closed as not read; n8 closed, with no role), and the deactivation
	// must have reached the share tables: carol reads nothing.
	users := storedUsers(t, b)
	carol, hasCarol := users["carol"]
	n8, hasN8 := users["n8"]
	if !hasCarol || carol["active"] != false || !hasN8 || n8["active"] != false || n8["role"] != nil {
		t.Errorf("stored users carol %v (present %v), n8 %v (present %v); want both present and inactive, n8 with no role", carol, hasCarol, n8, hasN8)
	}
	if l := levelOf(t, b, "carol", "account:3"); l != "none" {
		t.Errorf("carol's access to her account:3 is %s after her deactivation, want none", l)
	}
}
