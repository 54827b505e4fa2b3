package sharing

import (
	"sort"

	"github.com/recalc-dev/recalc/internal/model"
)

// Member is one closure entry: a user reached by a grantee.
type Member struct {
	User string
	// Boss is true when the user is reached only through the role hierarchy
	// (bosses(g) minus members(g)); such entries count only on objects that
	// grant access using hierarchies.
	Boss bool
}

// Org is a validated configuration with the derived lookups the computation needs.
type Org struct {
	ix          *model.Index
	rules       map[string][]*model.Rule // object -> rules
	ownerRules  map[string]map[string][]*model.Rule
	hasCriteria map[string]bool
	targets     map[*model.Rule]string // each rule's target grantee key

	// The closure's lookups, computed once so that each grantee's closure
	// costs time linear in its size, however deep the hierarchies.
	roles  roleTree
	terrs  terrTree
	groups groupInfo
	// internal[f] lists the internal users passing filter f (0: active
	// ones, 1: all).
	internal [2][]*model.User
}

// filter says which users of a role-based set count: inactive ones too
// (bit 0), internal ones only (bit 1).
func filter(inactive, internalOnly bool) int {
	f := 0
	if inactive {
		f |= 1
	}
	if internalOnly {
		f |= 2
	}
	return f
}

// passes reports whether u passes filter f.
func passes(u *model.User, f int) bool { return (f&1 != 0 || u.Active) && (f&2 == 0 || !u.External) }

// roleTree is the role hierarchy in depth-first pre-order, where each
// role's subtree is a range of positions, with each role's users grouped
// by position.
type roleTree struct {
	pos    map[string]int32 // role id -> position
	order  []string         // role ids by position
	end    []int32          // end[p]: one past the last position of p's subtree
	parent []int32          // position of the parent role, -1 at a root
	// users[f] are the users passing filter f, by position of their role;
	// the role at position p has users[f][cum[f][p]:cum[f][p+1]].
	users [4][]*model.User
	cum   [4][]int32
	// bossUp[p] is the nearest strict ancestor of p with an active user
	// (-1: none); above[p] counts the active users of p's strict ancestors.
	bossUp []int32
	above  []int64
}

// terrTree holds, for each territory (by position in the configuration),
// its parent, and for each kind of user (0: active ones, 1: any) the
// nearest territory at or above it with one and how many are assigned at
// or above it.
type terrTree struct {
	pos    map[string]int32
	parent []int32
	up     [2][]int32
	count  [2][]int64
}

// groupInfo says, for each group, whether any user is reached through it:
// reach[f] for members with filter f (inactive users counted or not), boss
// for the bosses of its non-group entries. Walks skip nested groups that
// reach no one, however many there are.
type groupInfo struct {
	pos   map[string]int32
	topo  []int32 // group positions, nested groups before the groups holding them
	reach [2][]bool
	boss  []bool
}

// NewOrg derives lookups from a validated index. It precomputes, for every
// object, which owner-based rules apply to each owner, so matching a record
// is one map lookup, and the hierarchies' lookups the closure walks.
func NewOrg(ix *model.Index) *Org {
	o := &Org{ix: ix, rules: map[string][]*model.Rule{},
		ownerRules: map[string]map[string][]*model.Rule{}, hasCriteria: map[string]bool{}, targets: map[*model.Rule]string{}}
	o.roles = newRoleTree(ix)
	o.terrs = newTerrTree(ix)
	for i := range ix.Config.Users {
		u := &ix.Config.Users[i]
		for f := range 2 {
			if !u.External && passes(u, f) {
				o.internal[f] = append(o.internal[f], u)
			}
		}
	}
	o.groups = o.newGroupInfo()
	for i := range ix.Config.Rules {
		r := &ix.Config.Rules[i]
		o.rules[r.Object] = append(o.rules[r.Object], r)
		o.targets[r] = r.Target.String()
		if r.Type == model.CriteriaRule {
			o.hasCriteria[r.Object] = true
			continue
		}
		byOwner := o.ownerRules[r.Object]
		if byOwner == nil {
			byOwner = map[string][]*model.Rule{}
			o.ownerRules[r.Object] = byOwner
		}
		for u := range o.members(r.Source, true) {
			byOwner[u] = append(byOwner[u], r)
		}
	}
	return o
}

