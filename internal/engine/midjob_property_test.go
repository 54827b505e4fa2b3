package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// midJobShardSeeds is how many seeds of TestMidJobAccessBounded one
// parallel subtest runs, on a database of its own.
const midJobShardSeeds = 3

// TestMidJobAccessBounded imports random models and random changes, and
// stops the recalculation that follows at every point where it has
// committed part of its work: after the job's creation, between chunks
// (one worker, small chunks), after the last chunk before the finish, and
// between the batches of the watch's fast path. At each point, for every
// (user, record) pair, recalc.access_level and recalc.can_access at each
// level must give at most the greater of the oracle's levels under the
// model before and the model after: less is a recalculation in progress
// (fail closed), more is access no configuration gives. The pages of
// recalc.visible_records, and rls_records and rls_keys for a user in mode
// 1, are held to the same bound, for some users and a level at each point
// (boundCheck.checkLists).
//
// Each step is recalculated one way: an incremental run, a full run in
// place (an incremental job over every family), a full run by staging
// tables, or a watch step whose fast path takes two records a batch. The
// records of a step without shares or teams are written with plain SQL
// half the time, so that they are pending in recalc.change beside the
// model change.
func TestMidJobAccessBounded(t *testing.T) {
	t.Parallel()
	first, n := testkit.Seeds("RECALC_MIDJOB", 12, 6)
	testkit.Shards(t, first, n, midJobShardSeeds, func(t *testing.T, from, to int) {
		b := setup(t)
		chk := &boundCheck{t: t, ctx: b.ctx, pool: b.pool}
		var atPoint func() // what the step does at the point after each check, if anything
		ways := map[string]int{}
		g := &midJobTracer{check: func(point string) {
			chk.check(point)
			if atPoint != nil {
				atPoint()
			}
		}}
		enginePool := tracedPool(t, b.pool, g)
		if from > first {
			b.cur = testkit.StoredBefore(first, from, func(seed int, prev *model.Model) *model.Model {
				steps := midJobSteps(seed, prev)
				return steps[len(steps)-1].cur
			})
			b.importModel(t, b.cur, nil)
			b.run(t, engine.Options{})
		}
		for seed := from; seed < to; seed++ {
			rng := rand.New(rand.NewPCG(uint64(seed), 0x313d))
			steps := midJobSteps(seed, b.cur)
			for i := 0; i < len(steps); i++ {
				old := b.cur
				how := midJobWay(rng.IntN(10))
				if i == 5 { // the records-only step: with SQL, for the watch's fast path, in batches
					how = "watch"
				}
				if how == "deferred" && (i+1 == 5 || i+1 == len(steps)) {
					how = "incremental"
				}
				if how == "deferred" {
					if err := store.Defer(b.ctx, b.pool, nil); err != nil {
						t.Fatal(err)
					}
				}
				last := i
				if how == "deferred" { // this step's import and the next one's, then resume
					last = i + 1
				}
				bySQL := false
				for ; i <= last; i++ {
					s := steps[i]
					sql := i == 5 || s.present != nil && slices.Contains(s.present, "records") &&
						!slices.Contains(s.present, "shares") && !slices.Contains(s.present, "teams") && rng.IntN(2) == 0
					if sql {
						rest := slices.DeleteFunc(slices.Clone(s.present), func(x string) bool { return x == "records" })
						if len(rest) > 0 {
							b.importModel(t, s.file, rest)
						}
						writeRecordsSQL(t, b, b.cur, s.cur)
					} else {
						b.importModel(t, s.file, s.present)
					}
					b.cur, bySQL = s.cur, bySQL || sql
				}
				i = last
				ways[how]++
				what := fmt.Sprintf("seed %d step %d (%s, records by SQL: %v)", seed, i, how, bySQL)
				chk.arm(what, old, b.cur)
				opt := engine.Options{Workers: 1, ChunkSize: 4}
				var err error
				switch how {
				case "incremental":
					_, err = engine.Run(b.ctx, enginePool, opt, zerolog.Nop())
				case "deferred":
					if err = store.Undefer(b.ctx, b.pool, nil); err == nil {
						_, err = engine.Run(b.ctx, enginePool, opt, zerolog.Nop())
					}
				case "interrupted":
					err = interruptedRun(t, b, enginePool, opt, rng, chk, &atPoint, what, old)
				case "full in place":
					opt.InPlace = true
					_, err = engine.Full(b.ctx, enginePool, opt, zerolog.Nop())
				case "full by staging":
					_, err = engine.Full(b.ctx, enginePool, opt, zerolog.Nop())
				case "watch":
					var rep *engine.LiveReport
					if rep, err = engine.NewLive(opt, 2).Step(b.ctx, enginePool, zerolog.Nop()); err == nil && rep.Fast {
						chk.fast++
					}
				}
				chk.disarm()
				if err != nil {
					t.Fatalf("seed %d step %d: %s: %v", seed, i, how, err)
				}
				if t.Failed() {
					t.FailNow()
				}
				b.checkOracle(t, fmt.Sprintf("seed %d step %d (%s)", seed, i, how))
			}
		}
		t.Logf("%d checks at intermediate points (at %d the access tables were as at the last that asked access: not asked again), %d watch steps on the fast path; steps by way: %v",
			chk.checks, chk.same, chk.fast, ways)
	})
}

