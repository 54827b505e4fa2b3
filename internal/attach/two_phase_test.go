package attach_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestTwoPhaseCommitWrites: an application that commits in two phases
// (PREPARE TRANSACTION, then COMMIT PREPARED from any session, as XA
// transaction managers do). PostgreSQL refuses to prepare a transaction
// that sent a NOTIFY, so a write to an attached table with the
// notification on cannot be prepared (0A000); with recalc.notify = off it
// can (docs/attach.md). Such a transaction A changes an owner and deletes
// a row (each an effect on stored shares), and is prepared; B commits
// another write; the engine steps (a watch's fast path, an incremental
// run in chunks of one family), and A is committed, from another session,
// before the step or while it is held at one of its statements. A token
// taken after that commit is waited for, with watch steps until wait_fresh
// returns: then the shares A's effects drop are gone and the others kept,
// the feed names the two records whose access they changed, recalc.record
// mirrors the rows, and access is the oracle's and, after a run, a full
// run's. Skipped where the server allows no prepared
// transaction (max_prepared_transactions = 0, PostgreSQL's default: the
// throwaway cluster of scripts/db.sh allows some).
func TestTwoPhaseCommitWrites(t *testing.T) {
	t.Parallel()
	skipWithoutPreparedTransactions(t)
	for _, p := range []struct{ mode, point string }{
		{"fast", ""},
		{"fast", "recalc.attach_absorb_one"},
		{"fast", "DELETE FROM recalc.change WHERE seq = ANY"},
		{"run", "ORDER BY rid FOR UPDATE SKIP LOCKED"},
		{"run", "DELETE FROM recalc.change WHERE seq = ANY"},
	} {
		t.Run(p.mode+"/"+p.point, func(t *testing.T) {
			t.Parallel()
			twoPhaseCommitPoint(t, p.mode, p.point)
		})
	}
}

// TestTwoPhaseRollbackAcrossASwap: as TestTwoPhaseCommitWrites, but the
// prepared transaction A is rolled back (ROLLBACK PREPARED), by the
// application's own role from a session other than the one that prepared
// it (as an XA transaction manager's recovery does), while a full run that
// swaps new share tables in is held at its swap: none of A's effects is
// materialized, and every stored share and team entry is kept. Skipped
// where the server allows no prepared transaction.
func TestTwoPhaseRollbackAcrossASwap(t *testing.T) {
	t.Parallel()
	skipWithoutPreparedTransactions(t)
	twoPhaseEndPoint(t, "full", "DROP TABLE recalc.acl_share", "ROLLBACK", true)
}

// twoPhaseCommitPoint runs one history of TestTwoPhaseCommitWrites.
func twoPhaseCommitPoint(t *testing.T, mode, point string) {
	twoPhaseEndPoint(t, mode, point, "COMMIT", false)
}

