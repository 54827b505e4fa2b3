// Package oracle is a deliberately simple, in-memory reference evaluator of
// the sharing model (docs/semantics.md). Tests hold the engine
// against it.
//
// Each function below transliterates one section of the spec, with the
// section number in its comment. Nothing is incremental and nothing is
// clever: sets are maps, every grant recomputes its receivers, and only
// per-record results are memoised so that controlled-by-parent chains and
// implicit parent access stay linear. It is meant for models of a few
// hundred records, not for benchmarks.
//
// Merge applies one imported file to a stored model the way `recalc import`
// must, owner-change wipe of manual shares included. RandomModel and Mutate
// generate valid models and change histories for differential tests.
package oracle

import (
	"bytes"
	"sort"
	"strings"

	"github.com/recalc-dev/recalc/internal/model"
)

// Row is the effective access of one active user to one record.
type Row struct {
	Object, Record, User string
	Level                model.Level
}

// Access returns one row per (record, active user) whose effective access
// (§4) is above none, sorted by object, record and user in byte order. m must
// have passed m.Validate().
func Access(m *model.Model) []Row {
	w := newWorld(m)
	var rows []Row
	for i := range m.Records {
		r := &m.Records[i]
		eff := w.effective(r)
		for _, u := range m.Users {
			if l := eff[u.ID]; l > model.None {
				rows = append(rows, Row{Object: r.Object, Record: r.ID, User: u.ID, Level: l})
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.Object != b.Object {
			return a.Object < b.Object
		}
		if a.Record != b.Record {
			return a.Record < b.Record
		}
		return a.User < b.User
	})
	return rows
}

// CSV renders rows as `recalc access --format csv` prints them: a header,
// then one line per row, every line ending in "\n". A field is quoted only
// when it holds a comma, a double quote, CR or LF (RFC 4180), its quotes
// doubled. encoding/csv would also quote a field that starts with a space
// or is `\.`, which recalc prints as it is.
func CSV(rows []Row) string {
	var buf bytes.Buffer
	buf.WriteString("object,record,user,access\n")
	for _, r := range rows {
		for _, f := range []string{r.Object, r.Record, r.User} {
			if strings.ContainsAny(f, ",\"\r\n") {
				f = `"` + strings.ReplaceAll(f, `"`, `""`) + `"`
			}
			buf.WriteString(f)
			buf.WriteByte(',')
		}
		buf.WriteString(r.Level.String())
		buf.WriteByte('\n')
	}
	return buf.String()
}

// set is a set of user ids.
type set map[string]bool

// levels maps user ids to access levels; a missing user has none.
type levels map[string]model.Level

// raise gives every user of to at least level l.
func (ls levels) raise(to set, l model.Level) {
	for u := range to {
		if l > ls[u] {
			ls[u] = l
		}
	}
}

// raiseAll gives every user at least the level they have in other.
func (ls levels) raiseAll(other levels) {
	for u, l := range other {
		if l > ls[u] {
			ls[u] = l
		}
	}
}

// world is a validated model with lookups by id and per-record memos.
type world struct {
	m           *model.Model
	objects     map[string]*model.Object
	roles       map[string]*model.Role
	users       map[string]*model.User
	groups      map[string]*model.Group
	territories map[string]*model.Territory
	records     map[string]*model.Record
	children    map[string][]*model.Record // by parent record id

	explicitMemo  map[string]levels
	effectiveMemo map[string]levels
}

func newWorld(m *model.Model) *world {
	w := &world{m: m,
		objects: map[string]*model.Object{}, roles: map[string]*model.Role{},
		users: map[string]*model.User{}, groups: map[string]*model.Group{},
		territories: map[string]*model.Territory{}, records: map[string]*model.Record{},
		children:     map[string][]*model.Record{},
		explicitMemo: map[string]levels{}, effectiveMemo: map[string]levels{}}
	for i := range m.Objects {
		w.objects[m.Objects[i].Name] = &m.Objects[i]
	}
	for i := range m.Roles {
		w.roles[m.Roles[i].ID] = &m.Roles[i]
	}
	for i := range m.Users {
		w.users[m.Users[i].ID] = &m.Users[i]
	}
	for i := range m.Groups {
		w.groups[m.Groups[i].ID] = &m.Groups[i]
	}
	for i := range m.Territories {
		w.territories[m.Territories[i].ID] = &m.Territories[i]
	}
	for i := range m.Records {
		r := &m.Records[i]
		w.records[r.ID] = r
		if r.Parent != "" {
			w.children[r.Parent] = append(w.children[r.Parent], r)
		}
	}
	return w
}

// ancestors returns role r's strict ancestors (§1 Roles).
func (w *world) ancestors(r string) set {
	out := set{}
	for p := w.roles[r].Parent; p != ""; p = w.roles[p].Parent {
		out[p] = true
	}
	return out
}

// roleOrBelow reports whether role r is role top or in descendants(top).
func (w *world) roleOrBelow(r, top string) bool {
	return r == top || w.ancestors(r)[top]
}

// usersWithRoleIn returns the active users whose role is in roles.
func (w *world) usersWithRoleIn(roles set) set {
	out := set{}
	for _, u := range w.m.Users {
		if u.Active && u.Role != "" && roles[u.Role] {
			out[u.ID] = true
		}
	}
	return out
}

// members is members(g) (§1 Grantees) when withInactive is false, and
// members_all(g) when it is true.
func (w *world) members(g model.Grantee, withInactive bool) set {
	out := set{}
	add := func(u *model.User, ok bool) {
		if ok && (u.Active || withInactive) {
			out[u.ID] = true
		}
	}
	switch g.Kind {
	case model.GUser:
		add(w.users[g.ID], true)
	case model.GRole:
		for i := range w.m.Users {
			u := &w.m.Users[i]
			add(u, u.Role == g.ID)
		}
	case model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
		for i := range w.m.Users {
			u := &w.m.Users[i]
			in := u.Role != "" && w.roleOrBelow(u.Role, g.ID)
			if g.Kind == model.GRoleAndInternalSubordinates {
				in = in && !u.External
			}
			add(u, in)
		}
	case model.GGroup:
		for _, m := range w.groups[g.ID].Members {
			for u := range w.members(m, withInactive) {
				out[u] = true
			}
		}
	case model.GAllInternalUsers:
		for i := range w.m.Users {
			u := &w.m.Users[i]
			add(u, !u.External)
		}
	}
	return out
}

// flatten returns the non-group entries reached through group id and its
// nested groups.
func (w *world) flatten(id string) []model.Grantee {
	var out []model.Grantee
	for _, m := range w.groups[id].Members {
		if m.Kind == model.GGroup {
			out = append(out, w.flatten(m.ID)...)
		} else {
			out = append(out, m)
		}
	}
	return out
}

// bosses is bosses(g) (§1 Grantees).
func (w *world) bosses(g model.Grantee) set {
	switch g.Kind {
	case model.GUser:
		role := w.users[g.ID].Role
		if role == "" {
			return set{}
		}
		return w.usersWithRoleIn(w.ancestors(role))
	case model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
		return w.usersWithRoleIn(w.ancestors(g.ID))
	case model.GGroup:
		out := set{}
		if !w.groups[g.ID].IncludeBosses {
			return out
		}
		for _, m := range w.flatten(g.ID) {
			for u := range w.bosses(m) {
				out[u] = true
			}
		}
		return out
	}
	return set{} // all_internal_users
}

// receivers is receivers(g, object) (§1 Grantees).
func (w *world) receivers(g model.Grantee, object string) set {
	out := w.members(g, false)
	if w.objects[object].Hierarchy {
		for u := range w.bosses(g) {
			out[u] = true
		}
	}
	return out
}

// territoryReceivers are the active users assigned to territory t or to any
// of its ancestors (§1 Territories).
func (w *world) territoryReceivers(t string) set {
	out := set{}
	for ; t != ""; t = w.territories[t].Parent {
		for _, id := range w.territories[t].Users {
			if w.users[id].Active {
				out[id] = true
			}
		}
	}
	return out
}

// ownerGrantee is user:owner, or group:queue for a queue owner (§2.1).
func (w *world) ownerGrantee(r *model.Record) model.Grantee {
	if w.users[r.Owner] != nil {
		return model.Grantee{Kind: model.GUser, ID: r.Owner}
	}
	return model.Grantee{Kind: model.GGroup, ID: r.Owner}
}

// applies reports whether a rule applies to a record (§1 Sharing rules).
func (w *world) applies(rule *model.Rule, r *model.Record) bool {
	if rule.Object != r.Object {
		return false
	}
	if rule.Type == model.CriteriaRule {
		return rule.Criteria.Match(r.Fields)
	}
	return w.users[r.Owner] != nil && w.members(rule.Source, true)[r.Owner]
}

// explicit is explicit(u, r) for every user (§2).
func (w *world) explicit(r *model.Record) levels {
	if ls, ok := w.explicitMemo[r.ID]; ok {
		return ls
	}
	ls := levels{}
	ls.raise(w.receivers(w.ownerGrantee(r), r.Object), model.All)
	for i := range w.m.Rules {
		if rule := &w.m.Rules[i]; w.applies(rule, r) {
			ls.raise(w.receivers(rule.Target, r.Object), rule.Access)
		}
	}
	for _, s := range w.m.Shares {
		if s.Record == r.ID {
			ls.raise(w.receivers(s.Grantee, r.Object), s.Access)
		}
	}
	for _, t := range w.m.Teams {
		if t.Record == r.ID {
			ls.raise(w.receivers(model.Grantee{Kind: model.GUser, ID: t.User}, r.Object), t.Access)
		}
	}
	if r.Object == model.Account {
		for _, t := range r.Territories {
			ls.raise(w.territoryReceivers(t), w.territories[t].AccountAccess)
		}
	}
	w.explicitMemo[r.ID] = ls
	return ls
}

// accountParent returns the account that record c is an implicit child of
// (§3.1, §3.2): c is a contact, opportunity or case of an object that is not
// controlled by parent, and its parent record is an account. Else nil.
func (w *world) accountParent(c *model.Record) *model.Record {
	if !model.IsAccountChild(c.Object) || w.objects[c.Object].CBP() || c.Parent == "" {
		return nil
	}
	if a := w.records[c.Parent]; a.Object == model.Account {
		return a
	}
	return nil
}

// implicitChild is the implicit child access to c (§3.1).
func (w *world) implicitChild(c *model.Record) levels {
	ls := levels{}
	a := w.accountParent(c)
	if a == nil {
		return ls
	}
	x := c.Object
	if owner := w.users[a.Owner]; owner != nil && owner.Role != "" {
		ls.raise(w.receivers(model.Grantee{Kind: model.GUser, ID: owner.ID}, x), w.roles[owner.Role].Child.For(x))
	}
	for i := range w.m.Rules {
		if rule := &w.m.Rules[i]; w.applies(rule, a) {
			ls.raise(w.receivers(rule.Target, x), rule.Child.For(x))
		}
	}
	for _, t := range w.m.Teams {
		if t.Record == a.ID {
			u := model.Grantee{Kind: model.GUser, ID: t.User}
			ls.raise(w.members(u, false), t.Child.For(x))
			ls.raise(w.bosses(u), t.Child.For(x))
		}
	}
	for _, t := range a.Territories {
		ls.raise(w.territoryReceivers(t), w.territories[t].Child.For(x))
	}
	return ls
}

// implicitParent is the implicit parent access to account a (§3.2).
func (w *world) implicitParent(a *model.Record) levels {
	ls := levels{}
	for _, c := range w.children[a.ID] {
		if w.accountParent(c) != a {
			continue
		}
		for u, l := range w.explicit(c) {
			if l >= model.Read {
				ls[u] = model.Read
			}
		}
	}
	return ls
}

// owd is the organisation-wide default access to records of object o (§3.4).
func (w *world) owd(o *model.Object) levels {
	ls := levels{}
	for _, u := range w.m.Users {
		if u.External {
			ls[u.ID] = o.ExternalOWD.Level()
		} else {
			ls[u.ID] = o.InternalOWD.Level()
		}
	}
	return ls
}

// effective is the effective access of every active user to r (§4, with
// §3.3 for controlled-by-parent objects).
func (w *world) effective(r *model.Record) levels {
	if ls, ok := w.effectiveMemo[r.ID]; ok {
		return ls
	}
	ls := levels{}
	if o := w.objects[r.Object]; o.CBP() {
		ls.raise(w.receivers(w.ownerGrantee(r), r.Object), model.All)
		if r.Parent != "" {
			ls.raiseAll(w.effective(w.records[r.Parent]))
		}
	} else {
		ls.raiseAll(w.explicit(r))
		ls.raiseAll(w.implicitChild(r))
		ls.raiseAll(w.implicitParent(r))
		ls.raiseAll(w.owd(o))
	}
	for u := range ls {
		if !w.users[u].Active {
			delete(ls, u)
		}
	}
	w.effectiveMemo[r.ID] = ls
	return ls
}
