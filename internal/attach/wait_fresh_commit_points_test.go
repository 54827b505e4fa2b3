package attach_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/store"
)

// commitPointWrites are application transactions, begun (and given their
// xid) before the engine's step, that commit at one of its statements.
// "COPY" stands for a COPY of two cases.
var commitPointWrites = []struct {
	name  string
	stmts []string
	every bool // tried in every mode, not only on the fast path
}{
	{"owner change", []string{`UPDATE crm.account SET owner_id = 'dave' WHERE id = 1`}, true},
	{"delete", []string{`DELETE FROM support."case" WHERE id = 1`}, false},
	{"insert", []string{`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (7, 'N', 'frank', 'tech')`}, false},
	{"savepoint rolled back", []string{`SAVEPOINT s`, `UPDATE crm.account SET owner_id = 'erin' WHERE id = 3`, `ROLLBACK TO s`,
		`UPDATE crm.account SET owner_id = 'frank' WHERE id = 3`}, false},
	{"parent through a view", []string{`UPDATE crm.contact_account SET account_id = 3 WHERE contact_id = '00000000-0000-0000-0000-000000000001'`}, true},
	{"criteria field", []string{`UPDATE support."case" SET priority = 9 WHERE id = 2`}, false},
	{"copy", []string{"COPY"}, false},
	{"truncate and refill", []string{`TRUNCATE support."case"`, `INSERT INTO support."case" VALUES (1, 2, 'dave', 7, 'Re')`}, true},
	{"owner change and delete", []string{`UPDATE crm.account SET owner_id = 'alice' WHERE id = 2`, `DELETE FROM crm.account WHERE id = 3`}, true},
	// A parent and its children in one transaction: the objects' absorbs
	// are statements of their own, in the objects' order (account, case,
	// contact), and a commit between them splits the transaction across
	// two absorbs. The contact is controlled by its parent.
	{"parent owner and children moved", []string{`UPDATE crm.account SET owner_id = 'erin' WHERE id = 3`,
		`UPDATE crm.contact_account SET account_id = 3 WHERE contact_id = '00000000-0000-0000-0000-000000000001'`,
		`UPDATE support."case" SET account_id = 3 WHERE id = 1`}, true},
}

// TestWaitFreshCommitPoints: application transaction A writes (an owner
// change, a delete, an insert, a write rolled back to a savepoint, a parent
// changed through a view's base table, a criteria field, a COPY, a TRUNCATE
// and refill, an account's owner changed with a contact and a case moved
// under it) and stays open with the older xid while B, a newer
// transaction, commits a write; then the engine steps (a watch's fast path,
// a full run swapping or in place, or `recalc resume` after a deferral) and
// A commits before it or while it is held at one of its statements: the
// absorb's start, the object's absorb, the change log's read, its consume,
// the feed's lock, the swap, the deferral's lift and read (the full runs
// and the resume with the owner changes, deletes, view and TRUNCATE only).
// A token taken right after A's commit is then waited for, with steps of a
// watch until wait_fresh returns: at that moment access must equal the
// oracle's for the application's rows, and recalc.record mirror them. Held in every order
// tried (helper-183): no write lost, none misapplied, and no wait_fresh
// returned early.
//
// Every history runs with RECALC_COMMIT_POINTS=all (125 of them, each a
// database of its own: 210 s of test time under -race before the
// parent-and-children write added 20); by default 27, a
// fixed subset (commitPointMode.cases) in which each mode meets every one
// of its points and every write it is tried with at least once
// (TestMatrixCasesMeetEveryRowAndColumn).
func TestWaitFreshCommitPoints(t *testing.T) {
	t.Parallel()
	for _, m := range commitPointModes {
		for _, c := range m.cases(os.Getenv("RECALC_COMMIT_POINTS") == "all") {
			w, p := commitPointWrites[c[0]], m.points[c[1]]
			t.Run(m.name+"/"+w.name+"/"+p, func(t *testing.T) {
				t.Parallel()
				commitAtPoint(t, m.name, w.stmts, p)
			})
		}
	}
}

// commitPointLockFree are the points of an engine's step that take no lock
// a TRUNCATE conflicts with.
var commitPointLockFree = []string{"", "recalc.attach_absorb_begin", "DELETE FROM recalc.deferral", "SELECT side, since FROM recalc.deferral"}

