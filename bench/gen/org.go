package gen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// The JSON shapes of the model file's entries (interface.md). Optional keys are left out
// when they hold their default.

type jsonObject struct {
	Name        string `json:"name"`
	Parent      string `json:"parent,omitempty"`
	InternalOWD string `json:"internal_owd"`
	ExternalOWD string `json:"external_owd,omitempty"`
	Hierarchy   *bool  `json:"hierarchy,omitempty"`
}

// childAccess is what roles, account rules, account teams and territories give on the
// contacts, opportunities and cases of an account.
type childAccess struct {
	Opportunity string `json:"opportunity_access,omitempty"`
	Case        string `json:"case_access,omitempty"`
	Contact     string `json:"contact_access,omitempty"`
}

type jsonRole struct {
	ID     string `json:"id"`
	Parent string `json:"parent,omitempty"`
	childAccess
}

type jsonUser struct {
	ID     string `json:"id"`
	Role   string `json:"role,omitempty"`
	Type   string `json:"type,omitempty"`
	Active *bool  `json:"active,omitempty"`
}

type jsonGroup struct {
	ID            string   `json:"id"`
	Members       []string `json:"members"`
	IncludeBosses *bool    `json:"include_bosses,omitempty"`
	Queue         bool     `json:"queue,omitempty"`
}

type jsonTerritory struct {
	ID            string   `json:"id"`
	Parent        string   `json:"parent,omitempty"`
	Users         []string `json:"users"`
	AccountAccess string   `json:"account_access,omitempty"`
	childAccess
}

type jsonRule struct {
	ID       string        `json:"id"`
	Object   string        `json:"object"`
	Type     string        `json:"type"`
	Source   string        `json:"source,omitempty"`
	Criteria *jsonCriteria `json:"criteria,omitempty"`
	Target   string        `json:"target"`
	Access   string        `json:"access"`
	childAccess
}

type jsonCriteria struct {
	Conditions []jsonCondition `json:"conditions"`
	Logic      string          `json:"logic,omitempty"`
}

type jsonCondition struct {
	Field string `json:"field"`
	Op    string `json:"op"`
	Value any    `json:"value"`
}

func ptr[T any](v T) *T { return &v }

// objects are the org's objects; records.go lays out records over the same names.
var objects = []jsonObject{
	{Name: "account", InternalOWD: "private", ExternalOWD: "private"},
	{Name: "contact", Parent: "account", InternalOWD: "controlled_by_parent", ExternalOWD: "controlled_by_parent"},
	{Name: "opportunity", Parent: "account", InternalOWD: "private"},
	{Name: "case", Parent: "account", InternalOWD: "public_read_only", ExternalOWD: "private"},
	{Name: "lead", InternalOWD: "public_read_write", ExternalOWD: "public_read_only"},
	{Name: "project__c", InternalOWD: "private", Hierarchy: ptr(false)},
	{Name: "task__c", Parent: "project__c", InternalOWD: "controlled_by_parent", ExternalOWD: "controlled_by_parent"},
}

// titles name the levels of the role tree, from the top.
var titles = []string{"ceo", "evp", "vp", "director", "manager", "lead", "rep", "associate"}

// territoryTree is the territory forest: id and parent.
var territoryTree = [][2]string{
	{"t_amer", ""}, {"t_emea", ""}, {"t_apac", ""},
	{"t_amer_east", "t_amer"}, {"t_amer_west", "t_amer"}, {"t_amer_central", "t_amer"},
	{"t_emea_north", "t_emea"}, {"t_emea_south", "t_emea"}, {"t_emea_dach", "t_emea"},
	{"t_apac_anz", "t_apac"}, {"t_apac_japan", "t_apac"},
	{"t_amer_west_ca", "t_amer_west"}, {"t_amer_east_ny", "t_amer_east"},
	{"t_emea_dach_de", "t_emea_dach"}, {"t_emea_north_uk", "t_emea_north"},
}

// groupNames are the public groups, in nesting order: a group only contains groups before it.
var groupNames = []string{
	"g_sales_amer", "g_sales_emea", "g_sales_apac", "g_all_sales", "g_service", "g_support_t2",
	"g_marketing", "g_finance", "g_legal", "g_deal_desk", "g_key_accounts", "g_renewals",
	"g_analytics", "g_exec_review", "g_partner_mgmt", "g_partners", "g_everyone",
}

// Queues, which own some cases, leads and projects.
const (
	queueSupport  = "q_support"
	queueLeads    = "q_leads"
	queueProjects = "q_projects"
)

