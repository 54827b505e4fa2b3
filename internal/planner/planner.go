// Package planner diffs the model the share tables were last computed from
// against the stored one and says, for every change, what it means and which
// records must be recomputed, and it packs record families into chunks
// (Chunker). It is pure logic: it names record sets with selectors, which
// internal/engine resolves to record families with internal/sharetable's
// lookups.
//
// The least affected set of each kind of change:
//   - group membership, role moves, user activation, territory membership and
//     a group's hierarchy switch: the closure only, no share row;
//   - an OWD change: nothing but the OWD table, since OWDs apply at read time,
//     unless the object switches to or from controlled_by_parent;
//   - a rule added, removed or changed: the records the old or the new rule
//     applies to;
//   - a change in who an unchanged owner-based rule's source holds: the
//     records of the owners who joined or left it;
//   - a role's child access: accounts owned by the role's users;
//   - a user's role: accounts the user owns;
//   - a territory's access levels: accounts assigned to it;
//   - an object's hierarchy switch, parent or controlled_by_parent switch:
//     that object's records (the whole object, said so in the plan);
//   - an object added: its records (an attached table may have written some
//     while the object was out of the model);
//   - record, share and team changes: those records.
//
// Every selected record brings its whole family (root record and all its
// descendants), because implicit parent and child access and
// controlled-by-parent chains stay within a family.
package planner

