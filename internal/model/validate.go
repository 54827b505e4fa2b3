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
// Absent sections count as empty. The error names the offending entry.
func (c *Config) Validate() (*Index, error) {
	ix := &Index{Config: c,
		Objects: map[string]*Object{}, Roles: map[string]*Role{}, Users: map[string]*User{},
		Groups: map[string]*Group{}, Territories: map[string]*Territory{}}
	for i := range c.Objects {
		o := &c.Objects[i]
		if ix.Objects[o.Name] != nil {
			return nil, fmt.Errorf("object %q is defined twice", o.Name)
		}
		ix.Objects[o.Name] = o
	}
	for _, o := range c.Objects {
		if o.Parent != "" && ix.Objects[o.Parent] == nil {
			return nil, fmt.Errorf("object %q: parent object %q does not exist", o.Name, o.Parent)
		}
	}
	for _, o := range c.Objects {
		if err := noCycle(o.Name, func(n string) string { return ix.Objects[n].Parent }); err != nil {
			return nil, fmt.Errorf("object %q: parent %w", o.Name, err)
		}
	}
	for i := range c.Roles {
		r := &c.Roles[i]
		if ix.Roles[r.ID] != nil {
			return nil, fmt.Errorf("role %q is defined twice", r.ID)
		}
		ix.Roles[r.ID] = r
	}
	for _, r := range c.Roles {
		if r.Parent != "" && ix.Roles[r.Parent] == nil {
			return nil, fmt.Errorf("role %q: parent role %q does not exist", r.ID, r.Parent)
		}
	}
	for _, r := range c.Roles {
		if err := noCycle(r.ID, func(n string) string { return ix.Roles[n].Parent }); err != nil {
			return nil, fmt.Errorf("role %q: role hierarchy %w", r.ID, err)
		}
	}
	for i := range c.Users {
		u := &c.Users[i]
		if ix.Users[u.ID] != nil {
			return nil, fmt.Errorf("user %q is defined twice", u.ID)
		}
		if u.Role != "" && ix.Roles[u.Role] == nil {
			return nil, fmt.Errorf("user %q: role %q does not exist", u.ID, u.Role)
		}
		ix.Users[u.ID] = u
	}
	for i := range c.Groups {
		g := &c.Groups[i]
		if ix.Groups[g.ID] != nil {
			return nil, fmt.Errorf("group %q is defined twice", g.ID)
		}
		if g.Queue && ix.Users[g.ID] != nil {
			return nil, fmt.Errorf("group %q: a queue cannot share its id with a user, since both can own records", g.ID)
		}
		ix.Groups[g.ID] = g
	}
	for _, g := range c.Groups {
		for _, m := range g.Members {
			if err := ix.CheckGrantee(m); err != nil {
				return nil, fmt.Errorf("group %q: member %w", g.ID, err)
			}
		}
	}
	if err := ix.groupCycles(); err != nil {
		return nil, err
	}
	for i := range c.Territories {
		t := &c.Territories[i]
		if ix.Territories[t.ID] != nil {
			return nil, fmt.Errorf("territory %q is defined twice", t.ID)
		}
		ix.Territories[t.ID] = t
	}
	for _, t := range c.Territories {
		if t.Parent != "" && ix.Territories[t.Parent] == nil {
			return nil, fmt.Errorf("territory %q: parent territory %q does not exist", t.ID, t.Parent)
		}
		for _, u := range t.Users {
			if ix.Users[u] == nil {
				return nil, fmt.Errorf("territory %q: user %q does not exist", t.ID, u)
			}
		}
	}
	for _, t := range c.Territories {
		if err := noCycle(t.ID, func(n string) string { return ix.Territories[n].Parent }); err != nil {
			return nil, fmt.Errorf("territory %q: territory hierarchy %w", t.ID, err)
		}
	}
	if err := ix.validateRules(); err != nil {
		return nil, err
	}
	return ix, nil
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
		return fmt.Errorf("%s does not exist", g)
	}
	return nil
}

func (ix *Index) groupCycles() error {
	const (
		white = iota
		grey
		black
	)
	state := map[string]int{}
	var visit func(id string) error
	visit = func(id string) error {
		switch state[id] {
		case grey:
			return fmt.Errorf("group nesting cycle at group %q", id)
		case black:
			return nil
		}
		state[id] = grey
		for _, m := range ix.Groups[id].Members {
			if m.Kind == GGroup {
				if err := visit(m.ID); err != nil {
					return err
				}
			}
		}
		state[id] = black
		return nil
	}
	for _, g := range ix.Config.Groups {
		if err := visit(g.ID); err != nil {
			return err
		}
	}
	return nil
}

// noCycle follows parent links from start and reports a cycle.
func noCycle(start string, parent func(string) string) error {
	seen := map[string]bool{}
	for n := start; n != ""; n = parent(n) {
		if seen[n] {
			return fmt.Errorf("has a cycle through %q", n)
		}
		seen[n] = true
	}
	return nil
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
	case s.Cause != "manual" && IsStandard(s.Object):
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
	case !t.Child.IsZero() && recordObject != Account:
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
			return nil, fmt.Errorf("share on record %q for %s with cause %s is listed twice", s.Record, s.Grantee, s.Cause)
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