// commitPointModes are the engine's steps of TestWaitFreshCommitPoints and
// the points each is held at.
var commitPointModes = []commitPointMode{
	{"fast", []string{"", "recalc.attach_absorb_begin", "recalc.attach_absorb_one", "set_config('recalc.absorbing', ''",
		"sum(cardinality(keys)) OVER", "DELETE FROM recalc.change WHERE seq = ANY", "SELECT FROM recalc.feed_state FOR UPDATE"}},
	{"full", []string{"", "recalc.attach_absorb_begin", "recalc.attach_absorb_one", "DROP TABLE recalc.acl_share", "DELETE FROM recalc.change WHERE seq = ANY"}},
	{"in place", []string{"", "recalc.attach_absorb_begin", "recalc.attach_absorb_one", "DELETE FROM recalc.change WHERE seq = ANY"}},
	{"resume", commitPointLockFree},
}

type commitPointMode struct {
	name   string
	points []string
}

// valid says whether the mode runs write wi (of commitPointWrites) at
// point pi (of its points): the writes not tried in every mode on the fast
// path only, and the TRUNCATE at lock-free points only (the absorb waits
// for its lock before it gets to the others).
func (m commitPointMode) valid(wi, pi int) bool {
	w := commitPointWrites[wi]
	return (m.name == "fast" || w.every) && (w.name != "truncate and refill" || slices.Contains(commitPointLockFree, m.points[pi]))
}

// cases returns the mode's histories, as pairs of indexes of
// commitPointWrites and of its points (matrixCases).
func (m commitPointMode) cases(all bool) [][2]int {
	return matrixCases(len(commitPointWrites), len(m.points), m.valid, all)
}

// matrixCases returns the cases a test runs of its matrix of rows × cols,
// those valid says it may, as pairs of a row's and a column's index: every
// one with all (RECALC_COMMIT_POINTS=all), else a subset taken diagonal by
// diagonal (the k-th row with a valid case at column k, k+1, ...), a case
// kept when it is the first to meet its row or its column: every row and
// every column with a valid case in one case at least, the rows at
// different columns.
func matrixCases(rows, cols int, valid func(r, c int) bool, all bool) [][2]int {
	var cases [][2]int
	var used []int // the rows with a valid case
	for r := range rows {
		for c := range cols {
			if valid(r, c) {
				cases = append(cases, [2]int{r, c})
			}
		}
		if len(cases) > 0 && cases[len(cases)-1][0] == r {
			used = append(used, r)
		}
	}
	if all {
		return cases
	}
	cases = nil
	metR, metC := map[int]bool{}, map[int]bool{}
	for d := range cols {
		for k, r := range used {
			c := (k + d) % cols
			if valid(r, c) && (!metR[r] || !metC[c]) {
				cases = append(cases, [2]int{r, c})
				metR[r], metC[c] = true, true
			}
		}
	}
	return cases
}

// TestMatrixCasesMeetEveryRowAndColumn: the default subsets of
// TestWaitFreshCommitPoints's modes and of TestInterleavedUsersAndRecords
// meet every row (write) and every column (point) that has a case, run
// only valid ones, and all of the matrix is run with
// RECALC_COMMIT_POINTS=all.
func TestMatrixCasesMeetEveryRowAndColumn(t *testing.T) {
	t.Parallel()
	type matrix struct {
		name       string
		rows, cols int
		valid      func(r, c int) bool
		all        int // the cases RECALC_COMMIT_POINTS=all runs
	}
	var tests []matrix
	for _, m := range commitPointModes {
		tests = append(tests, matrix{"wait_fresh " + m.name, len(commitPointWrites), len(m.points), m.valid,
			map[string]int{"fast": 65, "full": 22, "in place": 18, "resume": 20}[m.name]})
	}
	tests = append(tests, matrix{"users and records", len(usersAndRecords), len(usersAndRecordsPoints), func(int, int) bool { return true }, 35})
	for _, tc := range tests {
		all, sub := matrixCases(tc.rows, tc.cols, tc.valid, true), matrixCases(tc.rows, tc.cols, tc.valid, false)
		wantR, wantC, gotR, gotC := map[int]bool{}, map[int]bool{}, map[int]bool{}, map[int]bool{}
		for _, c := range all {
			wantR[c[0]], wantC[c[1]] = true, true
		}
		for _, c := range sub {
			if !tc.valid(c[0], c[1]) {
				t.Errorf("%s: the subset runs case %v, which is not valid", tc.name, c)
			}
			gotR[c[0]], gotC[c[1]] = true, true
		}
		if len(all) != tc.all || len(gotR) != len(wantR) || len(gotC) != len(wantC) || len(wantC) != tc.cols {
			t.Errorf("%s: %d cases in all, want %d; the subset of %d meets %d of %d rows and %d of %d columns (of %d)",
				tc.name, len(all), tc.all, len(sub), len(gotR), len(wantR), len(gotC), len(wantC), tc.cols)
		}
		t.Logf("%s: %d of %d cases by default", tc.name, len(sub), len(all))
	}
}

