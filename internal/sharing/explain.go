package sharing

import (
	"fmt"
	"slices"
	"strings"

	"github.com/recalc-dev/recalc/internal/model"
)

// Reason is one way a user gets access to a record.
type Reason struct {
	Kind   string      `json:"kind"` // owner, rule, manual, apex, team, territory, implicit_child, implicit_parent, owd, controlled_by_parent
	Level  model.Level `json:"level"`
	Detail string      `json:"detail"` // which rule, share, territory, child, account or parent
	Via    string      `json:"via"`    // how the user is among the grant's receivers
	// Reasons, for controlled_by_parent: why the user has access to the parent.
	Reasons []Reason `json:"reasons,omitempty"`
}

// Reason kinds that are no row cause (CauseOwner and the others are kinds
// too, and so is model.CauseManual).
const (
	ReasonApex               = "apex" // an Apex share, whatever its "apex:NAME" cause
	ReasonOWD                = "owd"
	ReasonControlledByParent = "controlled_by_parent"
)

// Explain lists every reason user has access to record rid of the families
// in in, not just the first: each grant whose receivers include the user,
// with the path by which they do. Levels are those of the materialized
// semantics: the effective level is the highest reason's.
func (o *Org) Explain(in *Input, rid int64, user string) []Reason {
	u := o.ix.Users[user]
	if u == nil || !u.Active {
		return nil
	}
	byRID := map[int64]*Record{}
	for i := range in.Records {
		byRID[in.Records[i].RID] = &in.Records[i]
	}
	r := byRID[rid]
	if r == nil || o.invalid(r, byRID, map[int64]string{}) != "" {
		return nil
	}
	return o.explain(in, r, byRID, u)
}

func (o *Org) explain(in *Input, r *Record, byRID map[int64]*Record, u *model.User) []Reason {
	obj := o.ix.Objects[r.Object]
	var out []Reason
	if obj.CBP() {
		if via, ok := o.receives(mustGrantee(ownerGrantee(r.Owner, o.ix)), u, obj.Hierarchy); ok {
			out = append(out, Reason{Kind: CauseOwner, Level: model.All, Detail: "owner " + r.Owner, Via: via})
		}
		if p := byRID[r.ParentRID]; p != nil {
			if sub := o.explain(in, p, byRID, u); len(sub) > 0 {
				out = append(out, Reason{Kind: ReasonControlledByParent, Level: maxLevel(sub),
					Detail: fmt.Sprintf("access to parent %s %s", p.Object, p.ID), Reasons: sub})
			}
		}
		return out
	}
	for _, g := range o.explicitDetailed(r, in) {
		if via, ok := o.receives(g.grantee, u, obj.Hierarchy); ok {
			g.reason.Via = via
			out = append(out, g.reason)
		}
	}
	if model.IsAccountChild(r.Object) {
		if a := byRID[r.ParentRID]; a != nil && a.Object == model.Account {
			out = append(out, o.explainChild(in, r, a, u, obj.Hierarchy)...)
		}
	}
	if r.Object == model.Account {
		for i := range in.Records {
			c := &in.Records[i]
			co := o.ix.Objects[c.Object]
			if c.ParentRID != r.RID || !model.IsAccountChild(c.Object) || co.CBP() {
				continue
			}
			for _, g := range o.explicitDetailed(c, in) {
				if via, ok := o.receives(g.grantee, u, co.Hierarchy); ok {
					out = append(out, Reason{Kind: CauseImplicitParent, Level: model.Read,
						Detail: fmt.Sprintf("%s on child %s %s", g.reason.Detail, c.Object, c.ID), Via: via})
				}
			}
		}
	}
	owd := obj.InternalOWD
	if u.External {
		owd = obj.ExternalOWD
	}
	if l := owd.Level(); l > model.None {
		kind := "internal"
		if u.External {
			kind = "external"
		}
		out = append(out, Reason{Kind: ReasonOWD, Level: l, Detail: fmt.Sprintf("%s org-wide default %s", kind, owd), Via: "every " + kind + " user"})
	}
	return out
}

type detailedGrant struct {
	grantee model.Grantee
	reason  Reason
}

// explicitDetailed is explicit() with each grant's provenance.
func (o *Org) explicitDetailed(r *Record, in *Input) []detailedGrant {
	owner := ownerGrantee(r.Owner, o.ix)
	out := []detailedGrant{{mustGrantee(owner), Reason{Kind: CauseOwner, Level: model.All, Detail: "owner " + r.Owner}}}
	for _, rule := range o.applying(r) {
		how := "owner in " + rule.Source.String()
		if rule.Type == model.CriteriaRule {
			how = "criteria match"
		}
		out = append(out, detailedGrant{rule.Target, Reason{Kind: CauseRule, Level: rule.Access,
			Detail: fmt.Sprintf("rule %s (%s) shares with %s", rule.ID, how, rule.Target)}})
	}
	for _, s := range in.Shares[r.RID] {
		kind := model.CauseManual
		if s.Cause != model.CauseManual {
			kind = ReasonApex
		}
		out = append(out, detailedGrant{s.Grantee, Reason{Kind: kind, Level: s.Access, Detail: fmt.Sprintf("%s share with %s", s.Cause, s.Grantee)}})
	}
	for _, t := range in.Teams[r.RID] {
		out = append(out, detailedGrant{model.Grantee{Kind: model.GUser, ID: t.User}, Reason{Kind: CauseTeam, Level: t.Access, Detail: "team member " + t.User}})
	}
	for _, id := range r.Territories {
		out = append(out, detailedGrant{model.Grantee{Kind: model.GTerritory, ID: id},
			Reason{Kind: CauseTerritory, Level: o.ix.Territories[id].AccountAccess, Detail: "territory " + id}})
	}
	return out
}