func newRoleTree(ix *model.Index) roleTree {
	n := len(ix.Config.Roles)
	t := roleTree{pos: make(map[string]int32, n), order: make([]string, 0, n), end: make([]int32, n),
		parent: make([]int32, n), bossUp: make([]int32, n), above: make([]int64, n)}
	kids := map[string][]string{}
	var roots []string
	for _, r := range ix.Config.Roles {
		if r.Parent == "" {
			roots = append(roots, r.ID)
		} else {
			kids[r.Parent] = append(kids[r.Parent], r.ID)
		}
	}
	// Depth-first, without recursion: hierarchies may be deep.
	type frame struct {
		id   string
		next int
	}
	var stack []frame
	for _, root := range roots {
		stack = append(stack[:0], frame{id: root})
		t.pos[root] = int32(len(t.order))
		t.order = append(t.order, root)
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if ks := kids[f.id]; f.next < len(ks) {
				k := ks[f.next]
				f.next++
				t.pos[k] = int32(len(t.order))
				t.order = append(t.order, k)
				stack = append(stack, frame{id: k})
				continue
			}
			t.end[t.pos[f.id]] = int32(len(t.order))
			stack = stack[:len(stack)-1]
		}
	}
	byRole := map[string][]*model.User{}
	for i := range ix.Config.Users {
		u := &ix.Config.Users[i]
		if u.Role != "" {
			byRole[u.Role] = append(byRole[u.Role], u)
		}
	}
	for f := range t.cum {
		t.cum[f] = make([]int32, n+1)
	}
	for p, id := range t.order {
		for f := range t.users {
			t.cum[f][p] = int32(len(t.users[f]))
			for _, u := range byRole[id] {
				if passes(u, f) {
					t.users[f] = append(t.users[f], u)
				}
			}
		}
		t.parent[p], t.bossUp[p] = -1, -1
		if parent := ix.Roles[id].Parent; parent != "" {
			q := t.pos[parent] // before p in pre-order, so done
			t.parent[p] = q
			active := t.own(q, 0)
			t.above[p] = t.above[q] + int64(len(active))
			if len(active) > 0 {
				t.bossUp[p] = q
			} else {
				t.bossUp[p] = t.bossUp[q]
			}
		}
	}
	for f := range t.users {
		t.cum[f][n] = int32(len(t.users[f]))
	}
	return t
}

// roleUsers returns the users of role id passing filter f, those of its
// subtree when below is true (none for an unknown role).
func (t *roleTree) roleUsers(id string, f int, below bool) []*model.User {
	p, ok := t.pos[id]
	switch {
	case !ok:
		return nil
	case below:
		return t.subtree(p, f)
	}
	return t.own(p, f)
}

// own returns the users of the role at position p passing filter f.
func (t *roleTree) own(p int32, f int) []*model.User { return t.users[f][t.cum[f][p]:t.cum[f][p+1]] }

// subtree returns the users of the roles at and below position p passing filter f.
func (t *roleTree) subtree(p int32, f int) []*model.User {
	return t.users[f][t.cum[f][p]:t.cum[f][t.end[p]]]
}

// addBosses adds the active users above the role at position p (that is,
// in its strict ancestors), stopping at roles in seen (nil: none) whose
// ancestors are already in.
func (t *roleTree) addBosses(set map[string]bool, p int32, seen map[int32]bool) {
	for q := t.bossUp[p]; q >= 0; q = t.bossUp[q] {
		if seen != nil {
			if seen[q] {
				return
			}
			seen[q] = true
		}
		for _, u := range t.own(q, 0) {
			set[u.ID] = true
		}
	}
}

