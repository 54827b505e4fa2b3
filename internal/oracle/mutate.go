package oracle

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/recalc-dev/recalc/internal/model"
)

// mutate makes one random change to a section of g.m that keeps it valid.
func (g *gen) mutate(section string) {
	m := g.m
	switch section {
	case "objects":
		g.mutateObject(&m.Objects[g.intn(len(m.Objects))])
	case "roles":
		g.mutateRole()
	case "users":
		u := &m.Users[g.intn(len(m.Users))]
		switch g.intn(4) {
		case 0:
			u.Active = !u.Active
		case 1:
			u.Role = g.randomRole()
		case 2:
			u.External = !u.External
		default:
			g.addUser()
		}
	case "groups":
		g.mutateGroup()
	case "territories":
		g.mutateTerritory()
	case "records":
		g.mutateRecords()
	case "rules":
		mutateList(g, &m.Rules, 0.35, 0.3, g.addRule, func(r *model.Rule) { *r = g.rule(r.ID, r.Object) })
	case "shares":
		mutateList(g, &m.Shares, 0.4, 0.4, g.addShare, func(s *model.Share) { s.Access = g.access() })
	case "teams":
		mutateList(g, &m.Teams, 0.4, 0.4, g.addTeam, func(t *model.Team) {
			t.Access = g.access()
			if g.recordObject(t.Record) == model.Account {
				t.Child = g.childAccess()
			}
		})
	}
}

// mutateList adds an entry to list with add (always when it is empty, else
// with chance pAdd), or deletes a random one (with chance pDelete), or
// changes a random one with change.
func mutateList[T any](g *gen, list *[]T, pAdd, pDelete float64, add func(), change func(*T)) {
	switch {
	case len(*list) == 0 || g.chance(pAdd):
		add()
	case g.chance(pDelete):
		i := g.intn(len(*list))
		*list = slices.Delete(*list, i, i+1)
	default:
		change(&(*list)[g.intn(len(*list))])
	}
}

// mutateObject changes an object's OWDs or its hierarchy setting. An object
// becomes controlled by parent only when no rule, share or team is on it.
func (g *gen) mutateObject(o *model.Object) {
	if !model.IsStandard(o.Name) && g.chance(0.25) {
		o.Hierarchy = !o.Hierarchy
		return
	}
	g.setOWD(o, o.Parent != "" && g.chance(0.4) && !g.hasSharing(o.Name))
}

// hasSharing reports whether a rule, share or team entry is on the object.
func (g *gen) hasSharing(object string) bool {
	for _, r := range g.m.Rules {
		if r.Object == object {
			return true
		}
	}
	for _, s := range g.m.Shares {
		if s.Object == object {
			return true
		}
	}
	for _, t := range g.m.Teams {
		if g.recordObject(t.Record) == object {
			return true
		}
	}
	return false
}

func (g *gen) recordObject(id string) string {
	for _, r := range g.m.Records {
		if r.ID == id {
			return r.Object
		}
	}
	return ""
}

// mutateRole moves a role under one outside its subtree, changes its child
// access, or adds a role.
func (g *gen) mutateRole() {
	roles := g.m.Roles
	r := &roles[g.intn(len(roles))]
	switch g.intn(3) {
	case 0:
		var cands []string
		for _, c := range roles {
			if !g.below(c.ID, r.ID) {
				cands = append(cands, c.ID)
			}
		}
		r.Parent = ""
		if len(cands) > 0 && g.chance(0.8) {
			r.Parent = oneOf(g, cands)
		}
	case 1:
		r.Child = g.childAccess()
	default:
		g.addRole()
	}
}

// below reports whether role r is top or one of its descendants.
func (g *gen) below(r, top string) bool {
	parent := map[string]string{}
	for _, x := range g.m.Roles {
		parent[x.ID] = x.Parent
	}
	for ; r != ""; r = parent[r] {
		if r == top {
			return true
		}
	}
	return false
}

// mutateGroup adds or removes a member, toggles include_bosses or adds a
// group. A nested group is added only when it cannot reach the group back.
func (g *gen) mutateGroup() {
	groups := g.m.Groups
	grp := &groups[g.intn(len(groups))]
	switch g.intn(4) {
	case 0:
		m := g.grantee(true)
		if m.Kind == model.GGroup && g.reaches(m.ID, grp.ID) {
			return
		}
		grp.Members = append(grp.Members, m)
	case 1:
		if len(grp.Members) > 0 {
			i := g.intn(len(grp.Members))
			grp.Members = slices.Delete(grp.Members, i, i+1)
		}
	case 2:
		grp.IncludeBosses = !grp.IncludeBosses
	default:
		g.addGroup(g.chance(0.3))
	}
}

