package attach_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestVerifyComparesSources: `recalc verify` reads every attached source
// again and counts the mirrored rows that differ from it although no write
// is pending: here, rows of views that read the clock. It
// changes nothing unless asked to repair; a write the capture logged and no
// run has absorbed yet is no drift, and stays for the next run. Frank reads
// an account only through the "tech" rule (industry 'tech' or vip).
func TestVerifyComparesSources(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app,
		`ALTER TABLE crm.app_user ADD COLUMN role_id text, ADD COLUMN kind text, ADD COLUMN active boolean DEFAULT true,
		     ADD COLUMN active_until timestamptz`,
		`UPDATE crm.app_user SET role_id = CASE id WHEN 'alice' THEN 'ceo' WHEN 'bob' THEN 'east' WHEN 'carol' THEN 'east'
		     WHEN 'dave' THEN 'west' WHEN 'erin' THEN 'west' END`,
		`ALTER TABLE crm.account ADD COLUMN shared_until timestamptz`,
		`UPDATE crm.account SET vip = NULL`,
		`GRANT SELECT, TRIGGER ON crm.app_user TO `+ident(b.engineRole))
	b.exec(t, b.engine,
		`CREATE VIEW crm_recalc.account_v AS SELECT a.id, a.owner_id, a.industry, a.amount,
		     coalesce(a.shared_until > now(), false) AS vip, a.territories FROM crm.account a`,
		`CREATE VIEW crm_recalc.user_v AS SELECT u.id, u.role_id, u.kind,
		     u.active AND coalesce(u.active_until > now(), true) AS active FROM crm.app_user u`)
	spec := strings.Replace(crmSpec, `"table": "crm.account", "id": "id", "owner": "owner_id", "parent": null,`,
		`"table": "crm_recalc.account_v", "capture": [{"table": "crm.account", "id": "id"}], "id": "id", "owner": "owner_id", "parent": null,`, 1)
	spec = strings.TrimSuffix(strings.TrimSpace(spec), "}") + `, "users": {"table": "crm_recalc.user_v", "id": "id", "role": "role_id",
		"type": "kind", "active": "active", "capture": [{"table": "crm.app_user", "id": "id"}]}}`
	b.mustAttach(t, spec)
	b.run(t)

	ctx := context.Background()
	verify := func(repair bool) map[string]int64 {
		t.Helper()
		rep, err := engine.Verify(ctx, b.engine, engine.VerifyOptions{Sources: true, Repair: repair}, zerolog.Nop())
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		got := map[string]int64{}
		for _, s := range rep.Sources {
			if s.Unchecked != "" {
				t.Fatalf("source %s unchecked: %s", s.Object, s.Unchecked)
			}
			got[s.Object] = s.Differing
		}
		if len(got) != 5 {
			t.Fatalf("verify compared %v, want the 4 objects and the users", got)
		}
		if drift := rep.SourceDrift() > 0; rep.Drift() != drift || len(rep.ShareRows) > 0 || rep.ClosureMissing+rep.ClosureExtra > 0 {
			t.Fatalf("verify: %+v, want drift only in the sources (%v)", rep, drift)
		}
		return got
	}
	level := func(user, record string) string {
		t.Helper()
		var l string
		if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level($1, $2)`, user, record).Scan(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	want := func(step string, got map[string]int64, account, users int64) {
		t.Helper()
		for object, n := range got {
			w := map[string]int64{"account": account, "users": users}[object]
			if n != w {
				t.Errorf("%s: %s differs in %d rows, want %d (%v)", step, object, n, w, got)
			}
		}
	}

	want("attached", verify(false), 0, 0)

	// Pending writes: absorbed to compare, then left for the run.
	b.exec(t, b.app, `UPDATE crm.account SET industry = 'tech' WHERE id = 3`, `UPDATE crm.app_user SET active = false WHERE id = 'bob'`)
	want("writes pending", verify(false), 0, 0)
	if l := level("frank", "account:3"); l != "none" {
		t.Fatalf("verify recalculated a pending write: frank's access to account:3 is %s", l)
	}
	b.run(t)
	if l, lb := level("frank", "account:3"), level("bob", "account:1"); l != "read" || lb != "none" {
		t.Fatalf("the pending writes after verify and a run: frank reads account:3 %s, bob's account:1 %s; want read, none", l, lb)
	}
	b.exec(t, b.app, `UPDATE crm.account SET industry = NULL WHERE id = 3`, `UPDATE crm.app_user SET active = true WHERE id = 'bob'`)
	b.run(t)

	// Rows that change with the clock, with no write to capture: drift,
	// until repaired. Account 3 is shared with frank as vip, and carol (its
	// owner) and erin are active, for 4 seconds.
	b.exec(t, b.app, `UPDATE crm.account SET shared_until = now() + interval '4 seconds' WHERE id = 3`,
		`UPDATE crm.app_user SET active_until = now() + interval '4 seconds' WHERE id IN ('carol', 'erin')`)
	b.run(t)
	if l, lc := level("frank", "account:3"), level("carol", "account:3"); l != "read" || lc != "all" {
		t.Fatalf("account 3 shared until later: frank reads it %s, carol %s; want read, all", l, lc)
	}
	var until time.Time
	if err := b.admin.QueryRow(ctx, `SELECT shared_until FROM crm.account WHERE id = 3`).Scan(&until); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(until) + 100*time.Millisecond)
	want("expired", verify(false), 1, 2)
	out, err := b.recalc("verify")
	if err == nil || !strings.Contains(out, "Attached source account: 1 mirrored rows differ from it.") ||
		!strings.Contains(out, "Attached source users: 2 mirrored rows differ from it.") {
		t.Fatalf("recalc verify beside the drifted sources: %v\n%s\nwant exit 1 naming account's 1 row and the users' 2", err, out)
	}
	want("compared again", verify(false), 1, 2)
	if l := level("frank", "account:3"); l != "read" {
		t.Fatalf("verify without --repair changed access: frank reads account:3 %s", l)
	}
	want("repaired", verify(true), 1, 2)
	want("after the repair", verify(false), 0, 0)
	b.run(t)
	if l, lc := level("frank", "account:3"), level("carol", "account:3"); l != "none" || lc != "none" {
		t.Fatalf("after the repair and a run: frank reads account:3 %s, carol %s; want none, none", l, lc)
	}
	want("after the run", verify(false), 0, 0)
}

// TestVerifySourcesUnderWrites: the application's writes that commit
// while verify compares the sources, before, during or after each re-read,
// are no drift. Nothing here changes without a write, so every comparison
// finds none; and the writes verify absorbed to compare are left for the
// run that follows.
func TestVerifySourcesUnderWrites(t *testing.T) {
	t.Parallel()
	b := setupUsersRun(t)
	compared, unchecked := 0, 0
	b.writeWhile(t, 5, func() error {
		rep, err := engine.Verify(context.Background(), b.engine, engine.VerifyOptions{Sources: true}, zerolog.Nop())
		if err != nil {
			return err
		}
		for _, s := range rep.Sources {
			if s.Differing > 0 {
				return fmt.Errorf("verify found %d rows of %s differing while none drifted", s.Differing, s.Object)
			}
			if s.Unchecked != "" {
				unchecked++
			} else {
				compared++
			}
		}
		return nil
	}, writeUsers, writeAccounts, writeOpportunities, writeCases)
	t.Logf("%d sources compared, %d unchecked, beside the writes", compared, unchecked)
	if compared < 5 || unchecked > compared {
		t.Fatalf("%d sources compared and %d unchecked beside the writes: want at least one whole verify, and most compared", compared, unchecked)
	}
	b.run(t)
	b.checkUsers(t, "after verifying beside the writes and a run")
}

// TestVerifyLeavesOutWritesDuringTheRead: a write that commits while
// verify re-reads its source, which the re-read may or may not see, is no
// drift, nor is another object's write that a run absorbs meanwhile. The
// account's view waits, at each read, until it gets a shared advisory
// lock that the test holds exclusively while verify compares (it tries,
// and sleeps 10 ms between tries: a lock wait would end at the absorb's
// lock_timeout): the comparison's first read of the view waits, and the
// writes commit and the run beside ends during that read. The view slept
// 2.5 s at each read instead, and the writes came 300 ms into verify: the
// test took 13-15 s, mostly idle.
func TestVerifyLeavesOutWritesDuringTheRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const gate = 52001 // the advisory lock key each read of the account's view waits for
	b.exec(t, b.engine, fmt.Sprintf(`CREATE VIEW crm_recalc.account_gated AS SELECT a.id, a.owner_id, a.industry, a.amount, a.vip, a.territories
		FROM crm.account a CROSS JOIN LATERAL (WITH RECURSIVE try (got) AS (
			SELECT pg_try_advisory_xact_lock_shared(%[1]d)
			UNION ALL SELECT pg_try_advisory_xact_lock_shared(%[1]d) FROM try WHERE NOT got AND pg_sleep(0.01)::text = '')
		SELECT count(*) FROM try) z`, gate))
	b.mustAttach(t, strings.Replace(crmSpec, `"table": "crm.account", "id": "id",`,
		`"table": "crm_recalc.account_gated", "capture": [{"table": "crm.account", "id": "id"}], "id": "id",`, 1))
	b.run(t)
	ctx := context.Background()
	closed, _ := hold(t, b.admin, fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, gate))
	done := make(chan *engine.VerifyReport, 1)
	go func() {
		rep, err := engine.Verify(ctx, b.engine, engine.VerifyOptions{Sources: true}, zerolog.Nop())
		if err != nil {
			t.Errorf("verify: %v", err)
		}
		done <- rep
	}()
	// Hold point: verify's first read of the view (the ids), its snapshot
	// taken, waits for the gate; the read of their rows comes after.
	for waiting := false; !waiting; time.Sleep(10 * time.Millisecond) {
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event = 'PgSleep')`).Scan(&waiting); err != nil {
			t.Fatalf("look for verify's wait at the view: %v", err)
		}
		select {
		case rep := <-done:
			t.Fatalf("verify ended before it read the account's view: %+v", rep)
		default:
		}
	}
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`, `UPDATE support."case" SET owner_id = 'dave' WHERE id = 1`)
	// A run beside it, while the rules are deferred, absorbs the case's
	// write and commits its record change, which waits for the resume,
	// while the account is compared: no drift of the account's.
	if out, err := b.recalc("defer", "--rules"); err != nil {
		t.Fatalf("defer: %v\n%s", err, out)
	}
	if _, err := engine.Run(ctx, b.engine, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("run beside verify: %v", err)
	}
	select {
	case rep := <-done:
		t.Fatalf("verify ended while its read of the account's view waited: %+v", rep)
	default:
	}
	if err := closed.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	rep := <-done
	if out, err := b.recalc("resume"); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if rep == nil {
		t.FailNow()
	}
	for _, s := range rep.Sources {
		if s.Differing > 0 || s.Unchecked != "" {
			t.Errorf("source %s: %d rows differing, unchecked %q; want none of either", s.Object, s.Differing, s.Unchecked)
		}
	}
	b.run(t)
	b.checkOracle(t, "after the write verify left out, and a run")
}

// TestVerifyBesideATruncate: a TRUNCATE that holds its table while verify
// starts, and commits while verify waits for the table, is no drift: the
// comparison keeps its locks on the source from its first absorb on, so the
// TRUNCATE either commits before it (and is absorbed as a pending write) or
// makes that first absorb fail (the source is reported as not compared).
// The TRUNCATE commits once verify waits for its table, or once that wait
// has ended, at the absorb's lock_timeout (2 s): it slept 500 ms and 3 s
// for them.
func TestVerifyBesideATruncate(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	ctx := context.Background()
	for _, holdFor := range []string{"while verify waits", "past verify's wait"} {
		b.exec(t, b.app, `INSERT INTO support."case" VALUES (1, 1, 'erin', 4, 'New'), (2, 2, 'bob', 1, 'Closed') ON CONFLICT DO NOTHING`)
		b.run(t)
		tx, _ := hold(t, b.app, `TRUNCATE support."case"`)
		committed, verified := make(chan error, 1), make(chan struct{})
		go func() { committed <- b.commitBesideWait(ctx, tx, holdFor == "past verify's wait", verified) }()
		rep, err := engine.Verify(ctx, b.engine, engine.VerifyOptions{Sources: true}, zerolog.Nop())
		close(verified)
		if err != nil {
			t.Fatalf("verify beside a TRUNCATE held %s: %v", holdFor, err)
		}
		for _, s := range rep.Sources {
			if s.Differing > 0 {
				t.Fatalf("verify beside a TRUNCATE held %s: %s has %d rows differing, want none", holdFor, s.Object, s.Differing)
			}
		}
		if err := <-committed; err != nil {
			t.Fatal(err)
		}
		b.run(t)
		b.checkOracle(t, "after the TRUNCATE and a run")
	}
}

// commitBesideWait commits tx, which holds support.case, once a session
// waits for a lock on the table, or, with past, once that wait has ended
// too. It commits, failing, if verified closes before a wait was seen
// (verify cannot end while it waits).
func (b *bundle) commitBesideWait(ctx context.Context, tx pgx.Tx, past bool, verified <-chan struct{}) error {
	phases := []bool{true} // whether a wait is wanted, phase by phase
	if past {
		phases = append(phases, false)
	}
	for i, want := range phases {
		for waits := !want; waits != want; {
			if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND relation = 'support.case'::regclass AND NOT granted)`).Scan(&waits); err != nil {
				_ = tx.Commit(ctx)
				return fmt.Errorf("look for verify's wait for the TRUNCATE's table: %w", err)
			}
			select {
			case <-verified:
				if i == 0 && !waits {
					_ = tx.Commit(ctx)
					return errors.New("verify ended before it waited for the TRUNCATE's table")
				}
				return tx.Commit(ctx)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return tx.Commit(ctx)
}
