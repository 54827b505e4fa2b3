package sharing

import (
	"slices"
	"sort"

	"github.com/recalc-dev/recalc/internal/model"
)

// Row causes of engine-owned share rows. Manual and apex rows keep their
// input's cause (model.CauseManual, or "apex:NAME" after model.CauseApex).
const (
	CauseOwner          = "owner"
	CauseRule           = "rule"
	CauseTeam           = "team"
	CauseTerritory      = "territory"
	CauseImplicitChild  = "implicit_child"
	CauseImplicitParent = "implicit_parent"
	// CauseParentOwner is the owner grant of a controlled-by-parent ancestor,
	// copied onto its controlled-by-parent descendants.
	CauseParentOwner = "parent_owner"
)

// Record is a stored record with its surrogate keys.
type Record struct {
	model.Record
	RID       int64
	ParentRID int64  // 0 when none
	RootID    string // id of the family's root record
	// Unreadable is set by the loader when the stored fields could not be
	// read (not a JSON object of scalars, or past the limits): the record is
	// invalid and gets no access.
	Unreadable bool
	// UnknownTerritory is set by the loader when the record names a
	// territory longer than any of the configuration's: it reads no
	// territory then, and the record is invalid.
	UnknownTerritory bool
	// criteria holds the criteria rules the fields matched, once
	// MatchCriteria dropped the fields; nil before.
	criteria []*model.Rule
}

// Input is a set of whole families: every record of each, with their shares
// and team entries keyed by record rid.
type Input struct {
	Records []Record
	Shares  map[int64][]model.Share
	Teams   map[int64][]model.Team
}

// ShareRow is one materialized share row.
type ShareRow struct {
	RID     int64
	Grantee string // grantee key, e.g. "user:u1"
	Level   model.Level
	Cause   string
	// BossOK is the hierarchy setting of the object whose receivers the row
	// grants to: when false, closure entries reached only through the role
	// hierarchy do not count.
	BossOK bool
}

// RecordRow is one materialized record: what access reads need, and the
// family it was computed in.
type RecordRow struct {
	RID        int64
	ID, Object string
	AccessRoot int64 // 0 when none
	RootID     string
	// Invalid is why the record gets no access at all, empty when it is
	// valid (see Org.invalid).
	Invalid string
}

type rowKey struct {
	rid     int64
	grantee string
	cause   string
}

// Rows is the output of Compute, deduplicated by (record, grantee, cause)
// keeping the highest level.
type Rows struct {
	Shares  []ShareRow
	Records []RecordRow
	// Invalid lists records written with plain SQL that name an unknown
	// object, owner, parent or territory, or whose fields cannot be read.
	// They get a record row that says why, and no share row, so no access:
	// an authorization source fails closed.
	Invalid []string
	index   map[rowKey]int
}

func (rs *Rows) add(rid int64, g string, l model.Level, cause string, bossOK bool) {
	if l == model.None {
		return
	}
	k := rowKey{rid, g, cause}
	if i, ok := rs.index[k]; ok {
		r := &rs.Shares[i]
		r.Level = max(r.Level, l)
		r.BossOK = r.BossOK || bossOK
		return
	}
	rs.index[k] = len(rs.Shares)
	rs.Shares = append(rs.Shares, ShareRow{RID: rid, Grantee: g, Level: l, Cause: cause, BossOK: bossOK})
}

