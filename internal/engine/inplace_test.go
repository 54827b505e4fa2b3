package engine_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/pg"
)

// manyFamilies is a model file of n single-record families owned by
// owners in turn: more than the 1,000 families below which the planner
// never switches an incremental plan to a full one.
func manyFamilies(t *testing.T, n int, owners ...string) string {
	t.Helper()
	recs := make([]map[string]any, n)
	for i := range recs {
		recs[i] = map[string]any{"id": fmt.Sprintf("a%05d", i), "object": "account", "owner": owners[i%len(owners)]}
	}
	b, err := json.Marshal(map[string]any{"version": 1, "records": recs})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInPlacePlansStayIncremental: with Options.InPlace, a change to most
// families and a truncate of the records, which the planner otherwise
// turns into a full job swapping in new tables, are materialized by an
// incremental job rewriting the live tables, and a full run in place
// repairs share rows missing, extra and wrong, and record rows; either way
// access equals the oracle's.
func TestInPlacePlansStayIncremental(t *testing.T) {
	t.Parallel()
	const base = `{"version": 1,
	  "objects": [{"name": "account", "internal_owd": "private", "external_owd": "private"}],
	  "roles": [{"id": "boss"}, {"id": "rep", "parent": "boss"}],
	  "users": [{"id": "ann", "role": "boss"}, {"id": "bo", "role": "rep"}, {"id": "cy", "role": "rep"}]}`
	for _, tc := range []struct {
		name   string
		opt    engine.Options
		change func(t *testing.T, b *bundle)
		want   string // the job kind
		drift  bool   // the report counts drift repaired (a full plan counts the changes it makes too)
	}{
		{"most families change, swapping", engine.Options{}, changeOwners, "full", true},
		{"most families change, in place", engine.Options{InPlace: true}, changeOwners, "incremental", false},
		{"a truncate, swapping", engine.Options{}, truncateRecords, "full", true},
		{"a truncate, in place", engine.Options{InPlace: true}, truncateRecords, "incremental", true},
		{"drift, full swapping", engine.Options{Full: true}, tamper, "full", true},
		{"drift, full in place", engine.Options{Full: true, InPlace: true}, tamper, "incremental", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.importFile(t, base)
			b.importFile(t, manyFamilies(t, 1200, "bo", "cy"))
			b.run(t, engine.Options{Workers: 2, ChunkSize: 100})
			b.checkOracle(t, "after the first run")
			tc.change(t, b)
			opt := tc.opt
			opt.Workers, opt.ChunkSize = 2, 100
			rep := b.run(t, opt)
			if string(rep.Kind) != tc.want {
				t.Fatalf("the run made a %q job, want %q: %s", rep.Kind, tc.want, b.lastPlan())
			}
			if (rep.DriftFixed > 0) != tc.drift {
				t.Errorf("the report counts %d share rows of drift repaired, want some: %v", rep.DriftFixed, tc.drift)
			}
			b.checkOracle(t, "after "+tc.name)
		})
	}
}

// tamper deletes, adds and changes share rows, and moves a record row to
// another family, behind the engine's back.
func tamper(t *testing.T, b *bundle) {
	b.exec(t,
		`DELETE FROM recalc.acl_share WHERE rid IN (SELECT rid FROM recalc.acl_record WHERE id IN ('a00007', 'a00500'))`,
		`INSERT INTO recalc.acl_share (rid, gid, cause, level, boss_ok)
		 SELECT a.rid, s.gid, 'manual', 3, true FROM recalc.acl_record a, recalc.acl_share s WHERE a.id = 'a01000' LIMIT 1`,
		`UPDATE recalc.acl_share SET level = 3 WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a00900') AND level < 3`,
		`UPDATE recalc.acl_record SET root_id = 'a00001' WHERE id = 'a01100'`)
}

// changeOwners gives every record another owner.
func changeOwners(t *testing.T, b *bundle) {
	b.importFile(t, manyFamilies(t, 1200, "cy", "bo"))
}