// org is the configuration part of a generated org, plus the lookups records need.
type org struct {
	opt         Options
	seed        uint64 // opt.Seed, mixed
	roles       []jsonRole
	roleDepth   []int // by index in roles
	depth       int   // levels in the internal role tree
	internal    []int // indexes of internal (non-partner) roles
	partner     []int // indexes of partner roles
	users       []jsonUser
	owners      []string // internal users, most prolific owners first
	skewed      []string // SkewedOwner and the two after it, which own a fixed share of the records
	externals   []string // external users
	groups      []jsonGroup
	plainGroups []string // non-queue groups
	territories []jsonTerritory
	rules       []jsonRule
}

// splitmix64 mixes a 64-bit value; it turns (seed, position) pairs into independent seeds.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newOrg(opt Options) *org {
	o := &org{opt: opt, seed: splitmix64(uint64(opt.Seed))}
	rng := rand.New(rand.NewPCG(o.seed, splitmix64(o.seed^0x0c0f)))
	o.makeRoles(rng)
	o.makeUsers(rng)
	o.makeGroups(rng)
	o.makeTerritories(rng)
	o.makeRules(rng)
	return o
}

// pick returns one of the weighted choices; weights need not sum to anything.
func pick[T any](rng *rand.Rand, choices []T, weights []int) T {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := rng.IntN(total)
	for i, w := range weights {
		if n < w {
			return choices[i]
		}
		n -= w
	}
	return choices[len(choices)-1]
}

// childLevel draws a child access level; "" (left out, meaning none) is the most common.
func childLevel(rng *rand.Rand) string {
	return pick(rng, []string{"", "none", "read", "edit"}, []int{45, 10, 30, 15})
}

func randomChild(rng *rand.Rand) childAccess {
	return childAccess{Opportunity: childLevel(rng), Case: childLevel(rng), Contact: childLevel(rng)}
}

func (o *org) makeRoles(rng *rand.Rand) {
	depth := 6 + rng.IntN(3) // levels in the tree
	o.depth = depth
	n := min(max(o.opt.Users/6, 2*depth), 300)
	add := func(parent, d int) {
		id := titles[d]
		if d > 0 {
			id = fmt.Sprintf("%s_%03d", titles[d], len(o.roles))
		}
		r := jsonRole{ID: id, childAccess: randomChild(rng)}
		if parent >= 0 {
			r.Parent = o.roles[parent].ID
		}
		o.internal = append(o.internal, len(o.roles))
		o.roles = append(o.roles, r)
		o.roleDepth = append(o.roleDepth, d)
	}
	// A spine gives the tree its full depth; the other roles hang anywhere above the last level.
	add(-1, 0)
	for d := 1; d < depth; d++ {
		add(d-1, d)
	}
	for len(o.roles) < n {
		p := rng.IntN(len(o.roles))
		if o.roleDepth[p] < depth-1 {
			add(p, o.roleDepth[p]+1)
		}
	}
	// Partner roles (an executive and a user role per partner company) sit under mid-level
	// internal roles, as Salesforce puts them under the partner account owner's role.
	partners := min(max(o.opt.Users/100, 1), 20)
	for p := 1; p <= partners; p++ {
		var parent int
		for {
			parent = o.internal[rng.IntN(len(o.internal))]
			if d := o.roleDepth[parent]; d >= 2 && d <= depth-3 {
				break
			}
		}
		exec := jsonRole{ID: fmt.Sprintf("partner_exec_%02d", p), Parent: o.roles[parent].ID}
		user := jsonRole{ID: fmt.Sprintf("partner_user_%02d", p), Parent: exec.ID}
		o.partner = append(o.partner, len(o.roles), len(o.roles)+1)
		o.roles = append(o.roles, exec, user)
		o.roleDepth = append(o.roleDepth, o.roleDepth[parent]+1, o.roleDepth[parent]+2)
	}
}

// internalRole draws an internal role, deeper levels (more people) more often; the top two
// levels are excluded when deep is set.
func (o *org) internalRole(rng *rand.Rand, deep bool) int {
	for {
		r := o.internal[rng.IntN(len(o.internal))]
		d := o.roleDepth[r]
		if deep && d < 2 {
			continue
		}
		if rng.IntN(len(titles)) <= d {
			return r
		}
	}
}

