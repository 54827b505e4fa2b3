package engine

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/planner"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
)

// Planned is a plan resolved against the stored data, before it becomes a job.
type Planned struct {
	Plan      *planner.Plan        `json:"plan"`
	Kind      queue.Kind           `json:"kind"`
	DoRules   bool                 `json:"rules"`   // share rows are recalculated
	DoClosure bool                 `json:"closure"` // group membership is recalculated
	Deferred  map[string]time.Time `json:"deferred,omitempty"`
	Roots     []string             `json:"-"`
	Families  int                  `json:"families"`
	Records   map[string]int64     `json:"records_by_object"`
	Chunks    []queue.Chunk        `json:"-"`
	NumChunks int                  `json:"chunks"`
	// Largest counts the records of the biggest chunk: more than the
	// chunk size when a family is bigger, or families that must be
	// written together are (familyGroups).
	Largest   int64   `json:"largest_chunk_records"`
	ChangeSeq int64   `json:"-"`
	Consumes  []int64 `json:"-"` // the change rows planned from
	Config    []byte  `json:"-"`
	// NotAbsorbed lists the attached objects whose logged writes wait:
	// their capture is not intact (`recalc attach` mends it), or
	// absorbing them failed.
	NotAbsorbed []changes.Absorbed `json:"-"`
	org         *sharing.Org
}

// notAbsorbed lists the objects of absorbed whose writes wait.
func notAbsorbed(absorbed []changes.Absorbed) []changes.Absorbed {
	var left []changes.Absorbed
	for _, a := range absorbed {
		if !a.Absorbed {
			left = append(left, a)
		}
	}
	return left
}

// Nothing reports whether there is nothing to recalculate now (perhaps
// because calculation is deferred).
func (pl *Planned) Nothing() bool { return !pl.DoRules && !pl.DoClosure }

// inputs is what Plan reads before it decides anything.
type inputs struct {
	rules, closure *sharing.Org // what each side was last computed from (nil when never)
	log            *changes.Log // the change rows committed now
}

// Plan computes what a run would do now, inside tx. It writes nothing but
// the family roots of records the application inserted or re-parented with
// plain SQL (not while the rules side is deferred); roll tx back to leave
// no trace.
//
// Its steps: load the stored and the applied configurations and the change
// log; fix family roots and list the changed records; diff the models;
// decide which sides to recalculate; resolve the plan's selectors into
// families, switching to a full job when that is cheaper; chunk.
func Plan(ctx context.Context, tx pgx.Tx, opt Options) (*Planned, error) {
	opt.defaults()
	pl, in, err := load(ctx, tx, opt)
	if err != nil {
		return nil, err
	}
	if in.rules == nil {
		// A first computation has no access to keep for readers: building
		// new tables and swapping them in is then 2.6 times as fast.
		opt.InPlace = false
	}
	// While the rules side is deferred its change rows stay in the log, and
	// the roots are fixed when it runs: fixed now, they would not be found
	// again then, and the records they move (a child orphaned by a deleted
	// parent) would never be recomputed. Nor does a deferred run wait for
	// records the application holds.
	_, rulesDeferred := pl.Deferred[store.SideRules]
	ids, err := changedRecords(ctx, tx, opt, in, !rulesDeferred)
	if err != nil {
		return nil, err
	}
	pl.Plan = diff(in.rules, pl.org, ids, opt.Full, in.log.Truncated)
	rulesWait, closureWait := decideSides(pl, in)
	if err := keepWaiting(ctx, tx, pl, rulesWait, closureWait); err != nil {
		return nil, err
	}
	if !pl.DoRules {
		pl.Records = map[string]int64{}
		return pl, nil
	}
	if err := selectFamilies(ctx, tx, opt, pl); err != nil {
		return nil, err
	}
	if pl.Plan.Full && !opt.InPlace {
		err = chunkAll(ctx, tx, opt, pl)
	} else {
		err = chunkRoots(ctx, tx, opt, pl)
	}
	if err != nil {
		return nil, err
	}
	pl.NumChunks = len(pl.Chunks)
	return pl, nil
}

