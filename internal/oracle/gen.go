package oracle

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/recalc-dev/recalc/internal/model"
)

// RandomModel returns a valid random model with about size records that
// exercises every feature of the spec: standard and custom objects (with
// hierarchy off, controlled-by-parent children and chains), every valid OWD
// pair, role and territory forests, internal, external, inactive and roleless
// users, nested groups and record-owning queues, owner and criteria rules,
// manual and apex shares, and teams.
func RandomModel(rng *rand.Rand, size int) *model.Model {
	g := &gen{rng: rng, m: &model.Model{}}
	m := g.m
	m.Objects = g.objects()
	for i, n := 0, 2+min(size/15, 10)+g.intn(3); i < n; i++ {
		g.addRole()
	}
	for i, n := 0, 5+min(size/8, 22)+g.intn(3); i < n; i++ {
		g.addUser()
	}
	for i, n := 0, 1+g.intn(3)+min(size/50, 4); i < n; i++ {
		g.addGroup(false)
	}
	for i, n := 0, 1+g.intn(2); i < n; i++ {
		g.addGroup(true)
	}
	for i, n := 0, 1+g.intn(4); i < n; i++ {
		g.addTerritory()
	}
	for i := 0; i < max(size, 1); i++ {
		g.addRecord()
	}
	for i, n := 0, 2+size/8; i < n; i++ {
		g.addRule()
	}
	for i, n := 0, size/5; i < n; i++ {
		g.addShare()
	}
	for i, n := 0, size/6; i < n; i++ {
		g.addTeam()
	}
	return m
}

// Mutate returns the next step of a model history: a partial model holding
// 1 to 3 changed sections of m, and the File that says which sections it
// holds. Merge(m, step, file) is valid whenever m is. m is not modified.
func Mutate(rng *rand.Rand, m *model.Model) (*model.Model, *model.File) {
	g := &gen{rng: rng, m: deepCopy(m), next: maxSuffix(m)}
	sections := []string{"objects", "roles", "users", "groups", "territories", "records", "rules", "shares", "teams"}
	rng.Shuffle(len(sections), func(i, j int) { sections[i], sections[j] = sections[j], sections[i] })
	sections = sections[:1+g.intn(3)]
	for _, s := range sections {
		for i, n := 0, 1+g.intn(3); i < n; i++ {
			g.mutate(s)
		}
	}

	step, file := &model.Model{}, &model.File{}
	for _, s := range sections {
		switch s {
		case "objects":
			step.Objects, file.Objects = g.m.Objects, g.m.Objects
		case "roles":
			step.Roles, file.Roles = g.m.Roles, g.m.Roles
		case "users":
			step.Users, file.Users = g.m.Users, g.m.Users
		case "groups":
			step.Groups, file.Groups = g.m.Groups, g.m.Groups
		case "territories":
			step.Territories, file.Territories = g.m.Territories, g.m.Territories
		case "rules":
			step.Rules, file.Rules = g.m.Rules, g.m.Rules
		case "records":
			step.Records, file.HasRecords = g.m.Records, true
		case "shares":
			step.Shares, file.HasShares = g.m.Shares, true
		case "teams":
			step.Teams, file.HasTeams = g.m.Teams, true
		}
	}
	return step, file
}

// gen builds or changes g.m, keeping it valid after every call.
type gen struct {
	rng  *rand.Rand
	m    *model.Model
	next int // last number used in a generated id
}

func (g *gen) intn(n int) int          { return g.rng.IntN(n) }
func (g *gen) chance(p float64) bool   { return g.rng.Float64() < p }
func (g *gen) id(prefix string) string { g.next++; return prefix + strconv.Itoa(g.next) }
func (g *gen) access() model.Level     { return model.Read + model.Level(g.intn(2)) }
func (g *gen) childLevel() model.Level { return model.Level(g.intn(3)) }
func oneOf[T any](g *gen, xs []T) T    { return xs[g.intn(len(xs))] }
func (g *gen) childAccess() model.ChildAccess {
	return model.ChildAccess{Contact: g.childLevel(), Opportunity: g.childLevel(), Case: g.childLevel()}
}