// midRole draws an internal role from levels 1 to 4, the usual sources and targets of rules.
func (o *org) midRole(rng *rand.Rand) string {
	for {
		r := o.internal[rng.IntN(len(o.internal))]
		if d := o.roleDepth[r]; d >= 1 && d <= 4 {
			return o.roles[r].ID
		}
	}
}

// lowRole draws an internal role from level 3 down to the level above the leaves (or the
// leaves too, with leaves set): managers with a team below them, the usual owner-rule sources.
func (o *org) lowRole(rng *rand.Rand, leaves bool) int {
	bottom := o.depth - 2
	if leaves {
		bottom++
	}
	for {
		r := o.internal[rng.IntN(len(o.internal))]
		if d := o.roleDepth[r]; d >= 3 && d <= bottom {
			return r
		}
	}
}

func (o *org) makeUsers(rng *rand.Rand) {
	// u0001 is the demo user and u0002…u0004 are the skewed owners: all four are internal and
	// active. Exactly round(share × (users-1)) of the others are external (as many as there
	// are, if fewer), and as many inactive.
	fixed := min(1+skewedOwners, o.opt.Users)
	others := o.opt.Users - fixed
	draw := func(share float64) []bool {
		set := make([]bool, o.opt.Users+1)
		n := min(int(math.Round(share*float64(o.opt.Users-1))), others)
		for _, k := range rng.Perm(others)[:n] {
			set[k+fixed+1] = true
		}
		return set
	}
	external := draw(o.opt.ExternalShare)
	inactive := draw(o.opt.InactiveShare)
	for i := 1; i <= o.opt.Users; i++ {
		u := jsonUser{ID: fmt.Sprintf("u%04d", i)}
		switch {
		case i == 1: // the demo user: internal, active, a director on the spine
			u.Role = o.roles[3].ID
		case i <= fixed: // a skewed owner, an integration user deep in the tree
			u.Role = o.roles[o.lowRole(rng, true)].ID
			o.skewed = append(o.skewed, u.ID)
		case external[i]:
			u.Type = "external"
			if rng.IntN(10) < 6 {
				u.Role = o.roles[o.partner[rng.IntN(len(o.partner))]].ID
			}
		default:
			if rng.IntN(100) < 8 {
				break // no role
			}
			u.Role = o.roles[o.internalRole(rng, false)].ID
			if rng.IntN(20) == 0 {
				u.Type = "internal" // explicit default, now and then
			}
		}
		if inactive[i] {
			u.Active = ptr(false)
		} else if rng.IntN(50) == 0 {
			u.Active = ptr(true) // explicit default
		}
		o.users = append(o.users, u)
		if u.Type == "external" {
			o.externals = append(o.externals, u.ID)
		} else {
			o.owners = append(o.owners, u.ID)
		}
	}
	// Records are owned mostly by the first owners: shuffle so that they are anyone.
	rng.Shuffle(len(o.owners), func(i, j int) { o.owners[i], o.owners[j] = o.owners[j], o.owners[i] })
}

func (o *org) anyUser(rng *rand.Rand) string { return o.users[rng.IntN(len(o.users))].ID }

func (o *org) internalUser(rng *rand.Rand) string { return o.owners[rng.IntN(len(o.owners))] }

func (o *org) makeGroups(rng *rand.Rand) {
	for i, id := range groupNames {
		g := jsonGroup{ID: id}
		seen := map[string]bool{}
		addMember := func(m string) {
			if !seen[m] {
				seen[m] = true
				g.Members = append(g.Members, m)
			}
		}
		switch id {
		case BroadGroup: // every sales team; the broad rules share with it
			for _, sub := range groupNames[:i] {
				addMember("group:" + sub)
			}
		case "g_everyone":
			addMember("all_internal_users")
		case "g_partners":
			for k := 0; k < len(o.partner); k += 2 { // the executive roles
				addMember("role_and_subordinates:" + o.roles[o.partner[k]].ID)
			}
			for k := 0; k < 3 && len(o.externals) > 0; k++ {
				addMember("user:" + o.externals[rng.IntN(len(o.externals))])
			}
		default:
			for k := 1 + rng.IntN(4); k > 0; k-- {
				kind := pick(rng, []string{"user", "role", "role_and_subordinates", "role_and_internal_subordinates", "group"},
					[]int{30, 15, 25, 10, 20})
				switch {
				case kind == "user":
					addMember("user:" + o.anyUser(rng))
				case kind == "group" && i > 0:
					addMember("group:" + groupNames[rng.IntN(i)])
				case kind == "group" || kind == "role_and_subordinates":
					addMember("role_and_subordinates:" + o.midRole(rng))
				default:
					addMember(kind + ":" + o.roles[o.internalRole(rng, true)].ID)
				}
			}
		}
		switch {
		case id == "g_exec_review" || rng.IntN(4) == 0:
			g.IncludeBosses = ptr(false)
		case rng.IntN(4) == 0:
			g.IncludeBosses = ptr(true)
		}
		o.groups = append(o.groups, g)
		o.plainGroups = append(o.plainGroups, id)
	}
	for _, q := range []string{queueSupport, queueLeads, queueProjects} {
		g := jsonGroup{ID: q, Queue: true}
		seen := map[string]bool{}
		for k := 2 + rng.IntN(3); k > 0; k-- {
			if m := "user:" + o.internalUser(rng); !seen[m] {
				seen[m] = true
				g.Members = append(g.Members, m)
			}
		}
		g.Members = append(g.Members, "role:"+o.roles[o.internalRole(rng, true)].ID)
		o.groups = append(o.groups, g)
	}
}

