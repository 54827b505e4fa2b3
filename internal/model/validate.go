package model

import (
	"fmt"
)

// Rule limits per object, as in Salesforce.
const (
	MaxRulesPerObject         = 300
	MaxCriteriaRulesPerObject = 50
)

// Index is a validated Config with lookups by id.
type Index struct {
	*Config
	Objects     map[string]*Object
	Roles       map[string]*Role
	Users       map[string]*User
	Groups      map[string]*Group
	Territories map[string]*Territory
}

// Validate checks every rule of the model that involves only configuration
// (objects, roles, users, groups, territories, rules) and returns the lookups.
// Absent sections count as empty. The error names the offending entry. It
// applies no Limits: see ValidateLimited.
func (c *Config) Validate() (*Index, error) { return c.ValidateLimited(Limits{}) }

// ValidateLimited is Validate, also bounding the counts of users, roles,
// territories and groups and the depths of their hierarchies by lim. It
// takes time linear in the configuration's size.
func (c *Config) ValidateLimited(lim Limits) (*Index, error) {
	if err := c.checkCounts(lim); err != nil {
		return nil, err
	}
	ix := &Index{Config: c,
		Objects: map[string]*Object{}, Roles: map[string]*Role{}, Users: map[string]*User{},
		Groups: map[string]*Group{}, Territories: map[string]*Territory{}}
	for _, step := range []func(Limits) error{ix.indexObjects, ix.indexRoles, ix.indexUsers, ix.indexGroups, ix.indexTerritories} {
		if err := step(lim); err != nil {
			return nil, err
		}
	}
	if err := ix.validateRules(); err != nil {
		return nil, err
	}
	return ix, nil
}

// checkCounts checks the number of users, roles, territories and groups against lim.
func (c *Config) checkCounts(lim Limits) error {
	for _, n := range []struct {
		n          int
		max        int64
		limit, sec string
	}{{len(c.Users), lim.Users, LimitUsers, "users"}, {len(c.Roles), lim.Roles, LimitRoles, "roles"},
		{len(c.Territories), lim.Territories, LimitTerritories, "territories"}, {len(c.Groups), lim.Groups, LimitGroups, "groups"}} {
		if err := over(int64(n.n), n.max, n.limit, fmt.Sprintf("%d %s", n.n, n.sec), n.sec); err != nil {
			return fmt.Errorf("section %q: %w", n.sec, err)
		}
	}
	return nil
}

// indexObjects indexes the objects and checks their parents and hierarchy depth.
func (ix *Index) indexObjects(Limits) error {
	objects, err := indexTree("object", ix.Config.Objects, ix.Objects, func(o *Object) (string, string) { return o.Name, o.Parent }, nil)
	if err != nil {
		return err
	}
	for _, o := range ix.Config.Objects {
		if o.Parent == o.Name {
			return fmt.Errorf("object %q cannot be its own parent: an object's parent is the object its records' access can come from (a contact's account); "+
				"a record's link to another record of its own object, such as an account's parent account, plays no part in sharing: leave it out", o.Name)
		}
	}
	if start, err := levels(objects, func(n string) string { return ix.Objects[n].Parent }, MaxObjectDepth); err != nil {
		if d, ok := err.(*errTooDeep); ok {
			return fmt.Errorf("object %q is %d levels deep in the object hierarchy, over the fixed limit of %d", start, d.depth, d.max)
		}
		return fmt.Errorf("object %q: parent %w", start, err)
	}
	return nil
}

// indexRoles indexes the roles and checks their parents and hierarchy depth.
func (ix *Index) indexRoles(lim Limits) error {
	roles, err := indexTree("role", ix.Config.Roles, ix.Roles, func(r *Role) (string, string) { return r.ID, r.Parent }, nil)
	if err != nil {
		return err
	}
	if start, err := levels(roles, func(n string) string { return ix.Roles[n].Parent }, lim.RoleDepth); err != nil {
		return levelErr("role", "role hierarchy", start, LimitRoleDepth, err)
	}
	return nil
}

// indexUsers indexes the users and checks their roles.
func (ix *Index) indexUsers(Limits) error {
	c := ix.Config
	for i := range c.Users {
		u := &c.Users[i]
		if ix.Users[u.ID] != nil {
			return fmt.Errorf("user %q is defined twice", u.ID)
		}
		if u.Role != "" && ix.Roles[u.Role] == nil {
			return fmt.Errorf("user %q: role %q does not exist", u.ID, u.Role)
		}
		ix.Users[u.ID] = u
	}
	return nil
}

