package engine_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharetable"
)

// TestVerifyAndRepair corrupts the materialized tables by hand (a deleted
// share row, an extra one, a wrong level, a lost closure entry): verify
// reports each by object and cause, repair removes them, and a second
// verify finds nothing.
func TestVerifyAndRepair(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	ctx, pool := b.ctx, b.pool
	rep, err := engine.Verify(ctx, pool, engine.VerifyOptions{}, zerolog.Nop())
	if err != nil || rep.Drift() || rep.Families != 100 {
		t.Fatalf("verify of fresh tables: %+v, %v; want 100 families, no drift", rep, err)
	}
	for _, sql := range []string{
		`DELETE FROM recalc.acl_share WHERE (rid, gid, cause) IN (SELECT s.rid, s.gid, s.cause FROM recalc.acl_share s
		   JOIN recalc.acl_record r USING (rid) WHERE r.id = 'a003' AND s.cause = 'owner')`,
		`INSERT INTO recalc.acl_share (rid, gid, level, cause, boss_ok)
		 SELECT r.rid, g.gid, 2, 'rule', true FROM recalc.acl_record r, recalc.grantee g WHERE r.id = 'c004_1' AND g.key = 'user:u5'`,
		`UPDATE recalc.acl_share SET level = 3 WHERE (rid, gid, cause) IN (SELECT s.rid, s.gid, s.cause FROM recalc.acl_share s
		   JOIN recalc.acl_record r USING (rid) WHERE r.id = 'a001' AND s.cause = 'rule')`,
		`DELETE FROM recalc.acl_member WHERE (gid, uid) IN (SELECT m.gid, m.uid FROM recalc.acl_member m
		   JOIN recalc.grantee g USING (gid) WHERE g.key = 'group:g1' LIMIT 1)`,
	} {
		if tag, err := pool.Exec(ctx, sql); err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("%s: %v (%d rows)", sql, err, tag.RowsAffected())
		}
	}
	rep, err = engine.Verify(ctx, pool, engine.VerifyOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][3]int64{}
	for _, c := range rep.ShareRows {
		got[c.Object+"/"+c.Cause] = [3]int64{c.Missing, c.Extra, c.Wrong}
	}
	want := map[string][3]int64{"account/owner": {1, 0, 0}, "case/rule": {0, 1, 0}, "account/rule": {0, 0, 1}}
	if len(got) != len(want) || rep.ClosureMissing != 1 || rep.ClosureExtra != 0 {
		t.Fatalf("verify found %v, closure missing %d extra %d; want %v and one closure entry missing", got, rep.ClosureMissing, rep.ClosureExtra, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: missing/extra/wrong = %v, want %v", k, got[k], w)
		}
	}
	// A sample checks that many families, at random.
	if rep, err := engine.Verify(ctx, pool, engine.VerifyOptions{Sample: 10}, zerolog.Nop()); err != nil || rep.Families != 10 {
		t.Fatalf("verify --sample 10: %+v, %v", rep, err)
	}
	if _, err := engine.Verify(ctx, pool, engine.VerifyOptions{Repair: true}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	rep, err = engine.Verify(ctx, pool, engine.VerifyOptions{}, zerolog.Nop())
	if err != nil || rep.Drift() {
		t.Fatalf("verify after repair: %+v, %v; want no drift", rep, err)
	}
	b.checkOracle(t, "after repair")
}

// TestEmptyModelRunsOnce: with nothing imported, the first run is a full
// job over nothing, and then the share tables count as computed: the next
// run has nothing to do, verify and explain answer, and the first import
// is still recalculated from scratch.
func TestEmptyModelRunsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if rep := b.run(t, engine.Options{}); rep.Nothing || rep.Kind != queue.Full {
		t.Fatalf("first run on an empty model: %+v, want a full job", rep)
	}
	if rep := b.run(t, engine.Options{}); !rep.Nothing {
		t.Fatalf("second run on an empty model: %+v, want nothing to do", rep)
	}
	if rep, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{}, zerolog.Nop()); err != nil || rep.Drift() {
		t.Fatalf("verify of an empty model's tables: %+v, %v; want no drift", rep, err)
	}
	if _, err := engine.Explain(b.ctx, b.pool, "u1", "a001"); err == nil || !strings.Contains(err.Error(), `record "a001" does not exist`) {
		t.Fatalf("explain on an empty model: %v, want the record not found", err)
	}
	b.importFile(t, minimalOrg())
	if rep := b.run(t, engine.Options{}); rep.Kind != queue.Full || rep.Records == 0 {
		t.Fatalf("run after the first import: %+v, want a full job over the records", rep)
	}
	b.checkOracle(t, "the first import after an empty model's run")
}

// TestVerifyRepairStopped: a repair that stops after it fixed some
// families, here cancelled while its closure step waits for a lock, keeps
// those fixes and says what they were in its error.
func TestVerifyRepairStopped(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	b.exec(t, `DELETE FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a003') AND cause = 'owner'`)
	// a003's row held: the repair of its family waits for it. The closure
	// is locked meanwhile: the closure step waits for it once that repair
	// is committed.
	row, closure := b.begin(t), b.begin(t)
	if _, err := row.Exec(b.ctx, `SELECT FROM recalc.acl_record WHERE id = 'a003' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := engine.Verify(ctx, b.pool, engine.VerifyOptions{Repair: true}, zerolog.Nop())
		done <- err
	}()
	waitForLockWait(t, b, "query LIKE '%acl_record%FOR UPDATE%'")
	if _, err := closure.Exec(b.ctx, `LOCK TABLE recalc.acl_member IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	if err := row.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	waitForLockWait(t, b, "wait_event = 'relation'")
	cancel()
	err := <-done
	var stop *engine.RepairStopped
	if !errors.As(err, &stop) || !errors.Is(err, context.Canceled) {
		t.Fatalf("verify --repair cancelled in its closure step: %v; want a RepairStopped of context.Canceled", err)
	}
	want := []sharetable.DiffCount{{Object: "account", Cause: "owner", Missing: 1}}
	if !slices.Equal(stop.Repaired.ShareRows, want) || !strings.Contains(err.Error(), "verify repaired 1 share rows") {
		t.Errorf("verify --repair stopped with %v (%+v); want %v repaired", err, stop.Repaired.ShareRows, want)
	}
	if err := closure.Rollback(b.ctx); err != nil {
		t.Fatal(err)
	}
	if rep, err := engine.Verify(b.ctx, b.pool, engine.VerifyOptions{}, zerolog.Nop()); err != nil || rep.Drift() {
		t.Fatalf("verify after the stopped repair: %+v, %v; want its fix kept, no drift", rep, err)
	}
}