// load reads the stored configuration, the deferral, the configurations
// the two sides were last computed from, and which change rows are
// committed now: what the job plans from and, once done, consumes.
func load(ctx context.Context, tx pgx.Tx, opt Options) (*Planned, *inputs, error) {
	// Mirror the writes to attached tables first, the users table's into
	// the stored configuration (read next); the change rows, read last,
	// then name every record they wrote, for the root fixing that follows.
	// A full run also reads every attached source again, whole: it then
	// repairs what no capture sees (a view's rows that change with the
	// clock), as it repairs the share tables.
	//
	// The deferral is read before anything is absorbed: a deferral lifted
	// while this plan absorbs (`recalc resume` takes no model lock) leaves
	// it deferred. Read after, it would plan a job of the writes absorbed
	// so far alone, the resume would join it, and the next plan recompute
	// their families again with the writes committed meanwhile (a bulk
	// load's children under its parents). Lifted before, it covers them.
	deferred, err := store.Deferred(ctx, tx)
	if err != nil {
		return nil, nil, err
	}
	if opt.ignoreDeferral {
		deferred = nil
	}
	absorbed, err := absorbAll(ctx, tx, opt)
	if err != nil {
		return nil, nil, err
	}
	var cfgJSON []byte
	var cur *sharing.Org
	readConfig := func() (err error) {
		if cfgJSON, err = store.StoredConfig(ctx, tx); err != nil {
			return err
		}
		if cur, err = sharing.DecodeOrg(cfgJSON); err != nil {
			return fmt.Errorf("stored model is invalid (re-import it): %w", err)
		}
		return nil
	}
	if err := readConfig(); err != nil {
		return nil, nil, err
	}
	in := &inputs{}
	if in.rules, in.closure, err = appliedOrgs(ctx, tx, cfgJSON, cur); err != nil {
		return nil, nil, err
	}
	if in.log, err = changes.Read(ctx, tx); err != nil {
		return nil, nil, err
	}
	// A team entry or share deleted after SyncAttachedUsers took the marks
	// and read the names left its mark, and the change rows just read may
	// hold what the section built then missed: the delete's own change of
	// the users section (it named a stub), or the absorbed delete of a
	// user it named. Consumed with a section that keeps the stub, they
	// would let recalc.wait_fresh return before the stub goes. Build the
	// section again, from names read after the change rows: it then covers
	// every row the job consumes.
	if !opt.noAbsorb {
		left, err := changes.UsersMarkLeft(ctx, tx)
		if err != nil {
			return nil, nil, err
		}
		if left {
			if _, err := store.SyncAttachedUsers(ctx, tx); err != nil {
				return nil, nil, err
			}
			if err := readConfig(); err != nil {
				return nil, nil, err
			}
		}
	}
	return &Planned{Kind: queue.Incremental, ChangeSeq: in.log.Last(), Consumes: in.log.Seqs, Config: cfgJSON, org: cur,
		Deferred: deferred, NotAbsorbed: notAbsorbed(absorbed)}, in, nil
}

// absorbAll mirrors the writes to attached tables (every source read again,
// whole, for a full run) and builds the users section from the attached
// users table, unless opt says not to absorb.
func absorbAll(ctx context.Context, tx pgx.Tx, opt Options) ([]changes.Absorbed, error) {
	if opt.noAbsorb {
		return nil, nil
	}
	if opt.Full {
		if err := changes.RereadAttached(ctx, tx); err != nil {
			return nil, err
		}
	}
	absorbed, _, err := changes.Absorb(ctx, tx, 0)
	if err != nil {
		return nil, err
	}
	if _, err := store.SyncAttachedUsers(ctx, tx); err != nil {
		return nil, err
	}
	return absorbed, nil
}

