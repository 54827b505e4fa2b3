package engine_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
)

// TestFullRunsAJobOfItsOwn: `recalc run --full` first joins a job other
// processes left unfinished, and then plans again; it is done only once a
// full job of its own has run, which is what repairs drift. Here each
// finish of a job makes the next one (a trigger of the test's, as
// processes taking turns would), starting from one left unfinished, and
// a share row is deleted by hand. A run --full that met three such jobs in
// a row returned their report, with the drift left in place; one that
// meets more than engine.MaxJoins fails, saying to run it again, and the
// next run repairs it.
func TestFullRunsAJobOfItsOwn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		others   int  // jobs of other processes, one after another
		inPlace  bool // the full job works in place
		failsNow bool // more than engine.MaxJoins: the first run fails
	}{
		{others: 2},
		{others: 5},
		{others: 5, inPlace: true},
		{others: engine.MaxJoins + 2, failsNow: true},
	} {
		t.Run(strconv.Itoa(tc.others)+" jobs, in place "+strconv.FormatBool(tc.inPlace), func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, raceOrg(6), engine.Options{})
			b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'c001_0'`)
			b.run(t, engine.Options{}) // an incremental job, whose configuration and plan the others take
			b.syncRecords(t)
			b.exec(t, `CREATE TABLE public.others_left (n integer NOT NULL)`,
				`INSERT INTO public.others_left VALUES (`+strconv.Itoa(tc.others-1)+`)`,
				`CREATE FUNCTION public.next_job() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN
					UPDATE public.others_left SET n = n - 1 WHERE n > 0;
					IF FOUND THEN
						INSERT INTO recalc.job (kind, trigger, status, change_seq, config, plan, chunks, do_rules, do_closure)
						VALUES ('incremental', 'another process', 'running', NEW.change_seq, NEW.config, NEW.plan, 0, false, false);
					END IF;
					RETURN NULL;
				END $$`,
				`CREATE TRIGGER next_job AFTER UPDATE OF status ON recalc.job FOR EACH ROW
				 WHEN (NEW.status = 'done' AND OLD.status <> 'done') EXECUTE FUNCTION public.next_job()`,
				`INSERT INTO recalc.job (kind, trigger, status, change_seq, config, plan, chunks, do_rules, do_closure)
				 SELECT 'incremental', 'another process', 'running', change_seq, config, plan, 0, false, false
				 FROM recalc.job ORDER BY id DESC LIMIT 1`,
				`DELETE FROM recalc.acl_share WHERE ctid = (SELECT ctid FROM recalc.acl_share WHERE cause = 'owner' LIMIT 1)`)
			if got, want := b.access(t), oracle.CSV(oracle.Access(b.cur)); got == want {
				t.Fatal("premise: deleting a share row changed no access")
			}
			opt := engine.Options{InPlace: tc.inPlace}
			_, err := engine.Full(b.ctx, b.pool, opt, zerolog.Nop())
			if tc.failsNow {
				if err == nil || !strings.Contains(err.Error(), "run it again") {
					t.Fatalf("run --full after %d jobs of other processes: %v, want a failure saying to run it again", tc.others, err)
				}
				b.full(t, opt)
			} else if err != nil {
				t.Fatalf("run --full after %d jobs of other processes: %v", tc.others, err)
			}
			b.checkOracle(t, "run --full beside jobs of other processes")
			var left int
			if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.job WHERE status <> 'done'`).Scan(&left); err != nil || left != 0 {
				t.Errorf("jobs left unfinished: %d (%v), want none", left, err)
			}
		})
	}
}

// TestFullWhileRulesDeferred: run --full with share rows deferred and new
// tables swapped in recalculates the closure once, in one job (it made
// three closure-only jobs, each planning again for a full job the deferral
// does not allow), and leaves the share rows as they were.
func TestFullWhileRulesDeferred(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, raceOrg(6), engine.Options{})
	before := b.access(t)
	if err := store.Defer(b.ctx, b.pool, []string{store.SideRules}); err != nil {
		t.Fatal(err)
	}
	var last int64
	if err := b.pool.QueryRow(b.ctx, `SELECT max(id) FROM recalc.job`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	b.full(t, engine.Options{InPlace: false})
	var jobs int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.job WHERE id > $1`, last).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if jobs != 1 {
		t.Errorf("run --full --in-place=false with share rows deferred made %d jobs, want 1 (the closure's)", jobs)
	}
	if after := b.access(t); after != before {
		t.Errorf("run --full with share rows deferred changed access:\n%s", oracle.Diff(before, after))
	}
}