// Compute returns the share rows and record rows of the families in in.
// It works family by family: a row's (record, grantee, cause) can only
// repeat within its family, so the deduplication index holds one family at
// a time and memory stays proportional to the largest family.
func (o *Org) Compute(in *Input) *Rows {
	rs := &Rows{index: map[rowKey]int{}, Shares: make([]ShareRow, 0, 4*len(in.Records))}
	invalid := map[int64]string{}
	byRID := make(map[int64]*Record, len(in.Records))
	for i := range in.Records {
		byRID[in.Records[i].RID] = &in.Records[i]
	}
	order := make([]int, len(in.Records))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return in.Records[order[a]].RootID < in.Records[order[b]].RootID })
	c := &computation{Org: o, in: in, applying: map[int64][]*model.Rule{}}
	for k, i := range order {
		r := &in.Records[i]
		if k > 0 && r.RootID != in.Records[order[k-1]].RootID {
			clear(rs.index) // a new family
			clear(c.applying)
		}
		obj := o.ix.Objects[r.Object]
		if why := o.invalid(r, byRID, invalid); why != "" {
			rs.Invalid = append(rs.Invalid, r.ID)
			rs.Records = append(rs.Records, RecordRow{RID: r.RID, ID: r.ID, Object: r.Object, RootID: r.RootID, Invalid: why})
			continue
		}
		if obj.CBP() {
			o.controlledByParent(rs, r, byRID)
			continue
		}
		rs.Records = append(rs.Records, RecordRow{RID: r.RID, ID: r.ID, Object: r.Object, AccessRoot: r.RID, RootID: r.RootID})
		explicit := c.explicit(r)
		for _, g := range explicit {
			rs.add(r.RID, g.grantee, g.level, g.cause, obj.Hierarchy)
		}
		if !model.IsAccountChild(r.Object) || r.ParentRID == 0 {
			continue
		}
		acct := byRID[r.ParentRID]
		if acct == nil || acct.Object != model.Account {
			continue
		}
		c.implicitChild(rs, r, acct, obj.Hierarchy)
		if o.ix.Objects[acct.Object].CBP() {
			continue // a controlled-by-parent account has its parent's access only (3.3): no implicit parent
		}
		for _, g := range explicit {
			rs.add(acct.RID, g.grantee, model.Read, CauseImplicitParent, obj.Hierarchy)
		}
	}
	rs.index = nil
	return rs
}

// computation is one Compute call: the org, its input, and the rules found
// to apply to each record of the current family (an account's are needed
// again for each of its children).
type computation struct {
	*Org
	in       *Input
	applying map[int64][]*model.Rule
}

func (c *computation) rulesOf(r *Record) []*model.Rule {
	rules, ok := c.applying[r.RID]
	if !ok {
		rules = c.Org.applying(r)
		c.applying[r.RID] = rules
	}
	return rules
}

// Reasons a record is invalid, as stored in acl_record.invalid. They name
// no value of the record.
const (
	InvalidObject    = "unknown object"
	InvalidOwner     = "unknown owner"
	InvalidTerritory = "unknown territory, or territories on an object other than account"
	InvalidParent    = "parent missing, of the wrong object, invalid, or in a cycle"
	InvalidFields    = "fields are not a JSON object of scalars within the limits"
	// InvalidValues: a row of an attached table whose values recalc.record
	// cannot hold, mirrored closed with the territory list {""}
	// (recalc.attach_rows_sql, migration 020), or that could not be read
	// (recalc.attach_unreadable, migration 039), or a record whose
	// territories hold a NULL or have two dimensions, stored before
	// migration 027 refused them and read as {""} (LoadFamilies).
	InvalidValues = "values out of bounds or unreadable (a row of an attached table, or territories stored before their bounds), read closed"
)

// invalid says why a record's references do not resolve ("" when they do):
// its object, owner and territories in the configuration, its fields, and
// its parent chain within the family. Imports guarantee them; plain SQL
// writes may not.
func (o *Org) invalid(r *Record, byRID map[int64]*Record, memo map[int64]string) string {
	if v, ok := memo[r.RID]; ok {
		return v
	}
	memo[r.RID] = InvalidParent // a parent cycle ends here, invalid
	obj := o.ix.Objects[r.Object]
	why := ""
	switch {
	case obj == nil:
		why = InvalidObject
	case len(r.Territories) == 1 && r.Territories[0] == "":
		why = InvalidValues
	case o.ix.Users[r.Owner] == nil && (o.ix.Groups[r.Owner] == nil || !o.ix.Groups[r.Owner].Queue):
		why = InvalidOwner
	case (len(r.Territories) > 0 || r.UnknownTerritory) && r.Object != model.Account:
		why = InvalidTerritory
	case r.Unreadable:
		why = InvalidFields
	}
	for _, t := range r.Territories {
		if why == "" && o.ix.Territories[t] == nil {
			why = InvalidTerritory
		}
	}
	if why == "" && r.UnknownTerritory {
		why = InvalidTerritory
	}
	if why == "" && r.Parent != "" {
		p := byRID[r.ParentRID]
		if p == nil || p.Object != obj.Parent || o.invalid(p, byRID, memo) != "" {
			why = InvalidParent
		}
	}
	memo[r.RID] = why
	return why
}

