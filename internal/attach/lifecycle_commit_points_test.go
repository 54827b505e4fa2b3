package attach_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// lifecycleWrites are application transactions A that a history begins,
// and writes, before `recalc attach` or `recalc detach` starts, and commits
// at one of its points. Those marked apart write neither crm.opportunity
// nor support.case (no cascade either), the tables the attach and the
// detach below take DDL locks on: they may commit at any point, the others
// only before those locks are taken (the attach waits for them).
var lifecycleWrites = []struct {
	name  string
	apart bool
	stmts []string
}{
	{"an account changes owner", true, []string{`UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`}},
	{"an account and a contact of it are inserted", true, []string{
		`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (5, 'Hooli', 'carol', 'tech')`,
		`INSERT INTO crm.contact VALUES ('00000000-0000-0000-0000-0000000000c5', 'dave', 'cto', NULL)`,
		`INSERT INTO crm.contact_account VALUES ('00000000-0000-0000-0000-0000000000c5', 5)`}},
	{"an account gets a territory and vip, another loses its industry", true, []string{
		`UPDATE crm.account SET vip = true, territories = '{north}' WHERE id = 3`,
		`UPDATE crm.account SET industry = NULL WHERE id = 1`}},
	{"an account goes, its case and opportunity with it", false, []string{`DELETE FROM crm.account WHERE id = 2`}},
	{"an opportunity and a case change owner and amount", false, []string{
		`UPDATE crm.opportunity SET owner_id = 'erin', amount = 9000 WHERE id = ` + opp1,
		`UPDATE support."case" SET owner_id = 'carol', priority = 5 WHERE id = 2`}},
	{"an account is inserted with an opportunity, another changes owner", false, []string{
		`INSERT INTO crm.account (id, name, owner_id) VALUES (6, 'Umbrella', 'alice')`,
		`INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-000000000006', 6, 'bob', 'new', 1500, NULL)`,
		`UPDATE crm.account SET owner_id = 'dave' WHERE id = 3`}},
}

// somePoints says whether the commit-point tests run the history of write
// wi at point pi: every one with RECALC_COMMIT_POINTS=all, else about half
// of them, every write and every point still in some history (each history
// sets up and attaches a database of its own: all of them doubled the
// package's time in CI).
func somePoints(wi, pi int) bool {
	return os.Getenv("RECALC_COMMIT_POINTS") == "all" || (wi+pi)%2 == 0
}

// commitAt commits application transaction a (backend aPid) at point of
// the command (attach or detach) whose end done signals: "before" (the
// caller committed it already), "after" the command, or once the command
// waits for pid, the session holder (nil: a itself) that holds it up. Then
// it waits for the command to end.
func commitAt(t *testing.T, b *bundle, point, command string, done <-chan struct{}, a pgx.Tx, aPid uint32, holder pgx.Tx, pid uint32) {
	t.Helper()
	switch point {
	case "before":
	case "after":
		<-done
		commit(t, a)
	default:
		waitBlocked(t, b.admin, pid, done, "the "+command+" to wait")
		if pid != aPid {
			commit(t, a)
		}
		if holder != nil {
			commit(t, holder)
		}
		if pid == aPid {
			commit(t, a)
		}
	}
	<-done
}

// lifecyclePoint is where A commits in a history: holder is the session
// the command waits for (empty: A itself, whose write it waits for);
// apartOnly says only a write apart may commit there.
type lifecyclePoint struct {
	name, holder string
	apartOnly    bool
}

// TestAttachCommitPoints: account, contact and case are attached, then the
// spec is applied again with the opportunity added (installed and
// backfilled) and the case's entry changed (its capture rebuilt, its rows
// read again), while application transaction A (lifecycleWrites) commits
// at each point of the attach: before it, while it waits for the model
// lock, while it tries to lock recalc.record, while it tries the capture's
// trigger locks (held by A itself, or by another writer of the table),
// while the case's rebuild waits (between the opportunity's backfill and
// the case's), or after it. Whatever the point, a run then leaves nothing
// logged, recalc.record mirrors the rows, and access is the oracle's and a
// full run's.
func TestAttachCommitPoints(t *testing.T) {
	t.Parallel()
	points := []lifecyclePoint{
		{name: "before the attach", holder: "before"},
		{name: "the attach waits for the model lock", holder: "model"},
		{name: "the attach tries to lock the records", holder: `LOCK TABLE recalc.record IN ROW EXCLUSIVE MODE`},
		{name: "the attach tries the opportunity's trigger locks", holder: ""},
		{name: "the case's rebuild waits", holder: `SELECT FROM recalc.attach_stuck WHERE object = 'case' FOR UPDATE`, apartOnly: true},
		{name: "after the attach", holder: "after", apartOnly: true},
	}
	for wi, w := range lifecycleWrites {
		for pi, p := range points {
			if p.apartOnly && !w.apart || !somePoints(wi, pi) {
				continue
			}
			t.Run(w.name+"/"+p.name, func(t *testing.T) {
				t.Parallel()
				attachCommitPoint(t, w.stmts, w.apart, p.holder)
			})
		}
	}
}