// objects are the four account objects, lead, and custom objects: proj__c,
// its child task__c and grandchild step__c, and memo__c under account.
func (g *gen) objects() []model.Object {
	objs := []model.Object{
		{Name: model.Account}, {Name: model.Contact, Parent: model.Account},
		{Name: model.Opportunity, Parent: model.Account}, {Name: model.Case, Parent: model.Account},
		{Name: model.Lead}, {Name: "proj__c"}, {Name: "task__c", Parent: "proj__c"},
		{Name: "step__c", Parent: "task__c"}, {Name: "memo__c", Parent: model.Account},
	}
	for i := range objs {
		o := &objs[i]
		g.setOWD(o, o.Parent != "" && g.chance(0.4))
		o.Hierarchy = model.IsStandard(o.Name) || g.chance(0.6)
	}
	return objs
}

// setOWD sets a valid OWD pair: both controlled_by_parent, or an external
// OWD no more open than the internal one.
func (g *gen) setOWD(o *model.Object, cbp bool) {
	if cbp {
		o.InternalOWD, o.ExternalOWD = model.ControlledByParent, model.ControlledByParent
		return
	}
	o.InternalOWD = model.OWD(g.intn(3))
	o.ExternalOWD = model.OWD(g.intn(int(o.InternalOWD) + 1))
}

func (g *gen) addRole() {
	r := model.Role{ID: g.id("r"), Child: g.childAccess()}
	if len(g.m.Roles) > 0 && g.chance(0.8) {
		r.Parent = oneOf(g, g.m.Roles).ID
	}
	g.m.Roles = append(g.m.Roles, r)
}

func (g *gen) randomRole() string {
	if len(g.m.Roles) == 0 || g.chance(0.15) {
		return ""
	}
	return oneOf(g, g.m.Roles).ID
}

func (g *gen) addUser() {
	g.m.Users = append(g.m.Users, model.User{ID: g.id("u"), Role: g.randomRole(),
		External: g.chance(0.2), Active: g.chance(0.88)})
}

// grantee returns a random grantee naming existing entries; a user grantee
// only if users is true.
func (g *gen) grantee(users bool) model.Grantee {
	for {
		switch k := model.GranteeKind(g.intn(6)); k {
		case model.GUser:
			if users {
				return model.Grantee{Kind: k, ID: oneOf(g, g.m.Users).ID}
			}
		case model.GGroup:
			if len(g.m.Groups) > 0 {
				return model.Grantee{Kind: k, ID: oneOf(g, g.m.Groups).ID}
			}
		case model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
			if len(g.m.Roles) > 0 {
				return model.Grantee{Kind: k, ID: oneOf(g, g.m.Roles).ID}
			}
		case model.GAllInternalUsers:
			if g.chance(0.3) { // rarer, since it drowns everything else
				return model.Grantee{Kind: k}
			}
		}
	}
}

// addGroup adds a public group or a queue. Its members may name only groups
// that already exist, so nesting stays acyclic.
func (g *gen) addGroup(queue bool) {
	grp := model.Group{ID: g.id("g"), Queue: queue, IncludeBosses: g.chance(0.6)}
	if queue {
		grp.ID = g.id("q")
	}
	for i, n := 0, 1+g.intn(4); i < n; i++ {
		grp.Members = append(grp.Members, g.grantee(true))
	}
	g.m.Groups = append(g.m.Groups, grp)
}

func (g *gen) addTerritory() {
	t := model.Territory{ID: g.id("t"), AccountAccess: g.access(), Child: g.childAccess()}
	if len(g.m.Territories) > 0 && g.chance(0.6) {
		t.Parent = oneOf(g, g.m.Territories).ID
	}
	t.Users = g.someUsers()
	g.m.Territories = append(g.m.Territories, t)
}