type grant struct {
	grantee string
	level   model.Level
	cause   string
}

func ownerGrantee(owner string, ix *model.Index) string {
	if g := ix.Groups[owner]; g != nil && g.Queue && ix.Users[owner] == nil {
		return "group:" + owner
	}
	return "user:" + owner
}

// explicit returns the explicit grants of section 2 on a record whose object
// is not controlled by parent.
func (c *computation) explicit(r *Record) []grant {
	o := c.Org
	out := []grant{{ownerGrantee(r.Owner, o.ix), model.All, CauseOwner}}
	for _, rule := range c.rulesOf(r) {
		out = append(out, grant{o.targets[rule], rule.Access, CauseRule})
	}
	for _, s := range c.in.Shares[r.RID] {
		out = append(out, grant{s.Grantee.String(), s.Access, s.Cause})
	}
	for _, t := range c.in.Teams[r.RID] {
		out = append(out, grant{"user:" + t.User, t.Access, CauseTeam})
	}
	for _, id := range r.Territories {
		out = append(out, grant{"territory:" + id, o.ix.Territories[id].AccountAccess, CauseTerritory})
	}
	return out
}

// applying returns the rules of r's object that apply to r.
func (o *Org) applying(r *Record) []*model.Rule {
	out := o.ownerRules[r.Object][r.Owner]
	if !o.hasCriteria[r.Object] {
		return out
	}
	crit := r.criteria
	if crit == nil {
		crit = o.matching(r)
	}
	return append(slices.Clip(out), crit...)
}

// matching is the criteria rules of r's object that r's fields match.
func (o *Org) matching(r *Record) []*model.Rule {
	out := []*model.Rule{} // not nil: matched, though maybe by none
	for _, rule := range o.rules[r.Object] {
		if rule.Type == model.CriteriaRule && rule.Criteria.Match(r.Fields) {
			out = append(out, rule)
		}
	}
	return out
}

// MatchCriteria matches r's fields against its object's criteria rules now
// and drops them, so that a loader holds one record's fields at a time, not
// a chunk's.
func (o *Org) MatchCriteria(r *Record) {
	if o.hasCriteria[r.Object] {
		r.criteria = o.matching(r)
	}
	r.Fields = nil
}

// implicitChild adds section 3.1's grants on child c of account a.
func (c *computation) implicitChild(rs *Rows, r, a *Record, bossOK bool) {
	o := c.Org
	add := func(g string, l model.Level) { rs.add(r.RID, g, l, CauseImplicitChild, bossOK) }
	if u := o.ix.Users[a.Owner]; u != nil && u.Role != "" {
		add("user:"+a.Owner, o.ix.Roles[u.Role].Child.For(r.Object))
	}
	for _, rule := range c.rulesOf(a) {
		add(o.targets[rule], rule.Child.For(r.Object))
	}
	for _, t := range c.in.Teams[a.RID] {
		add("user:"+t.User, t.Child.For(r.Object))
	}
	for _, id := range a.Territories {
		add("territory:"+id, o.ix.Territories[id].Child.For(r.Object))
	}
}

// controlledByParent adds the rows of section 3.3: the record's own owner
// grant and those of its controlled-by-parent ancestors. The nearest ancestor
// that is not controlled by parent becomes the access root, whose rows and
// OWD apply at read time.
func (o *Org) controlledByParent(rs *Rows, r *Record, byRID map[int64]*Record) {
	cause := CauseOwner
	p := r
	for p != nil {
		obj := o.ix.Objects[p.Object]
		if !obj.CBP() {
			break
		}
		rs.add(r.RID, ownerGrantee(p.Owner, o.ix), model.All, cause, obj.Hierarchy)
		cause = CauseParentOwner
		if p.ParentRID == 0 {
			p = nil
			break
		}
		p = byRID[p.ParentRID]
	}
	var root int64
	if p != nil {
		root = p.RID
	}
	rs.Records = append(rs.Records, RecordRow{RID: r.RID, ID: r.ID, Object: r.Object, AccessRoot: root, RootID: r.RootID})
}