// changedRecords fixes the family roots of records the application wrote
// (when fix) and returns the ids of the records changed since the rules
// side was computed: none for a full plan, which needs no list of changes.
func changedRecords(ctx context.Context, tx pgx.Tx, opt Options, in *inputs, fix bool) ([]string, error) {
	// Root fixing, and what follows, locks records the application may
	// hold: wait a bounded time.
	if err := locks.SetTimeout(ctx, tx, opt.LockTimeout); err != nil {
		return nil, err
	}
	var fixed []string
	if fix {
		var err error
		if fixed, err = changes.FixRoots(ctx, tx, in.log.Seqs, opt.Full); err != nil {
			return nil, err
		}
	}
	if opt.Full || in.rules == nil {
		return nil, nil
	}
	ids, err := changes.Records(ctx, tx, in.log.Seqs)
	if err != nil {
		return nil, err
	}
	return append(ids, fixed...), nil
}

// diff plans from the model the rules side was computed from to cur, full
// when asked to or when recalc.record was truncated since.
func diff(oldRules, cur *sharing.Org, ids []string, full, truncated bool) *planner.Plan {
	p := planner.Diff(oldRules, cur, ids)
	switch {
	case p.Full:
	case full:
		p.Full, p.FullReason = true, "requested with --full"
	case truncated && oldRules != nil:
		p.Full, p.FullReason = true, "recalc.record was truncated"
	}
	return p
}

// decideSides sets which sides the plan recalculates: each one that is not
// deferred and has changed. It returns those that are deferred and have
// changed: they wait.
func decideSides(pl *Planned, in *inputs) (rulesWait, closureWait bool) {
	p := pl.Plan
	closureChanged := in.closure == nil || p.Full
	switch {
	case closureChanged:
	case in.closure == in.rules: // one applied configuration: p says it
		closureChanged = p.Closure
	default:
		closureChanged = planner.Diff(in.closure, pl.org, nil).Closure
	}
	_, rulesDeferred := pl.Deferred[store.SideRules]
	_, closureDeferred := pl.Deferred[store.SideClosure]
	pl.DoRules = !rulesDeferred && !p.Empty()
	pl.DoClosure = !closureDeferred && closureChanged
	return rulesDeferred && !p.Empty(), closureDeferred && closureChanged
}

// keepWaiting leaves in the change log what a waiting side has yet to
// materialize, so that recalc.wait_fresh keeps waiting for it: every
// change while the share rows wait, the changes to the closure's sections
// while the closure waits. The job consumes the rest.
func keepWaiting(ctx context.Context, tx pgx.Tx, pl *Planned, rulesWait, closureWait bool) error {
	switch {
	case rulesWait:
		pl.Consumes = nil
	case closureWait:
		keep, err := changes.Touching(ctx, tx, pl.Consumes, planner.ClosureSections())
		if err != nil {
			return err
		}
		pl.Consumes = slices.DeleteFunc(slices.Clone(pl.Consumes), func(seq int64) bool { return slices.Contains(keep, seq) })
	}
	return nil
}

// selectFamilies lists the roots of the families to recompute: every one
// for a full plan in place, none for a full plan by staging tables (it
// chunks by root range), those the selectors name otherwise. An
// incremental plan that would recompute too many families becomes full,
// unless the run works in place: it then stays incremental, which is what
// a full job in place is.
func selectFamilies(ctx context.Context, tx pgx.Tx, opt Options, pl *Planned) error {
	var err error
	switch {
	case pl.Plan.Full && opt.InPlace:
		pl.Roots, err = sharetable.FamilyRoots(ctx, tx, nil, 0)
	case !pl.Plan.Full:
		if pl.Roots, err = resolveRoots(ctx, tx, pl.Plan); err != nil || opt.InPlace {
			return err
		}
		err = switchToFull(ctx, tx, opt, pl)
	}
	return err
}

// switchToFull makes the plan full when it would recompute more than
// opt.FullAbove of all families (and more than 1,000): rebuilding is then
// cheaper. Counting every family costs a scan of the records: it counts
// only when the estimate, low by up to half, leaves the switch in doubt.
func switchToFull(ctx context.Context, tx pgx.Tx, opt Options, pl *Planned) error {
	if len(pl.Roots) <= 1000 {
		return nil
	}
	estimate, err := sharetable.EstimateFamilies(ctx, tx)
	if err != nil {
		return err
	}
	families := int64(estimate)
	if float64(len(pl.Roots)) > opt.FullAbove*estimate/4 {
		if families, err = sharetable.CountFamilies(ctx, tx); err != nil {
			return err
		}
	}
	if float64(len(pl.Roots)) > opt.FullAbove*float64(families) {
		pl.Plan.Full, pl.Plan.FullReason = true, fmt.Sprintf("the changes touch %d of %d record families: rebuilding is cheaper", len(pl.Roots), families)
	}
	return nil
}