func newTerrTree(ix *model.Index) terrTree {
	n := len(ix.Config.Territories)
	t := terrTree{pos: make(map[string]int32, n), parent: make([]int32, n)}
	for i, tr := range ix.Config.Territories {
		t.pos[tr.ID] = int32(i)
	}
	for i, tr := range ix.Config.Territories {
		t.parent[i] = -1
		if tr.Parent != "" {
			t.parent[i] = t.pos[tr.Parent]
		}
	}
	for k := range t.up {
		up, count := make([]int32, n), make([]int64, n)
		for i := range up {
			up[i] = -2 // unknown
		}
		var path []int32
		for i := range n {
			// Walk up to a known territory, then fill in the path.
			path = path[:0]
			q := int32(i)
			for q >= 0 && up[q] == -2 {
				path = append(path, q)
				q = t.parent[q]
			}
			above, c := int32(-1), int64(0)
			if q >= 0 {
				above, c = up[q], count[q]
			}
			for j := len(path) - 1; j >= 0; j-- {
				p := path[j]
				for _, id := range ix.Config.Territories[p].Users {
					if k == 1 || ix.Users[id].Active {
						above = p
						c++
					}
				}
				up[p], count[p] = above, c
			}
		}
		t.up[k], t.count[k] = up, count
	}
	return t
}

func (o *Org) newGroupInfo() groupInfo {
	gs := o.ix.Config.Groups
	n := len(gs)
	g := groupInfo{pos: make(map[string]int32, n), boss: make([]bool, n)}
	for i := range g.reach {
		g.reach[i] = make([]bool, n)
	}
	for i, gr := range gs {
		g.pos[gr.ID] = int32(i)
	}
	// Post-order without recursion: validation rules out cycles.
	done := make([]bool, n)
	type frame struct {
		p    int32
		next int
	}
	var stack []frame
	for i := range gs {
		if done[i] {
			continue
		}
		done[i] = true
		stack = append(stack[:0], frame{p: int32(i)})
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if ms := gs[f.p].Members; f.next < len(ms) {
				m := ms[f.next]
				f.next++
				if q := g.pos[m.ID]; m.Kind == model.GGroup && !done[q] {
					done[q] = true
					stack = append(stack, frame{p: q})
				}
				continue
			}
			g.topo = append(g.topo, f.p)
			stack = stack[:len(stack)-1]
		}
	}
	for _, p := range g.topo {
		for _, m := range gs[p].Members {
			if m.Kind == model.GGroup {
				q := g.pos[m.ID]
				g.reach[0][p] = g.reach[0][p] || g.reach[0][q]
				g.reach[1][p] = g.reach[1][p] || g.reach[1][q]
				g.boss[p] = g.boss[p] || g.boss[q]
				continue
			}
			g.reach[0][p] = g.reach[0][p] || o.leafCount(m, false) > 0
			g.reach[1][p] = g.reach[1][p] || o.leafCount(m, true) > 0
			g.boss[p] = g.boss[p] || o.leafBosses(m) > 0
		}
	}
	return g
}

// leafCount returns |members(g)| (members_all(g) when inactive is true) for
// a grantee that is not a group, territories included only as an upper
// bound (a user of several of a territory's levels counts at each).
func (o *Org) leafCount(g model.Grantee, inactive bool) int64 {
	t := &o.roles
	switch g.Kind {
	case model.GUser:
		if u := o.ix.Users[g.ID]; u != nil && (inactive || u.Active) {
			return 1
		}
	case model.GRole:
		return int64(len(t.roleUsers(g.ID, filter(inactive, false), false)))
	case model.GRoleAndSubordinates:
		return int64(len(t.roleUsers(g.ID, filter(inactive, false), true)))
	case model.GRoleAndInternalSubordinates:
		return int64(len(t.roleUsers(g.ID, filter(inactive, true), true)))
	case model.GAllInternalUsers:
		return int64(len(o.internal[filter(inactive, false)]))
	case model.GTerritory:
		if p, ok := o.terrs.pos[g.ID]; ok {
			return o.terrs.count[filter(inactive, false)][p]
		}
	}
	return 0
}

// leafBosses returns |bosses(g)| for a grantee that is not a group.
func (o *Org) leafBosses(g model.Grantee) int64 {
	if p, ok := o.bossRole(g); ok {
		return o.roles.above[p]
	}
	return 0
}