func (o *org) makeTerritories(rng *rand.Rand) {
	for _, t := range territoryTree {
		tr := jsonTerritory{ID: t[0], Parent: t[1], Users: []string{}, childAccess: randomChild(rng)}
		for k := 1 + rng.IntN(6); k > 0; k-- {
			if u := o.internalUser(rng); !slices.Contains(tr.Users, u) {
				tr.Users = append(tr.Users, u)
			}
		}
		tr.AccountAccess = pick(rng, []string{"", "read", "edit"}, []int{30, 30, 40})
		o.territories = append(o.territories, tr)
	}
}

// fieldKind is the JSON type of a record field.
type fieldKind int

const (
	kString fieldKind = iota
	kNumber
	kBool
)

// schema lists the fields each object's records may have, for records and rule criteria.
var schema = map[string][]struct {
	name string
	kind fieldKind
}{
	"account":     {{"industry", kString}, {"region", kString}, {"status", kString}, {"revenue", kNumber}, {"tier", kNumber}, {"vip", kBool}},
	"contact":     {{"region", kString}, {"status", kString}, {"tier", kNumber}, {"vip", kBool}},
	"opportunity": {{"status", kString}, {"region", kString}, {"revenue", kNumber}, {"tier", kNumber}, {"vip", kBool}},
	"case":        {{"status", kString}, {"region", kString}, {"tier", kNumber}, {"vip", kBool}},
	"lead":        {{"status", kString}, {"industry", kString}, {"region", kString}, {"revenue", kNumber}, {"vip", kBool}},
	"project__c":  {{"status", kString}, {"region", kString}, {"revenue", kNumber}, {"tier", kNumber}, {"vip", kBool}},
	"task__c":     {{"status", kString}, {"tier", kNumber}},
}

var (
	industries = []string{"Healthcare", "Banking", "Insurance", "Retail", "Manufacturing", "Technology", "Energy",
		"Education", "Government", "Media", "Telecommunications", "Hospitality", "Transportation", "Biotechnology",
		"Consulting", "Non-Profit", "Agriculture"}
	regions  = []string{"AMER-East", "AMER-West", "AMER-Central", "LATAM", "EMEA-North", "EMEA-South", "EMEA-DACH", "APAC-ANZ", "APAC-Japan"}
	statuses = map[string][]string{
		"account":     {"Active", "Prospect", "Churned", "On Hold"},
		"contact":     {"Active", "Left Company", "Do Not Contact"},
		"opportunity": {"Prospecting", "Qualification", "Proposal", "Negotiation", "Closed Won", "Closed Lost"},
		"case":        {"New", "Working", "Escalated", "On Hold", "Closed"},
		"lead":        {"Open", "Contacted", "Qualified", "Unqualified", "Converted"},
		"project__c":  {"Planned", "In Progress", "Blocked", "Done"},
		"task__c":     {"Not Started", "In Progress", "Completed", "Deferred"},
	}
	// revenueRange is the order of magnitude of revenue per object: 10^lo to 10^hi.
	revenueRange = map[string][2]float64{"account": {4, 8}, "opportunity": {3, 6.3}, "lead": {4, 7}, "project__c": {4, 6.5}}
)

// stringValue draws a value of a string field for an object.
func stringValue(rng *rand.Rand, object, field string) string {
	switch field {
	case "industry":
		return industries[skewed(rng, len(industries), 1.5)]
	case "region":
		return regions[skewed(rng, len(regions), 1.3)]
	}
	s := statuses[object]
	return s[skewed(rng, len(s), 1.4)]
}

