package engine_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/store"
)

// TestResumeBesideWatchPlansOnce: a bulk load into two attached tables
// while calculation is deferred, accounts then contacts under them, with a
// watch running. The watch's step absorbs the accounts (a plan absorbs
// while deferred, and keeps what it absorbed waiting); as it does, the
// contacts commit and `recalc resume` lifts the deferral. The watch's plan
// then must not plan a job of the accounts alone, which the resume would
// join and follow with a second job of the contacts and, once more, their
// accounts' families: each record is recomputed once.
func TestResumeBesideWatchPlansOnce(t *testing.T) {
	t.Parallel()
	const n = 500
	b := setupOrg(t, attachedBase, engine.Options{})
	b.exec(t, attachedApp[:4]...)
	b.exec(t, attachedApp[7:9]...)
	applySpec(t, b, attachedSpec("owner_id", "account", "contact"))
	b.run(t, engine.Options{})
	live := engine.NewLive(engine.Options{Trigger: "watch", LockTimeout: 5 * time.Second}, 1000)
	b.step(t, live)
	sides := []string{store.SideClosure, store.SideRules}
	if err := store.Defer(b.ctx, b.pool, sides); err != nil {
		t.Fatal(err)
	}
	b.exec(t, fmt.Sprintf(`INSERT INTO app.account SELECT 'b' || i, 'u1', NULL FROM generate_series(1, %d) i`, n))
	var first int64
	if err := b.pool.QueryRow(b.ctx, `SELECT coalesce(max(id), 0) FROM recalc.job`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	g := &gate{}
	p := g.arm(`recalc.attach_absorb_one`) // the watch's plan, about to absorb the accounts
	stepped := make(chan error, 1)
	go func() {
		_, err := live.Step(b.ctx, gatedPool(t, b.pool, g), zerolog.Nop())
		stepped <- err
	}()
	waitReached(t, p, "the watch's plan to absorb the accounts")
	start := time.Now()
	b.exec(t, fmt.Sprintf(`INSERT INTO app.contact SELECT 'd' || i, 'u2', 'b' || i FROM generate_series(1, %d) i`, n))
	if err := store.Undefer(b.ctx, b.pool, sides); err != nil {
		t.Fatal(err)
	}
	close(p.release)
	if err := <-stepped; err != nil {
		t.Fatalf("watch step: %v", err)
	}
	b.run(t, engine.Options{Trigger: "resume"})
	elapsed := time.Since(start)
	rows, err := b.pool.Query(b.ctx, `SELECT id, trigger, records FROM recalc.job WHERE id > $1 ORDER BY id`, first)
	if err != nil {
		t.Fatal(err)
	}
	var jobs []string
	var records int64
	for rows.Next() {
		var id, r int64
		var trig string
		if err := rows.Scan(&id, &trig, &r); err != nil {
			t.Fatal(err)
		}
		jobs, records = append(jobs, fmt.Sprintf("job %d (%s): %d records", id, trig, r)), records+r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v, %d records recomputed in %s", jobs, records, elapsed)
	var all int64
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.record`).Scan(&all); err != nil {
		t.Fatal(err)
	}
	if records > all {
		t.Errorf("%v: %d records recomputed, want at most the %d there are: the accounts' families were recomputed twice", jobs, records, all)
	}
	b.cur = appModel(t, b, "owner_id", "account", "contact")
	b.checkOracle(t, "after the resume")
}