// indexGroups indexes the groups and queues and checks their members and nesting.
func (ix *Index) indexGroups(lim Limits) error {
	c := ix.Config
	for i := range c.Groups {
		g := &c.Groups[i]
		if ix.Groups[g.ID] != nil {
			return fmt.Errorf("group %q is defined twice", g.ID)
		}
		if g.Queue && ix.Users[g.ID] != nil {
			return fmt.Errorf("group %q: a queue cannot share its id with a user, since both can own records", g.ID)
		}
		ix.Groups[g.ID] = g
	}
	for _, g := range c.Groups {
		for _, m := range g.Members {
			if err := ix.CheckGrantee(m); err != nil {
				return fmt.Errorf("group %q: member %w", g.ID, err)
			}
		}
	}
	if err := ix.groupCycles(lim.GroupDepth); err != nil {
		return err
	}
	return nil
}

// indexTerritories indexes the territories and checks their parents, users and hierarchy depth.
func (ix *Index) indexTerritories(lim Limits) error {
	terrs, err := indexTree("territory", ix.Config.Territories, ix.Territories, func(t *Territory) (string, string) { return t.ID, t.Parent },
		func(t *Territory) error {
			for _, u := range t.Users {
				if ix.Users[u] == nil {
					return fmt.Errorf("territory %q: user %q does not exist", t.ID, u)
				}
			}
			return nil
		})
	if err != nil {
		return err
	}
	if start, err := levels(terrs, func(n string) string { return ix.Territories[n].Parent }, lim.TerritoryDepth); err != nil {
		return levelErr("territory", "territory hierarchy", start, LimitTerritoryDepth, err)
	}
	return nil
}

// indexTree indexes the items of a hierarchy (objects, roles or
// territories) by key into byKey, failing on a key defined twice; then it
// checks, item by item, that its parent exists and that check (when not
// nil) passes. It returns the keys in order, for the depth check.
func indexTree[T any](kind string, items []T, byKey map[string]*T, keys func(*T) (key, parent string), check func(*T) error) ([]string, error) {
	order := make([]string, len(items))
	for i := range items {
		key, _ := keys(&items[i])
		if byKey[key] != nil {
			return nil, fmt.Errorf("%s %q is defined twice", kind, key)
		}
		byKey[key], order[i] = &items[i], key
	}
	for i := range items {
		if key, parent := keys(&items[i]); parent != "" && byKey[parent] == nil {
			return nil, fmt.Errorf("%s %q: parent %s %q does not exist", kind, key, kind, parent)
		}
		if check != nil {
			if err := check(&items[i]); err != nil {
				return nil, err
			}
		}
	}
	return order, nil
}

func (ix *Index) validateRules() error {
	ids := map[string]bool{}
	count := map[string]int{}
	criteria := map[string]int{}
	for _, r := range ix.Config.Rules {
		if ids[r.ID] {
			return fmt.Errorf("rule %q is defined twice", r.ID)
		}
		ids[r.ID] = true
		o := ix.Objects[r.Object]
		if o == nil {
			return fmt.Errorf("rule %q: object %q does not exist", r.ID, r.Object)
		}
		if o.CBP() {
			return fmt.Errorf("rule %q: object %q is controlled_by_parent and cannot have sharing rules", r.ID, r.Object)
		}
		if err := ix.CheckGrantee(r.Target); err != nil {
			return fmt.Errorf("rule %q: target %w", r.ID, err)
		}
		if r.Type == OwnerRule {
			if err := ix.CheckGrantee(r.Source); err != nil {
				return fmt.Errorf("rule %q: source %w", r.ID, err)
			}
		} else {
			criteria[r.Object]++
			if criteria[r.Object] > MaxCriteriaRulesPerObject {
				return fmt.Errorf("rule %q: object %q has more than %d criteria-based rules", r.ID, r.Object, MaxCriteriaRulesPerObject)
			}
		}
		count[r.Object]++
		if count[r.Object] > MaxRulesPerObject {
			return fmt.Errorf("rule %q: object %q has more than %d sharing rules", r.ID, r.Object, MaxRulesPerObject)
		}
	}
	return nil
}

// CheckGrantee reports a grantee that names no existing user, group, role or territory.
func (ix *Index) CheckGrantee(g Grantee) error {
	ok := true
	switch g.Kind {
	case GUser:
		ok = ix.Users[g.ID] != nil
	case GGroup:
		ok = ix.Groups[g.ID] != nil
	case GRole, GRoleAndSubordinates, GRoleAndInternalSubordinates:
		ok = ix.Roles[g.ID] != nil
	case GTerritory:
		ok = ix.Territories[g.ID] != nil
	}
	if !ok {
		return fmt.Errorf("%q does not exist", g.String())
	}
	return nil
}

