package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/watch"
)

// TestDeferImportRunResume: while deferred, an import and a run leave access
// unchanged; resume brings it to the expected access.
func TestDeferImportRunResume(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	cur := mustImport(t, ctx, pool, nil, minimalOrg())
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	before := accessCSV(t, ctx, pool)
	if err := store.Defer(ctx, pool, []string{store.SideClosure, store.SideRules}); err != nil {
		t.Fatal(err)
	}
	cur = mustImport(t, ctx, pool, cur, `{"objects":[{"name":"account","internal_owd":"public_read_only"},{"name":"case","parent":"account","internal_owd":"private"}],
		"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`)
	if _, err := pool.Exec(ctx, `UPDATE recalc.record SET owner = 'u5' WHERE id = 'a010'`); err != nil {
		t.Fatal(err)
	}
	cur.Records[30].Owner = "u5"
	rep, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop())
	if err != nil || !rep.Nothing || len(rep.Deferred) != 2 {
		t.Fatalf("run while deferred: %+v, %v; want nothing done, both sides deferred", rep, err)
	}
	if got := accessCSV(t, ctx, pool); got != before {
		t.Fatalf("access changed while deferred\n%s", oracle.Diff(before, got))
	}
	if err := store.Undefer(ctx, pool, []string{store.SideClosure, store.SideRules}); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{Trigger: "resume"}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got, want := accessCSV(t, ctx, pool), oracle.CSV(oracle.Access(cur)); got != want {
		t.Fatalf("access after resume differs from the oracle\n%s", oracle.Diff(want, got))
	}
}

// TestDeferOneSide defers group membership only: a rule change applies at
// once while a membership change waits for resume; then the reverse.
func TestDeferOneSide(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	cur := mustImport(t, ctx, pool, nil, minimalOrg())
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	level := func(user, record string) string {
		l, err := access.Level(ctx, pool, user, record)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// a001 has tier 1: shared with g1 (u4). a002 has tier 2.
	if err := store.Defer(ctx, pool, []string{store.SideClosure}); err != nil {
		t.Fatal(err)
	}
	cur = mustImport(t, ctx, pool, cur, `{"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}],
		"rules":[{"id":"acct_tier","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"tier","op":"equals","value":2}]}},
		         {"id":"case_rep","object":"case","type":"owner","source":"group:g2","target":"group:g3","access":"edit"}]}`)
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got := level("u4", "a002"); got != "read" {
		t.Errorf("rule change with membership deferred: u4 on a002 = %s, want read (rules recalculate)", got)
	}
	if got := level("u5", "a002"); got != "none" {
		t.Errorf("membership deferred: u5 on a002 = %s, want none until resume", got)
	}
	if err := store.Undefer(ctx, pool, []string{store.SideClosure}); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got, want := accessCSV(t, ctx, pool), oracle.CSV(oracle.Access(cur)); got != want {
		t.Fatalf("after resuming the closure, access differs from the oracle\n%s", oracle.Diff(want, got))
	}
	// Rules deferred: a membership change applies, a rule change waits.
	if err := store.Defer(ctx, pool, []string{store.SideRules}); err != nil {
		t.Fatal(err)
	}
	cur = mustImport(t, ctx, pool, cur, `{"groups":[{"id":"g1","members":["user:u4","user:u5","user:u1"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}],
		"rules":[{"id":"acct_tier","object":"account","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"tier","op":"equals","value":3}]}},
		         {"id":"case_rep","object":"case","type":"owner","source":"group:g2","target":"group:g3","access":"edit"}]}`)
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got := level("u1", "a007"); got != "read" {
		t.Errorf("membership change with rules deferred: u1 on a007 = %s, want read through g1", got)
	}
	if got := level("u4", "a008"); got != "none" {
		t.Errorf("rules deferred: u4 on a008 = %s, want none until resume", got)
	}
	if err := store.Undefer(ctx, pool, []string{store.SideRules}); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got, want := accessCSV(t, ctx, pool), oracle.CSV(oracle.Access(cur)); got != want {
		t.Fatalf("after resuming rules, access differs from the oracle\n%s", oracle.Diff(want, got))
	}
}

// TestSQLChanges changes records with plain SQL, as an application would:
// an owner change (wiping manual shares), an insert without a family root, a
// re-parenting and a delete. Both `run` and `watch` pick them up.
func TestSQLChanges(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	cur := mustImport(t, ctx, pool, nil, minimalOrg())
	cur = mustImport(t, ctx, pool, cur, `{"shares":[{"object":"account","record":"a004","grantee":"user:u5","access":"edit","cause":"manual"}]}`)
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`UPDATE recalc.record SET owner = 'u3' WHERE id = 'a004'`,
		`INSERT INTO recalc.record (id, object, owner, parent, fields) VALUES ('c_new', 'case', 'u4', 'a006', '{}')`,
		`UPDATE recalc.record SET parent = 'a008' WHERE id = 'c007_0'`,
		`DELETE FROM recalc.record WHERE id = 'c009_1'`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	cur.Shares = nil // the owner change of a004 wiped its manual share
	var recs []model.Record
	for _, r := range cur.Records {
		switch r.ID {
		case "a004":
			r.Owner = "u3"
		case "c007_0":
			r.Parent = "a008"
		case "c009_1":
			continue
		}
		recs = append(recs, r)
	}
	cur.Records = append(recs, model.Record{Object: "case", ID: "c_new", Owner: "u4", Parent: "a006", Fields: model.Fields{}})
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got, want := accessCSV(t, ctx, pool), oracle.CSV(oracle.Access(cur)); got != want {
		t.Fatalf("after plain-SQL changes, access differs from the oracle\n%s", oracle.Diff(want, got))
	}

	// watch: a change wakes it, and it recalculates.
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- watch.Run(wctx, pool, watch.Options{Debounce: 50 * time.Millisecond, MaxWait: time.Second, Poll: time.Minute},
			func(ctx context.Context) error {
				_, err := engine.Run(ctx, pool, engine.Options{Trigger: "watch"}, zerolog.Nop())
				return err
			},
			zerolog.Nop())
	}()
	time.Sleep(300 * time.Millisecond) // let it listen
	if _, err := pool.Exec(ctx, `UPDATE recalc.record SET owner = 'u5' WHERE id = 'a012'`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, err := access.Level(ctx, pool, "u5", "a012")
		if err != nil {
			t.Fatal(err)
		}
		if l == "all" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watch did not recalculate the owner change within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch: %v", err)
	}
	for i := range cur.Records {
		if cur.Records[i].ID == "a012" {
			cur.Records[i].Owner = "u5"
		}
	}
	if got, want := accessCSV(t, ctx, pool), oracle.CSV(oracle.Access(cur)); got != want {
		t.Fatalf("after watch, access differs from the oracle\n%s", oracle.Diff(want, got))
	}
	var trigger string
	_ = pool.QueryRow(ctx, `SELECT trigger FROM recalc.job ORDER BY id DESC LIMIT 1`).Scan(&trigger)
	if !strings.HasPrefix(trigger, "watch") {
		t.Errorf("last job trigger %q, want watch", trigger)
	}
}

