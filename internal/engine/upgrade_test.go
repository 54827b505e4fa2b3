package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/schema"
)

// isNewer reports whether err says that the schema is newer than this
// binary, and to run the newer recalc.
func isNewer(err error) bool {
	var ve *schema.VersionError
	return errors.As(err, &ve) && ve.Current > ve.Want && ve.Want == schema.Latest() &&
		strings.Contains(err.Error(), "newer than this recalc") && strings.Contains(err.Error(), "a newer recalc upgraded it; run that one")
}

// TestUpgradeStopsRunningEngine: a process this binary started keeps
// running after a newer recalc upgraded the schema (`recalc watch`, a
// job's workers). It stops at its next live step, plan or job finish, with
// an error saying so, and changes nothing: the change rows stay for the
// newer recalc, and a job whose finish it refused stays for the newer
// recalc's `recalc run` to resume (here, this binary once the fake newer
// version is gone).
func TestUpgradeStopsRunningEngine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// refused does the work the upgrade must stop, after upgrade, and
		// returns its error. live has stepped once, before the change.
		refused func(t *testing.T, b *bundle, live *engine.Live, upgrade func()) error
		failed  bool // a job was left failed
	}{
		{name: "live step", refused: func(t *testing.T, b *bundle, live *engine.Live, upgrade func()) error {
			upgrade()
			_, err := live.Step(b.ctx, b.pool, zerolog.Nop())
			return err
		}},
		{name: "run", refused: func(t *testing.T, b *bundle, _ *engine.Live, upgrade func()) error {
			upgrade()
			_, err := engine.Run(b.ctx, b.pool, engine.Options{}, zerolog.Nop())
			return err
		}},
		{name: "job finish", failed: true, refused: refuseFinish},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			live := engine.NewLive(engine.Options{}, 1000) // a running watch
			b.step(t, live)
			b.exec(t, `UPDATE recalc.record SET owner = 'u4' WHERE id = 'a002'`)
			b.cur.Records[6].Owner = "u4" // a002
			before, pending, jobs := b.access(t), b.count(t, `recalc.change`), b.count(t, `recalc.job`)
			err := tc.refused(t, b, live, func() {
				if _, err := b.pool.Exec(b.ctx, `INSERT INTO recalc.schema_version (version, name) VALUES ($1, 'future.up.sql')`,
					schema.Latest()+1); err != nil {
					t.Fatal(err)
				}
			})
			if !isNewer(err) {
				t.Fatalf("after an upgrade by a newer recalc: %v; want an error saying the schema is newer and to run the newer recalc", err)
			}
			if got := b.access(t); got != before {
				t.Errorf("access changed after the upgrade\n%s", oracle.Diff(before, got))
			}
			if got := b.count(t, `recalc.change`); got != pending {
				t.Errorf("%d change rows after the refusal, want %d, left for the newer recalc", got, pending)
			}
			var status, msg string
			if err := b.pool.QueryRow(b.ctx, `SELECT status, coalesce(error, '') FROM recalc.job ORDER BY id DESC LIMIT 1`).Scan(&status, &msg); err != nil {
				t.Fatal(err)
			}
			switch got := b.count(t, `recalc.job`); {
			case !tc.failed && got != jobs:
				t.Errorf("%d jobs after the refusal, want %d: no job planned", got, jobs)
			case tc.failed && (got != jobs+1 || status != string(queue.Failed) || !strings.Contains(msg, "run that one")):
				t.Errorf("%d jobs, the last %s (%q); want one more, failed, saying to run the newer recalc", got, status, msg)
			}
			// The newer recalc (here this one, once the fake version is
			// gone) resumes any job left and materializes the change.
			b.exec(t, `DELETE FROM recalc.schema_version WHERE name = 'future.up.sql'`)
			b.run(t, engine.Options{})
			b.checkOracle(t, "after the newer recalc's run")
		})
	}
}

// refuseFinish runs a full job that the upgrade comes to between its plan
// and its finish: its staging waits for the staging lock, held until then.
func refuseFinish(t *testing.T, b *bundle, _ *engine.Live, upgrade func()) error {
	staging, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer staging.Rollback(b.ctx)
	if _, err := staging.Exec(b.ctx, `SELECT FROM recalc.engine_lock WHERE scope = 3 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := engine.Full(b.ctx, b.pool, engine.Options{}, zerolog.Nop())
		done <- err
	}()
	waitForLockWait(t, b, "true")
	upgrade()
	if err := staging.Rollback(b.ctx); err != nil {
		t.Fatal(err)
	}
	return <-done
}

// count counts the rows of table.
func (b *bundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitForLockWait waits, up to 20 s, until a session of b's database waits
// for a lock and matches cond, a condition on pg_stat_activity with args.
func waitForLockWait(t *testing.T, b *bundle, cond string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	for {
		var waiting bool
		if err := b.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND (`+cond+`))`, args...).Scan(&waiting); err != nil {
			t.Fatalf("wait for a lock wait: %v", err)
		}
		if waiting {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