// commitAtPoint runs one case of TestWaitFreshCommitPoints.
func commitAtPoint(t *testing.T, mode string, stmts []string, point string) {
	ctx := context.Background()
	b := setupAttached(t, `INSERT INTO crm.contact VALUES ('00000000-0000-0000-0000-000000000001', 'bob', 'CFO')`,
		`INSERT INTO crm.contact_account VALUES ('00000000-0000-0000-0000-000000000001', 1)`)
	if mode == "resume" {
		if err := store.Defer(ctx, b.engine, []string{store.SideRules, store.SideClosure}); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := hold(t, b.app, "")
	for _, s := range stmts {
		var err error
		if s == "COPY" {
			_, err = a.CopyFrom(ctx, pgx.Identifier{"support", "case"}, []string{"id", "account_id", "owner_id", "priority"},
				pgx.CopyFromRows([][]any{{int64(11), int64(1), "dave", int32(4)}, {int64(12), int64(2), "frank", int32(1)}}))
		} else {
			_, err = a.Exec(ctx, s)
		}
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id) VALUES (8, 'B', 'erin')`, `UPDATE crm.account SET vip = true WHERE id = 8`) // B
	var token int64
	commitA := commitThenToken(t, b, a, &token)
	stepCommitting(t, b, point, func(pool *pgxpool.Pool) error { return commitPointStep(ctx, pool, mode) }, commitA)
	waitFreshStepping(t, b, token)
	b.checkOracle(t, "once wait_fresh returned")
	b.checkMirror(t, "once wait_fresh returned")
}

// commitPointStep is the engine's step of mode, on pool.
func commitPointStep(ctx context.Context, pool *pgxpool.Pool, mode string) error {
	var err error
	switch mode {
	case "fast":
		_, err = engine.NewLive(engine.Options{}, 1000).Step(ctx, pool, zerolog.Nop())
	case "full":
		_, err = engine.Full(ctx, pool, engine.Options{Workers: 2}, zerolog.Nop())
	case "in place":
		_, err = engine.Full(ctx, pool, engine.Options{Workers: 2, InPlace: true}, zerolog.Nop())
	case "resume": // as `recalc resume`: lift, then run
		if err = store.Undefer(ctx, pool, []string{store.SideRules, store.SideClosure}); err == nil {
			_, err = engine.Run(ctx, pool, engine.Options{Workers: 2}, zerolog.Nop())
		}
	}
	return err
}

// stepCommitting runs step on b's engine pool and calls commit: before it,
// with point "", or while the step is held at point (newHoldNth), letting it
// go on after. It fails t when the step fails, ends first or never gets
// there.
func stepCommitting(t *testing.T, b *bundle, point string, step func(*pgxpool.Pool) error, commit func()) {
	t.Helper()
	pool := b.engine
	var h *holdNth
	if point == "" {
		commit()
	} else {
		h = newHoldNth(point)
		pool = tracedPool(t, b, h)
		t.Cleanup(h.free)
	}
	done := make(chan error, 1)
	go func() { done <- step(pool) }()
	if h != nil {
		select {
		case <-h.reached:
			commit()
			h.free()
		case err := <-done:
			t.Fatalf("the step ended (%v) before %q", err, point)
		case <-time.After(30 * time.Second):
			t.Fatalf("the step never reached %q", point)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("step: %v", err)
	}
}

// waitFreshStepping waits for token with recalc.wait_fresh, taking a watch
// step between tries (at most four), as a running `recalc watch` would.
// Each try waits 10 ms: nothing else materializes changes meanwhile (the
// step has ended), so a longer wait would give the same answer later.
func waitFreshStepping(t *testing.T, b *bundle, token int64) {
	t.Helper()
	ctx := context.Background()
	live := engine.NewLive(engine.Options{}, 1000)
	for i := 0; ; i++ {
		err := changes.WaitFresh(ctx, b.admin, token, 10*time.Millisecond)
		if err == nil {
			return
		}
		if !changes.IsNotFresh(err) || i == 4 {
			t.Fatalf("wait_fresh after %d steps: %v", i, err)
		}
		if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	}
}

// commitThenToken returns the function that commits a, then takes a
// wait_fresh token into *token, failing t if either fails.
func commitThenToken(t *testing.T, b *bundle, a pgx.Tx, token *int64) func() {
	return func() {
		t.Helper()
		ctx := context.Background()
		if err := a.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		var err error
		if *token, err = changes.FreshToken(ctx, b.admin); err != nil {
			t.Fatal(err)
		}
	}
}