// groupCycles reports a cycle of groups nested in groups, and nesting deeper
// than maxDepth levels (0: any), in time linear in the groups' members.
func (ix *Index) groupCycles(maxDepth int64) error {
	const grey = -1
	depth := make(map[string]int64, len(ix.Config.Groups)) // 0 unvisited, grey on the path, else levels
	type frame struct {
		id   string
		next int // the next member to visit
		d    int64
	}
	var stack []frame // depth-first, without recursion: nesting may be deep
	for _, g := range ix.Config.Groups {
		if depth[g.ID] != 0 {
			continue
		}
		depth[g.ID] = grey
		stack = append(stack[:0], frame{id: g.ID, d: 1})
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			members := ix.Groups[f.id].Members
			if f.next == len(members) {
				depth[f.id] = f.d
				stack = stack[:len(stack)-1]
				if len(stack) > 0 {
					p := &stack[len(stack)-1]
					p.d = max(p.d, f.d+1)
				}
				continue
			}
			m := members[f.next]
			f.next++
			if m.Kind != GGroup {
				continue
			}
			switch k := depth[m.ID]; {
			case k == grey:
				return fmt.Errorf("group nesting cycle at group %q", m.ID)
			case k > 0:
				f.d = max(f.d, k+1)
			default:
				depth[m.ID] = grey
				stack = append(stack, frame{id: m.ID, d: 1})
			}
		}
	}
	for _, g := range ix.Config.Groups {
		if err := over(depth[g.ID], maxDepth, LimitGroupDepth, fmt.Sprintf("nests groups %d levels deep", depth[g.ID]), "levels"); err != nil {
			return fmt.Errorf("group %q: %w", g.ID, err)
		}
	}
	return nil
}

// errTooDeep is levels' report of a hierarchy deeper than its limit.
type errTooDeep struct{ depth, max int64 }

func (e *errTooDeep) Error() string { return fmt.Sprintf("%d levels deep", e.depth) }

// levels checks the parent links of ids (all of them must exist) in time
// linear in their number: it reports the first id, in order, whose
// ancestors form a cycle ("has a cycle through X", X the first id met
// twice going up from it) or lie deeper than maxDepth levels (0: any; a root
// is at level 1) as an *errTooDeep.
func levels(ids []string, parent func(string) string, maxDepth int64) (string, error) {
	const onPath = -1
	depth := make(map[string]int64, len(ids)) // 0 unknown, onPath, else levels
	var path []string
	for _, id := range ids {
		path = path[:0]
		var d int64 // the level above the path
		for n := id; n != ""; n = parent(n) {
			if k := depth[n]; k == onPath {
				return id, fmt.Errorf("has a cycle through %q", n)
			} else if k > 0 {
				d = k
				break
			}
			depth[n] = onPath
			path = append(path, n)
		}
		for i := len(path) - 1; i >= 0; i-- {
			d++
			depth[path[i]] = d
		}
		if maxDepth > 0 && depth[id] > maxDepth {
			return id, &errTooDeep{depth[id], maxDepth}
		}
	}
	return "", nil
}

// MaxObjectDepth is how deep the object hierarchy may be: a record family
// is at most this deep, and the SQL that finds family roots walks at most
// 100 parent links. It is fixed, not a Limits field, because raising it past
// that walk would split families.
const MaxObjectDepth = 50

// levelErr words levels' error for a kind of entry.
func levelErr(kind, hierarchy, id, limit string, err error) error {
	if d, ok := err.(*errTooDeep); ok {
		return fmt.Errorf("%s %q: %w", kind, id, limitErr(limit, d.max,
			fmt.Sprintf("%d levels deep in the %s, over the limit of %d levels", d.depth, hierarchy, d.max)))
	}
	return fmt.Errorf("%s %q: %s %w", kind, id, hierarchy, err)
}

// CheckRecordRefs checks a record's references to configuration: its object,
// owner and territories. Parent links are checked by the caller, which sees
// all records.
func (ix *Index) CheckRecordRefs(r *Record) error {
	o := ix.Objects[r.Object]
	if o == nil {
		return fmt.Errorf("record %q: object %q does not exist", r.ID, r.Object)
	}
	if ix.Users[r.Owner] == nil && (ix.Groups[r.Owner] == nil || !ix.Groups[r.Owner].Queue) {
		return fmt.Errorf("record %q: owner %q is neither a user nor a queue", r.ID, r.Owner)
	}
	if r.Parent != "" && o.Parent == "" {
		return fmt.Errorf("record %q: object %q has no parent object, so the record cannot have a parent", r.ID, r.Object)
	}
	if len(r.Territories) > 0 && r.Object != Account {
		return fmt.Errorf("record %q: only account records can have territories", r.ID)
	}
	for _, t := range r.Territories {
		if ix.Territories[t] == nil {
			return fmt.Errorf("record %q: territory %q does not exist", r.ID, t)
		}
	}
	return nil
}