// twoPhaseEndPoint runs one history of TestTwoPhaseCommitWrites or
// TestTwoPhaseRollbackAcrossASwap: A ends with end (COMMIT or ROLLBACK)
// PREPARED, by the application's role when byApp, else by a superuser. A
// committed A's effects are materialized, and the feed names both records
// whose access they changed; a rolled-back A's are not.
func twoPhaseEndPoint(t *testing.T, mode, point, end string, byApp bool) {
	ctx := context.Background()
	b := setupPaired(t)
	gid := "recalc_test_" + dbName(t, b.url) // prepared transactions are the cluster's: one name a database
	rollbackPreparedAtEnd(t, b, gid)
	if err := prepare(ctx, b, gid, "", `UPDATE crm.account SET industry = 'retail' WHERE id = 3`); sqlState(err) != "0A000" {
		t.Fatalf("a write to an attached table prepared with the notification on: %v, want SQLSTATE 0A000", err)
	}
	if err := prepare(ctx, b, gid, `SET recalc.notify = off`,
		`UPDATE crm.account SET owner_id = 'erin' WHERE id = 2`, `DELETE FROM support."case" WHERE id = 1`); err != nil {
		t.Fatalf("prepare A with recalc.notify = off: %v", err)
	}
	b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id) VALUES (8, 'B', 'erin')`,
		`INSERT INTO support."case" VALUES (21, 3, 'frank', 3, 'B')`) // B
	head, err := feed.Head(ctx, b.admin)
	if err != nil {
		t.Fatal(err)
	}
	var token int64
	commitA := func() {
		t.Helper()
		by := b.admin
		if byApp {
			by = b.app
		}
		b.exec(t, by, end+` PREPARED '`+gid+`'`)
		var err error
		if token, err = changes.FreshToken(ctx, b.admin); err != nil {
			t.Fatal(err)
		}
	}
	stepCommitting(t, b, point, func(pool *pgxpool.Pool) error { return pairedStep(ctx, pool, mode) }, commitA)
	waitFreshStepping(t, b, token)
	gone := []string{"share account:2 user:frank manual", "share case:1 user:frank manual"}
	want := slices.Clone(pairedStored)
	if end == "COMMIT" {
		want = slices.DeleteFunc(want, func(s string) bool { return slices.Contains(gone, s) })
		checkFeedNames(t, b, head, "account:2", "case:1")
	}
	if got := storedInputs(t, b); !slices.Equal(got, want) {
		t.Errorf("once wait_fresh returned, stored shares and team entries %v, want %v", got, want)
	}
	b.checkMirror(t, "once wait_fresh returned")
	b.checkStoredOracle(t, "once wait_fresh returned")
	b.raceCheckFull(t, "after a run")
}

// checkFeedNames fails t unless the feed, after cursor since, has a record
// entry for each of keys.
func checkFeedNames(t *testing.T, b *bundle, since int64, keys ...string) {
	t.Helper()
	entries, err := feed.Read(context.Background(), b.admin, since, feed.MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !slices.ContainsFunc(entries, func(e feed.Entry) bool { return e.Kind == feed.KindRecord && e.Key == k }) {
			t.Errorf("the feed after cursor %d names no record %s: %+v", since, k, entries)
		}
	}
}

// prepare runs stmts as the application, after set outside the
// transaction when not empty, in a transaction it prepares as gid.
func prepare(ctx context.Context, b *bundle, gid, set string, stmts ...string) error {
	c, err := b.app.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if set != "" {
		if _, err := c.Exec(ctx, set); err != nil {
			return err
		}
		defer c.Exec(ctx, `RESET recalc.notify`) //nolint:errcheck // the pool's next user sets what it needs
	}
	if _, err := c.Exec(ctx, `BEGIN`); err != nil {
		return err
	}
	for _, s := range append(stmts, `PREPARE TRANSACTION '`+gid+`'`) {
		if _, err := c.Exec(ctx, s); err != nil {
			_, _ = c.Exec(ctx, `ROLLBACK`)
			return err
		}
	}
	return nil
}

// TestAttachLockFailureNamesAPreparedTransaction: a prepared transaction
// (PREPARE TRANSACTION, not yet committed nor rolled back) that wrote
// support.case holds its lock with no session: `recalc attach` of the case
// waits for it, and past its 10 s fails naming it by its transaction id and
// role, which pg_prepared_xacts lists with the name to COMMIT or ROLLBACK
// PREPARED it by. It named "pid 0 (role unknown)": pg_blocking_pids
// reports a prepared transaction as process 0, which no session is. Skipped
// where the server allows no prepared transaction.
func TestAttachLockFailureNamesAPreparedTransaction(t *testing.T) {
	t.Parallel()
	skipWithoutPreparedTransactions(t)
	ctx := context.Background()
	b := setup(t)
	b.mustAttach(t, crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")]+"\n]}")
	gid := "recalc_test_" + dbName(t, b.url)
	rollbackPreparedAtEnd(t, b, gid)
	if err := prepare(ctx, b, gid, "", `UPDATE support."case" SET status = 'Open' WHERE id = 1`); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	var xid string
	if err := b.admin.QueryRow(ctx, `SELECT transaction::text FROM pg_prepared_xacts WHERE gid = $1`, gid).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	err := apply(ctx, b.engine, crmSpec)
	want := fmt.Sprintf("prepared transaction %s (role %s)", xid, b.appRole)
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "pid 0 ") {
		t.Errorf("attach beside a prepared transaction: %v; want a refusal naming %s", err, want)
	}
}

// skipWithoutPreparedTransactions skips the test where the server allows
// no prepared transaction (max_prepared_transactions = 0, PostgreSQL's
// default; the throwaway cluster of scripts/db.sh allows some).
func skipWithoutPreparedTransactions(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var prepared int
	if err := conn.QueryRow(ctx, `SELECT current_setting('max_prepared_transactions')::int`).Scan(&prepared); err != nil {
		t.Fatal(err)
	}
	if prepared == 0 {
		t.Skip("the server allows no prepared transaction (max_prepared_transactions = 0)")
	}
}

// rollbackPreparedAtEnd rolls the prepared transaction gid back when the
// test ends, if it is left: it would keep the database from being dropped.
func rollbackPreparedAtEnd(t *testing.T, b *bundle, gid string) {
	t.Cleanup(func() {
		ctx := context.Background()
		var left bool
		err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_prepared_xacts WHERE gid = $1)`, gid).Scan(&left)
		if err == nil && left {
			_, err = b.admin.Exec(ctx, `ROLLBACK PREPARED '`+gid+`'`)
		}
		if err != nil {
			t.Errorf("roll the prepared transaction back: %v", err)
		}
	})
}