// skewed draws an index in [0, n), low indexes more often; power 1 is uniform.
func skewed(rng *rand.Rand, n int, power float64) int {
	return min(int(float64(n)*pow(rng.Float64(), power)), n-1)
}

// ruleCounts are the rules per object of an org with at least fullRulesUsers users; smaller
// orgs get proportionally fewer, but never fewer than the floors.
var ruleCounts = []struct {
	object, short             string
	owner, criteria           int
	ownerFloor, criteriaFloor int
}{
	{"account", "acc", 250, 50, 6, 6},
	{"opportunity", "opp", 20, 10, 4, 4},
	{"case", "cas", 12, 8, 3, 4},
	{"lead", "led", 6, 6, 2, 3},
	{"project__c", "prj", 10, 5, 3, 3},
}

const fullRulesUsers = 2500

func (o *org) makeRules(rng *rand.Rand) {
	scale := min(1, float64(o.opt.Users)/fullRulesUsers)
	for _, rc := range ruleCounts {
		owners := max(rc.ownerFloor, int(math.Round(float64(rc.owner)*scale)))
		crits := max(rc.criteriaFloor, int(math.Round(float64(rc.criteria)*scale)))
		for k := 1; k <= owners+crits; k++ {
			r := jsonRule{Object: rc.object, Access: pick(rng, []string{"read", "edit"}, []int{65, 35})}
			switch {
			case k == 1:
				// The broad rule: everything internal users own is shared with BroadGroup.
				r.ID = fmt.Sprintf("%s_owner_%03d", rc.short, k)
				r.Type, r.Source, r.Target, r.Access = "owner", "all_internal_users", "group:"+BroadGroup, "read"
				if rc.object == "account" {
					r.childAccess = childAccess{Opportunity: "read"}
				}
				o.rules = append(o.rules, r)
				continue
			case k <= owners:
				r.ID = fmt.Sprintf("%s_owner_%03d", rc.short, k)
				r.Type = "owner"
				r.Source = o.ruleSource(rng)
				r.Target = o.ruleTarget(rng, false)
			default:
				r.ID = fmt.Sprintf("%s_criteria_%03d", rc.short, k-owners)
				r.Type = "criteria"
				r.Criteria = criteria(rng, rc.object)
				r.Target = o.ruleTarget(rng, true)
			}
			if rc.object == "account" && rng.IntN(2) == 0 {
				r.childAccess = randomChild(rng)
			}
			o.rules = append(o.rules, r)
		}
	}
}

// ruleSource draws the source of an owner-based rule: mostly a manager's team or one role, so
// that a rule applies to the records of a few dozen owners, now and then a group, a larger
// branch of the tree or a partner company.
func (o *org) ruleSource(rng *rand.Rand) string {
	switch n := rng.IntN(100); {
	case n < 30:
		return "role_and_subordinates:" + o.roles[o.lowRole(rng, false)].ID
	case n < 50:
		return "role:" + o.roles[o.internalRole(rng, true)].ID
	case n < 70:
		return "group:" + o.plainGroups[rng.IntN(len(o.plainGroups)-1)] // not g_everyone
	case n < 80:
		return "role_and_internal_subordinates:" + o.roles[o.lowRole(rng, false)].ID
	case n < 95:
		return "role_and_subordinates:" + o.midRole(rng)
	default:
		return "role_and_subordinates:" + o.roles[o.partner[rng.IntN(len(o.partner)/2)*2]].ID
	}
}

func (o *org) ruleTarget(rng *rand.Rand, criteria bool) string {
	everyone := 0
	if criteria {
		everyone = 4
	}
	return pick(rng, []string{
		"group:" + o.plainGroups[rng.IntN(len(o.plainGroups))],
		"role:" + o.roles[o.internalRole(rng, true)].ID,
		"role_and_subordinates:" + o.midRole(rng),
		"role_and_internal_subordinates:" + o.midRole(rng),
		"all_internal_users",
	}, []int{45, 20, 20, 10, everyone})
}

// logics are filter logics by number of conditions; "" means AND of all. Condition 1 is
// selective, and most logics AND it with the rest; the few that do not make broad rules.
var logics = [][]string{
	1: {"", "", "", "1"},
	2: {"", "", "", "1 AND 2", "1 AND NOT 2", "1 and not 2", "NOT 2 AND 1", "1 OR 2"},
	3: {"", "", "1 AND (2 OR 3)", "1 AND (2 OR NOT 3)", "1 and (2 or not 3)", "(1 AND 2) OR (1 AND 3)",
		"1 AND NOT (2 AND 3)", "(1 OR 2) AND NOT 3"},
}

