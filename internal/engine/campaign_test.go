package engine_test

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestCampaign is a long random differential campaign: random models, then
// multi-step histories mixing oracle.Mutate with extra mutations (cmut*)
// the generator never makes, imported one at a time or in batches, run
// incrementally, fully, or through defer/resume (both sides or one), and
// compared with the oracle after every run and with a full run at the end
// of every seed. It only runs when RECALC_CAMPAIGN is set:
//
//	RECALC_CAMPAIGN=1 CAMPAIGN_SEED_START=1000 CAMPAIGN_SEEDS=300 CAMPAIGN_MINUTES=20
func TestCampaign(t *testing.T) {
	if os.Getenv("RECALC_CAMPAIGN") == "" {
		t.Skip("set RECALC_CAMPAIGN=1 to run the random campaign")
	}
	first, n := testkit.Seeds("CAMPAIGN", 100, 0)
	if first == 0 {
		first = 1000
	}
	minutes, _ := strconv.Atoi(os.Getenv("CAMPAIGN_MINUTES"))
	if minutes <= 0 {
		minutes = 10
	}
	deadline := time.Now().Add(time.Duration(minutes) * time.Minute)
	b := setup(t)
	steps := 0
	seed := first
	applied := map[string]int{} // the extra mutations applied, by name
	for ; seed < first+n && time.Now().Before(deadline); seed++ {
		steps += campaignSeed(t, b, seed, 8, applied)
	}
	t.Logf("campaign: seeds %d..%d, %d runs checked", first, seed-1, steps)
	for _, k := range slices.Sorted(maps.Keys(applied)) {
		t.Logf("%6d %s", applied[k], k)
	}
}

// campaignOpt are the engine options of the campaign: small chunks.
var campaignOpt = engine.Options{Workers: 2, ChunkSize: 7}

// cstep is one import of a campaign.
type cstep struct {
	what    string
	file    *model.Model
	present []string
	pf      *model.File
}

// campaignSeed runs one seed on b: clears the stored model, imports a
// fresh one, then nSteps rounds of changes, counting the extra mutations
// in applied. It returns the runs checked.
func campaignSeed(t *testing.T, b *bundle, seed, nSteps int, applied map[string]int) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(seed), 0xca3a))
	checked := 0
	// Start from nothing, so that a seed does not depend on the one before.
	empty := &model.Model{}
	b.importModel(t, empty, nil)
	b.cur = oracle.Merge(b.cur, empty, testkit.EverySection())
	b.run(t, campaignOpt)

	fresh := oracle.RandomModel(rng, 8+rng.IntN(40))
	if rng.IntN(2) == 0 {
		edgeFields(rng, fresh)
	}
	b.importModel(t, fresh, nil)
	b.cur = oracle.Merge(b.cur, fresh, testkit.EverySection())
	var log []string
	log = append(log, "fresh model")
	b.run(t, campaignOpt)
	campaignCheck(t, b, seed, log, rng)
	checked++

	for i := 0; i < nSteps; i++ {
		mode := rng.IntN(10)
		batch := 1
		if mode >= 5 {
			batch = 1 + rng.IntN(3)
		}
		var sides []string
		switch mode {
		case 7:
			sides = []string{store.SideClosure, store.SideRules}
		case 8:
			sides = []string{store.SideClosure}
		case 9:
			sides = []string{store.SideRules}
		}
		if sides != nil {
			if err := store.Defer(b.ctx, b.pool, sides); err != nil {
				t.Fatal(err)
			}
			log = append(log, fmt.Sprintf("defer %v", sides))
		}
		for j := 0; j < batch; j++ {
			s := campaignMutation(rng, b.cur, applied)
			b.importModel(t, s.file, s.present)
			b.cur = oracle.Merge(b.cur, s.file, s.pf)
			if _, err := b.cur.Validate(); err != nil {
				t.Fatalf("seed %d: %s: merged model invalid: %v", seed, s.what, err)
			}
			log = append(log, fmt.Sprintf("import %s %v", s.what, s.present))
			if sides != nil && rng.IntN(2) == 0 {
				if _, err := engine.Run(b.ctx, b.pool, campaignOpt, zerolog.Nop()); err != nil {
					t.Fatalf("seed %d: run while deferred: %v", seed, err)
				}
				log = append(log, "run (deferred)")
			}
		}
		if sides != nil {
			if err := store.Undefer(b.ctx, b.pool, sides); err != nil {
				t.Fatal(err)
			}
			log = append(log, "resume")
			if _, err := engine.Run(b.ctx, b.pool, engine.Options{Workers: 2, ChunkSize: 7, Trigger: "resume"}, zerolog.Nop()); err != nil {
				t.Fatalf("seed %d: resume: %v", seed, err)
			}
		} else if mode == 4 {
			full := campaignOpt
			full.InPlace = rng.IntN(2) == 0
			log = append(log, fmt.Sprintf("run --full (in place %v)", full.InPlace))
			if _, err := engine.Full(b.ctx, b.pool, full, zerolog.Nop()); err != nil {
				t.Fatalf("seed %d: full: %v", seed, err)
			}
		} else {
			log = append(log, "run")
			if _, err := engine.Run(b.ctx, b.pool, campaignOpt, zerolog.Nop()); err != nil {
				t.Fatalf("seed %d: run: %v", seed, err)
			}
		}
		campaignCheck(t, b, seed, log, rng)
		checked++
	}
	incremental := testdb.Materialized(t, b.pool)
	full := campaignOpt
	full.InPlace = rng.IntN(2) == 0
	if _, err := engine.Full(b.ctx, b.pool, full, zerolog.Nop()); err != nil {
		t.Fatalf("seed %d: final full run: %v", seed, err)
	}
	if got := testdb.Materialized(t, b.pool); got != incremental {
		t.Fatalf("seed %d: incremental tables differ from a full run (in place %v)\nsteps:\n%s\n%s", seed, full.InPlace, strings.Join(log, "\n"), oracle.Diff(got, incremental))
	}
	return checked
}