// bossRole returns the position of the role whose ancestors are bosses(g),
// for a user with a role or a role-based grantee.
func (o *Org) bossRole(g model.Grantee) (int32, bool) {
	switch g.Kind {
	case model.GUser:
		if u := o.ix.Users[g.ID]; u != nil && u.Role != "" {
			p, ok := o.roles.pos[u.Role]
			return p, ok
		}
	case model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
		p, ok := o.roles.pos[g.ID]
		return p, ok
	}
	return 0, false
}

// eachTerritoryUser calls fn for each user assigned to territory id or a
// territory above it (active ones only unless inactive), once per
// assignment.
func (o *Org) eachTerritoryUser(id string, inactive bool, fn func(string)) {
	t := &o.terrs
	k := 0
	if inactive {
		k = 1
	}
	p, ok := t.pos[id]
	if !ok {
		return
	}
	for q := t.up[k][p]; q >= 0; {
		for _, uid := range o.ix.Config.Territories[q].Users {
			if inactive || o.ix.Users[uid].Active {
				fn(uid)
			}
		}
		if q = t.parent[q]; q >= 0 {
			q = t.up[k][q]
		}
	}
}

// Index returns the validated configuration.
func (o *Org) Index() *model.Index { return o.ix }

// HasCriteria reports whether object has criteria rules, so that its
// records' fields must be read.
func (o *Org) HasCriteria(object string) bool { return o.hasCriteria[object] }

// rolesBelow returns role and its descendants. The slice is shared: do not
// modify it.
func (o *Org) rolesBelow(role string) []string {
	p, ok := o.roles.pos[role]
	if !ok {
		return []string{role}
	}
	return o.roles.order[p:o.roles.end[p]]
}

// MembersAll returns members_all(g): g's users, inactive ones included. It
// decides which owners an owner-based rule with source g applies to.
func (o *Org) MembersAll(g model.Grantee) map[string]bool { return o.members(g, true) }

// members returns members(g), or members_all(g) when inactive is true.
func (o *Org) members(g model.Grantee, inactive bool) map[string]bool {
	set := map[string]bool{}
	o.addMembers(set, g, inactive, map[string]bool{})
	return set
}

func (o *Org) addMembers(set map[string]bool, g model.Grantee, inactive bool, seen map[string]bool) {
	t := &o.roles
	var users []*model.User
	switch g.Kind {
	case model.GUser:
		if u := o.ix.Users[g.ID]; u != nil && (inactive || u.Active) {
			set[u.ID] = true
		}
	case model.GRole:
		users = t.roleUsers(g.ID, filter(inactive, false), false)
	case model.GRoleAndSubordinates:
		users = t.roleUsers(g.ID, filter(inactive, false), true)
	case model.GRoleAndInternalSubordinates:
		users = t.roleUsers(g.ID, filter(inactive, true), true)
	case model.GAllInternalUsers:
		users = o.internal[filter(inactive, false)]
	case model.GGroup:
		p, ok := o.groups.pos[g.ID]
		if seen[g.ID] || !ok || !o.groups.reach[filter(inactive, false)][p] {
			return
		}
		seen[g.ID] = true
		for _, m := range o.ix.Groups[g.ID].Members {
			o.addMembers(set, m, inactive, seen)
		}
	case model.GTerritory:
		o.eachTerritoryUser(g.ID, inactive, func(id string) { set[id] = true })
	}
	for _, u := range users {
		set[u.ID] = true
	}
}

// bosses returns bosses(g): active users above g in the role hierarchy.
func (o *Org) bosses(g model.Grantee) map[string]bool {
	set := map[string]bool{}
	if p, ok := o.bossRole(g); ok {
		o.roles.addBosses(set, p, nil)
	} else if g.Kind == model.GGroup && o.ix.Groups[g.ID] != nil && o.ix.Groups[g.ID].IncludeBosses {
		// Each role above the group's entries once: walks up stop where
		// an earlier one went.
		o.addGroupBosses(set, g.ID, map[string]bool{}, map[int32]bool{})
	}
	return set
}