// criteria draws 1 to 3 conditions on the object's fields: first a selective one (a value or
// two of a string field, a region prefix, a tier, the top of the revenue range, vip), a second
// selective one if the logic ORs the two, then any conditions with ops and values that fit
// the field's type, now and then a value of another type (valid: the condition is then false).
func criteria(rng *rand.Rand, object string) *jsonCriteria {
	fs := schema[object]
	n := 1 + rng.IntN(3)
	ls := logics[n]
	c := &jsonCriteria{Logic: ls[rng.IntN(len(ls))], Conditions: []jsonCondition{selectiveCondition(rng, object)}}
	if strings.Contains(c.Logic, "1 OR 2") { // either of two selective conditions
		c.Conditions = append(c.Conditions, selectiveCondition(rng, object))
	}
	for len(c.Conditions) < n {
		f := fs[rng.IntN(len(fs))]
		var cond jsonCondition
		switch f.kind {
		case kString:
			cond = stringCondition(rng, object, f.name)
		case kNumber:
			cond = numberCondition(rng, object, f.name)
		default:
			cond = jsonCondition{Field: f.name, Op: pick(rng, []string{"equals", "not_equals"}, []int{80, 20}), Value: rng.IntN(3) > 0}
		}
		if rng.IntN(25) == 0 && f.kind != kString {
			cond = jsonCondition{Field: f.name, Op: "equals", Value: "1"} // mismatched type
		}
		c.Conditions = append(c.Conditions, cond)
	}
	return c
}

// selectiveCondition draws a condition that most records fail.
func selectiveCondition(rng *rand.Rand, object string) jsonCondition {
	fs := schema[object]
	f := fs[rng.IntN(len(fs))]
	switch {
	case f.name == "region" && rng.IntN(4) == 0:
		return jsonCondition{Field: f.name, Op: "starts_with", Value: regions[rng.IntN(len(regions))][:4]}
	case f.kind == kString && rng.IntN(5) == 0:
		return jsonCondition{Field: f.name, Op: "equals", Value: stringValue(rng, object, f.name) + "," + stringValue(rng, object, f.name)}
	case f.kind == kString:
		return jsonCondition{Field: f.name, Op: "equals", Value: stringValue(rng, object, f.name)}
	case f.name == "tier":
		return jsonCondition{Field: f.name, Op: "equals", Value: int64(3 + rng.IntN(2))}
	case f.kind == kNumber:
		rr, ok := revenueRange[object]
		if !ok {
			rr = [2]float64{3, 6}
		}
		top := rr[1] - (rr[1]-rr[0])*0.15*rng.Float64() // the top 0 to 15% of the range
		return jsonCondition{Field: f.name, Op: pick(rng, []string{"gt", "ge"}, []int{1, 1}), Value: int64(math.Round(math.Pow(10, top)/1000) * 1000)}
	default:
		return jsonCondition{Field: f.name, Op: "equals", Value: true}
	}
}

func stringCondition(rng *rand.Rand, object, field string) jsonCondition {
	v := stringValue(rng, object, field)
	c := jsonCondition{Field: field, Value: v}
	switch rng.IntN(10) {
	case 0, 1, 2:
		c.Op = "equals"
	case 3:
		c.Op = "equals" // a comma-separated list of alternatives
		c.Value = v + ", " + stringValue(rng, object, field)
	case 4:
		c.Op = "not_equals"
	case 5:
		c.Op, c.Value = "starts_with", v[:min(len(v), 4)]
	case 6:
		c.Op, c.Value = "contains", v[len(v)/2:]
	case 7:
		c.Op, c.Value = "not_contains", v[:min(len(v), 3)]
	case 8:
		c.Op = "lt"
	default:
		c.Op = "ge"
	}
	return c
}

func numberCondition(rng *rand.Rand, object, field string) jsonCondition {
	c := jsonCondition{Field: field, Op: pick(rng, []string{"gt", "ge", "lt", "le", "equals", "not_equals"}, []int{30, 20, 20, 10, 15, 5})}
	if field == "tier" {
		c.Value = int64(1 + rng.IntN(4))
	} else {
		c.Value = revenue(rng, object)
	}
	return c
}
