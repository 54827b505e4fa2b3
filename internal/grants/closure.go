package grants

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
	roleUsers   map[string][]*model.User // role id -> users (active or not)
	roleKids    map[string][]string
	terrKids    map[string][]string
	rules       map[string][]*model.Rule // object -> rules
	ownerRules  map[string]map[string][]*model.Rule
	hasCriteria map[string]bool
	targets     map[*model.Rule]string // each rule's target grantee key
}

// NewOrg derives lookups from a validated index. It precomputes, for every
// object, which owner-based rules apply to each owner, so matching a record
// is one map lookup.
func NewOrg(ix *model.Index) *Org {
	o := &Org{ix: ix, roleUsers: map[string][]*model.User{}, roleKids: map[string][]string{},
		terrKids: map[string][]string{}, rules: map[string][]*model.Rule{},
		ownerRules: map[string]map[string][]*model.Rule{}, hasCriteria: map[string]bool{}, targets: map[*model.Rule]string{}}
	for i := range ix.Config.Users {
		u := &ix.Config.Users[i]
		o.roleUsers[u.Role] = append(o.roleUsers[u.Role], u)
	}
	for _, r := range ix.Config.Roles {
		if r.Parent != "" {
			o.roleKids[r.Parent] = append(o.roleKids[r.Parent], r.ID)
		}
	}
	for _, t := range ix.Config.Territories {
		if t.Parent != "" {
			o.terrKids[t.Parent] = append(o.terrKids[t.Parent], t.ID)
		}
	}
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

// Index returns the validated configuration.
func (o *Org) Index() *model.Index { return o.ix }

// HasCriteria reports whether object has criteria rules, so that its
// records' fields must be read.
func (o *Org) HasCriteria(object string) bool { return o.hasCriteria[object] }

// rolesBelow returns role and its descendants.
func (o *Org) rolesBelow(role string) []string {
	out := []string{role}
	for i := 0; i < len(out); i++ {
		out = append(out, o.roleKids[out[i]]...)
	}
	return out
}

// ancestors returns the strict ancestors of role.
func (o *Org) ancestors(role string) []string {
	var out []string
	for r := o.ix.Roles[role]; r != nil && r.Parent != ""; r = o.ix.Roles[r.Parent] {
		out = append(out, r.Parent)
	}
	return out
}

func (o *Org) addRoleUsers(set map[string]bool, roles []string, internalOnly, inactive bool) {
	for _, r := range roles {
		for _, u := range o.roleUsers[r] {
			if (inactive || u.Active) && (!internalOnly || !u.External) {
				set[u.ID] = true
			}
		}
	}
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
	switch g.Kind {
	case model.GUser:
		if u := o.ix.Users[g.ID]; u != nil && (inactive || u.Active) {
			set[u.ID] = true
		}
	case model.GRole:
		o.addRoleUsers(set, []string{g.ID}, false, inactive)
	case model.GRoleAndSubordinates:
		o.addRoleUsers(set, o.rolesBelow(g.ID), false, inactive)
	case model.GRoleAndInternalSubordinates:
		o.addRoleUsers(set, o.rolesBelow(g.ID), true, inactive)
	case model.GAllInternalUsers:
		for _, u := range o.ix.Config.Users {
			if (inactive || u.Active) && !u.External {
				set[u.ID] = true
			}
		}
	case model.GGroup:
		if seen[g.ID] {
			return
		}
		seen[g.ID] = true
		for _, m := range o.ix.Groups[g.ID].Members {
			o.addMembers(set, m, inactive, seen)
		}
	case model.GTerritory:
		for t := o.ix.Territories[g.ID]; t != nil; t = o.ix.Territories[t.Parent] {
			for _, id := range t.Users {
				if u := o.ix.Users[id]; u.Active || inactive {
					set[id] = true
				}
			}
		}
	}
}

// bosses returns bosses(g): active users above g in the role hierarchy.
func (o *Org) bosses(g model.Grantee) map[string]bool {
	set := map[string]bool{}
	switch g.Kind {
	case model.GUser:
		if u := o.ix.Users[g.ID]; u != nil && u.Role != "" {
			o.addRoleUsers(set, o.ancestors(u.Role), false, false)
		}
	case model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
		o.addRoleUsers(set, o.ancestors(g.ID), false, false)
	case model.GGroup:
		if !o.ix.Groups[g.ID].IncludeBosses {
			break
		}
		for _, m := range o.flatten(g.ID) {
			for u := range o.bosses(m) {
				set[u] = true
			}
		}
	}
	return set
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