// addGroupBosses adds the bosses of the non-group entries reached through
// group, skipping nested groups that lead to none.
func (o *Org) addGroupBosses(set map[string]bool, group string, seen map[string]bool, roles map[int32]bool) {
	if p, ok := o.groups.pos[group]; seen[group] || !ok || !o.groups.boss[p] {
		return
	}
	seen[group] = true
	for _, m := range o.ix.Groups[group].Members {
		if m.Kind == model.GGroup {
			o.addGroupBosses(set, m.ID, seen, roles)
		} else if p, ok := o.bossRole(m); ok {
			o.roles.addBosses(set, p, roles)
		}
	}
}

// ClosureEstimate bounds the number of closure entries (acl_member rows)
// the org materializes, without computing them, in time linear in the
// configuration's size. It is exact for users, roles and all internal
// users; for groups it sums their entries' counts, capped at the number of
// active users, and for territories it counts assignments.
func (o *Org) ClosureEstimate() int64 {
	t := &o.roles
	active := int64(0)
	for _, u := range o.ix.Config.Users {
		if u.Active {
			active++
		}
	}
	total := int64(0)
	for _, u := range o.ix.Config.Users {
		g := model.Grantee{Kind: model.GUser, ID: u.ID}
		total += o.leafCount(g, false) + o.leafBosses(g)
	}
	for _, r := range o.ix.Config.Roles {
		for _, k := range []model.GranteeKind{model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates} {
			g := model.Grantee{Kind: k, ID: r.ID}
			total += o.leafCount(g, false) + t.above[t.pos[r.ID]]
		}
	}
	total += int64(len(o.internal[0]))
	for _, tr := range o.ix.Config.Territories {
		total += min(active, o.leafCount(model.Grantee{Kind: model.GTerritory, ID: tr.ID}, false))
	}
	gs := o.ix.Config.Groups
	mem, boss := make([]int64, len(gs)), make([]int64, len(gs))
	for _, p := range o.groups.topo {
		for _, m := range gs[p].Members {
			if m.Kind == model.GGroup {
				q := o.groups.pos[m.ID]
				mem[p], boss[p] = min(active, mem[p]+mem[q]), min(active, boss[p]+boss[q])
				continue
			}
			mem[p], boss[p] = min(active, mem[p]+o.leafCount(m, false)), min(active, boss[p]+o.leafBosses(m))
		}
		n := mem[p]
		if gs[p].IncludeBosses {
			n += boss[p]
		}
		total += min(active, n)
	}
	return total
}

// flatten returns the non-group entries reached through group's nested groups.
func (o *Org) flatten(group string) []model.Grantee {
	var out []model.Grantee
	seen := map[string]bool{}
	var walk func(string)
	walk = func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		for _, m := range o.ix.Groups[id].Members {
			if m.Kind == model.GGroup {
				walk(m.ID)
			} else {
				out = append(out, m)
			}
		}
	}
	walk(group)
	return out
}

// Grantees lists every grantee a share row can name: each user, group,
// territory and role-based set, and all internal users.
func (o *Org) Grantees() []model.Grantee {
	var out []model.Grantee
	for _, u := range o.ix.Config.Users {
		out = append(out, model.Grantee{Kind: model.GUser, ID: u.ID})
	}
	for _, g := range o.ix.Config.Groups {
		out = append(out, model.Grantee{Kind: model.GGroup, ID: g.ID})
	}
	for _, t := range o.ix.Config.Territories {
		out = append(out, model.Grantee{Kind: model.GTerritory, ID: t.ID})
	}
	for _, r := range o.ix.Config.Roles {
		for _, k := range []model.GranteeKind{model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates} {
			out = append(out, model.Grantee{Kind: k, ID: r.ID})
		}
	}
	return append(out, model.Grantee{Kind: model.GAllInternalUsers})
}

// Closure returns the users grantee g reaches, sorted by user id.
func (o *Org) Closure(g model.Grantee) []Member {
	mem := o.members(g, false)
	out := make([]Member, 0, len(mem))
	for u := range mem {
		out = append(out, Member{User: u})
	}
	for u := range o.bosses(g) {
		if !mem[u] {
			out = append(out, Member{User: u, Boss: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}