// chunkAll makes the plan a full job over every stored family, chunked by
// root id range.
func chunkAll(ctx context.Context, tx pgx.Tx, opt Options, pl *Planned) error {
	pl.Kind, pl.Roots = queue.Full, nil
	ch := planner.Chunker{Size: int64(opt.ChunkSize)}
	if err := sharetable.EachFamily(ctx, tx, ch.Add); err != nil {
		return err
	}
	for i, c := range ch.Chunks() {
		pl.Chunks = append(pl.Chunks, queue.Chunk{N: i, Lo: c.First, Hi: c.Last})
		pl.Largest = max(pl.Largest, c.Records)
	}
	pl.Families = ch.Families()
	var err error
	pl.Records, err = sharetable.RecordsByObject(ctx, tx)
	return err
}

// chunkRoots chunks the plan's families by root list, counting a family
// with no stored record left (to clear) as one. Families that a record
// moved between since it was materialized go into one chunk (familyGroups).
func chunkRoots(ctx context.Context, tx pgx.Tx, opt Options, pl *Planned) error {
	roots, joins, err := familyGroups(ctx, tx, pl.Roots, pl.Plan.Full)
	if err != nil {
		return err
	}
	pl.Roots = roots
	sizes, byObject, err := sharetable.FamilySizes(ctx, tx, pl.Roots)
	if err != nil {
		return err
	}
	pl.Records = byObject
	ch := planner.Chunker{Size: int64(opt.ChunkSize), ListRoots: true}
	for i, root := range pl.Roots {
		if joins[i] {
			ch.Join(root, max(sizes[i], 1))
		} else {
			ch.Add(root, max(sizes[i], 1))
		}
	}
	for i, c := range ch.Chunks() {
		pl.Chunks = append(pl.Chunks, queue.Chunk{N: i, Roots: c.Roots})
		pl.Largest = max(pl.Largest, c.Records)
	}
	pl.Families = len(pl.Roots)
	return nil
}

// familyGroups orders roots, and the roots of the families records moved
// to or from theirs since they were materialized (added to them, until
// none is left to add), so that families a record moved between are
// next to each other, transitively: joins[i] says that out[i] must be in
// one chunk with out[i-1]. The chunks of a job commit one by one: a record
// that moved into a family a chunk writes keeps, until the chunk of the
// family it left, records there that take their access from it
// (controlled by parent), whose stored rows would then meet its new share
// rows, which neither configuration gives them. every says that roots
// are every family (a full job in place): the moves are then found by
// joining the two tables whole. Only the families of moves are held
// apart; the others keep their order.
func familyGroups(ctx context.Context, tx pgx.Tx, roots []string, every bool) (out []string, joins []bool, err error) {
	parent := map[string]string{} // the families of moves, with the roots listed
	find := func(r string) string {
		for parent[r] != r {
			parent[r], r = parent[parent[r]], parent[r]
		}
		return r
	}
	listed := make(map[string]bool, len(roots))
	if !every {
		for _, r := range roots {
			listed[r] = true
		}
	}
	for next := roots; len(next) > 0; {
		if every {
			next = nil
		}
		moved, err := sharetable.MovedFamilies(ctx, tx, next)
		if err != nil {
			return nil, nil, err
		}
		next = nil
		for _, m := range moved {
			for _, r := range m {
				if _, ok := parent[r]; !ok {
					parent[r] = r
					if !every && !listed[r] {
						listed[r], next = true, append(next, r)
						roots = append(roots, r)
					}
				}
			}
			if a, b := find(m[0]), find(m[1]); a != b {
				parent[max(a, b)] = min(a, b)
			}
		}
	}
	members := map[string][]string{}
	for r := range parent {
		members[find(r)] = append(members[find(r)], r)
	}
	out, joins = make([]string, 0, len(roots)), make([]bool, 0, len(roots))
	for _, r := range roots {
		if _, moved := parent[r]; !moved {
			out, joins = append(out, r), append(joins, false)
			continue
		}
		g := members[find(r)]
		if g == nil { // the group went out already
			continue
		}
		slices.Sort(g)
		for i, m := range g {
			out, joins = append(out, m), append(joins, i > 0)
		}
		delete(members, find(r))
	}
	return out, joins, nil
}

