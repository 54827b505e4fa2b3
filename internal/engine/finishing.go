package engine

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// A job that Finish works (an import finishes it first) while share rows
// are deferred must not materialize what was written since: each of its
// chunks computes only the families that no change row written since the
// job's plan names, and leaves the others as they were last materialized.
// Their change rows stay pending, and a change row naming their roots is
// logged, so that `recalc resume` recomputes them under the model as it
// then is (the job's finish records its configuration as applied and
// consumes the change rows it planned from: without that row, a family
// left out because of a record that has moved on since would keep rows of
// the configuration the job replaced). That row carries the oldest
// transaction id of the job's change rows (changes.Recompute), so that
// recalc.wait_fresh keeps waiting, until the resume, for a token taken
// after the job's changes.
//
// "Since the plan", not "since the deferral": a job is planned only while
// share rows are not deferred, so its change rows predate the deferral;
// those written between the plan and the deferral stay pending anyway
// (a job consumes only the rows it planned from), and a commit's time is
// not a change row's order. Leaving their families out keeps them as they
// were before the job, which the resume recomputes.
//
// A chunk reads the change log after its reads of records: a write its
// records show committed before that read began, with its change row,
// which the read sees. A write that commits after the records were read is
// not in what the chunk computes. A family's root_id does not change in
// between: only planning and verify --repair fix roots, neither beside an
// unfinished job.

// errTruncatedWhileDeferred refuses a full job's chunk when recalc.record
// was truncated since the job was planned: its families' stored rows
// cannot be told apart from those of records that moved between chunks.
var errTruncatedWhileDeferred = errors.New("recalc.record was truncated since the job was planned, while calculation of share rows is deferred: " +
	"run `recalc resume`, which finishes the job, then recalculates")

// written is what the chunks of a job that Finish works while share rows
// are deferred know, in this process, of the records written since the
// job's plan: the change rows read (first those the job planned from) and
// the ids their record changes name. Each chunk reads the rows not yet
// known, after its own reads of records (read).
type written struct {
	mu        sync.Mutex
	known     []int64 // sorted
	ids       map[string]bool
	truncated bool
}

func newWritten(job *queue.Job) *written {
	known := slices.Clone(job.Consumes)
	slices.Sort(known)
	return &written{known: known, ids: map[string]bool{}}
}

// read reads in tx the change rows committed since the last read, then
// calls f, under w's lock, with whether a record id is named, and whether
// recalc.record was truncated since the plan.
func (w *written) read(ctx context.Context, tx pgx.Tx, f func(named func(string) bool, truncated bool)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	got, err := changes.WrittenSince(ctx, tx, w.known)
	if err != nil {
		return err
	}
	w.known = append(w.known, got.Seqs...)
	slices.Sort(w.known)
	for _, id := range got.IDs {
		w.ids[id] = true
	}
	w.truncated = w.truncated || got.Truncated
	f(func(id string) bool { return w.ids[id] }, w.truncated)
	return nil
}

// workChunk is workChunk for a chunk of a job that Finish works while share
// rows are deferred. It returns the roots of the families it left out too,
// and logs a change of them (changes.Recompute).
func (w *written) workChunk(ctx context.Context, tx pgx.Tx, job *queue.Job, org *sharing.Org, dict *sharetable.Dict, c *queue.Chunk) (*queue.ChunkStats, []string, error) {
	var st *queue.ChunkStats
	var left []string
	var err error
	if job.Kind == queue.Full {
		st, left, err = w.fullChunk(ctx, tx, org, dict, c)
	} else {
		st, left, err = w.familiesChunk(ctx, tx, org, dict, c.Roots)
	}
	if err != nil {
		return nil, nil, err
	}
	return st, left, changes.Recompute(ctx, tx, left, job.Consumes)
}

