package attach_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/watch"
)

// stampAndPrints reads, as the engine, the catalog stamp `recalc watch`
// polls and whether a captured table's fingerprint differs from the one
// last absorbed.
func (b *bundle) stampAndPrints(t *testing.T) (stamp string, changed bool) {
	t.Helper()
	if err := b.engine.QueryRow(context.Background(),
		`SELECT recalc.attach_catalog_stamp(), recalc.attach_fingerprints_changed()`).Scan(&stamp, &changed); err != nil {
		t.Fatal(err)
	}
	return stamp, changed
}

// TestChildTableSeenByFingerprints: a child table, whose rows every read of
// the captured table shows and whose writes fire no capture, changes the
// table's fingerprint and the catalog stamp, so that the next absorb finds
// the capture not intact and wait_fresh says so. Once the table had had a
// child, its pg_class row kept relhassubclass, so that the application's
// role could add another with no catalog row the fingerprints or the stamp
// read changing: before version 77 its rows were left out silently, the
// object still intact.
func TestChildTableSeenByFingerprints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		child []string // as the application, once attached
	}{
		{name: "created as a child", child: []string{`CREATE TABLE crm.kid2 () INHERITS (crm.account)`}},
		{name: "an existing table made one", child: []string{
			`CREATE TABLE crm.kid2 (LIKE crm.account INCLUDING DEFAULTS)`,
			`ALTER TABLE crm.kid2 INHERIT crm.account`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t)
			// A child that came and went leaves relhassubclass set.
			b.exec(t, b.app, `CREATE TABLE crm.kid () INHERITS (crm.account)`, `DROP TABLE crm.kid`)
			b.mustAttach(t, crmSpec)
			b.run(t)
			stamp, changed := b.stampAndPrints(t)
			if changed {
				t.Fatal("a fingerprint differs right after the run")
			}
			b.exec(t, b.app, tc.child...)
			b.exec(t, b.app, `INSERT INTO crm.kid2 (id, name, owner_id, industry) VALUES (100, 'Hidden', 'bob', 'tech')`)
			var shown int
			if err := b.app.QueryRow(ctx, `SELECT count(*) FROM crm.account WHERE id = 100`).Scan(&shown); err != nil || shown != 1 {
				t.Fatalf("the child's row in a read of crm.account: %d (%v), want 1", shown, err)
			}
			after, changed := b.stampAndPrints(t)
			if after == stamp || !changed {
				t.Fatalf("after a child table of crm.account got a row: stamp moved %v, fingerprint changed %v; want both", after != stamp, changed)
			}
			b.run(t)
			var code string
			if err := b.admin.QueryRow(ctx, `SELECT coalesce(error_code, 'not intact') FROM recalc.attach_stuck WHERE object = 'account'`).Scan(&code); err != nil || code != "not intact" {
				t.Fatalf("account in attach_stuck after a run: %q (%v), want not intact", code, err)
			}
			token, err := changes.FreshToken(ctx, b.engine)
			if err != nil {
				t.Fatal(err)
			}
			if err := changes.WaitFresh(ctx, b.engine, token, 0); !changes.IsCaptureStuck(err) {
				t.Fatalf("wait_fresh with crm.account's child unseen: %v, want RC002", err)
			}
		})
	}
}

// TestCatalogStampIgnoresOtherRoles: an enum in a session's temporary
// schema, which any role that may connect can create, cannot be the type
// of an attached source's column and does not move the catalog stamp, so
// a loop of them does not make `recalc watch` step (and compute the
// fingerprints) every --catalog-poll. Before version 77 each moved it. An
// enum of the application's schema still does.
func TestCatalogStampIgnoresOtherRoles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		stmts []string // as the application's role, on one connection
		moves bool
	}{
		{name: "temporary enum created", stmts: []string{`CREATE TYPE pg_temp.mood AS ENUM ('sad', 'ok')`}},
		{name: "temporary enum extended", stmts: []string{`CREATE TYPE pg_temp.mood AS ENUM ('sad')`, `ALTER TYPE pg_temp.mood ADD VALUE 'ok'`}},
		{name: "temporary enum dropped", stmts: []string{`CREATE TYPE pg_temp.mood AS ENUM ('sad')`, `DROP TYPE pg_temp.mood`}},
		{name: "enum of the schema created", stmts: []string{`CREATE TYPE crm.mood AS ENUM ('sad', 'ok')`}, moves: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setupAttached(t)
			before, _ := b.stampAndPrints(t)
			conn, err := b.app.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Release()
			for _, s := range tc.stmts {
				if _, err := conn.Exec(ctx, s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			after, changed := b.stampAndPrints(t)
			if changed {
				t.Fatal("a fingerprint changed")
			}
			if moved := after != before; moved != tc.moves {
				t.Fatalf("the catalog stamp moved: %v, want %v", moved, tc.moves)
			}
		})
	}
}