// withoutOpportunity is crmSpec without its opportunity entry, and with
// the case's fields in the other order (so that crmSpec changes its entry).
func withoutOpportunity(t *testing.T) string {
	t.Helper()
	const opp = `,
  {"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["stage", "amount", "closes_on"]}`
	spec := crmSpecWith(t, opp, "")
	return strings.Replace(spec, `"fields": ["priority", "status"]`, `"fields": ["status", "priority"]`, 1)
}

func attachCommitPoint(t *testing.T, stmts []string, apart bool, point string) {
	ctx := context.Background()
	// Every history starts from a copy of this template: its premise, the
	// oracle's access after the first attach, is checked once, as it is made.
	b := setupPrepared(t, "raceOpps, attached without opportunity", func(t *testing.T, b *bundle) {
		b.exec(t, b.app, raceOpps)
		b.mustAttach(t, withoutOpportunity(t))
		b.run(t)
		b.checkOracleWithout(t, "opportunity", "after the first attach")
	})
	// The case's rebuild deletes its stuck row: held, it stops the attach there.
	b.exec(t, b.admin, `INSERT INTO recalc.attach_stuck (object, error_code) VALUES ('case', '55P03')`)
	a, aPid := hold(t, b.app, "")
	mustTx(t, a, stmts...)
	var holder pgx.Tx
	pid := aPid
	switch point {
	case "before":
		commit(t, a)
	case "after":
	case "model":
		holder, pid = hold(t, b.engine, "")
		if err := locks.XactLock(ctx, holder, locks.Model); err != nil {
			t.Fatal(err)
		}
	case "":
		if apart { // another writer of the opportunities holds the attach up
			holder, pid = hold(t, b.app, `UPDATE crm.opportunity SET stage = stage WHERE id = `+opp3)
		}
	default:
		holder, pid = hold(t, b.admin, point)
	}
	done, out, attachErr := b.attachAsync(t, crmSpec)
	commitAt(t, b, point, "attach", done, a, aPid, holder, pid)
	if *attachErr != nil {
		t.Fatalf("attach: %v", *attachErr)
	}
	if !strings.Contains(*out, fmt.Sprintf("%-16s %s", "opportunity", "attached")) || !strings.Contains(*out, fmt.Sprintf("%-16s %s", "case", "updated")) {
		t.Fatalf("the attach did not attach the opportunity and update the case:\n%s", *out)
	}
	b.raceCheckFull(t, "after the attach and a run")
	b.checkMirror(t, "after the attach and a run")
	b.checkOracle(t, "after the attach and a run")
}

// TestDetachCommitPoints: the four objects are attached and the
// opportunity is detached while application transaction A
// (lifecycleWrites) commits at each point of the detach: before it, while
// it waits for the model lock, while it tries to drop the opportunity's
// triggers (held by A itself, or by another writer of the table), while
// the removal of its records waits, or after it. A run then leaves nothing
// logged, no record of the opportunity, and access is the oracle's without
// the opportunities and a full run's; attached again, recalc.record mirrors
// the rows and access is the oracle's.
func TestDetachCommitPoints(t *testing.T) {
	t.Parallel()
	points := []lifecyclePoint{
		{name: "before the detach", holder: "before"},
		{name: "the detach waits for the model lock", holder: "model"},
		{name: "the detach tries the opportunity's trigger locks", holder: ""},
		{name: "the removal of the records waits", holder: `SELECT FROM recalc.record WHERE id = 'opportunity:00000000-0000-0000-0000-000000000003' FOR UPDATE`, apartOnly: true},
		{name: "after the detach", holder: "after", apartOnly: true},
	}
	for wi, w := range lifecycleWrites {
		for pi, p := range points {
			if p.apartOnly && !w.apart || !somePoints(wi, pi) {
				continue
			}
			t.Run(w.name+"/"+p.name, func(t *testing.T) {
				t.Parallel()
				detachCommitPoint(t, w.stmts, w.apart, p.holder)
			})
		}
	}
}