// familiesChunk writes, as ApplyFamilies does, the families of roots that
// no change row written since the plan names, leaving out with each family
// named those records moved between (moveGroups). It first leaves out the
// families the change log names already; then it locks and diffs the
// others, reads the change log again, and leaves out those it names now
// (FamilyDiff.Naming), until a read leaves none out: a write that commits
// while the chunk waits for a family's lock, or reads, and that its diff
// shows, is read then. Left out, a family's rows stay locked until tx
// ends.
func (w *written) familiesChunk(ctx context.Context, tx pgx.Tx, org *sharing.Org, dict *sharetable.Dict, roots []string) (*queue.ChunkStats, []string, error) {
	groups, err := moveGroups(ctx, tx, roots)
	if err != nil {
		return nil, nil, err
	}
	members, err := sharetable.FamilyMembers(ctx, tx, roots)
	if err != nil {
		return nil, nil, err
	}
	var named []string
	if err := w.read(ctx, tx, func(isNamed func(string) bool, truncated bool) {
		if named = roots; !truncated {
			named = namedRoots(members, isNamed)
		}
	}); err != nil {
		return nil, nil, err
	}
	roots = slices.Clone(roots)
	var left []string
	isLeft := map[string]bool{}
	for out := named; ; {
		for _, r := range out {
			for _, m := range groups.of(r) {
				if !isLeft[m] {
					isLeft[m], left = true, append(left, m)
				}
			}
		}
		if roots = slices.DeleteFunc(roots, func(r string) bool { return isLeft[r] }); len(roots) == 0 {
			return &queue.ChunkStats{}, left, nil
		}
		rids, err := sharetable.LockFamilies(ctx, tx, roots)
		if err != nil {
			return nil, nil, err
		}
		diff, err := sharetable.DiffFamilies(ctx, tx, org, dict, roots, rids)
		if err != nil {
			return nil, nil, err
		}
		if err := w.read(ctx, tx, func(named func(string) bool, trunc bool) {
			if out = roots; !trunc {
				out = diff.Naming(named)
			}
		}); err != nil {
			return nil, nil, err
		}
		if len(out) == 0 {
			wr, err := diff.Apply(ctx, tx)
			if err != nil {
				return nil, nil, err
			}
			st := queue.ChunkStats(*wr)
			return &st, left, nil
		}
	}
}

// namedRoots returns the roots of the members named, each once.
func namedRoots(members []sharetable.Member, named func(string) bool) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range members {
		if !seen[m.Root] && named(m.ID) {
			seen[m.Root], out = true, append(out, m.Root)
		}
	}
	return out
}

// groups maps each of a chunk's families to those records moved between,
// transitively, itself included: a chunk writes them together, or leaves
// them out together (sharetable.MovedFamilies).
type groups map[string][]string

func (g groups) of(root string) []string {
	if m, ok := g[root]; ok {
		return m
	}
	return []string{root}
}

// moveGroups returns the groups of roots' families that records moved
// between since they were materialized. Beside an unfinished job, no root
// changes and nothing else writes their materialized rows, so they hold
// for the chunk's transaction.
func moveGroups(ctx context.Context, tx pgx.Tx, roots []string) (groups, error) {
	moved, err := sharetable.MovedFamilies(ctx, tx, roots)
	if err != nil || len(moved) == 0 {
		return groups{}, err
	}
	parent := map[string]string{}
	find := func(r string) string {
		if _, ok := parent[r]; !ok {
			parent[r] = r
		}
		for parent[r] != r {
			parent[r], r = parent[parent[r]], parent[r]
		}
		return r
	}
	for _, m := range moved {
		if a, b := find(m[0]), find(m[1]); a != b {
			parent[max(a, b)] = min(a, b)
		}
	}
	g := groups{}
	for r := range parent {
		g[find(r)] = append(g[find(r)], r)
	}
	for r := range parent {
		g[r] = g[find(r)]
	}
	return g, nil
}

// fullChunk copies into a full job's staging tables the rows computed for
// the families of the chunk's range that no change row written since the
// plan names (by a record in them now, or last materialized in them), and
// the stored rows, as they are, of the records in the others. Each record
// there is in one chunk's range, its family's now, so no two chunks copy
// it. A record deleted since loses its rows, as a full job drops them:
// its family keeps the others'.
func (w *written) fullChunk(ctx context.Context, tx pgx.Tx, org *sharing.Org, dict *sharetable.Dict, c *queue.Chunk) (*queue.ChunkStats, []string, error) {
	in, err := sharetable.LoadFamilies(ctx, tx, org, c.Lo, c.Hi)
	if err != nil {
		return nil, nil, err
	}
	was, err := sharetable.MaterializedMembers(ctx, tx, c.Lo, c.Hi)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]bool{}
	var truncated bool
	if err := w.read(ctx, tx, func(named func(string) bool, trunc bool) {
		truncated = trunc
		for _, r := range in.Records {
			out[r.RootID] = out[r.RootID] || named(r.ID)
		}
		for _, m := range was {
			out[m.Root] = out[m.Root] || named(m.ID)
		}
	}); err != nil {
		return nil, nil, err
	}
	if truncated {
		return nil, nil, errTruncatedWhileDeferred
	}
	total := int64(len(in.Records))
	var kept []int64
	in.Records = slices.DeleteFunc(in.Records, func(r sharing.Record) bool {
		if out[r.RootID] {
			kept = append(kept, r.RID)
		}
		return out[r.RootID]
	})
	rows := org.Compute(in)
	added, err := sharetable.CopyRows(ctx, tx, rows, dict)
	if err != nil {
		return nil, nil, err
	}
	copied, err := sharetable.KeepRows(ctx, tx, kept)
	if err != nil {
		return nil, nil, err
	}
	var left []string
	for r, o := range out {
		if o {
			left = append(left, r)
		}
	}
	slices.Sort(left)
	return &queue.ChunkStats{Records: total, Added: added + copied, Invalid: rows.Invalid}, left, nil
}