// TestCatalogChurnLeavesWatchIdleMostly: a loop of GRANTs and REVOKEs on an
// attached table, by the application's role, moves the catalog stamp and
// the table's fingerprint each time, and each step it starts reads the
// source again whole. After such a step `recalc watch` waits catalogRest
// (4) times what it took before it steps again for the stamp, so that
// they take at most about a fifth of its time, and the changes still reach
// it. Before, it stepped again within --catalog-poll (250 ms), back to
// back: busy about 90% of the time.
//
// The GRANTs go on until the watch has stepped three times for them.
func TestCatalogChurnLeavesWatchIdleMostly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.exec(t, b.app, `INSERT INTO crm.account (id, name, owner_id, industry)
		SELECT g, 'a' || g, 'bob', 'tech' FROM generate_series(10, 5009) g`)
	b.mustAttach(t, crmSpec)
	b.run(t)
	type span struct{ began, ended time.Time }
	var mu sync.Mutex
	var spans []span // the watch's steps, in order
	wctx, cancel := context.WithCancel(ctx)
	live := engine.NewLive(engine.Options{Trigger: "watch"}, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = watch.Run(wctx, b.engine, watch.Options{Debounce: 2 * time.Millisecond, MaxWait: 20 * time.Millisecond, Poll: 10 * time.Second, FastRecords: 1000},
			func(ctx context.Context) error {
				s := span{began: time.Now()}
				_, err := live.Step(ctx, b.engine, zerolog.Nop())
				s.ended = time.Now()
				mu.Lock()
				spans = append(spans, s)
				mu.Unlock()
				return err
			}, zerolog.Nop())
	}()
	t.Cleanup(func() { cancel(); <-done })
	steps := func() []span {
		mu.Lock()
		defer mu.Unlock()
		return append([]span(nil), spans...)
	}
	for len(steps()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	began := time.Now()
	for len(steps()) < 4 && time.Since(began) < 30*time.Second { // three steps, two rests
		b.exec(t, b.app, `GRANT SELECT ON crm.account TO PUBLIC`, `REVOKE SELECT ON crm.account FROM PUBLIC`)
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	var busy time.Duration
	got := steps()
	for _, s := range got[1:] {
		busy += s.ended.Sub(s.began)
	}
	t.Logf("over %v of GRANTs: %d steps, busy %.0f%% of the time", time.Since(began), len(got)-1, 100*float64(busy)/float64(time.Since(began)))
	if len(got) < 4 {
		t.Fatalf("%d steps in %v while a source's fingerprint kept changing, want 3 or more", len(got)-1, time.Since(began))
	}
	for i := 2; i < len(got); i++ {
		took, rest := got[i-1].ended.Sub(got[i-1].began), got[i].began.Sub(got[i-1].ended)
		if rest < 7*took/2 {
			t.Fatalf("step %d began %v after step %d, which took %v, ended: want at least 4 times that", i, rest, i-1, took)
		}
	}
}

// TestWaitFreshBesideCatalogChurn: a loop of GRANTs and REVOKEs on an
// attached table, by the application's role, each of which changes the
// table's fingerprint after the token, does not keep recalc.wait_fresh
// from returning once what committed before the token is materialized.
// Before version 78 it compared the fingerprints with the ones stored
// again after every absorb, found them different again, and waited until
// its timeout (RC001), for every caller, as long as the loop went on.
func TestWaitFreshBesideCatalogChurn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	b.defaultWatch(t)
	churn, stop := make(chan error, 1), make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				churn <- nil
				return
			default:
			}
			for _, s := range []string{`GRANT SELECT ON crm.account TO PUBLIC`, `REVOKE SELECT ON crm.account FROM PUBLIC`} {
				if _, err := b.app.Exec(ctx, s); err != nil {
					churn <- err
					return
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	defer func() {
		close(stop)
		if err := <-churn; err != nil {
			t.Errorf("GRANT loop: %v", err)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	b.exec(t, b.app, `UPDATE crm.account SET owner_id = 'erin' WHERE id = 1`)
	token, err := changes.FreshToken(ctx, b.engine)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := changes.WaitFresh(ctx, b.engine, token, 2*catalogBound); err != nil {
		t.Fatalf("wait_fresh while the application's role loops GRANTs: %v after %v", err, time.Since(began))
	}
	var level string
	if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('erin', 'account:1')`).Scan(&level); err != nil || level != "all" {
		t.Fatalf("erin's access to account:1 once wait_fresh returned: %q (%v), want all", level, err)
	}
	t.Logf("wait_fresh returned in %v", time.Since(began))
}

// TestWaitFreshBesideAnOpenTransaction: a transaction left open in
// another database, below every token, does not keep recalc.wait_fresh
// waiting for a catalog change committed after its token, once an absorb
// after the token stored what came before. Version 78 first marked what
// an absorb saw by its snapshot's xmin, which that transaction held below
// every token: wait_fresh waited for each later GRANT, until its timeout
// (RC001) while they went on.
func TestWaitFreshBesideAnOpenTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	other, err := pgx.Connect(ctx, testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	// Two xids running below the token: one left open, one that commits
	// after the absorb (it saw it running, and it committed nothing before
	// the token).
	brief, err := b.app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer brief.Rollback(context.Background()) //nolint:errcheck // committed below
	for _, tx := range []interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}{other, brief} {
		if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
			t.Fatal(err)
		}
	}
	b.exec(t, b.app, `GRANT SELECT ON crm.account TO PUBLIC`) // before the token
	token, err := changes.FreshToken(ctx, b.engine)
	if err != nil {
		t.Fatal(err)
	}
	// A transaction that completes after the token, as on any busy server
	// (the absorb's snapshot then shows it was taken after the token).
	b.exec(t, b.app, `SELECT pg_current_xact_id()`)
	b.run(t) // absorbs it, after the token
	if err := brief.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `REVOKE SELECT ON crm.account FROM PUBLIC`) // after the token: the next token's
	if err := changes.WaitFresh(ctx, b.engine, token, time.Second); err != nil {
		t.Fatalf("wait_fresh for a token whose catalog change an absorb stored, beside an open transaction: %v", err)
	}
}

// TestPrintSeenForgetsDetachedCaptures: recalc.attach_print_seen keeps a
// row for a captured table only while it is captured. Before version 79
// its rows outlived their capture: a detach, or a table dropped, created
// again and attached again (a new relid), left one behind each time, and
// the table grew without bound.
func TestPrintSeenForgetsDetachedCaptures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	b.exec(t, b.app, `GRANT SELECT ON support."case" TO PUBLIC`) // a new fingerprint, which the next absorb stores
	b.run(t)
	count := func() (n int) {
		if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.attach_print_seen WHERE object = 'case'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n == 0 {
		t.Fatal("no recalc.attach_print_seen row for object case after an absorb stored its new fingerprint")
	}
	if out, err := b.recalc("detach", "case"); err != nil {
		t.Fatalf("detach case: %v\n%s", err, out)
	}
	if n := count(); n != 0 {
		t.Fatalf("recalc.attach_print_seen keeps %d rows for object case once it is detached, want none", n)
	}
}

// TestCompositeAlteredMovesStamp: a composite type that a captured
// table's column has, altered, changes the text form of every value of
// the column (an attached view reading it shows other values) while no
// row is written: the catalog stamp `recalc watch` polls moves, and the
// table's fingerprint changes. Before version 80 the stamp moved for none
// of these, so the watch saw them at its --poll only, and the fingerprint
// only for an attribute whose type is an enum (its labels newly reached).
func TestCompositeAlteredMovesStamp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app, sectorTypes, `ALTER TABLE crm.account ADD COLUMN sector crm.tag`,
		`UPDATE crm.account SET sector = ROW(industry::crm.sector, 1)::crm.tag WHERE industry IN ('tech', 'energy')`)
	b.mustAttach(t, crmSpec)
	b.run(t)
	for _, alter := range []string{
		`ALTER TYPE crm.tag ADD ATTRIBUTE note text`,
		`ALTER TYPE crm.tag ADD ATTRIBUTE s2 crm.sector`,
		`ALTER TYPE crm.tag DROP ATTRIBUTE note`,
	} {
		stamp, changed := b.stampAndPrints(t)
		if changed {
			t.Fatalf("before %s: a fingerprint differs from the one last absorbed", alter)
		}
		b.exec(t, b.app, alter)
		after, changed := b.stampAndPrints(t)
		if after == stamp || !changed {
			t.Errorf("after %s: stamp moved %v, fingerprint changed %v; want both", alter, after != stamp, changed)
		}
		b.run(t)
	}
}