// truncateRecords truncates recalc.record, as an application's bulk
// reload would.
func truncateRecords(t *testing.T, b *bundle) {
	b.exec(t, `TRUNCATE recalc.record`)
	m, f, err := model.Parse(strings.NewReader(`{"version": 1, "records": []}`))
	if err != nil {
		t.Fatal(err)
	}
	b.cur = oracle.Merge(b.cur, m, f)
}

// fiftyFamilies is a bundle holding 50 single-record families of private
// accounts owned by bo and cy, materialized.
func fiftyFamilies(t *testing.T) *bundle {
	b := setup(t)
	b.importFile(t, `{"version": 1,
	  "objects": [{"name": "account", "internal_owd": "private", "external_owd": "private"}],
	  "users": [{"id": "bo"}, {"id": "cy"}]}`)
	b.importFile(t, manyFamilies(t, 50, "bo", "cy"))
	b.run(t, engine.Options{})
	return b
}

// TestFullInPlaceLocksOnlyWhatDiffers: a full run in place diffs each
// family before locking it, so a family whose rows another writer holds
// locked is passed over while it needs no change, and waited for once it
// does.
func TestFullInPlaceLocksOnlyWhatDiffers(t *testing.T) {
	t.Parallel()
	b := fiftyFamilies(t)
	holder := connect(t, b.pool)
	if _, err := holder.Exec(b.ctx, `BEGIN; SELECT FROM recalc.acl_record WHERE id = 'a00003' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	opt := engine.Options{Full: true, InPlace: true, ChunkSize: 10, LockTimeout: 200 * time.Millisecond, Retries: 0}
	if _, err := engine.Run(b.ctx, b.pool, opt, zerolog.Nop()); err != nil {
		t.Fatalf("a full run in place with nothing to change waited for a row lock: %v", err)
	}
	b.exec(t, `DELETE FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a00003')`)
	if _, err := engine.Run(b.ctx, b.pool, opt, zerolog.Nop()); !pg.IsRetryable(err) {
		t.Fatalf("a full run in place repaired a family whose rows another writer held locked: %v", err)
	}
	if _, err := holder.Exec(b.ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	b.run(t, engine.Options{})
	b.checkOracle(t, "after the held lock was released")
}

// TestFullInPlaceRetriesServerErrors: a lock timeout raised by the server
// in a full run in place's unlocked diff aborts the chunk's transaction, so
// the chunk is retried whole, as a swap's is, and the job does not fail
// (it did when the diff's error sent the chunk on to the locking path in
// the aborted transaction). Another session holds recalc.team ACCESS
// EXCLUSIVE, as a TRUNCATE, VACUUM FULL or ALTER TABLE would, for 600 ms:
// longer than the 100 ms lock timeout, well within the retries.
func TestFullInPlaceRetriesServerErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opt  engine.Options
	}{
		{"full swapping (control)", engine.Options{Full: true}},
		{"full in place", engine.Options{Full: true, InPlace: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := fiftyFamilies(t)

			holder := connect(t, b.pool)
			if _, err := holder.Exec(b.ctx, `BEGIN; LOCK TABLE recalc.team IN ACCESS EXCLUSIVE MODE`); err != nil {
				t.Fatal(err)
			}
			released := make(chan error, 1)
			go func() {
				time.Sleep(600 * time.Millisecond)
				_, err := holder.Exec(b.ctx, `ROLLBACK`)
				released <- err
			}()
			opt := tc.opt
			opt.ChunkSize, opt.LockTimeout, opt.Retries = 10, 100*time.Millisecond, 10
			_, err := engine.Run(b.ctx, b.pool, opt, zerolog.Nop())
			if rerr := <-released; rerr != nil {
				t.Fatal(rerr)
			}
			if err != nil {
				t.Fatalf("a lock held on recalc.team for 600 ms (lock timeout 100 ms, 10 retries) failed the job: %v", err)
			}
			b.checkOracle(t, "after the run")
		})
	}
}
