package engine_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// liveMoveBase is midJobBase with task k2 in project p1's family, and
// project p5 with its task k5.
var liveMoveBase = strings.Replace(midJobBase, `{"object": "task__c", "id": "k9", "owner": "u1", "parent": "p9"},`,
	`{"object": "task__c", "id": "k9", "owner": "u1", "parent": "p9"},
    {"object": "task__c", "id": "k2", "owner": "u1", "parent": "p1"},
    {"object": "proj__c", "id": "p5", "owner": "u1"},
    {"object": "task__c", "id": "k5", "owner": "u1", "parent": "p5"},`, 1)

// TestLiveBatchesNoAccessNeitherDataGives: the watch's fast path writes a
// backlog of record changes in batches of two or three records, one
// transaction each. Before each batch (every one before it committed), no
// user may have access to a record above both what the data before the
// writes gives and what the data after them gives (the model unchanged).
//
// An import sets the family roots of the records it moves with its writes
// (rooted change rows), and logs one change row a statement: its deletes
// first, then its updates. In each case task k1 moves from project p9 to
// p1 and goes to u2, while its step s1, controlled by it, moves to task
// k9 and stays in p9's family; an earlier batch writes p1's family: a
// task the import deleted from it, a plain SQL write before the import,
// or, transitively, task k2 that moved from p1 to p5, whose task k5 the
// import deleted. That batch wrote k1's new share rows (u2 its owner)
// while s1's record row, in p9's family, which no batch had written yet,
// still took its access from k1: u2 had all on s1. The fast path now
// writes with a batch's families those that records moved to or from
// theirs, transitively, as a job's chunk does (familyGroups): the third
// case needs p9's family, two moves away from p5's (with only the families
// of moves out of or into the batch's own, it still leaks).
func TestLiveBatchesNoAccessNeitherDataGives(t *testing.T) {
	t.Parallel()
	moved := map[string]string{
		`"id": "k1", "owner": "u1", "parent": "p9"`: `"id": "k1", "owner": "u2", "parent": "p1"`,
		`"id": "s1", "owner": "u1", "parent": "k1"`: `"id": "s1", "owner": "u1", "parent": "k9"`,
	}
	for _, tc := range []struct {
		name    string
		batch   int               // the most records a batch names
		sql     string            // written before the import
		replace map[string]string // the import's records, from the base's ("" deletes the line's record)
	}{
		{"a task deleted from the family the task moved into", 2, "", map[string]string{
			`{"object": "task__c", "id": "k2", "owner": "u1", "parent": "p1"},`: ``,
		}},
		{"a plain sql write to the family the task moved into", 2, `UPDATE recalc.record SET fields = '{"n": 1}' WHERE id = 'p1'`, map[string]string{
			`{"object": "proj__c", "id": "p1", "owner": "u1"}`: `{"object": "proj__c", "id": "p1", "owner": "u1", "fields": {"n": 1}}`,
		}},
		{"a task deleted from the family a task of the one it moved into moved to", 3, "", map[string]string{
			`{"object": "task__c", "id": "k5", "owner": "u1", "parent": "p5"},`: ``,
			`"id": "k2", "owner": "u1", "parent": "p1"`:                         `"id": "k2", "owner": "u1", "parent": "p5"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, liveMoveBase, engine.Options{})
			old := b.cur
			if tc.sql != "" {
				b.exec(t, tc.sql)
			}
			recs := liveMoveRecords()
			for from, to := range moved {
				recs = strings.Replace(recs, from, to, 1)
			}
			for from, to := range tc.replace {
				if !strings.Contains(recs, from) {
					t.Fatalf("the base has no %s", from)
				}
				recs = strings.Replace(recs, from, to, 1)
			}
			b.importFile(t, `{"version": 1, "records": [`+recs+`]}`)
			chk := &boundCheck{t: t, ctx: b.ctx, pool: b.pool}
			pool := tracedPool(t, b.pool, &midJobTracer{check: chk.check})
			chk.arm(tc.name, old, b.cur)
			rep, err := engine.NewLive(engine.Options{Workers: 1, ChunkSize: 1}, tc.batch).Step(b.ctx, pool, zerolog.Nop())
			chk.disarm()
			if err != nil {
				t.Fatalf("step: %v", err)
			}
			if !rep.Fast || chk.checks < 2 {
				t.Fatalf("the step took the fast path: %v, in %d batches; want two or more", rep.Fast, chk.checks)
			}
			b.checkOracle(t, "after the step")
		})
	}
}

// liveMoveRecords is liveMoveBase's records section, without brackets.
func liveMoveRecords() string {
	i := strings.Index(liveMoveBase, `"records": [`) + len(`"records": [`)
	j := strings.LastIndex(liveMoveBase, `]`)
	return liveMoveBase[i:j]
}

// TestLiveBatchMovesReachTooFar: a batch of one record change that moved
// a task to another project writes both projects' families; when they
// are more than the batch may name, the step leaves the batch to a job
// (which chunks them), and the result is the same.
func TestLiveBatchMovesReachTooFar(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		batch int
		fast  bool
	}{
		{1, false}, // k1 named, p1's and p9's families written: two
		{2, true},
	} {
		t.Run(fmt.Sprint(tc.batch), func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, liveMoveBase, engine.Options{})
			recs := strings.Replace(liveMoveRecords(), `"id": "k1", "owner": "u1", "parent": "p9"`, `"id": "k1", "owner": "u1", "parent": "p1"`, 1)
			b.importFile(t, `{"version": 1, "records": [`+recs+`]}`)
			rep, err := engine.NewLive(engine.Options{Workers: 1}, tc.batch).Step(b.ctx, b.pool, zerolog.Nop())
			if err != nil {
				t.Fatalf("step: %v", err)
			}
			if rep.Fast != tc.fast || (rep.Run == nil) == !tc.fast {
				t.Errorf("batches of %d records: fast path %v, job %v; want fast path %v", tc.batch, rep.Fast, rep.Run != nil, tc.fast)
			}
			b.checkOracle(t, "after the step")
		})
	}
}