// campaignCheck holds the materialized access, and access_level on a few
// pairs, to the oracle.
func campaignCheck(t *testing.T, b *bundle, seed int, log []string, rng *rand.Rand) {
	t.Helper()
	rows := oracle.Access(b.cur)
	want := oracle.CSV(rows)
	if got := b.access(t); got != want {
		t.Fatalf("seed %d: access differs from the oracle after:\n%s\n%s\nplan: %s", seed, strings.Join(log, "\n"), oracle.Diff(want, got), b.lastPlan())
	}
	checkAccessLevel(t, b, rows, accessSamples(rng, b.cur))
}

// campaignMutation returns the next import over cur: half the time
// oracle.Mutate's, else one of the extra mutations (falling back to
// oracle.Mutate when none applies validly).
func campaignMutation(rng *rand.Rand, cur *model.Model, applied map[string]int) cstep {
	if rng.IntN(2) == 0 {
		if s, ok := safeMutate(rng, cur); ok {
			return s
		}
	}
	for try := 0; try < 20; try++ {
		i := rng.IntN(len(cmuts))
		next := cloneModel(cur)
		c := &cmut{rng: rng, m: next, next: 100000 + rng.IntN(1000000)}
		if !cmuts[i].f(c) {
			continue
		}
		// Reject a change that leaves the model invalid.
		s := fileOf(rng, cur, next)
		if s == nil {
			continue
		}
		merged := oracle.Merge(cur, s.file, s.pf)
		if _, err := merged.Validate(); err != nil {
			continue
		}
		s.what = cmuts[i].name
		applied[s.what]++
		return *s
	}
	if s, ok := safeMutate(rng, cur); ok {
		return s
	}
	// Nothing applies: add a record owned by a new user.
	next := cloneModel(cur)
	next.Users = append(next.Users, model.User{ID: "ufallback" + strconv.Itoa(rng.IntN(1e9)), Active: true})
	next.Records = append(next.Records, model.Record{Object: next.Objects[0].Name, ID: "xfallback" + strconv.Itoa(rng.IntN(1e9)), Owner: next.Users[len(next.Users)-1].ID})
	return cstep{what: "fallback", file: next, present: []string{"users", "records"}, pf: &model.File{Config: model.Config{Users: next.Users}, HasRecords: true}}
}

// safeMutate is oracle.Mutate, which assumes the generator's objects and
// non-empty sections; false when it panics on what the extra mutations left.
func safeMutate(rng *rand.Rand, cur *model.Model) (s cstep, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	next, file := oracle.Mutate(rng, cur)
	return cstep{what: "oracle.Mutate", file: next, present: file.Present(), pf: file}, true
}

// fileOf is the import that takes cur to next: the sections that differ,
// and now and then an unchanged one too. Nil when nothing differs.
func fileOf(rng *rand.Rand, cur, next *model.Model) *cstep {
	s := &cstep{file: next, pf: &model.File{}}
	add := func(name string, differs bool) {
		if !differs && rng.IntN(12) != 0 {
			return
		}
		s.present = append(s.present, name)
		switch name {
		case "objects":
			s.pf.Objects = nonNil(next.Objects)
			next.Objects = s.pf.Objects
		case "roles":
			s.pf.Roles = nonNil(next.Roles)
			next.Roles = s.pf.Roles
		case "users":
			s.pf.Users = nonNil(next.Users)
			next.Users = s.pf.Users
		case "groups":
			s.pf.Groups = nonNil(next.Groups)
			next.Groups = s.pf.Groups
		case "territories":
			s.pf.Territories = nonNil(next.Territories)
			next.Territories = s.pf.Territories
		case "rules":
			s.pf.Rules = nonNil(next.Rules)
			next.Rules = s.pf.Rules
		case "records":
			s.pf.HasRecords = true
		case "shares":
			s.pf.HasShares = true
		case "teams":
			s.pf.HasTeams = true
		}
	}
	changed := false
	for _, sec := range []struct {
		name string
		a, b any
	}{
		{"objects", cur.Objects, next.Objects}, {"roles", cur.Roles, next.Roles}, {"users", cur.Users, next.Users},
		{"groups", cur.Groups, next.Groups}, {"territories", cur.Territories, next.Territories},
		{"records", cur.Records, next.Records}, {"rules", cur.Rules, next.Rules},
		{"shares", cur.Shares, next.Shares}, {"teams", cur.Teams, next.Teams},
	} {
		d := !sameSection(sec.a, sec.b)
		changed = changed || d
		add(sec.name, d)
	}
	if !changed {
		return nil
	}
	return s
}

