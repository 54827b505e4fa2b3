package gen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/recalc-dev/recalc/internal/model"
)

type jsonRecord struct {
	Object      string   `json:"object"`
	ID          string   `json:"id"`
	Owner       string   `json:"owner"`
	Parent      string   `json:"parent,omitempty"`
	Territories []string `json:"territories,omitempty"`
	Fields      fields   `json:"fields"`
}

type jsonShare struct {
	Object  string `json:"object"`
	Record  string `json:"record"`
	Grantee string `json:"grantee"`
	Access  string `json:"access"`
	Cause   string `json:"cause"`
}

type jsonTeam struct {
	Record string `json:"record"`
	User   string `json:"user"`
	Access string `json:"access"`
	childAccess
}

// block is a run of records of one object: positions start to start+n-1 of the file.
type block struct {
	object, prefix string
	start, n       int
}

// layout splits records over the objects: a quarter accounts, the rest by fixed weights.
// Tasks need projects; with too few records for both, tasks become contacts.
func layout(records int) []block {
	acc := max(1, records/4)
	rest := records - acc
	names := []string{"contact", "opportunity", "case", "lead", "project__c", "task__c"}
	prefixes := []string{"con", "opp", "cas", "led", "prj", "tsk"}
	weights := []int{28, 22, 20, 14, 6, 10}
	counts := make([]int, len(names))
	sum := 0
	for i, w := range weights {
		counts[i] = rest * w / 100
		sum += counts[i]
	}
	counts[0] += rest - sum
	if counts[4] == 0 {
		counts[0] += counts[5]
		counts[5] = 0
	}
	bs := []block{{object: "account", prefix: "acc", start: 0, n: acc}}
	next := acc
	for i, name := range names {
		bs = append(bs, block{object: name, prefix: prefixes[i], start: next, n: counts[i]})
		next += counts[i]
	}
	return bs
}

// recordGen derives every record, share and team entry from the org and the record's
// position alone, so any of them can be generated again without keeping the others.
type recordGen struct {
	*org
	blocks   []block
	byObject map[string]*block
	src      *rand.PCG // reseeded per record
	rng      *rand.Rand
	auxSrc   *rand.PCG // for looking up another record's owner
	aux      *rand.Rand

	// ownerShare is the share of the records each skewed owner owns; accountShare the share of
	// the account children under each of the skewedAccounts skewed accounts.
	ownerShare, accountShare float64
	skewedAccounts           int
}

func newRecordGen(o *org) *recordGen {
	g := &recordGen{org: o, blocks: layout(o.opt.Records), byObject: map[string]*block{}}
	for i := range g.blocks {
		g.byObject[g.blocks[i].object] = &g.blocks[i]
	}
	g.ownerShare = min(skewedOwnerShare, skewedOwnerRecords/float64(o.opt.Records))
	children := g.byObject["contact"].n + g.byObject["opportunity"].n + g.byObject["case"].n
	g.skewedAccounts = min(skewedAccounts, g.blocks[0].n-1) // never acc000001
	g.accountShare = min(skewedAccountShare, skewedAccountChildren/float64(max(children, 1)))
	g.src = rand.NewPCG(0, 0)
	g.rng = rand.New(g.src)
	g.auxSrc = rand.NewPCG(0, 0)
	g.aux = rand.New(g.auxSrc)
	return g
}

// Salts keep the random streams of a record's fields and of its shares and teams apart.
const (
	saltRecord = 0x7265636f7264
	saltShares = 0x736861726573
	saltTeams  = 0x7465616d73
)

func (g *recordGen) reseed(src *rand.PCG, pos int, salt uint64) {
	src.Seed(splitmix64(g.seed^salt), splitmix64(uint64(pos)^salt))
}

func (g *recordGen) blockOf(pos int) *block {
	for i := len(g.blocks) - 1; i > 0; i-- {
		if pos >= g.blocks[i].start && g.blocks[i].n > 0 {
			return &g.blocks[i]
		}
	}
	return &g.blocks[0]
}