// resolveRoots turns a plan's selectors into the sorted root ids of the
// families to recompute, with the lookup of each selector's kind.
func resolveRoots(ctx context.Context, tx pgx.Tx, p *planner.Plan) ([]string, error) {
	set := map[string]bool{}
	for _, c := range p.Changes {
		for _, s := range c.Selectors {
			roots, err := lookUp(ctx, tx, s)
			if err != nil {
				return nil, fmt.Errorf("resolve %q: %w", c.What, err)
			}
			for _, r := range roots {
				set[r] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	slices.Sort(out)
	return out, nil
}

// lookUp returns the roots of the families holding the records s selects.
func lookUp(ctx context.Context, tx pgx.Tx, s *planner.Selector) ([]string, error) {
	switch s.Kind {
	case planner.ByRecords:
		return sharetable.RootsOfRecords(ctx, tx, s.IDs)
	case planner.ByObject:
		return sharetable.RootsOfObject(ctx, tx, s.Object)
	case planner.ByOwners:
		return sharetable.RootsOfOwners(ctx, tx, s.Object, s.IDs)
	case planner.ByTerritories:
		return sharetable.RootsOfTerritories(ctx, tx, s.Object, s.IDs)
	case planner.ByCriteria:
		return sharetable.RootsMatching(ctx, tx, s.Object, s.Criteria)
	}
	return nil, fmt.Errorf("unknown selector %q", s.Kind)
}

// appliedOrgs returns the configurations the rules and the closure sides
// were last computed from (nil when never). Usually both sides were computed
// from the same one, which is then decoded once and returned twice. So is
// a side computed from known (the stored configuration, decoded as org, when
// the caller has it; nil otherwise): after a run, every plan until the next
// import would decode the same document again.
func appliedOrgs(ctx context.Context, q pg.Querier, known []byte, org *sharing.Org) (rules, closure *sharing.Org, err error) {
	docs, err := appliedConfigs(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	orgs := [2]*sharing.Org{}
	for i, doc := range docs {
		switch {
		case doc == nil:
		case i == 1 && bytes.Equal(doc, docs[0]):
			orgs[1] = orgs[0]
		case org != nil && bytes.Equal(doc, known):
			orgs[i] = org
		default:
			if orgs[i], err = sharing.DecodeOrg(doc); err != nil {
				return nil, nil, fmt.Errorf("applied configuration: %w", err)
			}
		}
	}
	return orgs[0], orgs[1], nil
}

// appliedConfigs returns the configurations (JSON objects of sections) the
// rules and the closure sides were last computed from, nil for a side never
// computed. A side's applied sections are stored one row each, so an empty
// configuration stores nothing: when nothing is imported at all and a job
// is done, the empty model was computed (else every run after init would
// plan a full job again, and verify and explain would say to run one).
func appliedConfigs(ctx context.Context, q pg.Querier) ([2][]byte, error) {
	var docs [2][]byte
	for i, side := range []string{store.SideRules, store.SideClosure} {
		doc, err := store.AppliedConfig(ctx, q, side)
		if err != nil {
			return docs, err
		}
		if string(doc) != "{}" {
			docs[i] = doc
		}
	}
	if docs[0] != nil || docs[1] != nil {
		return docs, nil
	}
	stored, err := store.StoredConfig(ctx, q)
	if err != nil || string(stored) != "{}" {
		return docs, err
	}
	ran, err := queue.AnyDone(ctx, q)
	if ran {
		docs[0], docs[1] = stored, stored
	}
	return docs, err
}