// sameSection compares two section slices, nil and empty alike.
func sameSection(a, b any) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Len() == 0 && vb.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// cloneModel copies m deeply enough that changing the copy leaves m alone.
func cloneModel(m *model.Model) *model.Model {
	c := &model.Model{Config: model.Config{
		Objects: slices.Clone(m.Objects), Roles: slices.Clone(m.Roles), Users: slices.Clone(m.Users),
		Groups: slices.Clone(m.Groups), Territories: slices.Clone(m.Territories), Rules: slices.Clone(m.Rules),
	}, Records: slices.Clone(m.Records), Shares: slices.Clone(m.Shares), Teams: slices.Clone(m.Teams)}
	for i := range c.Groups {
		c.Groups[i].Members = slices.Clone(c.Groups[i].Members)
	}
	for i := range c.Territories {
		c.Territories[i].Users = slices.Clone(c.Territories[i].Users)
	}
	for i := range c.Records {
		c.Records[i].Fields = maps.Clone(c.Records[i].Fields)
		c.Records[i].Territories = slices.Clone(c.Records[i].Territories)
	}
	return c
}

// edgeNumbers are doubles at the edges: exact-integer limit, extremes,
// subnormals, values that differ in the last bit.
var edgeNumbers = []float64{
	9007199254740992, 9007199254740994, -9007199254740992, math.MaxFloat64, -math.MaxFloat64,
	math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64, 2.2250738585072014e-308,
	0.1, 0.30000000000000004, 0.3, 1e21, 1e-7, 1e300, 9.99e299, 1.0000000000000002, 1, 0, -1, 123456789012345680,
}

var edgeStrings = []string{"", " ", ",", "a,b", " a , b ", "a", "A", "b", "Tech", "tech", "Ümlaut", "Ü", "z", "~", "a b", "0", "10", "9"}

func edgeValue(rng *rand.Rand) model.Value {
	switch rng.IntN(5) {
	case 0, 1:
		return model.Num(edgeNumbers[rng.IntN(len(edgeNumbers))])
	case 2:
		return model.Str(edgeStrings[rng.IntN(len(edgeStrings))])
	case 3:
		return model.Bol(rng.IntN(2) == 0)
	}
	return model.Value{}
}

// edgeFields sets some fields of m's records to edge values.
func edgeFields(rng *rand.Rand, m *model.Model) {
	for i := range m.Records {
		if rng.IntN(2) == 0 {
			continue
		}
		if m.Records[i].Fields == nil {
			m.Records[i].Fields = model.Fields{}
		}
		m.Records[i].Fields[edgeField(rng)] = edgeValue(rng)
	}
}

func edgeField(rng *rand.Rand) string {
	return []string{"revenue", "priority", "status", "vip", "n"}[rng.IntN(5)]
}

// edgeCondition is a condition over edge values whose value type suits its op.
func edgeCondition(rng *rand.Rand) model.Condition {
	c := model.Condition{Field: edgeField(rng), Op: model.Op(rng.IntN(9))}
	for {
		c.Value = edgeValue(rng)
		switch {
		case c.Value.Kind == model.Null:
			continue
		case (c.Op == model.OpContains || c.Op == model.OpNotContains || c.Op == model.OpStartsWith) && c.Value.Kind != model.String:
			continue
		case c.Value.Kind == model.Bool && c.Op != model.OpEquals && c.Op != model.OpNotEquals:
			continue
		}
		return c
	}
}

// cmut is the state of one extra mutation.
type cmut struct {
	rng  *rand.Rand
	m    *model.Model
	next int
}

func (c *cmut) intn(n int) int        { return c.rng.IntN(n) }
func (c *cmut) chance(p float64) bool { return c.rng.Float64() < p }
func (c *cmut) id(prefix string) string {
	c.next++
	return prefix + "c" + strconv.Itoa(c.next)
}
func (c *cmut) level() model.Level { return model.Read + model.Level(c.intn(2)) }
func (c *cmut) child() model.ChildAccess {
	return model.ChildAccess{Contact: model.Level(c.intn(3)), Opportunity: model.Level(c.intn(3)), Case: model.Level(c.intn(3))}
}

func (c *cmut) object(name string) *model.Object {
	for i := range c.m.Objects {
		if c.m.Objects[i].Name == name {
			return &c.m.Objects[i]
		}
	}
	return nil
}

