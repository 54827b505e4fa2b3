package attach_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestRepairBesideWrites: `recalc verify --repair` reads support.case
// again whole (rows written with the capture bypassed: case 10 deleted,
// case 1's priority changed) while application transaction A, which
// changes case 2's id, commits in the middle of the re-read: while it waits
// to drop the record whose row is gone (after it listed the ids, before it
// reads the rows), while a `recalc watch` step's absorb of A waits for the
// object the comparison holds. (Without the watch, with another column or
// the owner changed, and with A committing after the re-read read the rows,
// held too.) The repair never undoes A nor takes
// it as drift: once the watch and a run have absorbed A, the records
// mirror the rows, frank's manual share on case 2 went exactly when A took
// the id or changed the owner, and verify finds no drift.
func TestRepairBesideWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupSharedCase(t)
	b.exec(t, b.app, `INSERT INTO support."case" VALUES (10, 1, 'erin', 2, 'New')`)
	b.run(t)
	b.exec(t, b.admin, `SET session_replication_role = replica; DELETE FROM support."case" WHERE id = 10;
		UPDATE support."case" SET priority = 99 WHERE id = 1; RESET session_replication_role`)
	a, _ := hold(t, b.app, `UPDATE support."case" SET id = 20 WHERE id = 2`)
	holder, pid := hold(t, b.admin, `SELECT FROM recalc.record WHERE id = 'case:10' FOR UPDATE`)
	done := make(chan struct{})
	var rep *engine.VerifyReport
	var verr error
	go func() {
		defer close(done)
		rep, verr = engine.Verify(ctx, b.engine, engine.VerifyOptions{Sources: true, Repair: true}, zerolog.Nop())
	}()
	waitBlocked(t, b.admin, pid, done, "the re-read to wait")
	commit(t, a)
	// The watch's absorb of A waits for the object the comparison holds
	// (each gives up after 2 s: release the re-read first).
	var vpid uint32
	if err := b.admin.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))`, pid).Scan(&vpid); err != nil {
		t.Fatal(err)
	}
	live := engine.NewLive(engine.Options{ChunkSize: 1}, 100)
	stepped := make(chan error, 1)
	go func() { _, err := live.Step(ctx, b.engine, zerolog.Nop()); stepped <- err }()
	waitBlocked(t, b.admin, vpid, done, "the watch's absorb to wait for the comparison")
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-stepped; err != nil {
		t.Fatalf("watch step beside the re-read: %v", err)
	}
	<-done
	if verr != nil {
		t.Fatalf("verify --repair: %v", verr)
	}
	for _, s := range rep.Sources {
		if s.Object == "case" && (s.Differing != 2 || s.Unchecked != "") {
			t.Errorf("verify --repair found %+v for case, want the 2 rows written past the capture", s)
		}
	}
	for range 3 {
		if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
			t.Fatalf("watch step: %v", err)
		}
	}
	b.run(t)
	if b.waiting(t, "case") {
		t.Errorf("writes to case still logged after the runs")
	}
	b.checkMirror(t, "after the repair and the runs")
	if got := levelOf(t, b, "frank", "case:2"); got != "none" {
		t.Errorf("frank has %s on case:2, want none: A took its id from its row", got)
	}
	if out, err := b.recalc("verify"); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