// explainChild lists implicit child access to c from its account a (§3.1).
func (o *Org) explainChild(in *Input, c, a *Record, u *model.User, hierarchy bool) []Reason {
	var out []Reason
	add := func(g model.Grantee, l model.Level, detail string) {
		if l == model.None {
			return
		}
		if via, ok := o.receives(g, u, hierarchy); ok {
			out = append(out, Reason{Kind: CauseImplicitChild, Level: l, Detail: fmt.Sprintf("account %s: %s", a.ID, detail), Via: via})
		}
	}
	setting := c.Object + "_access"
	if owner := o.ix.Users[a.Owner]; owner != nil && owner.Role != "" {
		add(model.Grantee{Kind: model.GUser, ID: a.Owner}, o.ix.Roles[owner.Role].Child.For(c.Object),
			fmt.Sprintf("owner %s's role %s has %s", a.Owner, owner.Role, setting))
	}
	for _, rule := range o.applying(a) {
		add(rule.Target, rule.Child.For(c.Object), fmt.Sprintf("rule %s gives %s to %s", rule.ID, setting, rule.Target))
	}
	for _, t := range in.Teams[a.RID] {
		add(model.Grantee{Kind: model.GUser, ID: t.User}, t.Child.For(c.Object), fmt.Sprintf("team member %s has %s", t.User, setting))
	}
	for _, id := range a.Territories {
		add(model.Grantee{Kind: model.GTerritory, ID: id}, o.ix.Territories[id].Child.For(c.Object), fmt.Sprintf("territory %s gives %s", id, setting))
	}
	return out
}

func mustGrantee(key string) model.Grantee {
	g, err := model.ParseGrantee(key, true)
	if err != nil {
		panic(err) // ownerGrantee builds only valid keys
	}
	return g
}

func maxLevel(rs []Reason) model.Level {
	var l model.Level
	for _, r := range rs {
		l = max(l, r.Level)
	}
	return l
}

// receives reports whether active user u is among the receivers of g (with
// bosses when hierarchy is on) and says how.
func (o *Org) receives(g model.Grantee, u *model.User, hierarchy bool) (string, bool) {
	if via, ok := o.memberPath(g, u, map[string]bool{}); ok {
		return via, true
	}
	if hierarchy {
		return o.bossPath(g, u, map[string]bool{})
	}
	return "", false
}

// memberPath says how u is in members(g).
func (o *Org) memberPath(g model.Grantee, u *model.User, seen map[string]bool) (string, bool) {
	switch g.Kind {
	case model.GUser:
		return "is " + g.String(), g.ID == u.ID
	case model.GRole:
		return "in role " + g.ID, u.Role == g.ID
	case model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
		if u.Role == "" || !slices.Contains(o.rolesBelow(g.ID), u.Role) || (g.Kind == model.GRoleAndInternalSubordinates && u.External) {
			return "", false
		}
		return fmt.Sprintf("in role %s, within %s", u.Role, g), true
	case model.GAllInternalUsers:
		return "an internal user (all_internal_users)", !u.External
	case model.GTerritory:
		for t := o.ix.Territories[g.ID]; t != nil; t = o.ix.Territories[t.Parent] {
			if slices.Contains(t.Users, u.ID) {
				if t.ID == g.ID {
					return "assigned to territory " + t.ID, true
				}
				return fmt.Sprintf("assigned to territory %s, above %s", t.ID, g.ID), true
			}
		}
	case model.GGroup:
		if seen[g.ID] {
			return "", false
		}
		seen[g.ID] = true
		for _, m := range o.ix.Groups[g.ID].Members {
			if via, ok := o.memberPath(m, u, seen); ok {
				return fmt.Sprintf("member of group %s through %s: %s", g.ID, m, via), true
			}
		}
	}
	return "", false
}

// bossPath says how u is in bosses(g): above it in the role hierarchy.
func (o *Org) bossPath(g model.Grantee, u *model.User, seen map[string]bool) (string, bool) {
	if u.Role == "" {
		return "", false
	}
	switch g.Kind {
	case model.GUser:
		if t := o.ix.Users[g.ID]; t != nil && t.Role != "" {
			if chain, ok := o.roleChain(u.Role, t.Role); ok {
				return fmt.Sprintf("above %s in the role hierarchy: %s", g.ID, chain), true
			}
		}
	case model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
		if chain, ok := o.roleChain(u.Role, g.ID); ok {
			return fmt.Sprintf("above %s in the role hierarchy: %s", g, chain), true
		}
	case model.GGroup:
		if !o.ix.Groups[g.ID].IncludeBosses {
			return "", false
		}
		for _, m := range o.flatten(g.ID) {
			if via, ok := o.bossPath(m, u, seen); ok {
				return fmt.Sprintf("group %s grants access using hierarchies; %s", g.ID, via), true
			}
		}
	}
	return "", false
}

// roleChain returns "top > ... > bottom" when top is a strict ancestor of bottom.
func (o *Org) roleChain(top, bottom string) (string, bool) {
	chain := []string{bottom}
	for r := o.ix.Roles[bottom]; r != nil && r.Parent != ""; r = o.ix.Roles[r.Parent] {
		chain = append(chain, r.Parent)
		if r.Parent == top {
			slices.Reverse(chain)
			return strings.Join(chain, " > "), true
		}
	}
	return "", false
}