// CheckRecordParent checks a record's parent link, given the object of the
// record its parent names (empty when that record does not exist).
func (ix *Index) CheckRecordParent(r *Record, parentObject string) error {
	if r.Parent == "" {
		return nil
	}
	if parentObject == "" {
		return fmt.Errorf("record %q: parent record %q does not exist", r.ID, r.Parent)
	}
	if want := ix.Objects[r.Object].Parent; parentObject != want {
		return fmt.Errorf("record %q: parent record %q is a %s, not a %s", r.ID, r.Parent, parentObject, want)
	}
	return nil
}

// CheckShareRefs checks a share against configuration and the object of the
// record it names (recordObject, empty when the record does not exist).
func (ix *Index) CheckShareRefs(s *Share, recordObject string) error {
	o := ix.Objects[s.Object]
	switch {
	case o == nil:
		return fmt.Errorf("share on record %q: object %q does not exist", s.Record, s.Object)
	case recordObject == "":
		return fmt.Errorf("share on record %q: record does not exist", s.Record)
	case recordObject != s.Object:
		return fmt.Errorf("share on record %q: record is a %s, not a %s", s.Record, recordObject, s.Object)
	case o.CBP():
		return fmt.Errorf("share on record %q: object %q is controlled_by_parent and cannot have shares", s.Record, s.Object)
	case s.Cause != CauseManual && IsStandard(s.Object):
		return fmt.Errorf("share on record %q: cause %q is allowed only on custom objects", s.Record, s.Cause)
	}
	if err := ix.CheckGrantee(s.Grantee); err != nil {
		return fmt.Errorf("share on record %q: grantee %w", s.Record, err)
	}
	return nil
}

// CheckTeamRefs checks a team entry against configuration and the object of
// the record it names (empty when the record does not exist).
func (ix *Index) CheckTeamRefs(t *Team, recordObject string) error {
	switch {
	case recordObject == "":
		return fmt.Errorf("team entry on record %q: record does not exist", t.Record)
	case recordObject != Account && recordObject != Opportunity && recordObject != Case:
		return fmt.Errorf("team entry on record %q: teams exist only on account, opportunity and case records, not %s", t.Record, recordObject)
	case ix.Objects[recordObject].CBP():
		return fmt.Errorf("team entry on record %q: object %q is controlled_by_parent and cannot have teams", t.Record, recordObject)
	case (t.ChildGiven || !t.Child.IsZero()) && recordObject != Account:
		return fmt.Errorf("team entry on record %q: child access is allowed only on account teams", t.Record)
	case ix.Users[t.User] == nil:
		return fmt.Errorf("team entry on record %q: user %q does not exist", t.Record, t.User)
	}
	return nil
}

// Validate checks a whole in-memory model: configuration, then every record,
// share and team, references included. The engine's import runs the same
// reference checks in SQL, since it never holds all records in memory.
func (m *Model) Validate() (*Index, error) {
	ix, err := m.Config.Validate()
	if err != nil {
		return nil, err
	}
	recs := make(map[string]*Record, len(m.Records))
	for i := range m.Records {
		r := &m.Records[i]
		if recs[r.ID] != nil {
			return nil, fmt.Errorf("record %q is defined twice", r.ID)
		}
		recs[r.ID] = r
		if err := ix.CheckRecordRefs(r); err != nil {
			return nil, err
		}
	}
	objectOf := func(id string) string {
		if r := recs[id]; r != nil {
			return r.Object
		}
		return ""
	}
	for i := range m.Records {
		if err := ix.CheckRecordParent(&m.Records[i], objectOf(m.Records[i].Parent)); err != nil {
			return nil, err
		}
	}
	type shareKey struct{ rec, grantee, cause string }
	shares := map[shareKey]bool{}
	for i := range m.Shares {
		s := &m.Shares[i]
		if err := ix.CheckShareRefs(s, objectOf(s.Record)); err != nil {
			return nil, err
		}
		k := shareKey{s.Record, s.Grantee.String(), s.Cause}
		if shares[k] {
			return nil, fmt.Errorf("share on record %q for %q with cause %q is listed twice", s.Record, s.Grantee.String(), s.Cause)
		}
		shares[k] = true
	}
	teams := map[[2]string]bool{}
	for i := range m.Teams {
		t := &m.Teams[i]
		if err := ix.CheckTeamRefs(t, objectOf(t.Record)); err != nil {
			return nil, err
		}
		k := [2]string{t.Record, t.User}
		if teams[k] {
			return nil, fmt.Errorf("team entry on record %q for user %q is listed twice", t.Record, t.User)
		}
		teams[k] = true
	}
	return ix, nil
}