// reaches reports whether group to is from or nested in it, at any depth.
func (g *gen) reaches(from, to string) bool {
	if from == to {
		return true
	}
	for _, grp := range g.m.Groups {
		if grp.ID != from {
			continue
		}
		for _, m := range grp.Members {
			if m.Kind == model.GGroup && g.reaches(m.ID, to) {
				return true
			}
		}
	}
	return false
}

// mutateTerritory changes a territory's users, levels or parent, or adds one.
func (g *gen) mutateTerritory() {
	if len(g.m.Territories) == 0 {
		g.addTerritory()
		return
	}
	t := &g.m.Territories[g.intn(len(g.m.Territories))]
	switch g.intn(4) {
	case 0:
		t.Users = g.someUsers()
	case 1:
		t.AccountAccess, t.Child = g.access(), g.childAccess()
	case 2:
		parent := map[string]string{}
		for _, x := range g.m.Territories {
			parent[x.ID] = x.Parent
		}
		var cands []string
	next:
		for _, c := range g.m.Territories {
			for p := c.ID; p != ""; p = parent[p] {
				if p == t.ID {
					continue next
				}
			}
			cands = append(cands, c.ID)
		}
		t.Parent = ""
		if len(cands) > 0 && g.chance(0.7) {
			t.Parent = oneOf(g, cands)
		}
	default:
		g.addTerritory()
	}
}

// mutateRecords changes owners, fields, parents or territories, inserts
// records, or deletes one that nothing refers to.
func (g *gen) mutateRecords() {
	recs := g.m.Records
	if len(recs) == 0 {
		g.addRecord()
		return
	}
	r := &recs[g.intn(len(recs))]
	switch g.intn(6) {
	case 0, 1:
		r.Owner = g.owner()
	case 2:
		name := oneOf(g, fieldNames)
		if r.Fields == nil {
			r.Fields = model.Fields{}
		}
		if g.chance(0.2) {
			delete(r.Fields, name)
		} else {
			r.Fields[name] = g.fieldValue(name, true)
		}
	case 3:
		g.setParent(r)
		if r.Object == model.Account {
			r.Territories = g.someTerritories()
		}
	case 4:
		for i, n := 0, 1+g.intn(3); i < n; i++ {
			g.addRecord()
		}
	default:
		if !g.referenced(r.ID) {
			i := slices.IndexFunc(recs, func(x model.Record) bool { return x.ID == r.ID })
			g.m.Records = slices.Delete(recs, i, i+1)
		}
	}
}

// referenced reports whether a record, share or team entry names record id.
func (g *gen) referenced(id string) bool {
	return slices.ContainsFunc(g.m.Records, func(r model.Record) bool { return r.Parent == id }) ||
		slices.ContainsFunc(g.m.Shares, func(s model.Share) bool { return s.Record == id }) ||
		slices.ContainsFunc(g.m.Teams, func(t model.Team) bool { return t.Record == id })
}

// deepCopy copies m so that changing the copy, nested slices and field maps
// included, leaves m alone. Criteria are never changed in place, so they are
// shared.
func deepCopy(m *model.Model) *model.Model {
	c := &model.Model{Config: model.Config{
		Objects:     slices.Clone(m.Objects),
		Roles:       slices.Clone(m.Roles),
		Users:       slices.Clone(m.Users),
		Groups:      slices.Clone(m.Groups),
		Territories: slices.Clone(m.Territories),
		Rules:       slices.Clone(m.Rules),
	},
		Records: slices.Clone(m.Records),
		Shares:  slices.Clone(m.Shares),
		Teams:   slices.Clone(m.Teams),
	}
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

// maxSuffix returns the largest number that ends an id in m, so that ids
// generated after it are new.
func maxSuffix(m *model.Model) int {
	best := 0
	see := func(id string) {
		digits := strings.TrimLeft(id, "abcdefghijklmnopqrstuvwxyz_")
		if n, err := strconv.Atoi(digits); err == nil && n > best {
			best = n
		}
	}
	seeEach(m.Roles, func(r model.Role) string { return r.ID }, see)
	seeEach(m.Users, func(u model.User) string { return u.ID }, see)
	seeEach(m.Groups, func(g model.Group) string { return g.ID }, see)
	seeEach(m.Territories, func(t model.Territory) string { return t.ID }, see)
	seeEach(m.Rules, func(r model.Rule) string { return r.ID }, see)
	seeEach(m.Records, func(r model.Record) string { return r.ID }, see)
	return best
}

// seeEach calls see with the id of each item.
func seeEach[T any](items []T, id func(T) string, see func(string)) {
	for _, it := range items {
		see(id(it))
	}
}