func (g *gen) someUsers() []string {
	var out []string
	for i, n := 0, g.intn(4); i < n; i++ {
		if u := oneOf(g, g.m.Users).ID; !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

var recordWeights = []struct {
	object string
	weight int
}{
	{model.Account, 25}, {model.Contact, 12}, {model.Opportunity, 12}, {model.Case, 12},
	{model.Lead, 5}, {"proj__c", 10}, {"task__c", 10}, {"step__c", 7}, {"memo__c", 7},
}

func (g *gen) addRecord() {
	n := g.intn(100)
	obj := recordWeights[0].object
	for _, w := range recordWeights {
		if n < w.weight {
			obj = w.object
			break
		}
		n -= w.weight
	}
	r := model.Record{Object: obj, ID: g.id("x"), Owner: g.owner(), Fields: g.fields()}
	g.setParent(&r)
	if obj == model.Account {
		r.Territories = g.someTerritories()
	}
	g.m.Records = append(g.m.Records, r)
}

// owner is a random user (active or not) or, sometimes, a queue.
func (g *gen) owner() string {
	var queues []string
	for _, grp := range g.m.Groups {
		if grp.Queue {
			queues = append(queues, grp.ID)
		}
	}
	if len(queues) > 0 && g.chance(0.12) {
		return oneOf(g, queues)
	}
	return oneOf(g, g.m.Users).ID
}

// setParent points r at a random record of its object's parent object, or
// at none.
func (g *gen) setParent(r *model.Record) {
	r.Parent = ""
	po := g.object(r.Object).Parent
	if po == "" || g.chance(0.15) {
		return
	}
	var cands []string
	for _, p := range g.m.Records {
		if p.Object == po && p.ID != r.ID {
			cands = append(cands, p.ID)
		}
	}
	if len(cands) > 0 {
		r.Parent = oneOf(g, cands)
	}
}

func (g *gen) someTerritories() []string {
	var out []string
	for i, n := 0, g.intn(3); i < n && len(g.m.Territories) > 0; i++ {
		if t := oneOf(g, g.m.Territories).ID; !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

func (g *gen) object(name string) *model.Object {
	for i := range g.m.Objects {
		if g.m.Objects[i].Name == name {
			return &g.m.Objects[i]
		}
	}
	panic("oracle: unknown object " + name)
}

// The field vocabulary of generated records and criteria.
var (
	fieldNames = []string{"industry", "status", "revenue", "priority", "vip", "region"}
	stringVals = []string{"Tech", "tech", "Healthcare", "Retail", "New", "Escalated", "Closed", "", "EMEA,APAC", "Tech Retail", "Ümlaut"}
	numberVals = []float64{0, 1, 2, 3, 5, -3, 2.5, 100, 1e6}
)

// fieldValue is a random value of a random JSON type, biased towards the
// field's usual type so that criteria often match.
func (g *gen) fieldValue(name string, null bool) model.Value {
	switch n := g.intn(10); {
	case null && n == 0:
		return model.Value{}
	case n == 1:
		return model.Str(oneOf(g, stringVals))
	case n == 2:
		return model.Num(oneOf(g, numberVals))
	case n == 3:
		return model.Bol(g.chance(0.5))
	}
	switch name {
	case "revenue", "priority":
		return model.Num(oneOf(g, numberVals))
	case "vip":
		return model.Bol(g.chance(0.5))
	}
	return model.Str(oneOf(g, stringVals))
}

func (g *gen) fields() model.Fields {
	f := model.Fields{}
	for _, name := range fieldNames {
		if g.chance(0.6) {
			f[name] = g.fieldValue(name, true)
		}
	}
	return f
}

// ruleObjects are the objects that may have rules, shares and teams: those
// not controlled by parent.
func (g *gen) ruleObjects() []string {
	var out []string
	for _, o := range g.m.Objects {
		if !o.CBP() {
			out = append(out, o.Name)
		}
	}
	return out
}

func (g *gen) addRule() {
	objs := g.ruleObjects()
	if len(objs) == 0 {
		return
	}
	obj := oneOf(g, objs)
	g.m.Rules = append(g.m.Rules, g.rule(g.id("rule"), obj))
}

// rule returns a random rule on obj. Per-object limits are far away: Mutate
// and RandomModel add a handful of rules at most.
func (g *gen) rule(id, obj string) model.Rule {
	r := model.Rule{ID: id, Object: obj, Target: g.grantee(true), Access: g.access()}
	if obj == model.Account && g.chance(0.7) {
		r.Child = g.childAccess()
	}
	if g.chance(0.5) {
		r.Type, r.Source = model.OwnerRule, g.grantee(false)
		return r
	}
	r.Type, r.Criteria = model.CriteriaRule, g.criteria()
	return r
}

func (g *gen) criteria() *model.Criteria {
	conds := make([]model.Condition, 1+g.intn(3))
	for i := range conds {
		conds[i] = g.condition()
	}
	logic := ""
	if g.chance(0.6) {
		logic = g.logic(len(conds), 3)
	}
	c, err := model.NewCriteria(conds, logic)
	if err != nil {
		panic(fmt.Sprintf("oracle: generated bad criteria %q: %v", logic, err))
	}
	return c
}

// condition returns a condition whose value type suits its op.
func (g *gen) condition() model.Condition {
	c := model.Condition{Field: oneOf(g, fieldNames), Op: model.Op(g.intn(9))}
	switch c.Op {
	case model.OpContains, model.OpNotContains, model.OpStartsWith:
		c.Value = model.Str(oneOf(g, []string{"Tech", "e", "", "EMEA", "Esc", "tech"}))
	case model.OpEquals, model.OpNotEquals:
		c.Value = g.fieldValue(c.Field, false)
		if c.Value.Kind == model.String && g.chance(0.3) {
			c.Value = model.Str(oneOf(g, []string{"Tech, Healthcare", "New,Escalated", " Retail ,tech", "EMEA,APAC"}))
		}
	default:
		c.Value = g.fieldValue(c.Field, false)
		if c.Value.Kind == model.Bool {
			c.Value = model.Num(oneOf(g, numberVals))
		}
	}
	return c
}

// logic returns random filter logic over conditions 1..n. Any mix of
// keywords, numbers and balanced parentheses parses, as long as AND and OR
// never meet at one level of parentheses (model files refuse that), so
// parentheses are added at random, where they must, and keywords are in
// random case.
func (g *gen) logic(n, depth int) string {
	s, _ := g.logicOp(n, depth)
	return s
}

// logicOp is logic, and the operator that joins its top level: '&', '|',
// or 0 for none.
func (g *gen) logicOp(n, depth int) (string, byte) {
	kw := func(s string) string {
		switch g.intn(3) {
		case 0:
			return strings.ToLower(s)
		case 1:
			return s[:1] + strings.ToLower(s[1:])
		}
		return s
	}
	// operand is an operand of op, in parentheses if another operator
	// joins its top level.
	operand := func(op byte) string {
		s, top := g.logicOp(n, depth-1)
		if top != 0 && top != op {
			return "(" + s + ")"
		}
		return s
	}
	var s string
	var op byte
	switch k := g.intn(4); {
	case depth == 0 || k == 0:
		return strconv.Itoa(1 + g.intn(n)), 0
	case k == 1:
		var sub string
		sub, op = g.logicOp(n, depth-1) // NOT a AND b is (NOT a) AND b
		s = kw("NOT") + " " + sub
	case k == 2:
		op = '&'
		l := operand(op)
		s = l + " " + kw("AND") + " " + operand(op)
	default:
		op = '|'
		l := operand(op)
		s = l + " " + kw("OR") + " " + operand(op)
	}
	if g.chance(0.5) {
		return "(" + s + ")", 0
	}
	return s, op
}

// recordsOf returns the records of the given objects.
func (g *gen) recordsOf(objects ...string) []*model.Record {
	var out []*model.Record
	for i := range g.m.Records {
		if slices.Contains(objects, g.m.Records[i].Object) {
			out = append(out, &g.m.Records[i])
		}
	}
	return out
}

func (g *gen) addShare() {
	recs := g.recordsOf(g.ruleObjects()...)
	if len(recs) == 0 {
		return
	}
	r := oneOf(g, recs)
	s := model.Share{Object: r.Object, Record: r.ID, Grantee: g.grantee(true), Access: g.access(), Cause: model.CauseManual}
	if !model.IsStandard(r.Object) && g.chance(0.4) {
		s.Cause = oneOf(g, []string{model.CauseApex + "sync", model.CauseApex + "batch_2"})
	}
	for _, o := range g.m.Shares {
		if o.Record == s.Record && o.Grantee == s.Grantee && o.Cause == s.Cause {
			return
		}
	}
	g.m.Shares = append(g.m.Shares, s)
}

func (g *gen) addTeam() {
	var objs []string
	for _, o := range g.ruleObjects() {
		if o == model.Account || o == model.Opportunity || o == model.Case {
			objs = append(objs, o)
		}
	}
	recs := g.recordsOf(objs...)
	if len(recs) == 0 {
		return
	}
	r := oneOf(g, recs)
	t := model.Team{Record: r.ID, User: oneOf(g, g.m.Users).ID, Access: g.access()}
	if r.Object == model.Account && g.chance(0.7) {
		t.Child = g.childAccess()
	}
	for _, o := range g.m.Teams {
		if o.Record == t.Record && o.User == t.User {
			return
		}
	}
	g.m.Teams = append(g.m.Teams, t)
}