import (
	"fmt"
	"reflect"
	"slices"
	"sort"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// SelectorKind says how a Selector picks records.
type SelectorKind string

// Selector kinds.
const (
	ByRecords     SelectorKind = "records"     // records with the given ids
	ByObject      SelectorKind = "object"      // every record of Object
	ByOwners      SelectorKind = "owners"      // records of Object owned by the given ids
	ByCriteria    SelectorKind = "criteria"    // records of Object that Old's or New's criteria match
	ByTerritories SelectorKind = "territories" // accounts assigned to the given territories
)

// Selector names a set of records whose families must be recomputed.
type Selector struct {
	Kind   SelectorKind `json:"kind"`
	Object string       `json:"object,omitempty"`
	IDs    []string     `json:"ids,omitempty"`
	// Criteria, for ByCriteria.
	Criteria *model.Criteria `json:"-"`
}

// Change is one difference between the applied and the stored model.
type Change struct {
	What      string      `json:"what"`
	Effect    string      `json:"effect"`
	Selectors []*Selector `json:"selectors,omitempty"`
}

// Plan is the planner's verdict.
type Plan struct {
	// Full is set when everything must be recomputed; FullReason says why.
	Full       bool     `json:"full"`
	FullReason string   `json:"full_reason,omitempty"`
	Closure    bool     `json:"closure"` // the closure or the user table changes
	Objects    bool     `json:"objects"` // the OWD table changes
	Changes    []Change `json:"changes"`
}

// ClosureSections are the configuration sections the closure and the user
// table are computed from: a change to one waits for the closure side.
func ClosureSections() []string { return []string{"roles", "users", "groups", "territories"} }

// Empty reports whether nothing needs recalculating.
func (p *Plan) Empty() bool { return !p.Full && !p.Closure && !p.Objects && len(p.Changes) == 0 }

func (p *Plan) add(what, effect string, sels ...*Selector) {
	p.Changes = append(p.Changes, Change{What: what, Effect: effect, Selectors: sels})
}

// addedOrRemoved notes kind id added or removed, which changes the closure
// only, and reports whether it was either.
func (p *Plan) addedOrRemoved(kind, id string, added, removed bool) bool {
	switch {
	case added:
		p.add(kind+" "+id+" added", closureOnly)
	case removed:
		p.add(kind+" "+id+" removed", closureOnly)
	default:
		return false
	}
	p.Closure = true
	return true
}

const (
	// ownerChecked: a record is invalid while its owner is no user or queue.
	ownerChecked = "records they own (invalid while their owner does not exist)"
	closureOnly  = "closure only, no share row"
	readTime     = "applied at read time, no share row"
)

// NothingYet is the full-plan reason when no recalculation has run yet.
const NothingYet = "no recalculation has run yet"

// Diff plans the recalculation from old (what the share tables were last
// computed from; nil when never) to cur, given the ids of records changed
// since (inserted, updated, deleted, or whose shares or team changed).
func Diff(old, cur *sharing.Org, changedRecords []string) *Plan {
	p := &Plan{}
	if old == nil {
		p.Full, p.FullReason = true, NothingYet
		return p
	}
	o, n := old.Index(), cur.Index()
	diffObjects(p, o, n)
	diffRoles(p, o, n)
	diffUsers(p, o, n)
	diffGroups(p, o, n)
	diffTerritories(p, o, n)
	diffRules(p, old, cur)
	if len(changedRecords) > 0 {
		ids := slices.Clone(changedRecords)
		sort.Strings(ids)
		ids = slices.Compact(ids)
		p.add(fmt.Sprintf("%d records inserted, updated or deleted, or their shares or team changed", len(ids)),
			"those records", &Selector{Kind: ByRecords, IDs: ids})
	}
	return p
}

func diffObjects(p *Plan, o, n *model.Index) {
	for _, name := range union(keys(o.Objects), keys(n.Objects)) {
		a, b := o.Objects[name], n.Objects[name]
		switch {
		case a == nil:
			p.Objects = true
			// An import brings its records as record changes, but an attached
			// table's rows may have been absorbed while the object was out of
			// the model (invalid then): they must be computed now.
			p.add("object "+name+" added", "every record of the object", &Selector{Kind: ByObject, Object: name})
		case b == nil:
			p.Objects = true
			p.add("object "+name+" removed", "its records leave as record changes")
		case a.CBP() != b.CBP():
			p.Objects = true
			p.add(fmt.Sprintf("object %s switched %s controlled_by_parent", name, map[bool]string{true: "to", false: "from"}[b.CBP()]),
				"every record of the object", &Selector{Kind: ByObject, Object: name})
		case a.Parent != b.Parent:
			p.Objects = true
			p.add(fmt.Sprintf("object %s parent changed from %q to %q", name, a.Parent, b.Parent),
				"every record of the object (whole-object fallback)", &Selector{Kind: ByObject, Object: name})
		case a.Hierarchy != b.Hierarchy:
			p.add(fmt.Sprintf("object %s grant access using hierarchies set to %v", name, b.Hierarchy),
				"every record of the object", &Selector{Kind: ByObject, Object: name})
		}
		if a != nil && b != nil && (a.InternalOWD != b.InternalOWD || a.ExternalOWD != b.ExternalOWD) && !a.CBP() && !b.CBP() {
			p.Objects = true
			p.add(fmt.Sprintf("object %s OWD changed from %s/%s to %s/%s", name, a.InternalOWD, a.ExternalOWD, b.InternalOWD, b.ExternalOWD), readTime)
		}
	}
}

func diffRoles(p *Plan, o, n *model.Index) {
	for _, id := range union(keys(o.Roles), keys(n.Roles)) {
		a, b := o.Roles[id], n.Roles[id]
		if !p.addedOrRemoved("role", id, a == nil, b == nil) {
			if a.Parent != b.Parent {
				p.Closure = true
				p.add(fmt.Sprintf("role %s moved from %q to %q", id, a.Parent, b.Parent), closureOnly)
			}
			if a.Child != b.Child {
				var users []string
				for _, u := range n.Config.Users {
					if u.Role == id {
						users = append(users, u.ID)
					}
				}
				p.add("role "+id+" child access changed", "children of accounts owned by the role's users", &Selector{Kind: ByOwners, Object: model.Account, IDs: users})
			}
		}
	}
}

func diffUsers(p *Plan, o, n *model.Index) {
	var moved, owners []string
	for _, id := range union(keys(o.Users), keys(n.Users)) {
		a, b := o.Users[id], n.Users[id]
		if p.addedOrRemoved("user", id, a == nil, b == nil) {
			owners = append(owners, id)
		} else {
			if a.Active != b.Active {
				p.Closure = true
				p.add(fmt.Sprintf("user %s active set to %v", id, b.Active), closureOnly)
			}
			if a.External != b.External {
				p.Closure = true
				p.add(fmt.Sprintf("user %s external set to %v", id, b.External), closureOnly)
			}
			if a.Role != b.Role {
				p.Closure = true
				moved = append(moved, id)
			}
		}
	}
	if len(moved) > 0 {
		p.add(fmt.Sprintf("%d users changed role", len(moved)), "closure, and children of accounts they own (their role's child access)",
			&Selector{Kind: ByOwners, Object: model.Account, IDs: moved})
	}
	if len(owners) > 0 { // records written by plain SQL or attached tables may name owners not defined yet
		p.add(fmt.Sprintf("%d users added or removed", len(owners)), ownerChecked, &Selector{Kind: ByOwners, IDs: owners})
	}
}

func diffGroups(p *Plan, o, n *model.Index) {
	for _, id := range union(keys(o.Groups), keys(n.Groups)) {
		a, b := o.Groups[id], n.Groups[id]
		if p.addedOrRemoved("group", id, a == nil, b == nil) {
			if (a != nil && a.Queue) || (b != nil && b.Queue) {
				p.add("queue "+id+" added or removed", ownerChecked, &Selector{Kind: ByOwners, IDs: []string{id}})
			}
			continue
		}
		switch {
		case !reflect.DeepEqual(a.Members, b.Members):
			p.Closure = true
			p.add("group "+id+" membership changed", closureOnly)
		case a.IncludeBosses != b.IncludeBosses:
			p.Closure = true
			p.add(fmt.Sprintf("group %s grant access using hierarchies set to %v", id, b.IncludeBosses), closureOnly)
		case a.Queue != b.Queue:
			p.add(fmt.Sprintf("group %s queue set to %v", id, b.Queue), "records it owns",
				&Selector{Kind: ByOwners, IDs: []string{id}})
		}
	}
}

func diffTerritories(p *Plan, o, n *model.Index) {
	var levels, added []string
	for _, id := range union(keys(o.Territories), keys(n.Territories)) {
		a, b := o.Territories[id], n.Territories[id]
		switch {
		case a == nil:
			p.Closure = true
			p.add("territory "+id+" added", closureOnly)
			added = append(added, id)
		case b == nil:
			p.Closure = true
			levels = append(levels, id)
		default:
			if a.Parent != b.Parent || !slices.Equal(a.Users, b.Users) {
				p.Closure = true
				p.add("territory "+id+" membership or parent changed", closureOnly)
			}
			if a.AccountAccess != b.AccountAccess || a.Child != b.Child {
				levels = append(levels, id)
			}
		}
	}
	if len(added) > 0 { // accounts written by plain SQL or attached tables may name territories not defined yet
		p.add(fmt.Sprintf("territories %v added", added), "accounts assigned to them (invalid until the territory exists)",
			&Selector{Kind: ByTerritories, Object: model.Account, IDs: added})
	}
	if len(levels) > 0 {
		p.add(fmt.Sprintf("territories %v removed or changed access levels", levels), "accounts assigned to them",
			&Selector{Kind: ByTerritories, Object: model.Account, IDs: levels})
	}
}

func diffRules(p *Plan, old, cur *sharing.Org) {
	o, n := rulesByID(old.Index()), rulesByID(cur.Index())
	// Who a source holds follows from the roles, users, groups and
	// territories alone: when none changed, no source did.
	oc, nc := old.Index().Config, cur.Index().Config
	sameMembers := reflect.DeepEqual(oc.Roles, nc.Roles) && reflect.DeepEqual(oc.Users, nc.Users) &&
		reflect.DeepEqual(oc.Groups, nc.Groups) && reflect.DeepEqual(oc.Territories, nc.Territories)
	changedOwners := map[model.Grantee][]string{} // by source, computed once
	for _, id := range union(keys(o), keys(n)) {
		a, b := o[id], n[id]
		switch {
		case a == nil:
			p.add(fmt.Sprintf("rule %s on %s added", id, b.Object), "records the rule applies to", ruleRecords(b, cur))
		case b == nil:
			p.add(fmt.Sprintf("rule %s on %s removed", id, a.Object), "records the rule applied to", ruleRecords(a, old))
		case !reflect.DeepEqual(a, b):
			p.add(fmt.Sprintf("rule %s on %s changed", id, b.Object), "records the old or the new rule applies to",
				ruleRecords(a, old), ruleRecords(b, cur))
		case a.Type == model.OwnerRule && !sameMembers:
			owners, done := changedOwners[a.Source]
			if !done {
				before, after := old.MembersAll(a.Source), cur.MembersAll(b.Source)
				for _, u := range union(keys(before), keys(after)) {
					if before[u] != after[u] {
						owners = append(owners, u)
					}
				}
				changedOwners[a.Source] = owners
			}
			if len(owners) > 0 {
				p.add(fmt.Sprintf("source %s of owner rule %s gained or lost %d users", a.Source, id, len(owners)),
					"records of "+a.Object+" those users own", &Selector{Kind: ByOwners, Object: a.Object, IDs: owners})
			}
		}
	}
}

// ruleRecords selects the records rule applies to under org's configuration:
// for an owner rule, the records its source's users own.
func ruleRecords(rule *model.Rule, org *sharing.Org) *Selector {
	if rule.Type == model.OwnerRule {
		owners := keys(org.MembersAll(rule.Source))
		sort.Strings(owners)
		return &Selector{Kind: ByOwners, Object: rule.Object, IDs: owners}
	}
	return &Selector{Kind: ByCriteria, Object: rule.Object, Criteria: rule.Criteria}
}

func rulesByID(ix *model.Index) map[string]*model.Rule {
	m := map[string]*model.Rule{}
	for i := range ix.Config.Rules {
		m[ix.Config.Rules[i].ID] = &ix.Config.Rules[i]
	}
	return m
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// union returns the sorted union of two key lists.
func union(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	sort.Strings(out)
	return slices.Compact(out)
}