func (b *block) id(pos int) string { return fmt.Sprintf("%s%06d", b.prefix, pos-b.start+1) }

func pow(x, y float64) float64 { return math.Pow(x, y) }

// Skew: the skewed owners (SkewedOwner and the two users after it) each own about
// skewedOwnerRecords records, or skewedOwnerShare of them in smaller orgs; the skewed accounts
// (SkewedAccount and the two after it) each have about skewedAccountChildren contacts,
// opportunities and cases, or skewedAccountShare of them in smaller orgs.
const (
	skewedOwners          = 3
	skewedOwnerRecords    = 12_000
	skewedOwnerShare      = 0.12
	skewedAccounts        = 3
	skewedAccountChildren = 11_500
	skewedAccountShare    = 0.22
)

// owner is the first draw of a record's own stream, so that a child can look up its
// parent's owner by drawing it again.
func (g *recordGen) owner(rng *rand.Rand, object string, pos int) string {
	if pos == 0 {
		return "u0001" // acc000001 belongs to the demo user
	}
	if u := rng.Float64(); u < g.ownerShare*float64(len(g.skewed)) {
		return g.skewed[min(int(u/g.ownerShare), len(g.skewed)-1)]
	}
	switch n := rng.IntN(100); {
	case object == "case" && n < 12:
		return queueSupport
	case object == "lead" && n < 15:
		return queueLeads
	case object == "project__c" && n < 10:
		return queueProjects
	case n >= 97 && len(g.externals) > 0 && object != "task__c":
		return g.externals[rng.IntN(len(g.externals))]
	}
	// Relative skew among the others: the first owners of the shuffled list own most records
	// (about 12% of these records belong to the top 1% of owners).
	return g.owners[min(int(float64(len(g.owners))*pow(rng.Float64(), 2.2)), len(g.owners)-1)]
}

func (g *recordGen) ownerOf(object string, pos int) string {
	g.reseed(g.auxSrc, pos, saltRecord)
	return g.owner(g.aux, object, pos)
}

func (g *recordGen) record(pos int) *jsonRecord {
	b := g.blockOf(pos)
	rng := g.rng
	g.reseed(g.src, pos, saltRecord)
	r := &jsonRecord{Object: b.object, ID: b.id(pos), Owner: g.owner(rng, b.object, pos)}
	switch b.object {
	case "contact", "opportunity", "case":
		acc := g.blocks[0]
		var p int
		if u := rng.Float64(); u < g.accountShare*float64(g.skewedAccounts) {
			p = 1 + min(int(u/g.accountShare), g.skewedAccounts-1) // a skewed account
		} else {
			p = min(int(float64(acc.n)*pow(rng.Float64(), 1.6)), acc.n-1) // some accounts have many children
		}
		r.Parent = acc.id(p)
		// Most children are owned by the account's owner, but a skewed owner's records stay
		// its own, so that it owns its share whoever owns the skewed accounts.
		if !slices.Contains(g.skewed, r.Owner) && rng.IntN(10) < 6 {
			r.Owner = g.ownerOf("account", p)
		}
	case "task__c":
		prj := g.byObject["project__c"]
		p := prj.start + min(int(float64(prj.n)*pow(rng.Float64(), 1.3)), prj.n-1)
		r.Parent = prj.id(p)
		if rng.IntN(10) < 7 {
			r.Owner = g.ownerOf("project__c", p)
		}
	case "account":
		switch n := rng.IntN(100); {
		case n < 45:
			r.Territories = []string{territoryTree[rng.IntN(len(territoryTree))][0]}
		case n < 60:
			a := rng.IntN(len(territoryTree))
			b := (a + 1 + rng.IntN(len(territoryTree)-1)) % len(territoryTree)
			r.Territories = []string{territoryTree[a][0], territoryTree[b][0]}
		}
	}
	for _, f := range schema[b.object] {
		switch n := rng.IntN(100); {
		case n < 6: // missing
			continue
		case n < 9:
			r.Fields = append(r.Fields, field{f.name, nil})
			continue
		}
		var v any
		switch {
		case f.kind == kString:
			v = stringValue(rng, b.object, f.name)
		case f.name == "tier":
			v = int64(1 + skewed(rng, 4, 1.2))
		case f.kind == kNumber:
			v = revenue(rng, b.object)
		default:
			v = rng.IntN(10) == 0
		}
		r.Fields = append(r.Fields, field{f.name, v})
	}
	if r.Fields == nil {
		r.Fields = fields{}
	}
	return r
}