// TestFullRunRepairsDrift corrupts the share table by hand (a lost row, a
// foreign row, a wrong level); the nightly `run --full` repairs it and
// reports how many rows it fixed.
func TestFullRunRepairsDrift(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	cur := mustImport(t, ctx, pool, nil, minimalOrg())
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	want := oracle.CSV(oracle.Access(cur))
	for _, sql := range []string{
		`DELETE FROM recalc.acl_share WHERE (rid, gid, cause) IN (SELECT rid, gid, cause FROM recalc.acl_share WHERE cause = 'owner' LIMIT 1)`,
		`INSERT INTO recalc.acl_share (rid, gid, level, cause, boss_ok)
		 SELECT r.rid, g.gid, 2, 'manual', true FROM recalc.acl_record r, recalc.grantee g WHERE r.id = 'a050' AND g.key = 'user:u5'`,
		`UPDATE recalc.acl_share SET level = 3 WHERE (rid, gid, cause) IN (SELECT rid, gid, cause FROM recalc.acl_share WHERE cause = 'rule' LIMIT 1)`,
	} {
		if tag, err := pool.Exec(ctx, sql); err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("%s: %v (%d rows)", sql, err, tag.RowsAffected())
		}
	}
	if got := accessCSV(t, ctx, pool); got == want {
		t.Fatal("the corruption did not change access")
	}
	rep, err := engine.Full(ctx, pool, engine.Options{Trigger: "nightly"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if rep.DriftFixed != 3 {
		t.Errorf("full run reported %d rows fixed, want 3", rep.DriftFixed)
	}
	if got := accessCSV(t, ctx, pool); got != want {
		t.Fatalf("after the full run, access differs from the oracle\n%s", oracle.Diff(want, got))
	}
}
