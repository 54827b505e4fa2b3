package attach_test

import (
	"context"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/dburl"
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
// and the deactivation written beside the unreadable rows applies.
// pg_stat_user_functions counts the reads that returned (a call that
// raises is not counted): 3,156 here before migration 64.
func TestUsersUnreadableRowsBoundedReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupFlagUsers(t, `SELECT u.id, u.role_id, (u.flag)::boolean AS active FROM crm.app_user u`)
	b.run(t)
	db := ident(dbName(t, b.url))
	b.exec(t, b.admin, `ALTER DATABASE `+db+` SET track_functions = 'pl'`)
	t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), `ALTER DATABASE `+db+` RESET track_functions`) })
	b.engine.Close()
	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))

	b.exec(t, b.app, `INSERT INTO crm.app_user (id, name, role_id, flag)
			SELECT 'n' || i, 'N', 'west', CASE WHEN i % 8 = 0 THEN 'maybe' ELSE 'true' END FROM generate_series(1, 4000) i`,
		`UPDATE crm.app_user SET flag = 'false' WHERE id = 'carol'`)
	start := time.Now()
	b.run(t)
	took := time.Since(start)
	b.engine.Close() // its backends exit, and report their function counts
	var reads int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var n int64
		if err := b.admin.QueryRow(ctx, `SELECT pg_stat_clear_snapshot()::text, coalesce((SELECT calls FROM pg_stat_user_functions
				WHERE funcid = 'recalc.attach_sandboxed(text, text, text[])'::regprocedure), 0)`).Scan(new(string), &n); err != nil {
			t.Fatal(err)
		}
		if n > 0 && n == reads || time.Now().After(deadline) {
			break
		}
		reads = n
	}
	b.engine = openPool(t, dburl.WithUser(b.url, b.engineRole))
	var stuck string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(string_agg(object || ' ' || coalesce(error_code, ''), ','), '') FROM recalc.attach_stuck`).Scan(&stuck); err != nil {
		t.Fatal(err)
	}
	t.Logf("absorb of 4,007 users, 500 of them unreadable: %d sandboxed reads returned, run took %v", reads, took)
	if reads == 0 || reads > 1010 {
		t.Errorf("%d of the users' sandboxed reads returned for 4,007 users, 500 of them unreadable; want at most 1,010", reads)
	}
	if stuck != "" || storedActive(t, b, "carol") || storedActive(t, b, "n8") {
		t.Errorf("stuck %q, carol active %v, n8 (unreadable) active %v; want nothing stuck, carol deactivated, n8 inactive",
			stuck, storedActive(t, b, "carol"), storedActive(t, b, "n8"))
	}
}