func (c *cmut) randRecord(pred func(*model.Record) bool) *model.Record {
	var cands []*model.Record
	for i := range c.m.Records {
		if pred == nil || pred(&c.m.Records[i]) {
			cands = append(cands, &c.m.Records[i])
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[c.intn(len(cands))]
}

func (c *cmut) queues() []string {
	var out []string
	for _, g := range c.m.Groups {
		if g.Queue {
			out = append(out, g.ID)
		}
	}
	return out
}

// owner is a user (often an inactive or external one) or a queue.
func (c *cmut) owner() string {
	if q := c.queues(); len(q) > 0 && c.chance(0.35) {
		return q[c.intn(len(q))]
	}
	if len(c.m.Users) == 0 {
		return ""
	}
	return c.m.Users[c.intn(len(c.m.Users))].ID
}

func (c *cmut) grantee(users bool) model.Grantee {
	for {
		switch k := model.GranteeKind(c.intn(6)); k {
		case model.GUser:
			if users && len(c.m.Users) > 0 {
				return model.Grantee{Kind: k, ID: c.m.Users[c.intn(len(c.m.Users))].ID}
			}
		case model.GGroup:
			if len(c.m.Groups) > 0 {
				return model.Grantee{Kind: k, ID: c.m.Groups[c.intn(len(c.m.Groups))].ID}
			}
		case model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
			if len(c.m.Roles) > 0 {
				return model.Grantee{Kind: k, ID: c.m.Roles[c.intn(len(c.m.Roles))].ID}
			}
		case model.GAllInternalUsers:
			if c.chance(0.2) {
				return model.Grantee{Kind: k}
			}
		}
	}
}

func (c *cmut) isCBP(object string) bool {
	o := c.object(object)
	return o != nil && o.CBP()
}

func (c *cmut) hasManual(id string) bool {
	return slices.ContainsFunc(c.m.Shares, func(s model.Share) bool { return s.Record == id && s.Cause == model.CauseManual })
}

func (c *cmut) addShare(r *model.Record, cause string) {
	s := model.Share{Object: r.Object, Record: r.ID, Grantee: c.grantee(true), Access: c.level(), Cause: cause}
	for _, o := range c.m.Shares {
		if o.Record == s.Record && o.Grantee == s.Grantee && o.Cause == s.Cause {
			return
		}
	}
	c.m.Shares = append(c.m.Shares, s)
}

var cmuts = []struct {
	name string
	f    func(*cmut) bool
}{
	{"owner change with manual shares (wipe)", func(c *cmut) bool {
		r := c.randRecord(func(r *model.Record) bool { return !c.isCBP(r.Object) && c.hasManual(r.ID) })
		if r == nil {
			r = c.randRecord(func(r *model.Record) bool { return !c.isCBP(r.Object) })
		}
		if r == nil {
			return false
		}
		old := r.Owner
		for r.Owner == old {
			r.Owner = c.owner()
		}
		switch c.intn(4) {
		case 0: // list the old shares again, with new access
			for i := range c.m.Shares {
				if c.m.Shares[i].Record == r.ID {
					c.m.Shares[i].Access = c.level()
				}
			}
		case 1: // add new shares on the record in the same file
			c.addShare(r, model.CauseManual)
			if !model.IsStandard(r.Object) {
				c.addShare(r, "apex:sync")
			}
		case 2: // drop the record's shares from the file
			c.m.Shares = slices.DeleteFunc(c.m.Shares, func(s model.Share) bool { return s.Record == r.ID && c.chance(0.5) })
		}
		return true
	}},
	{"swap owners of two records", func(c *cmut) bool {
		a, b := c.randRecord(nil), c.randRecord(nil)
		if a == nil || a == b || a.Owner == b.Owner {
			return false
		}
		a.Owner, b.Owner = b.Owner, a.Owner
		return true
	}},
	{"owner to queue", func(c *cmut) bool {
		q := c.queues()
		if len(q) == 0 {
			return false
		}
		for i, n := 0, 1+c.intn(4); i < n; i++ {
			if r := c.randRecord(nil); r != nil {
				r.Owner = q[c.intn(len(q))]
			}
		}
		return true
	}},
	{"queue membership", func(c *cmut) bool {
		q := c.queues()
		if len(q) == 0 {
			return false
		}
		id := q[c.intn(len(q))]
		for i := range c.m.Groups {
			g := &c.m.Groups[i]
			if g.ID != id {
				continue
			}
			switch c.intn(4) {
			case 0:
				g.Members = nil
			case 1:
				g.IncludeBosses = !g.IncludeBosses
			default:
				g.Members = append(g.Members, c.grantee(true)) // cycles are rejected by Validate
			}
		}
		return true
	}},
	{"empty or nested group", func(c *cmut) bool {
		if len(c.m.Groups) == 0 {
			return false
		}
		g := &c.m.Groups[c.intn(len(c.m.Groups))]
		if c.chance(0.4) {
			g.Members = nil
		} else {
			g.Members = append(g.Members, model.Grantee{Kind: model.GGroup, ID: c.m.Groups[c.intn(len(c.m.Groups))].ID})
		}
		if c.chance(0.3) {
			g.IncludeBosses = !g.IncludeBosses
		}
		return true
	}},
	{"reparent record", func(c *cmut) bool {
		r := c.randRecord(func(r *model.Record) bool { o := c.object(r.Object); return o != nil && o.Parent != "" })
		if r == nil {
			return false
		}
		po := c.object(r.Object).Parent
		p := c.randRecord(func(p *model.Record) bool { return p.Object == po && p.ID != r.ID })
		if p == nil || c.chance(0.2) {
			r.Parent = ""
		} else {
			r.Parent = p.ID
		}
		return true
	}},
	{"record changes object", func(c *cmut) bool {
		r := c.randRecord(nil)
		if r == nil {
			return false
		}
		o := c.m.Objects[c.intn(len(c.m.Objects))]
		if o.Name == r.Object {
			return false
		}
		id := r.ID
		r.Object = o.Name
		r.Parent = ""
		if o.Parent != "" && c.chance(0.8) {
			if p := c.randRecord(func(p *model.Record) bool { return p.Object == o.Parent && p.ID != id }); p != nil {
				r.Parent = p.ID
			}
		}
		if o.Name != model.Account {
			r.Territories = nil
		}
		// Its children, shares and teams go, or follow.
		for i := range c.m.Records {
			if c.m.Records[i].Parent == id {
				c.m.Records[i].Parent = ""
			}
		}
		for i := range c.m.Shares {
			if c.m.Shares[i].Record == id {
				c.m.Shares[i].Object = o.Name
			}
		}
		c.m.Teams = slices.DeleteFunc(c.m.Teams, func(t model.Team) bool { return t.Record == id && c.chance(0.5) })
		return true
	}},
	{"delete and re-add record id", func(c *cmut) bool {
		r := c.randRecord(nil)
		if r == nil {
			return false
		}
		id := r.ID
		for i := range c.m.Records {
			if c.m.Records[i].Parent == id {
				c.m.Records[i].Parent = ""
			}
		}
		c.m.Shares = slices.DeleteFunc(c.m.Shares, func(s model.Share) bool { return s.Record == id })
		c.m.Teams = slices.DeleteFunc(c.m.Teams, func(t model.Team) bool { return t.Record == id })
		i := slices.IndexFunc(c.m.Records, func(x model.Record) bool { return x.ID == id })
		c.m.Records = slices.Delete(c.m.Records, i, i+1)
		return true
	}},
	{"add records under deep parents", func(c *cmut) bool {
		for i, n := 0, 1+c.intn(5); i < n; i++ {
			o := c.m.Objects[c.intn(len(c.m.Objects))]
			r := model.Record{Object: o.Name, ID: c.id("x"), Owner: c.owner(), Fields: model.Fields{}}
			if o.Parent != "" {
				if p := c.randRecord(func(p *model.Record) bool { return p.Object == o.Parent }); p != nil {
					r.Parent = p.ID
				}
			}
			r.Fields[edgeField(c.rng)] = edgeValue(c.rng)
			if o.Name == model.Account && len(c.m.Territories) > 0 {
				r.Territories = []string{c.m.Territories[c.intn(len(c.m.Territories))].ID}
			}
			c.m.Records = append(c.m.Records, r)
		}
		return true
	}},
	{"edge fields", func(c *cmut) bool {
		for i, n := 0, 1+c.intn(4); i < n; i++ {
			r := c.randRecord(nil)
			if r == nil {
				return false
			}
			if r.Fields == nil {
				r.Fields = model.Fields{}
			}
			if c.chance(0.15) {
				delete(r.Fields, edgeField(c.rng))
			} else {
				r.Fields[edgeField(c.rng)] = edgeValue(c.rng)
			}
		}
		return true
	}},
	{"edge criteria rule", func(c *cmut) bool {
		var objs []string
		for _, o := range c.m.Objects {
			if !o.CBP() {
				objs = append(objs, o.Name)
			}
		}
		if len(objs) == 0 {
			return false
		}
		conds := make([]model.Condition, 1+c.intn(3))
		for i := range conds {
			conds[i] = edgeCondition(c.rng)
		}
		logic := ""
		switch c.intn(5) {
		case 0:
			logic = "   "
		case 1:
			logic = "NOT 1"
		case 2:
			parts := make([]string, len(conds))
			for i := range parts {
				parts[i] = strconv.Itoa(i + 1)
				if c.chance(0.4) {
					parts[i] = "not " + parts[i]
				}
			}
			logic = strings.Join(parts, []string{" OR ", " and "}[c.intn(2)])
		case 3:
			if len(conds) >= 3 {
				logic = "(1 OR NOT 2) AND 3"
			} else {
				logic = "NOT (1)"
			}
		}
		crit, err := model.NewCriteria(conds, logic)
		if err != nil {
			return false
		}
		rule := model.Rule{Object: objs[c.intn(len(objs))], Type: model.CriteriaRule, Criteria: crit, Target: c.grantee(true), Access: c.level()}
		if rule.Object == model.Account && c.chance(0.7) {
			rule.Child = c.child()
		}
		if len(c.m.Rules) > 0 && c.chance(0.5) {
			i := c.intn(len(c.m.Rules))
			rule.ID = c.m.Rules[i].ID
			c.m.Rules[i] = rule
		} else {
			rule.ID = c.id("rule")
			c.m.Rules = append(c.m.Rules, rule)
		}
		return true
	}},
	{"rule moves object or target", func(c *cmut) bool {
		if len(c.m.Rules) == 0 {
			return false
		}
		r := &c.m.Rules[c.intn(len(c.m.Rules))]
		switch c.intn(3) {
		case 0:
			o := c.m.Objects[c.intn(len(c.m.Objects))]
			if o.CBP() {
				return false
			}
			r.Object = o.Name
			if o.Name != model.Account {
				r.Child = model.ChildAccess{}
			} else {
				r.Child = c.child()
			}
		case 1:
			r.Target = c.grantee(true)
		default:
			if r.Type == model.OwnerRule {
				r.Source = c.grantee(false)
			} else {
				r.Access = c.level()
			}
		}
		return true
	}},
	{"delete group with references", func(c *cmut) bool {
		if len(c.m.Groups) == 0 {
			return false
		}
		g := c.m.Groups[c.intn(len(c.m.Groups))]
		ref := model.Grantee{Kind: model.GGroup, ID: g.ID}
		c.m.Groups = slices.DeleteFunc(c.m.Groups, func(x model.Group) bool { return x.ID == g.ID })
		for i := range c.m.Groups {
			c.m.Groups[i].Members = slices.DeleteFunc(c.m.Groups[i].Members, func(x model.Grantee) bool { return x == ref })
		}
		c.m.Rules = slices.DeleteFunc(c.m.Rules, func(r model.Rule) bool { return r.Target == ref || r.Source == ref })
		c.m.Shares = slices.DeleteFunc(c.m.Shares, func(s model.Share) bool { return s.Grantee == ref })
		for i := range c.m.Records {
			if c.m.Records[i].Owner == g.ID {
				c.m.Records[i].Owner = c.m.Users[c.intn(len(c.m.Users))].ID
			}
		}
		return true
	}},
	{"delete role with references", func(c *cmut) bool {
		if len(c.m.Roles) == 0 {
			return false
		}
		r := c.m.Roles[c.intn(len(c.m.Roles))]
		c.m.Roles = slices.DeleteFunc(c.m.Roles, func(x model.Role) bool { return x.ID == r.ID })
		for i := range c.m.Roles {
			if c.m.Roles[i].Parent == r.ID {
				c.m.Roles[i].Parent = r.Parent
			}
		}
		for i := range c.m.Users {
			if c.m.Users[i].Role == r.ID {
				c.m.Users[i].Role = r.Parent
			}
		}
		refs := func(g model.Grantee) bool {
			return g.ID == r.ID && g.Kind >= model.GRole && g.Kind <= model.GRoleAndInternalSubordinates
		}
		for i := range c.m.Groups {
			c.m.Groups[i].Members = slices.DeleteFunc(c.m.Groups[i].Members, refs)
		}
		c.m.Rules = slices.DeleteFunc(c.m.Rules, func(x model.Rule) bool { return refs(x.Target) || (x.Type == model.OwnerRule && refs(x.Source)) })
		c.m.Shares = slices.DeleteFunc(c.m.Shares, func(s model.Share) bool { return refs(s.Grantee) })
		return true
	}},
	{"delete user with references", func(c *cmut) bool {
		if len(c.m.Users) < 2 {
			return false
		}
		u := c.m.Users[c.intn(len(c.m.Users))]
		c.m.Users = slices.DeleteFunc(c.m.Users, func(x model.User) bool { return x.ID == u.ID })
		ref := model.Grantee{Kind: model.GUser, ID: u.ID}
		for i := range c.m.Groups {
			c.m.Groups[i].Members = slices.DeleteFunc(c.m.Groups[i].Members, func(x model.Grantee) bool { return x == ref })
		}
		for i := range c.m.Territories {
			c.m.Territories[i].Users = slices.DeleteFunc(c.m.Territories[i].Users, func(x string) bool { return x == u.ID })
		}
		c.m.Rules = slices.DeleteFunc(c.m.Rules, func(x model.Rule) bool { return x.Target == ref })
		c.m.Shares = slices.DeleteFunc(c.m.Shares, func(s model.Share) bool { return s.Grantee == ref })
		c.m.Teams = slices.DeleteFunc(c.m.Teams, func(t model.Team) bool { return t.User == u.ID })
		for i := range c.m.Records {
			if c.m.Records[i].Owner == u.ID {
				c.m.Records[i].Owner = c.m.Users[c.intn(len(c.m.Users))].ID
			}
		}
		return true
	}},
	{"delete or move territory", func(c *cmut) bool {
		if len(c.m.Territories) == 0 {
			return false
		}
		t := c.m.Territories[c.intn(len(c.m.Territories))]
		if c.chance(0.5) {
			for i := range c.m.Territories {
				if c.m.Territories[i].ID == t.ID {
					c.m.Territories[i].Parent = ""
					if c.chance(0.7) {
						c.m.Territories[i].Parent = c.m.Territories[c.intn(len(c.m.Territories))].ID // cycles rejected
					}
				}
			}
			return true
		}
		c.m.Territories = slices.DeleteFunc(c.m.Territories, func(x model.Territory) bool { return x.ID == t.ID })
		for i := range c.m.Territories {
			if c.m.Territories[i].Parent == t.ID {
				c.m.Territories[i].Parent = t.Parent
			}
		}
		for i := range c.m.Records {
			c.m.Records[i].Territories = slices.DeleteFunc(c.m.Records[i].Territories, func(x string) bool { return x == t.ID })
		}
		return true
	}},
	{"territories on accounts", func(c *cmut) bool {
		if len(c.m.Territories) == 0 {
			return false
		}
		for i, n := 0, 1+c.intn(3); i < n; i++ {
			r := c.randRecord(func(r *model.Record) bool { return r.Object == model.Account })
			if r == nil {
				return false
			}
			id := c.m.Territories[c.intn(len(c.m.Territories))].ID
			if slices.Contains(r.Territories, id) {
				r.Territories = slices.DeleteFunc(r.Territories, func(x string) bool { return x == id })
			} else {
				r.Territories = append(r.Territories, id)
			}
		}
		if c.chance(0.5) {
			t := &c.m.Territories[c.intn(len(c.m.Territories))]
			t.AccountAccess, t.Child = c.level(), c.child()
		}
		return true
	}},
	{"controlled_by_parent switch with sharing dropped", func(c *cmut) bool {
		o := &c.m.Objects[c.intn(len(c.m.Objects))]
		if o.Parent == "" {
			return false
		}
		if o.CBP() {
			o.InternalOWD = model.OWD(c.intn(3))
			o.ExternalOWD = model.OWD(c.intn(int(o.InternalOWD) + 1))
			return true
		}
		o.InternalOWD, o.ExternalOWD = model.ControlledByParent, model.ControlledByParent
		name := o.Name
		c.m.Rules = slices.DeleteFunc(c.m.Rules, func(r model.Rule) bool { return r.Object == name })
		c.m.Shares = slices.DeleteFunc(c.m.Shares, func(s model.Share) bool { return s.Object == name })
		objOf := map[string]string{}
		for _, r := range c.m.Records {
			objOf[r.ID] = r.Object
		}
		c.m.Teams = slices.DeleteFunc(c.m.Teams, func(t model.Team) bool { return objOf[t.Record] == name })
		return true
	}},
	{"object hierarchy and OWD", func(c *cmut) bool {
		o := &c.m.Objects[c.intn(len(c.m.Objects))]
		if !model.IsStandard(o.Name) && c.chance(0.5) {
			o.Hierarchy = !o.Hierarchy
		}
		if !o.CBP() {
			o.InternalOWD = model.OWD(c.intn(3))
			o.ExternalOWD = model.OWD(c.intn(int(o.InternalOWD) + 1))
		}
		return true
	}},
	{"account owner flips", func(c *cmut) bool {
		r := c.randRecord(func(r *model.Record) bool { return r.Object == model.Account })
		if r == nil {
			return false
		}
		for i := range c.m.Users {
			u := &c.m.Users[i]
			if u.ID != r.Owner {
				continue
			}
			switch c.intn(4) {
			case 0:
				u.Active = !u.Active
			case 1:
				u.External = !u.External
			case 2:
				if len(c.m.Roles) > 0 {
					u.Role = c.m.Roles[c.intn(len(c.m.Roles))].ID
				}
			default:
				for j := range c.m.Roles {
					if c.m.Roles[j].ID == u.Role {
						c.m.Roles[j].Child = c.child()
					}
				}
			}
			return true
		}
		return false
	}},
	{"team changes", func(c *cmut) bool {
		r := c.randRecord(func(r *model.Record) bool {
			return (r.Object == model.Account || r.Object == model.Opportunity || r.Object == model.Case) && !c.isCBP(r.Object)
		})
		if r == nil || len(c.m.Users) == 0 {
			return false
		}
		u := c.m.Users[c.intn(len(c.m.Users))].ID
		i := slices.IndexFunc(c.m.Teams, func(t model.Team) bool { return t.Record == r.ID })
		if i >= 0 && c.chance(0.5) {
			c.m.Teams[i].User = u // duplicates rejected by Validate
			return true
		}
		t := model.Team{Record: r.ID, User: u, Access: c.level()}
		if r.Object == model.Account {
			t.Child = c.child()
		}
		c.m.Teams = append(c.m.Teams, t)
		return true
	}},
	{"role moves", func(c *cmut) bool {
		if len(c.m.Roles) == 0 {
			return false
		}
		r := &c.m.Roles[c.intn(len(c.m.Roles))]
		r.Parent = ""
		if c.chance(0.8) {
			r.Parent = c.m.Roles[c.intn(len(c.m.Roles))].ID // cycles rejected
		}
		return true
	}},
	{"add custom object under any object", func(c *cmut) bool {
		o := model.Object{Name: c.id("obj") + "__c", InternalOWD: model.OWD(c.intn(3)), Hierarchy: c.chance(0.5)}
		o.ExternalOWD = model.OWD(c.intn(int(o.InternalOWD) + 1))
		if c.chance(0.85) {
			o.Parent = c.m.Objects[c.intn(len(c.m.Objects))].Name
			if c.chance(0.6) {
				o.InternalOWD, o.ExternalOWD = model.ControlledByParent, model.ControlledByParent
			}
		}
		c.m.Objects = append(c.m.Objects, o)
		for i, n := 0, 1+c.intn(6); i < n; i++ {
			r := model.Record{Object: o.Name, ID: c.id("x"), Owner: c.owner(), Fields: model.Fields{}}
			if o.Parent != "" && c.chance(0.85) {
				if p := c.randRecord(func(p *model.Record) bool { return p.Object == o.Parent }); p != nil {
					r.Parent = p.ID
				}
			}
			if c.chance(0.5) {
				r.Fields[edgeField(c.rng)] = edgeValue(c.rng)
			}
			c.m.Records = append(c.m.Records, r)
		}
		if !o.CBP() && c.chance(0.5) {
			if r := c.randRecord(func(r *model.Record) bool { return r.Object == o.Name }); r != nil {
				c.addShare(r, "apex:z")
			}
		}
		return true
	}},
	{"object changes parent", func(c *cmut) bool {
		o := &c.m.Objects[c.intn(len(c.m.Objects))]
		old := o.Parent
		o.Parent = ""
		if c.chance(0.85) {
			o.Parent = c.m.Objects[c.intn(len(c.m.Objects))].Name // cycles rejected
		}
		if o.Parent == old {
			return false
		}
		if o.Parent == "" && o.CBP() {
			o.InternalOWD, o.ExternalOWD = model.Private, model.Private
		} else if o.Parent != "" && c.chance(0.3) && !o.CBP() {
			name := o.Name
			o.InternalOWD, o.ExternalOWD = model.ControlledByParent, model.ControlledByParent
			c.m.Rules = slices.DeleteFunc(c.m.Rules, func(r model.Rule) bool { return r.Object == name })
			c.m.Shares = slices.DeleteFunc(c.m.Shares, func(s model.Share) bool { return s.Object == name })
			objOf := map[string]string{}
			for _, r := range c.m.Records {
				objOf[r.ID] = r.Object
			}
			c.m.Teams = slices.DeleteFunc(c.m.Teams, func(t model.Team) bool { return objOf[t.Record] == name })
		}
		for i := range c.m.Records {
			r := &c.m.Records[i]
			if r.Object != o.Name {
				continue
			}
			r.Parent = ""
			if o.Parent != "" && c.chance(0.8) {
				id := r.ID
				if p := c.randRecord(func(p *model.Record) bool { return p.Object == o.Parent && p.ID != id }); p != nil {
					r.Parent = p.ID
				}
			}
		}
		return true
	}},
	{"remove object", func(c *cmut) bool {
		o := c.m.Objects[c.intn(len(c.m.Objects))]
		name := o.Name
		if !strings.HasPrefix(name, "obj") { // oracle.Mutate needs its own objects
			return false
		}
		for i := range c.m.Objects {
			if c.m.Objects[i].Parent == name {
				return false
			}
		}
		c.m.Objects = slices.DeleteFunc(c.m.Objects, func(x model.Object) bool { return x.Name == name })
		gone := map[string]bool{}
		for _, r := range c.m.Records {
			if r.Object == name {
				gone[r.ID] = true
			}
		}
		c.m.Records = slices.DeleteFunc(c.m.Records, func(r model.Record) bool { return gone[r.ID] })
		c.m.Rules = slices.DeleteFunc(c.m.Rules, func(r model.Rule) bool { return r.Object == name })
		c.m.Shares = slices.DeleteFunc(c.m.Shares, func(s model.Share) bool { return gone[s.Record] })
		c.m.Teams = slices.DeleteFunc(c.m.Teams, func(t model.Team) bool { return gone[t.Record] })
		return true
	}},
	{"shares with every grantee kind", func(c *cmut) bool {
		for i, n := 0, 1+c.intn(4); i < n; i++ {
			r := c.randRecord(func(r *model.Record) bool { return !c.isCBP(r.Object) })
			if r == nil {
				return false
			}
			cause := model.CauseManual
			if !model.IsStandard(r.Object) && c.chance(0.5) {
				cause = "apex:x"
			}
			c.addShare(r, cause)
		}
		return true
	}},
}

// TestCampaignExtraMutations runs a few seeds of the campaign, every
// extra mutation and run mode included, as a fast deterministic test.
func TestCampaignExtraMutations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for seed := 1; seed <= 3; seed++ {
		campaignSeed(t, b, seed, 8, map[string]int{})
	}
}

// TestCampaignCBPAccountGetsNoImplicitParent: an account may have a parent
// object and be controlled_by_parent. Section 4 then gives it section 3.3
// only (its owner's grant and the parent record's access), not the implicit
// parent read of section 3.2. The opportunity's owner u3 must get nothing
// on the account a1.
func TestCampaignCBPAccountGetsNoImplicitParent(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, `{"objects":[
		{"name":"proj__c","internal_owd":"private"},
		{"name":"account","parent":"proj__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"},
		{"name":"opportunity","parent":"account","internal_owd":"private"}],
	  "users":[{"id":"u1"},{"id":"u2"},{"id":"u3"}],
	  "records":[
		{"object":"proj__c","id":"p1","owner":"u1"},
		{"object":"account","id":"a1","owner":"u2","parent":"p1"},
		{"object":"opportunity","id":"o1","owner":"u3","parent":"a1"}]}`, engine.Options{})
	want := "object,record,user,access\naccount,a1,u1,all\naccount,a1,u2,all\nopportunity,o1,u3,all\nproj__c,p1,u1,all\n"
	if got := oracle.CSV(oracle.Access(b.cur)); got != want {
		t.Fatalf("oracle:\n%s", oracle.Diff(want, got))
	}
	b.checkOracle(t, "a controlled-by-parent account with a child opportunity")
}
