package attach_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/schema"
)

// TestInitRerunBesideWrites: `recalc init` upgrades a schema recorded at
// version 66, re-running migrations 67 onward (capture functions replaced,
// capture triggers renewed), again and again, while the application writes
// its attached tables from five connections and `recalc watch`'s steps
// (engine.Live) go on between the upgrades; a step that finds the schema
// older than it works on fails, and the watch steps again, as watch.Run
// does. Once the writes stop and the schema is current, a step leaves
// nothing logged, recalc.record mirrors the rows, and access is the
// oracle's and a full run's.
func TestInitRerunBesideWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	live := engine.NewLive(engine.Options{Retries: 5}, 1000)
	stop, watched := make(chan struct{}), make(chan [2]int, 1)
	go func() { // the watch, stepping beside the inits
		steps, failed := 0, 0
		for {
			select {
			case <-stop:
				watched <- [2]int{steps, failed}
				return
			default:
			}
			if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
				failed++
			}
			steps++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	inits, refused := 0, 0
	steps := b.writeWhile(t, 31, func() error {
		if _, err := b.engine.Exec(ctx, `DELETE FROM recalc.schema_version WHERE version >= 67`); err != nil {
			return err
		}
		if _, err := schema.Migrate(ctx, b.engine); err != nil {
			// Bounded lock waits: writers that keep the tables locked
			// refuse the capture's renewal; the next init goes on.
			t.Logf("init refused: %v", err)
			refused++
			return nil
		}
		inits++
		return nil
	}, writeAccounts, writeContacts, relinkContacts, writeOpportunities, writeCases, rlsTableWriter, rlsTableWriter, rlsTableWriter)
	close(stop)
	w := <-watched
	t.Logf("%d watch steps (%d failed) beside the writes and inits", w[0], w[1])
	t.Logf("%d inits beside the writes: %d done, %d refused", steps, inits, refused)
	if inits < 2 {
		t.Fatalf("%d upgrades beside the writes: the test covers nothing", inits)
	}
	if _, err := schema.Migrate(ctx, b.engine); err != nil {
		t.Fatal(err)
	}
	if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"account", "contact", "opportunity", "case"} {
		if b.waiting(t, o) {
			t.Errorf("writes to %s still logged after the last step", o)
		}
	}
	b.checkMirror(t, "after the writes and a step")
	b.checkOracle(t, "after the writes and a step")
	b.raceCheckFull(t, "after the writes and a step")
}
