package attach_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/locks"
)

// waitBlocked waits until a session is blocked by the session pid.
func waitBlocked(t *testing.T, obs *pgxpool.Pool, pid uint32, done <-chan struct{}, what string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("the run ended before %s", what)
		default:
		}
		var blocked bool
		if err := obs.QueryRow(context.Background(),
			`SELECT EXISTS (SELECT FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid)))`, pid).Scan(&blocked); err != nil {
			t.Fatal(err)
		}
		if blocked {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// hold begins a transaction on its own connection of pool and runs stmt in
// it; the caller ends it.
func hold(t *testing.T, pool *pgxpool.Pool, stmt string) (pgx.Tx, uint32) {
	t.Helper()
	ctx := context.Background()
	c, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Release)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) }) //nolint:errcheck // no-op once ended
	if stmt != "" {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	return tx, c.Conn().PgConn().PID()
}

// TestRaceAttachedWrite: application transaction A changes the owner of an
// attached account and stays open, B commits another write, a run starts,
// and A commits at each point of it: before it, while planning waits for
// the model lock, while the absorb waits for its object's lock, while a
// chunk waits, and after the job. A's write is in the run exactly when it
// committed before the absorb read the change log; otherwise its change row
// stays for the next run. After one more run the records mirror the rows,
// and access is the oracle's.
func TestRaceAttachedWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		holder string // what holds the run where A commits
		inRun  bool   // A's write is materialized by the run
	}{
		{"before the run", "", true},
		{"while planning waits for the model lock", "model", true},
		{"while the absorb waits for its object's lock", `SELECT 1 FROM recalc.attachment WHERE object = 'account' FOR UPDATE`, true},
		{"while a chunk waits", `SELECT FROM recalc.acl_record WHERE id = 'account:2' FOR UPDATE`, false},
		{"after the job", "after", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t)
			ctx := context.Background()
			a, _ := hold(t, b.app, `UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`)
			if tc.holder == "" {
				if err := a.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'carol' WHERE id = 2`) // B
			var holder pgx.Tx
			var pid uint32
			switch tc.holder {
			case "", "after":
			case "model":
				holder, pid = hold(t, b.engine, "")
				if err := locks.XactLock(ctx, holder, locks.Model); err != nil {
					t.Fatal(err)
				}
			default:
				holder, pid = hold(t, b.engine, tc.holder)
			}
			done := make(chan struct{})
			var rep *engine.Report
			var runErr error
			go func() {
				defer close(done)
				rep, runErr = engine.Run(ctx, b.engine, engine.Options{Workers: 2, ChunkSize: 1, LockTimeout: 20 * time.Second}, zerolog.Nop())
			}()
			if holder != nil {
				waitBlocked(t, b.admin, pid, done, "the run to wait for "+tc.name)
				if err := a.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				if err := holder.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
			}
			<-done
			if runErr != nil {
				t.Fatalf("run: %v", runErr)
			}
			if tc.holder == "after" {
				if err := a.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var owner string
			if err := b.admin.QueryRow(ctx, `SELECT owner FROM recalc.record WHERE id = 'account:1'`).Scan(&owner); err != nil {
				t.Fatal(err)
			}
			if got := owner == "erin"; got != tc.inRun {
				t.Errorf("job %d: account:1 owned by %q after the run; A's write in it: %v, want %v", rep.Job, owner, got, tc.inRun)
			}
			if waiting := b.waiting(t, "account"); waiting == tc.inRun {
				t.Errorf("A's change row waiting after the run: %v, want %v", waiting, !tc.inRun)
			}
			b.run(t)
			b.checkMirror(t, "after one more run")
			b.checkOracle(t, "after one more run")
		})
	}
}

// TestFreshTokenCoversAttachedWrites: a token taken after a write to an
// attached table waits until that write is materialized: not when it is
// only logged, nor when it is mirrored into recalc.record (or, for the
// users table, into recalc.attached_user) but its share rows are not
// written yet (calculation deferred), and it returns once they are.
func TestFreshTokenCoversAttachedWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, write string
		setup       func(*testing.T) *bundle
		check       func(*bundle, *testing.T, string) // access against the oracle's
	}{
		{"an owner change", `UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`, func(t *testing.T) *bundle {
			b := setupAttachedNotRun(t)
			return b
		}, (*bundle).checkOracle},
		{"a user's role change", `UPDATE crm.app_user SET role_id = 'west' WHERE id = 'bob'`, setupUsers, (*bundle).checkUsers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := tc.setup(t)
			b.run(t)
			ctx := context.Background()
			b.exec(t, b.app, tc.write)
			var token int64
			if err := b.engine.QueryRow(ctx, `SELECT recalc.fresh_token()`).Scan(&token); err != nil {
				t.Fatal(err)
			}
			waitFresh := func() error {
				_, err := b.engine.Exec(ctx, `SELECT recalc.wait_fresh($1, interval '50 ms')`, token)
				return err
			}
			if err := waitFresh(); !changes.IsNotFresh(err) {
				t.Fatalf("wait_fresh with the write only logged: %v, want not fresh", err)
			}
			if _, err := b.recalc("defer"); err != nil {
				t.Fatal(err)
			}
			b.run(t) // absorbs, calculates nothing
			if b.waiting(t, "account") || b.waiting(t, "users") {
				t.Fatal("a deferred run did not absorb the write")
			}
			if err := waitFresh(); !changes.IsNotFresh(err) {
				t.Fatalf("wait_fresh with the write absorbed but not calculated: %v, want not fresh", err)
			}
			if _, err := b.recalc("resume"); err != nil {
				t.Fatal(err)
			}
			b.run(t)
			if err := waitFresh(); err != nil {
				t.Fatalf("wait_fresh after the run: %v", err)
			}
			tc.check(b, t, "after the run")
		})
	}
}

// waiting reports whether object has change rows waiting to be absorbed.
func (b *bundle) waiting(t *testing.T, object string) bool {
	t.Helper()
	var w bool
	if err := b.admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM recalc.change WHERE kind IN ('attached', 'attached_all') AND object = $1)`, object).Scan(&w); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestAbsorbReadsByOid: the owner of an attached table renames it and puts
// a view calling its own function under the old name. The absorb never
// reads by name, so the function never runs as the engine; and the table
// no longer having its name, the capture is not intact (version 50): the
// write waits, unabsorbed, until the spec is attached again.
func TestAbsorbReadsByOid(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	ctx := context.Background()
	b.exec(t, b.app, `ALTER TABLE crm.account RENAME TO account_x`,
		`CREATE FUNCTION crm.evil() RETURNS text LANGUAGE plpgsql AS $$
		 BEGIN EXECUTE format('GRANT ALL ON SCHEMA recalc TO %I', session_user); RETURN 'erin'; END $$`,
		`CREATE VIEW crm.account AS SELECT id, name, crm.evil() AS owner_id, industry, amount, vip, territories FROM crm.account_x`,
		`GRANT SELECT ON crm.account TO `+ident(b.engineRole),
		`INSERT INTO crm.account_x (id, name, owner_id) VALUES (70, 'Renamed', 'bob')`)
	rep := b.run(t)
	var pwned bool
	if err := b.admin.QueryRow(ctx, `SELECT has_schema_privilege($1, 'recalc', 'CREATE')`, b.appRole).Scan(&pwned); err != nil || pwned {
		t.Fatalf("the application's function ran as the engine: CREATE on schema recalc %v (%v)", pwned, err)
	}
	if object, _ := b.recordOf(t, "account:70"); object != "" || !slices.Equal(rep.NotAbsorbed, []string{"account"}) {
		t.Fatalf("after the rename, account:70 is a record of %q and %v not absorbed; want the write to wait, unabsorbed", object, rep.NotAbsorbed)
	}
}

// TestAbsorbSkipsWhatItCannotRead: an attached table under row-level
// security that the engine's role does not bypass cannot be re-read (with
// row_security off, PostgreSQL refuses rather than filter). Its writes wait,
// the other objects' writes go on, and once the engine bypasses row-level
// security (docs/attach.md) they are absorbed.
func TestAbsorbSkipsWhatItCannotRead(t *testing.T) {
	t.Parallel()
	b := setupOwnRoles(t)
	b.mustAttach(t, crmSpec)
	b.run(t)
	b.exec(t, b.app, `ALTER TABLE crm.account ENABLE ROW LEVEL SECURITY`,
		`UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`,
		`UPDATE support."case" SET owner_id = 'carol' WHERE id = 1`)
	b.run(t)
	if !b.waiting(t, "account") {
		t.Fatal("the write to a table the engine cannot read was absorbed or lost")
	}
	if _, owner := b.recordOf(t, "case:1"); owner != "carol" || b.waiting(t, "case") {
		t.Fatalf("another object's write waits too: case:1 owned by %q", owner)
	}
	blocked := func() bool {
		var engine string
		var blocked bool
		err := pgx.BeginFunc(context.Background(), b.engine, func(tx pgx.Tx) (err error) {
			engine, blocked, err = access.EngineBlocked(context.Background(), tx, "crm.account")
			return err
		})
		if err != nil || engine != b.engineRole {
			t.Fatalf("EngineBlocked: engine %q (%v), want %q", engine, err, b.engineRole)
		}
		return blocked
	}
	if !blocked() {
		t.Fatal("rls enable would not warn that the engine cannot read the attached table")
	}
	b.exec(t, b.admin, `ALTER ROLE `+ident(b.engineRole)+` BYPASSRLS`)
	if blocked() {
		t.Fatal("rls enable would warn though the engine bypasses row-level security")
	}
	b.run(t)
	if _, owner := b.recordOf(t, "account:1"); owner != "erin" || b.waiting(t, "account") {
		t.Fatalf("after BYPASSRLS: account:1 owned by %q", owner)
	}
	b.checkOracle(t, "after the absorb")
}

// TestStuckObjectStaysOutOfTheWay: an attached table the engine cannot read
// (row-level security it does not bypass) has more writes logged than a
// fast batch holds. Once a try has failed, the fast path of `recalc watch`
// absorbs the other objects' writes without a job, counts itself idle while
// only the stuck object's writes wait, and wait_fresh fails at once with
// RC002; `attach --list` says why. Absorbing notifies no one (the writes it
// mirrors are read by its own transaction). Once the engine may read the
// table and the spec is applied again, the very next step absorbs its
// writes and forgets that it was stuck.
func TestStuckObjectStaysOutOfTheWay(t *testing.T) {
	t.Parallel()
	b := setupOwnRoles(t)
	b.mustAttach(t, crmSpec)
	b.run(t)
	ctx := context.Background()
	b.exec(t, b.app, `ALTER TABLE crm.account ENABLE ROW LEVEL SECURITY`,
		`UPDATE crm.account SET owner_id = 'erin'`) // 3 ids, more than a batch of 2
	live := engine.NewLive(engine.Options{}, 2)
	step := func(what string) *engine.LiveReport {
		t.Helper()
		rep, err := live.Step(ctx, b.engine, zerolog.Nop())
		if err != nil {
			t.Fatalf("%s: step: %v", what, err)
		}
		return rep
	}
	stuck := func() (code string, ok bool) {
		t.Helper()
		err := b.admin.QueryRow(ctx, `SELECT coalesce(error_code, 'not intact') FROM recalc.attach_stuck WHERE object = 'account'`).Scan(&code)
		if err == pgx.ErrNoRows {
			return "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		return code, true
	}
	if rep := step("first try"); rep.Run == nil {
		t.Fatalf("first step: %+v, want a job (more ids than a batch)", rep)
	}
	if code, ok := stuck(); !ok || code != "42501" {
		t.Fatalf("attach_stuck after the failed try: %q %v, want 42501", code, ok)
	}
	listener, err := b.engine.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Release()
	if _, err := listener.Exec(ctx, `LISTEN recalc_changes`); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `UPDATE support."case" SET owner_id = 'carol' WHERE id = 1`)
	drain(listener, 10*time.Second) // the application's own notification
	if _, err := b.engine.Exec(ctx, `SELECT recalc.wait_fresh(interval '200 ms')`); !changes.IsNotFresh(err) {
		t.Fatalf("wait_fresh with another object's write pending too: %v, want RC001 (not RC002: that write will be materialized)", err)
	}
	if rep := step("a write to another object"); !rep.Fast || rep.Run != nil || rep.Changes == 0 {
		t.Fatalf("the other object's write: %+v, want the fast path", rep)
	}
	if _, owner := b.recordOf(t, "case:1"); owner != "carol" {
		t.Fatalf("case:1 owned by %q after the fast step, want carol", owner)
	}
	if drain(listener, 300*time.Millisecond) {
		t.Fatal("the fast path's absorb notified recalc_changes of the records it wrote")
	}
	lockXmax := func() (x string) {
		t.Helper()
		if err := b.admin.QueryRow(ctx, `SELECT xmax::text FROM recalc.engine_lock WHERE name = 'model'`).Scan(&x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	before := lockXmax()
	if rep := step("nothing else"); !rep.Fast || rep.Run != nil || rep.Changes != 0 || lockXmax() != before {
		t.Fatalf("with only the stuck object's writes left: %+v, want an idle fast step, which takes no lock", rep)
	}
	start := time.Now()
	_, err = b.engine.Exec(ctx, `SELECT recalc.wait_fresh(interval '5 s')`)
	if !changes.IsCaptureStuck(err) || time.Since(start) > 2*time.Second {
		t.Fatalf("wait_fresh behind the stuck object's writes: %v after %v, want RC002 at once", err, time.Since(start))
	}
	if list, err := b.recalc("attach", "--list"); err != nil || !strings.Contains(list, "WRITES NOT ABSORBED (SQLSTATE 42501)") {
		t.Fatalf("attach --list does not say account's writes wait: %q (%v)", list, err)
	}
	if st, err := b.recalc("status"); err != nil || !strings.Contains(st, "Writes to attached object account NOT ABSORBED") {
		t.Fatalf("status does not say account's writes wait: %q (%v)", st, err)
	}
	if rep := b.run(t); !slices.Equal(rep.NotAbsorbed, []string{"account"}) {
		t.Fatalf("a run with account's writes waiting reports %+v, want not_absorbed [account]", rep)
	}
	b.exec(t, b.admin, `ALTER ROLE `+ident(b.engineRole)+` BYPASSRLS`)
	drain(listener, 300*time.Millisecond)
	b.mustAttach(t, crmSpec) // the same spec: says the cause is fixed
	if _, ok := stuck(); ok {
		t.Fatal("applying the spec again did not forget that account was stuck")
	}
	if !drain(listener, 10*time.Second) {
		t.Fatal("applying the spec again did not wake recalc watch")
	}
	step("after the fix") // within StuckRetry of the last try: only a forgotten object is tried
	if _, ok := stuck(); ok || b.waiting(t, "account") {
		t.Fatal("the step after the fix did not absorb account's writes")
	}
	b.run(t)
	if _, owner := b.recordOf(t, "account:3"); owner != "erin" {
		t.Fatalf("account:3 owned by %q after the absorb, want erin", owner)
	}
	if _, err := b.engine.Exec(ctx, `SELECT recalc.wait_fresh(interval '5 s')`); err != nil {
		t.Fatalf("wait_fresh once absorbed: %v", err)
	}
	b.checkOracle(t, "after the absorb")
}

// drain reports whether conn heard a notification within first, and
// consumes those that came, until none came for 300 ms. A notification
// expected is waited for up to 10 s: its delivery to the listening
// session is asynchronous (PostgreSQL signals that backend), and a loaded
// machine may schedule it past 300 ms, which then heard it at the next
// drain, one that wants none.
func drain(conn *pgxpool.Conn, first time.Duration) bool {
	heard := false
	for wait := first; ; wait = 300 * time.Millisecond {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, err := conn.Conn().WaitForNotification(ctx)
		cancel()
		if err != nil {
			return heard
		}
		heard = true
	}
}

// TestLockedObjectIsWaitedThrough: an attached table locked by the
// application past the absorb's lock_timeout is a passing cause. The run
// leaves its writes (55P03) and goes on; wait_fresh waits for them
// (RC001 at its timeout, not RC002); once the lock is gone a job absorbs
// them; and detaching an object forgets that it was stuck.
func TestLockedObjectIsWaitedThrough(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	ctx := context.Background()
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`)
	lock, _ := hold(t, b.app, `LOCK TABLE crm.account IN ACCESS EXCLUSIVE MODE`)
	b.run(t) // waits lock_timeout (2 s) for the account table, then leaves it
	var code string
	if err := b.admin.QueryRow(ctx, `SELECT error_code FROM recalc.attach_stuck WHERE object = 'account'`).Scan(&code); err != nil || code != "55P03" {
		t.Fatalf("attach_stuck for a locked table: %q (%v), want 55P03", code, err)
	}
	if _, err := b.engine.Exec(ctx, `SELECT recalc.wait_fresh(interval '200 ms')`); !changes.IsNotFresh(err) {
		t.Fatalf("wait_fresh behind a locked table's writes: %v, want RC001 (a lock passes)", err)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	if _, owner := b.recordOf(t, "account:1"); owner != "erin" || b.waiting(t, "account") {
		t.Fatalf("after the lock: account:1 owned by %q", owner)
	}
	b.exec(t, b.admin, `INSERT INTO recalc.attach_stuck (object, error_code) VALUES ('case', '42501')`)
	if _, err := b.recalc("detach", "case"); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.attach_stuck`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("attach_stuck after detaching case and absorbing account: %d rows (%v), want none", left, err)
	}
}

// TestWatchSeesWritesThatBypassedCapture: the application disables the
// capture triggers, writes and enables them again in one transaction, so
// no change row is logged and the catalog looks as attached. The next
// `recalc watch` step is not idle: the table's catalog fingerprint changed,
// so it reads the whole source again (through a job) and mirrors the write.
func TestWatchSeesWritesThatBypassedCapture(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	live := engine.NewLive(engine.Options{}, 1000)
	if rep, err := live.Step(context.Background(), b.engine, zerolog.Nop()); err != nil || rep.Run != nil {
		t.Fatalf("first step: %+v (%v), want nothing to do", rep, err)
	}
	b.exec(t, b.app, `BEGIN; ALTER TABLE crm.account DISABLE TRIGGER USER;
		UPDATE crm.account SET owner_id = 'erin' WHERE id = 1;
		ALTER TABLE crm.account ENABLE TRIGGER USER; COMMIT`)
	if b.waiting(t, "account") {
		t.Fatal("the write logged a change row: the triggers were not bypassed")
	}
	rep, err := live.Step(context.Background(), b.engine, zerolog.Nop())
	if err != nil || rep.Run == nil {
		t.Fatalf("step after the bypass: %+v (%v), want a job that reads the table again", rep, err)
	}
	if _, owner := b.recordOf(t, "account:1"); owner != "erin" {
		t.Fatalf("account:1 owned by %q after the step, want erin", owner)
	}
	b.checkOracle(t, "after the step")
}

// TestDetachBesideTriggerDDL: detach, while the table's owner has a
// transaction open that disabled and enabled the capture's triggers (a bulk
// load around them), waits for it and then detaches: its first try fails
// with PostgreSQL's "tuple concurrently updated", and it tries again.
func TestDetachBesideTriggerDDL(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	tx, pid := hold(t, b.app, `ALTER TABLE support."case" DISABLE TRIGGER USER`)
	if _, err := tx.Exec(context.Background(), `ALTER TABLE support."case" ENABLE TRIGGER USER`); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var out string
	var err error
	go func() {
		defer close(done)
		out, err = b.recalc("detach", "case")
	}()
	waitBlocked(t, b.admin, pid, done, "recalc detach to wait for the table's owner")
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-done
	if err != nil || !strings.Contains(out, "detached") {
		t.Fatalf("detach beside the owner's trigger DDL: %v\n%s", err, out)
	}
}

// TestImportAfterAnOwnerChange: an owner change committed to an attached
// table, then a manual share imported on that record: the share stays, as
// it would had the change been absorbed before the import. The import
// absorbs what was committed before it, so the owner change's wipe of
// manual shares applies to those it finds, not to the one imported after.
func TestImportAfterAnOwnerChange(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`)
	f := filepath.Join(t.TempDir(), "share.json")
	if err := os.WriteFile(f, []byte(`{"shares": [{"object": "account", "record": "account:1", "grantee": "user:erin", "access": "edit", "cause": "manual"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := b.recalc("import", "--merge", f); err != nil {
		t.Fatalf("import the share: %v\n%s", err, out)
	}
	b.run(t)
	var l string
	if err := b.admin.QueryRow(context.Background(), `SELECT recalc.access_level('erin', 'account:1')`).Scan(&l); err != nil {
		t.Fatal(err)
	}
	if l != "edit" {
		t.Fatalf("erin's access to account:1, shared after its owner changed: %s, want edit", l)
	}
}
