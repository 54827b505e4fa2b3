package attach_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestAccessLevelInParallelQueries: record_key and the three-argument
// access_level, which calls it, are PARALLEL SAFE, so they must start no
// subtransaction (no EXCEPTION block): a query the planner runs in parallel
// workers (forced, or chosen with the costs a large table gives) would fail
// with "cannot start subtransactions during a parallel operation".
func TestAccessLevelInParallelQueries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	inTx := func(settings []string, q string) error {
		return pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
			for _, s := range settings {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
			}
			var v *string
			return tx.QueryRow(ctx, q).Scan(&v)
		})
	}
	for _, q := range []string{
		`SELECT recalc.record_key('account', '1')`,
		`SELECT recalc.access_level('bob', 'account', 1::bigint)`,
		`SELECT recalc.access_level('bob', 'account', '1')`,
	} {
		if err := inTx([]string{`SET LOCAL force_parallel_mode = on`}, q); err != nil {
			t.Errorf("%s under force_parallel_mode: %v", q, err)
		}
	}
	if err := inTx([]string{`SET LOCAL parallel_setup_cost = 0`, `SET LOCAL parallel_tuple_cost = 0`,
		`SET LOCAL min_parallel_table_scan_size = 0`, `SET LOCAL max_parallel_workers_per_gather = 2`},
		`SELECT count(*)::text FROM crm.account a WHERE recalc.access_level('bob', 'account', a.id) <> 'none'`); err != nil {
		t.Errorf("filtering accounts by access_level(bob, account, id) with a parallel plan: %v", err)
	}
}

// TestRecordKeyEdges: whitespace, signs, overflow and NULL.
func TestRecordKeyEdges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	for in, want := range map[string]string{
		" 1 ": "account:1", "+1": "account:1", "01": "account:1",
		"99999999999999999999": "<nil>", "1.0": "<nil>", "": "<nil>", "abc": "<nil>",
	} {
		var k *string
		if err := b.admin.QueryRow(ctx, `SELECT recalc.record_key('account', $1)`, in).Scan(&k); err != nil {
			t.Errorf("record_key(account, %q): %v", in, err)
			continue
		}
		got := "<nil>"
		if k != nil {
			got = *k
		}
		if got != want {
			t.Errorf("record_key(account, %q) = %s, want %s", in, got, want)
		}
	}
	var l string
	if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('bob', 'account', NULL::text)`).Scan(&l); err != nil || l != "none" {
		t.Errorf("access_level(bob, account, NULL): %q %v", l, err)
	}
	if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('bob', 'contact', 'NOT-A-UUID')`).Scan(&l); err != nil || l != "none" {
		t.Errorf("access_level(bob, contact, bad uuid): %q %v", l, err)
	}
	if out, err := b.recalc("access", "--user", "bob", "--object", "account", "--id", "99999999999999999999"); err == nil {
		t.Errorf("recalc access --id overflow: %q, want an error", out)
	}
	if out, err := b.recalc("access", "--user", "bob", "--object", "account", "--id", " 1"); err != nil {
		t.Errorf("recalc access --id ' 1': %q %v", out, err)
	}
}

// TestUsersNoopWriteKeepsFastPath: a write to a users-table column the
// spec does not read (a name, a last-login time) changes no user, logs no
// section change, and leaves `recalc watch`'s step on the fast path.
func TestUsersNoopWriteKeepsFastPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsersRun(t)
	live := engine.NewLive(engine.Options{}, 1000)
	for range 2 {
		if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	}
	jobs := func() int {
		var n int
		if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.job`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := jobs()
	slow := 0
	for i := range 5 {
		if err := tx(ctx, b.app, `UPDATE crm.app_user SET role_id = 'west' WHERE id = 'zed'`,
			`UPDATE crm.app_user SET role_id = NULL WHERE id = 'zed'`,
			`UPDATE crm.account SET amount = amount + 1 WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
		var logged int
		_ = b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.change WHERE object = 'users'`).Scan(&logged)
		t.Logf("step %d: users change rows logged %d", i, logged)
		rep, err := live.Step(ctx, b.engine, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Fast {
			slow++
		}
		_ = i
	}
	if slow > 0 {
		t.Errorf("%d of 5 watch steps after a users-table write that changes no user ran a job (jobs %d -> %d), not the fast path",
			slow, before, jobs())
	}
	// Nothing is left pending, and a later idle step stays idle.
	var pending int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.change`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Errorf("%d change rows left after the steps", pending)
	}
}

// TestUsersSyncTerminates: after a users write, repeated runs reach
// "nothing to do" (no self-perpetuating section change), and wait_fresh
// returns.
func TestUsersSyncTerminates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsersRun(t)
	b.exec(t, b.app, `UPDATE crm.app_user SET role_id = 'west' WHERE id = 'bob'`)
	b.run(t)
	if rep := b.run(t); !rep.Nothing {
		t.Errorf("a second run after the users write still had work: %+v", rep)
	}
	if _, err := b.admin.Exec(ctx, `SELECT recalc.wait_fresh(interval '1 s')`); err != nil {
		t.Errorf("wait_fresh after the runs: %v", err)
	}
	if u := storedUsers(t, b)["bob"]; u["role"] != "west" {
		t.Errorf("bob: %v", u)
	}
}

// TestNamedStubLimits: stubs for team/share users skip the checks rows
// get (empty id, over 1,024 bytes); a share_input grantee 'user:' must not
// make every job fail.
func TestNamedStubLimits(t *testing.T) {
	t.Parallel()
	b := setupUsersRun(t)
	long := strings.Repeat("x", 1100)
	b.exec(t, b.admin,
		`INSERT INTO recalc.share_input (record, object, grantee, access, cause) VALUES ('account:1', 'account', 'user:`+long+`', 1, 'manual')`)
	b.exec(t, b.app, `UPDATE crm.app_user SET role_id = 'west' WHERE id = 'bob'`)
	if _, err := engine.Run(context.Background(), b.engine, engine.Options{}, zerolog.Nop()); err != nil {
		t.Errorf("a run after a share names an over-long user id: %v", err)
	}
}