func detachCommitPoint(t *testing.T, stmts []string, apart bool, point string) {
	ctx := context.Background()
	b := setupAttached(t, raceOpps)
	a, aPid := hold(t, b.app, "")
	mustTx(t, a, stmts...)
	var holder pgx.Tx
	pid := aPid
	switch point {
	case "before":
		commit(t, a)
	case "after":
	case "model":
		holder, pid = hold(t, b.engine, "")
		if err := locks.XactLock(ctx, holder, locks.Model); err != nil {
			t.Fatal(err)
		}
	case "":
		if apart {
			holder, pid = hold(t, b.app, `UPDATE crm.opportunity SET stage = stage WHERE id = `+opp3)
		}
	default:
		holder, pid = hold(t, b.admin, point)
	}
	done := make(chan struct{})
	var out string
	var detachErr error
	go func() {
		defer close(done)
		out, detachErr = b.recalc("detach", "opportunity")
	}()
	commitAt(t, b, point, "detach", done, a, aPid, holder, pid)
	if detachErr != nil {
		t.Fatalf("detach: %v", detachErr)
	}
	if !strings.Contains(out, "detached") {
		t.Fatalf("the detach did not detach the opportunity:\n%s", out)
	}
	b.raceCheckFull(t, "after the detach and a run")
	var left int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.record WHERE object = 'opportunity'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d records of the detached opportunity are left", left)
	}
	b.checkOracleWithout(t, "opportunity", "after the detach and a run")
	b.mustAttach(t, crmSpec)
	b.raceCheckFull(t, "attached again")
	b.checkMirror(t, "attached again")
	b.checkOracle(t, "attached again")
}

// checkOracleWithout is checkOracle while object is not attached: the
// oracle's records are the application's rows but object's.
func (b *bundle) checkOracleWithout(t *testing.T, object, after string) {
	t.Helper()
	ctx := context.Background()
	var records string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(jsonb_agg(r), '[]')::text
		FROM jsonb_array_elements((`+expectedRecords+`)::jsonb) r WHERE r->>'object' <> $1`, object).Scan(&records); err != nil {
		t.Fatal(err)
	}
	file := strings.TrimSuffix(strings.TrimSpace(crmModel), "}") + `, "records": ` + records + "}"
	m, _, err := model.Parse(strings.NewReader(file))
	if err != nil {
		t.Fatalf("expected model: %v", err)
	}
	if got, want := testkit.AccessCSV(t, ctx, b.engine), oracle.CSV(oracle.Access(m)); got != want {
		t.Fatalf("%s, access differs from the oracle\n%s", after, oracle.Diff(want, got))
	}
}

// TestDetachUsersCommitPoints: the users table is attached beside the
// objects, and detached while application transaction A (usersAndRecords:
// the users table and an object's table written together) commits: before
// the detach, while it waits for the model lock, or while it tries to drop
// the users' capture, which A's write holds up after the detach absorbed
// the users' writes (its last absorb then misses A's, and it starts
// again). The users section, which stays as last built once detached, is
// the table's with A's write in it: after a run, access is the oracle's for
// the users the table gives, and recalc.record mirrors the rows.
func TestDetachUsersCommitPoints(t *testing.T) {
	t.Parallel()
	for wi, w := range usersAndRecords {
		for pi, point := range []string{"before", "model", ""} {
			if !somePoints(wi, pi) {
				continue
			}
			name := map[string]string{"before": "before the detach", "model": "the detach waits for the model lock", "": "the detach tries the users' trigger locks"}[point]
			t.Run(w.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				detachUsersCommitPoint(t, w.stmts, point)
			})
		}
	}
}

func detachUsersCommitPoint(t *testing.T, stmts []string, point string) {
	ctx := context.Background()
	b := setupUsersRun(t)
	a, aPid := hold(t, b.app, "")
	mustTx(t, a, stmts...)
	var holder pgx.Tx
	pid := aPid
	switch point {
	case "before":
		commit(t, a)
	case "model":
		holder, pid = hold(t, b.engine, "")
		if err := locks.XactLock(ctx, holder, locks.Model); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	var detachErr error
	go func() {
		defer close(done)
		_, detachErr = b.recalc("detach", "users")
	}()
	if point != "before" {
		waitBlocked(t, b.admin, pid, done, "the detach to wait")
		if holder != nil {
			commit(t, a)
			commit(t, holder)
		} else {
			commit(t, a)
		}
	}
	<-done
	if detachErr != nil {
		t.Fatalf("detach users: %v", detachErr)
	}
	b.raceCheckFull(t, "after the detach and a run")
	b.checkMirror(t, "after the detach and a run")
	b.checkUsers(t, "after the detach and a run")
}