// interruptedRun is a run stopped at a random point of its job (or of its
// planning), as a crash or a SIGINT stops it, where the application has
// also written records with plain SQL, half the time; then the run that
// resumes the job and recalculates the writes. The bound takes in the
// model the writes leave, from the point they commit.
func interruptedRun(t *testing.T, b *bundle, pool *pgxpool.Pool, opt engine.Options, rng *rand.Rand, chk *boundCheck,
	atPoint *func(), what string, old *model.Model) error {
	t.Helper()
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	job, written := b.cur, b.cur
	if rng.IntN(2) == 0 {
		written = recordsChange(rng, job)
	}
	stop := 1 + rng.IntN(4)
	*atPoint = func() {
		if stop--; stop > 0 {
			return
		}
		*atPoint = nil
		if written != job {
			writeRecordsSQL(t, b, job, written)
			chk.arm(what+", records written by SQL mid-job", old, job, written)
		}
		cancel()
	}
	_, err := engine.Run(ctx, pool, opt, zerolog.Nop())
	*atPoint = nil
	if err != nil && ctx.Err() == nil {
		return err
	}
	if written != job && stop > 0 { // the run ended before the point: write now
		writeRecordsSQL(t, b, job, written)
		chk.arm(what+", records written by SQL after the run", old, job, written)
	}
	b.cur = written
	_, err = engine.Run(b.ctx, pool, opt, zerolog.Nop())
	return err
}

// recordsChange is a change of m's records alone that oracle.Mutate makes
// within 100 tries (m when it makes none), merged into m.
func recordsChange(rng *rand.Rand, m *model.Model) *model.Model {
	for range 100 {
		next, file := oracle.Mutate(rng, m)
		if p := file.Present(); len(p) == 1 && p[0] == "records" {
			return oracle.Merge(m, next, file)
		}
	}
	return m
}

// midJobSteps is propertySteps, then a change of records alone when
// oracle.Mutate makes one within 100 tries.
func midJobSteps(seed int, prev *model.Model) []propertyStep {
	steps := propertySteps(seed, prev)
	cur := steps[len(steps)-1].cur
	rng := rand.New(rand.NewPCG(uint64(seed), 0xfa57))
	for range 100 {
		next, file := oracle.Mutate(rng, cur)
		if p := file.Present(); len(p) == 1 && p[0] == "records" {
			return append(steps, propertyStep{file: next, present: p, cur: oracle.Merge(cur, next, file)})
		}
	}
	return steps
}

// midJobWay says how a step is recalculated, from a number in [0, 10).
func midJobWay(n int) string {
	switch {
	case n < 2:
		return "incremental"
	case n < 3:
		return "deferred"
	case n < 4:
		return "interrupted"
	case n < 7:
		return "full in place"
	case n < 8:
		return "full by staging"
	}
	return "watch"
}

// writeRecordsSQL makes recalc.record hold cur's records, from old's, with
// plain SQL as an application would: deletes, updates of the rows that
// changed, inserts.
func writeRecordsSQL(t *testing.T, b *bundle, old, cur *model.Model) {
	t.Helper()
	before := map[string]model.Record{}
	for _, r := range old.Records {
		before[r.ID] = r
	}
	after := map[string]bool{}
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	var deleted []string
	for _, r := range cur.Records {
		after[r.ID] = true
	}
	for _, r := range old.Records {
		if !after[r.ID] {
			deleted = append(deleted, r.ID)
		}
	}
	mustExec(t, tx, `DELETE FROM recalc.record WHERE id = ANY ($1)`, deleted)
	for _, r := range cur.Records {
		fields, err := json.Marshal(r.Fields)
		if err != nil {
			t.Fatal(err)
		}
		if r.Fields == nil {
			fields = []byte(`{}`)
		}
		terr := r.Territories
		if terr == nil {
			terr = []string{}
		}
		var parent *string
		if r.Parent != "" {
			parent = &r.Parent
		}
		if _, ok := before[r.ID]; !ok {
			mustExec(t, tx, `INSERT INTO recalc.record (id, object, owner, parent, fields, territories) VALUES ($1, $2, $3, $4, $5, $6)`,
				r.ID, r.Object, r.Owner, parent, fields, terr)
			continue
		}
		mustExec(t, tx, `UPDATE recalc.record SET owner = $2, parent = $3, fields = $4, territories = $5 WHERE id = $1
			AND (owner, parent, fields, territories) IS DISTINCT FROM ($2, $3, $4::jsonb, $5::text[])`,
			r.ID, r.Owner, parent, fields, terr)
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
}