// revenue draws an amount spread over orders of magnitude, rounded to hundreds; now and
// then with cents, so that numbers are not all integers.
func revenue(rng *rand.Rand, object string) any {
	rr, ok := revenueRange[object]
	if !ok {
		rr = [2]float64{3, 6}
	}
	v := math.Round(math.Pow(10, rr[0]+(rr[1]-rr[0])*rng.Float64())/100) * 100
	if rng.IntN(20) == 0 {
		return v + float64(rng.IntN(100))/100
	}
	return int64(v)
}

// grantee draws a grantee for a manual or apex share.
func (g *recordGen) grantee(rng *rand.Rand) string {
	switch n := rng.IntN(100); {
	case n < 65:
		return "user:" + g.anyUser(rng)
	case n < 85:
		return "group:" + g.plainGroups[rng.IntN(len(g.plainGroups))]
	case n < 90:
		return "role:" + g.roles[g.internalRole(rng, true)].ID
	default:
		return "role_and_subordinates:" + g.midRole(rng)
	}
}

var apexCauses = []string{model.CauseApex + "project_team", model.CauseApex + "region_sync", model.CauseApex + "budget_owner"}

// shares returns the manual and apex shares of the record at pos: manual shares on about 1%
// of the records of objects that take them, apex shares on about 10% of the projects.
func (g *recordGen) shares(pos int) []jsonShare {
	b := g.blockOf(pos)
	if b.object == "contact" || b.object == "task__c" { // controlled by parent: no shares
		return nil
	}
	rng := g.rng
	g.reseed(g.src, pos, saltShares)
	var out []jsonShare
	add := func(cause string) {
		s := jsonShare{Object: b.object, Record: b.id(pos), Grantee: g.grantee(rng),
			Access: pick(rng, []string{"read", "edit"}, []int{70, 30}), Cause: cause}
		for _, o := range out {
			if o.Grantee == s.Grantee && o.Cause == s.Cause {
				return // (record, grantee, cause) must be unique
			}
		}
		out = append(out, s)
	}
	if rng.IntN(100) == 0 {
		for k := 1 + rng.IntN(4)/3; k > 0; k-- { // one, or two in a quarter of the cases
			add(model.CauseManual)
		}
	}
	if b.object == "project__c" && rng.IntN(10) == 0 {
		for k := 1 + rng.IntN(2); k > 0; k-- {
			add(apexCauses[rng.IntN(len(apexCauses))])
		}
	}
	return out
}

// teams returns the team entries of the record at pos: about 2% of the accounts,
// opportunities and cases have a team of one to three users.
func (g *recordGen) teams(pos int) []jsonTeam {
	b := g.blockOf(pos)
	if b.object != "account" && b.object != "opportunity" && b.object != "case" {
		return nil
	}
	rng := g.rng
	g.reseed(g.src, pos, saltTeams)
	if rng.IntN(50) != 0 {
		return nil
	}
	var out []jsonTeam
	for k := 1 + rng.IntN(3); k > 0; k-- {
		t := jsonTeam{Record: b.id(pos), User: g.anyUser(rng), Access: pick(rng, []string{"read", "edit"}, []int{60, 40})}
		if b.object == "account" && rng.IntN(2) == 0 {
			t.childAccess = randomChild(rng)
		}
		dup := false
		for _, o := range out {
			dup = dup || o.User == t.User
		}
		if !dup {
			out = append(out, t)
		}
	}
	return out
}
