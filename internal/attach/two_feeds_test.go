package attach_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestTwoFeeds is a differential test of recalc's two ways of receiving an
// org's data. One random, seeded sequence of steps goes to two databases:
// database A gets everything by `recalc import` (spec/interface.md), and
// database B has its records and users in attached application tables
// (docs/attach.md), written with plain SQL, while the model (objects, roles,
// groups, queues, territories, rules) and the shares and team entries still
// come by import. Steps create, delete and re-parent records, change owners
// (users and queues), criteria fields (numbers spelled differently on each
// side: '1e3', '001', ' 5 ', '-0'; blank, unicode-blank, comma-listed and
// 128 KiB strings; NaN and infinities; booleans spelled 'yes', 'off'),
// territories, users (deactivated, NULL active, role moves, unknown roles
// and types, new users), OWDs, roles, groups and rules, and shares (their
// wipe when an owner changes); record and user ids hold commas, quotes,
// colons, blanks and non-ASCII, and one is empty. After each step both run
// (`recalc run`, `run --full`, or B's `recalc watch` step), or both are
// deferred for a few steps and resumed; the access of both must then equal
// each other and the oracle's for the model the steps describe.
//
// A few seeds always run; TWO_FEEDS_SEEDS=n (TWO_FEEDS_SEED_START=s) runs
// more.
func TestTwoFeeds(t *testing.T) {
	t.Parallel()
	first, n := testkit.Seeds("TWO_FEEDS", 3, 2)
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			steps, _ := strconv.Atoi(os.Getenv("TWO_FEEDS_STEPS"))
			if steps <= 0 {
				steps = 25
			}
			runTwoFeeds(t, seed, steps)
		})
	}
}

// tfVal is one field value: as SQL writes it into the application's
// column, and as a model file writes it (raw JSON).
type tfVal struct{ sql, json string }

// tfUser is a row of the users table.
type tfUser struct {
	id         string
	role, kind *string // nil: NULL
	active     *bool   // nil: NULL
}

// tfRec is a row of an attached table.
type tfRec struct {
	object, id, owner, parent string // parent: the account's id, "" for none
	fields                    map[string]tfVal
	terr                      []string // accounts; nil is NULL
}

func (r *tfRec) key() string { return r.object + ":" + r.id }

type tfShare struct{ object, record, grantee, access, cause string }
type tfTeam struct{ record, user, access, child string }

// tfState is the org both databases must hold.
type tfState struct {
	rng         *rand.Rand
	owd         map[string][2]string
	hierarchy   bool // project__c's
	roles       []model.Role
	groups      []string // JSON entries
	queues      []string // queue ids (fixed)
	territories []string // JSON entries
	terrIDs     []string
	rules       []string // JSON entries
	users       []*tfUser
	recs        map[string]*tfRec // by key
	shares      []tfShare
	teams       []tfTeam
	nextRole    int
	nextRec     int
	nextUser    int
}

// tfObjects are the attached objects: table, parent column, fields.
var tfObjects = []struct {
	object, table, parent string
	fields                []string
}{
	{model.Account, "tf.account", "", []string{"industry", "code", "amount", "score", "vip"}},
	{model.Opportunity, "tf.opportunity", "account_id", []string{"stage", "amount"}},
	{model.Contact, "tf.contact", "account_id", []string{"title"}},
	{"project__c", "tf.project", "", []string{"phase", "budget"}},
}

const tfSchema = `
CREATE SCHEMA tf;
CREATE TABLE tf.usr (id text PRIMARY KEY, role_id text, kind text, active boolean);
CREATE TABLE tf.account (id text PRIMARY KEY, owner_id text, industry text, code text, amount numeric,
    score double precision, vip boolean, territories text[]);
CREATE TABLE tf.opportunity (id text PRIMARY KEY, owner_id text, account_id text, stage text, amount numeric);
CREATE TABLE tf.contact (id text PRIMARY KEY, owner_id text, account_id text, title text);
CREATE TABLE tf.project (id text PRIMARY KEY, owner_id text, phase text, budget numeric);`

const tfSpec = `{"objects": [
  {"object": "account", "table": "tf.account", "id": "id", "owner": "owner_id", "parent": null,
   "fields": ["industry", "code", "amount", "score", "vip"], "territories": "territories"},
  {"object": "opportunity", "table": "tf.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["stage", "amount"]},
  {"object": "contact", "table": "tf.contact", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["title"]},
  {"object": "project__c", "table": "tf.project", "id": "id", "owner": "owner_id", "fields": ["phase", "budget"]}],
 "users": {"table": "tf.usr", "id": "id", "role": "role_id", "type": "kind", "active": "active"}}`

// --- values.

// tfNumbers are numbers, each with spellings of the same double in JSON
// and in SQL (for numeric and double precision columns).
var tfNumbers = []struct{ json, sql []string }{
	{[]string{"1000", "1e3", "1E3", "1000.0", "1.000e+3"}, []string{"1000", "1e3", "'1e3'", "1000.000", "'001000'", "' 1000 '"}},
	{[]string{"5", "5.0", "50e-1"}, []string{"' 5 '", "005", "5.00", "'5e0'"}},
	{[]string{"0", "-0", "0.0", "0e5"}, []string{"0", "-0", "'-0.000'", "0e10"}},
	{[]string{"0.1", "1e-1"}, []string{"0.1", "'.1'", "1e-1"}},
	{[]string{"9007199254740993", "9007199254740992"}, []string{"9007199254740993", "9007199254740992"}},
	{[]string{"2.5"}, []string{"2.50", "'2.5e0'"}},
	{[]string{"-3"}, []string{"-3", "'-003'"}},
	{[]string{"1e-5", "0.00001"}, []string{"0.00001", "1e-5"}},
	{[]string{"123456789.123456789"}, []string{"123456789.123456789"}},
	// Not 1.7976931348623158e308: an import reads it as the largest
	// float64, while an attached row holding it fails closed
	// (TestTypedValuesFieldsAndCriteria, row 18).
	{[]string{"1.7976931348623157e308"}, []string{"1.7976931348623157e308", "'1.7976931348623157E+308'"}},
	{[]string{"0", "1e-400"}, []string{"'1e-400'", "1e-400"}}, // a numeric's underflow (double precision refuses it)
}

// tfStrings are string values; a few are very long.
var tfStrings = []string{"Tech", "tech", "", " ", "\u00a0", "\u3000Tech", "Tech\u00a0", "Tech ", "EMEA,APAC", "APAC",
	"1e3", "001", " 5 ", "5", "ü", "u\u0308", `a"b`, `back\slash`, "tab\tx", "line\nx", "\x01ctl", "NaN", "true",
	"null", "Esc", "Escalated", strings.Repeat("x", 20000), strings.Repeat("y", 128<<10), strings.Repeat("a,", 300)}

func sqlStr(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
func jsonStr(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func (s *tfState) pick(xs ...string) string { return xs[s.rng.IntN(len(xs))] }
func (s *tfState) chance(p float64) bool    { return s.rng.Float64() < p }

var tfNull = tfVal{"NULL", "null"}

// value is a random value for a column of type kind.
func (s *tfState) value(kind string) tfVal {
	if s.chance(0.1) {
		return tfNull
	}
	switch kind {
	case "text":
		v := tfStrings[s.rng.IntN(len(tfStrings))]
		return tfVal{sqlStr(v), jsonStr(v)}
	case "bool":
		if s.chance(0.5) {
			return tfVal{s.pick("true", "'yes'", "'on'", "'1'", "'t'"), "true"}
		}
		return tfVal{s.pick("false", "'no'", "'off'", "'0'", "'f'"), "false"}
	}
	if s.chance(0.08) {
		v := s.pick("NaN", "Infinity", "-Infinity")
		return tfVal{sqlStr(v), jsonStr(v)}
	}
	n := tfNumbers[s.rng.IntN(len(tfNumbers))]
	v := tfVal{s.pick(n.sql...), s.pick(n.json...)}
	if kind == "float" && strings.Contains(v.sql, "e-400") {
		v.sql = "0"
	}
	return v
}

// columnKind is the kind of value a field's column takes.
func columnKind(field string) string {
	switch field {
	case "amount", "budget":
		return "numeric"
	case "score":
		return "float"
	case "vip":
		return "bool"
	}
	return "text"
}

// condValue is a random condition value for field, as JSON, and the ops it takes.
func (s *tfState) condition(field string) string {
	var v string
	ops := []string{"equals", "not_equals", "lt", "le", "gt", "ge"}
	switch k := columnKind(field); {
	case k == "bool" || s.chance(0.1):
		v, ops = s.pick("true", "false"), ops[:2]
	case k == "text" || s.chance(0.1):
		v = jsonStr(s.pick("Tech", "tech", "", " ", "\u00a0", "Tech, tech", "EMEA,APAC", "\u00a0,Tech", " 5 ,1e3", "001",
			"Esc", "u\u0308", "ü", "NaN", "x", "Tech\u00a0", "a,"))
		ops = append(ops, "contains", "not_contains", "starts_with")
	default:
		n := tfNumbers[s.rng.IntN(len(tfNumbers))]
		v = s.pick(n.json...)
	}
	return fmt.Sprintf(`{"field": %s, "op": %q, "value": %s}`, jsonStr(field), s.pick(ops...), v)
}

// --- the model.

var tfOddIDs = []string{"1", "01", "a,b", "x y", "ü", "a:b", "q'uote", `d"q`, " lead", "trail ", "", "UPPER", "account:9", "\u00a0"}

func tfNewState(seed int) *tfState {
	s := &tfState{rng: rand.New(rand.NewPCG(uint64(seed), 0x2feed)), recs: map[string]*tfRec{},
		queues: []string{"q1", "q,2"}, terrIDs: []string{"t1", "t 2"}}
	s.newOWDs()
	s.hierarchy = s.chance(0.5)
	s.roles = []model.Role{{ID: "ceo"}, {ID: "vp", Parent: "ceo"}, {ID: "rôle,x", Parent: "vp"}, {ID: "mgr", Parent: "ceo"}, {ID: "rep", Parent: "mgr"}}
	for i := range s.roles {
		s.roles[i].Child = s.childAccess()
	}
	for i, id := range []string{"u1", "u,2", "ü3", "u 4", "U1", "u:6", `u"7`} {
		role, kind := s.roles[s.rng.IntN(len(s.roles))].ID, "internal"
		if i%4 == 3 {
			kind = "external"
		}
		act := true
		s.users = append(s.users, &tfUser{id: id, role: &role, kind: &kind, active: &act})
	}
	s.newGroups()
	s.newTerritories()
	s.newRules()
	for i := 0; i < 4+s.rng.IntN(4); i++ {
		s.insert(model.Account)
	}
	for i := 0; i < 6+s.rng.IntN(6); i++ {
		s.insert(s.pick(model.Opportunity, model.Contact, "project__c"))
	}
	return s
}

func (s *tfState) childAccess() model.ChildAccess {
	l := func() model.Level { return model.Level(s.rng.IntN(3)) }
	return model.ChildAccess{Opportunity: l(), Case: l(), Contact: l()}
}

func (s *tfState) newOWDs() {
	s.owd = map[string][2]string{}
	open := []string{"private", "public_read_only", "public_read_write"}
	for _, o := range tfObjects {
		i := []int{0, 0, 0, 1, 2}[s.rng.IntN(5)] // mostly private, so that a grant shows
		pair := [2]string{open[i], open[s.rng.IntN(i+1)]}
		if o.parent != "" && s.chance(0.3) {
			pair = [2]string{"controlled_by_parent", "controlled_by_parent"}
		}
		s.owd[o.object] = pair
	}
}

func (s *tfState) cbp(object string) bool { return s.owd[object][0] == "controlled_by_parent" }

func (s *tfState) userIDs() []string {
	var out []string
	for _, u := range s.users {
		out = append(out, u.id)
	}
	return out
}

// grantee is a random grantee; with users false, none naming a user.
func (s *tfState) grantee(users bool) string {
	role := s.roles[s.rng.IntN(len(s.roles))].ID
	switch s.rng.IntN(12) {
	case 0, 6, 7:
		return "role:" + role
	case 1:
		return "role_and_subordinates:" + role
	case 2:
		return "role_and_internal_subordinates:" + role
	case 3:
		if s.chance(0.3) {
			return "all_internal_users"
		}
		return "role:" + role
	case 4:
		return "group:" + s.pick("g1", "g 2")
	}
	if users {
		return "user:" + s.pick(s.userIDs()...)
	}
	return "role:" + role
}

func (s *tfState) newGroups() {
	mem := func(n int, ms ...string) string {
		for i := 0; i < n; i++ {
			g := jsonStr(s.grantee(true))
			if !strings.HasPrefix(g, `"group:`) && !slices.Contains(ms, g) {
				ms = append(ms, g)
			}
		}
		return "[" + strings.Join(ms, ", ") + "]"
	}
	s.groups = []string{
		fmt.Sprintf(`{"id": "g1", "members": %s, "include_bosses": %v}`, mem(2), s.chance(0.5)),
		fmt.Sprintf(`{"id": "g 2", "members": %s, "include_bosses": %v}`, mem(2, `"group:g1"`), s.chance(0.5)),
		fmt.Sprintf(`{"id": "q1", "queue": true, "members": %s}`, mem(1+s.rng.IntN(2))),
		fmt.Sprintf(`{"id": "q,2", "queue": true, "members": %s}`, mem(s.rng.IntN(2))),
	}
}

func (s *tfState) newTerritories() {
	s.territories = nil
	for i, id := range s.terrIDs {
		var us []string
		for _, u := range s.userIDs() {
			if s.chance(0.3) {
				us = append(us, jsonStr(u))
			}
		}
		parent := ""
		if i == 1 && s.chance(0.5) {
			parent = `, "parent": "t1"`
		}
		c := s.childAccess()
		s.territories = append(s.territories, fmt.Sprintf(`{"id": %s%s, "users": [%s], "account_access": %q, "opportunity_access": %q, "case_access": %q, "contact_access": %q}`,
			jsonStr(id), parent, strings.Join(us, ", "), s.pick("read", "edit"), c.Opportunity, c.Case, c.Contact))
	}
}

func (s *tfState) newRules() {
	s.rules = nil
	for _, o := range tfObjects {
		if s.cbp(o.object) {
			continue
		}
		for i, n := 0, s.rng.IntN(4); i < n; i++ {
			child := ""
			if o.object == model.Account {
				c := s.childAccess()
				child = fmt.Sprintf(`, "opportunity_access": %q, "contact_access": %q`, c.Opportunity, c.Contact)
			}
			head := fmt.Sprintf(`{"id": "%s_%d", "object": %q, "target": %s, "access": %q%s`, o.object, i, o.object, jsonStr(s.grantee(true)), s.pick("read", "edit"), child)
			if s.chance(0.3) {
				src := s.grantee(false)
				s.rules = append(s.rules, head+fmt.Sprintf(`, "type": "owner", "source": %s}`, jsonStr(src)))
				continue
			}
			var conds []string
			for j, m := 0, 1+s.rng.IntN(3); j < m; j++ {
				conds = append(conds, s.condition(s.pick(o.fields...)))
			}
			logic := ""
			if len(conds) > 1 && s.chance(0.5) {
				logic = fmt.Sprintf(`, "logic": %q`, s.pick("1 OR 2", "NOT 1 OR 2", "1 and not 2", " "))
			}
			s.rules = append(s.rules, head+fmt.Sprintf(`, "type": "criteria", "criteria": {"conditions": [%s]%s}}`, strings.Join(conds, ", "), logic))
		}
	}
}

// --- records and users.

func (s *tfState) owner() string {
	if s.chance(0.2) {
		return s.pick(s.queues...)
	}
	return s.pick(s.userIDs()...)
}

func (s *tfState) accounts(except string) []string {
	var out []string
	for _, r := range s.recs {
		if r.object == model.Account && r.id != except {
			out = append(out, r.id)
		}
	}
	sort.Strings(out)
	return out
}

func (s *tfState) parentFor(object, except string) string {
	as := s.accounts(except)
	if object == model.Account || object == "project__c" || len(as) == 0 || s.chance(0.1) {
		return ""
	}
	return s.pick(as...)
}

func (s *tfState) terr() []string {
	if s.chance(0.3) {
		return nil
	}
	out := []string{}
	for _, t := range s.terrIDs {
		if s.chance(0.4) {
			out = append(out, t)
		}
	}
	if len(out) > 0 && s.chance(0.2) {
		out = append(out, out[0]) // listed twice
	}
	return out
}

// insert adds a record of object with a fresh id (odd ones first).
func (s *tfState) insert(object string) *tfRec {
	var id string
	for {
		if s.nextRec < len(tfOddIDs) && s.chance(0.6) {
			id = tfOddIDs[s.nextRec]
		} else {
			id = fmt.Sprintf("r%d", s.nextRec)
		}
		s.nextRec++
		if s.recs[object+":"+id] == nil {
			break
		}
	}
	r := &tfRec{object: object, id: id, owner: s.owner(), parent: s.parentFor(object, ""), fields: map[string]tfVal{}}
	for _, o := range tfObjects {
		if o.object == object {
			for _, f := range o.fields {
				r.fields[f] = s.value(columnKind(f))
			}
		}
	}
	if object == model.Account {
		r.terr = s.terr()
	}
	s.recs[r.key()] = r
	return r
}

func tfTable(object string) (table, parent string) {
	for _, o := range tfObjects {
		if o.object == object {
			return o.table, o.parent
		}
	}
	panic(object)
}

// insertSQL is r's row as an INSERT.
func (r *tfRec) insertSQL() string {
	table, pcol := tfTable(r.object)
	cols, vals := []string{"id", "owner_id"}, []string{sqlStr(r.id), sqlStr(r.owner)}
	if pcol != "" {
		cols = append(cols, pcol)
		vals = append(vals, nullable(r.parent))
	}
	for _, f := range mapsKeys(r.fields) {
		cols, vals = append(cols, f), append(vals, r.fields[f].sql)
	}
	if r.object == model.Account {
		cols, vals = append(cols, "territories"), append(vals, terrSQL(r.terr))
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", table, strings.Join(cols, ", "), strings.Join(vals, ", "))
}

// mapsKeys are m's keys, sorted.
func mapsKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func nullable(s string) string {
	if s == "" {
		return "NULL"
	}
	return sqlStr(s)
}

func terrSQL(ts []string) string {
	if ts == nil {
		return "NULL"
	}
	var qs []string
	for _, t := range ts {
		qs = append(qs, sqlStr(t))
	}
	return "ARRAY[" + strings.Join(qs, ", ") + "]::text[]"
}

// entry is r as a model file's record.
func (r *tfRec) entry() string {
	var fs []string
	for _, f := range mapsKeys(r.fields) {
		fs = append(fs, jsonStr(f)+": "+r.fields[f].json)
	}
	e := fmt.Sprintf(`{"object": %q, "id": %s, "owner": %s, "fields": {%s}`, r.object, jsonStr(r.key()), jsonStr(r.owner), strings.Join(fs, ", "))
	if r.parent != "" {
		e += `, "parent": ` + jsonStr(model.Account+":"+r.parent)
	}
	if len(r.terr) > 0 {
		var ts []string
		for _, t := range r.terr {
			ts = append(ts, jsonStr(t))
		}
		e += `, "territories": [` + strings.Join(ts, ", ") + "]"
	}
	return e + "}"
}

// userEntry is u as the model's user, by docs/attach.md's rules.
func (s *tfState) userEntry(u *tfUser) string {
	roles := map[string]bool{}
	for _, r := range s.roles {
		roles[r.ID] = true
	}
	role, kind := "", ""
	if u.role != nil {
		role = *u.role
	}
	if u.kind != nil {
		kind = *u.kind
	}
	if u.active == nil || (role != "" && !roles[role]) || (kind != "" && kind != "internal" && kind != "external") {
		// Inactive with no role; an external row stays external (the
		// docs say only "inactive, no role"; model.AttachedUsers keeps
		// the type, which decides whether the user's records match an
		// owner rule whose source is all_internal_users).
		if kind == "external" {
			return fmt.Sprintf(`{"id": %s, "type": "external", "active": false}`, jsonStr(u.id))
		}
		return fmt.Sprintf(`{"id": %s, "active": false}`, jsonStr(u.id))
	}
	e := `{"id": ` + jsonStr(u.id)
	if role != "" {
		e += `, "role": ` + jsonStr(role)
	}
	if kind == "external" {
		e += `, "type": "external"`
	}
	return e + fmt.Sprintf(`, "active": %v}`, *u.active)
}

func (u *tfUser) insertSQL() string {
	b := "NULL"
	if u.active != nil {
		b = strconv.FormatBool(*u.active)
	}
	return fmt.Sprintf("INSERT INTO tf.usr VALUES (%s, %s, %s, %s)", sqlStr(u.id), ptrSQL(u.role), ptrSQL(u.kind), b)
}

func ptrSQL(p *string) string {
	if p == nil {
		return "NULL"
	}
	return sqlStr(*p)
}

// --- files.

// section renders sections of the state as a model file.
func (s *tfState) file(sections ...string) string {
	var parts []string
	for _, sec := range sections {
		var es []string
		switch sec {
		case "objects":
			for _, o := range tfObjects {
				w := s.owd[o.object]
				e := fmt.Sprintf(`{"name": %q, "internal_owd": %q, "external_owd": %q`, o.object, w[0], w[1])
				if o.parent != "" {
					e += `, "parent": "account"`
				}
				if o.object == "project__c" {
					e += fmt.Sprintf(`, "hierarchy": %v`, s.hierarchy)
				}
				es = append(es, e+"}")
			}
		case "roles":
			for _, r := range s.roles {
				e := `{"id": ` + jsonStr(r.ID)
				if r.Parent != "" {
					e += `, "parent": ` + jsonStr(r.Parent)
				}
				es = append(es, e+fmt.Sprintf(`, "opportunity_access": %q, "case_access": %q, "contact_access": %q}`, r.Child.Opportunity, r.Child.Case, r.Child.Contact))
			}
		case "users":
			for _, u := range s.users {
				es = append(es, s.userEntry(u))
			}
		case "groups":
			es = s.groups
		case "territories":
			es = s.territories
		case "rules":
			es = s.rules
		case "records":
			for _, k := range mapsKeys(s.recs) {
				es = append(es, s.recs[k].entry())
			}
		case "shares":
			for _, sh := range s.shares {
				es = append(es, fmt.Sprintf(`{"object": %q, "record": %s, "grantee": %s, "access": %q, "cause": %q}`, sh.object, jsonStr(sh.record), jsonStr(sh.grantee), sh.access, sh.cause))
			}
		case "teams":
			for _, tm := range s.teams {
				es = append(es, fmt.Sprintf(`{"record": %s, "user": %s, "access": %q%s}`, jsonStr(tm.record), jsonStr(tm.user), tm.access, tm.child))
			}
		}
		parts = append(parts, fmt.Sprintf("%q: [%s]", sec, strings.Join(es, ",\n  ")))
	}
	return "{" + strings.Join(parts, ",\n") + "}"
}

var tfConfigSections = []string{"objects", "roles", "groups", "territories", "rules"}
var tfAll = []string{"objects", "roles", "users", "groups", "territories", "rules", "records", "shares", "teams"}

// --- steps.

// tfStep is one step: a transaction of the application (B) and the import
// that says the same (A), or one import for both; then how both recalculate.
type tfStep struct {
	kind         string
	desc         []string
	sql          []string // B's transaction, for a data step
	fileA, fileB string   // the imports ("" none)
	run          string   // run, full, fullA, fullB, watch
}

func (st *tfStep) say(f string, a ...any) { st.desc = append(st.desc, fmt.Sprintf(f, a...)) }

// next makes a random step, and changes the state as it says.
func (s *tfState) next() *tfStep {
	var st *tfStep
	switch k := s.rng.IntN(10); {
	case k < 6:
		st = s.dataStep()
	case k < 8:
		st = s.shareStep()
	default:
		st = s.configStep()
	}
	st.run = s.pick("run", "run", "run", "run", "full", "fullA", "fullB", "watch", "watch")
	return st
}

func (s *tfState) keys(ok func(r *tfRec) bool) []string {
	var out []string
	for _, k := range mapsKeys(s.recs) {
		if ok(s.recs[k]) {
			out = append(out, k)
		}
	}
	return out
}

// dataStep is one transaction of the application: records and users.
func (s *tfState) dataStep() *tfStep {
	st := &tfStep{kind: "data"}
	touched, reowned := map[string]bool{}, map[string]bool{}
	users := false
	for i, n := 0, 1+s.rng.IntN(3); i < n; i++ {
		users = s.dataOp(st, touched, reowned) || users
	}
	// A lists the shares still, those of re-owned records included: the
	// owner change wipes those (spec section 5).
	s.dropShares(func(sh tfShare) bool { return s.recs[sh.record] == nil })
	s.teams = slices.DeleteFunc(s.teams, func(tm tfTeam) bool { return s.recs[tm.record] == nil })
	secs := []string{"records", "shares", "teams"}
	if users {
		secs = append(secs, "users")
	}
	st.fileA = s.file(secs...)
	s.dropShares(func(sh tfShare) bool { return reowned[sh.record] && sh.cause == model.CauseManual })
	return st
}

func (s *tfState) dropShares(drop func(tfShare) bool) {
	s.shares = slices.DeleteFunc(s.shares, drop)
}

// dataOp is one statement of a data step; it reports whether it changed
// a user.
func (s *tfState) dataOp(st *tfStep, touched, reowned map[string]bool) bool {
	free := s.keys(func(r *tfRec) bool { return !touched[r.key()] })
	switch k := s.rng.IntN(13); {
	case k >= 11:
		k = 3 // owner changes, twice as often
		fallthrough
	case k == 3:
		return s.ownerOp(st, free, touched, reowned)
	case k == 9:
		return s.rekeyOp(st, free, touched)
	case k == 10:
		// An account and its child in one transaction, the child's row first.
		a := s.insert(model.Account)
		c := s.insert(s.pick(model.Opportunity, model.Contact))
		c.parent = a.id
		touched[a.key()], touched[c.key()] = true, true
		st.sql = append(st.sql, c.insertSQL(), a.insertSQL())
		st.say("insert %s, then its account %s", c.key(), a.key())
	case k < 2 || len(free) == 0:
		r := s.insert(s.pick(model.Account, model.Opportunity, model.Contact, "project__c"))
		touched[r.key()] = true
		st.sql = append(st.sql, r.insertSQL())
		st.say("insert %s owner %q parent %q", r.key(), r.owner, r.parent)
	case k < 3:
		s.deleteRecord(st, s.recs[s.pick(free...)], touched)
	case k < 5:
		kids := s.keys(func(r *tfRec) bool { return r.object == model.Opportunity || r.object == model.Contact })
		if len(kids) == 0 {
			return false
		}
		r := s.recs[s.pick(kids...)]
		r.parent = s.parentFor(r.object, "")
		table, pcol := tfTable(r.object)
		st.sql = append(st.sql, fmt.Sprintf("UPDATE %s SET %s = %s WHERE id = %s", table, pcol, nullable(r.parent), sqlStr(r.id)))
		st.say("parent of %s to %q", r.key(), r.parent)
	case k < 7:
		r := s.recs[s.pick(free...)]
		table, _ := tfTable(r.object)
		f := s.pick(mapsKeys(r.fields)...)
		r.fields[f] = s.value(columnKind(f))
		if r.object == model.Account && s.chance(0.3) {
			r.terr = s.terr()
			st.sql = append(st.sql, fmt.Sprintf("UPDATE %s SET territories = %s WHERE id = %s", table, terrSQL(r.terr), sqlStr(r.id)))
		}
		st.sql = append(st.sql, fmt.Sprintf("UPDATE %s SET %s = %s WHERE id = %s", table, f, r.fields[f].sql, sqlStr(r.id)))
		st.say("%s.%s = %.60s (A: %.60s) territories %q", r.key(), f, r.fields[f].sql, r.fields[f].json, r.terr)
	default:
		return s.userOp(st)
	}
	return false
}

// ownerOp gives a record another owner.
func (s *tfState) ownerOp(st *tfStep, free []string, touched, reowned map[string]bool) bool {
	// Mostly a record with a share, so that the wipe shows.
	shared := slices.DeleteFunc(slices.Clone(free), func(k string) bool {
		return !slices.ContainsFunc(s.shares, func(sh tfShare) bool { return sh.record == k })
	})
	if len(shared) == 0 || s.chance(0.3) {
		shared = free
	}
	if len(shared) == 0 {
		return false
	}
	r := s.recs[s.pick(shared...)]
	owner := s.owner()
	if owner == r.owner {
		return false
	}
	r.owner = owner
	touched[r.key()], reowned[r.key()] = true, true
	table, _ := tfTable(r.object)
	st.sql = append(st.sql, fmt.Sprintf("UPDATE %s SET owner_id = %s WHERE id = %s", table, sqlStr(owner), sqlStr(r.id)))
	st.say("owner of %s to %q", r.key(), owner)
	return false
}

// rekeyOp changes the id of a record no other record names.
func (s *tfState) rekeyOp(st *tfStep, free []string, touched map[string]bool) bool {
	cands := slices.DeleteFunc(slices.Clone(free), func(k string) bool {
		r := s.recs[k]
		return r.object == model.Account && len(s.keys(func(c *tfRec) bool { return c.parent != "" && c.parent == r.id })) > 0
	})
	if len(cands) == 0 {
		return false
	}
	r := s.recs[s.pick(cands...)]
	old := r.key()
	table, _ := tfTable(r.object)
	delete(s.recs, old)
	s.nextRec++
	oldID := r.id
	r.id = fmt.Sprintf("re,%d", s.nextRec)
	s.recs[r.key()] = r
	touched[old], touched[r.key()] = true, true
	st.sql = append(st.sql, fmt.Sprintf("UPDATE %s SET id = %s WHERE id = %s", table, sqlStr(r.id), sqlStr(oldID)))
	st.say("id of %s to %s", old, r.key())
	return false
}

// deleteRecord deletes r; an account's children move to another account
// or to none (or go too) in the same transaction.
func (s *tfState) deleteRecord(st *tfStep, r *tfRec, touched map[string]bool) {
	if r.object == model.Account {
		for _, k := range s.keys(func(c *tfRec) bool { return c.parent != "" && c.parent == r.id }) {
			c := s.recs[k]
			table, pcol := tfTable(c.object)
			if s.chance(0.3) && !touched[k] {
				s.deleteRecord(st, c, touched)
				continue
			}
			c.parent = s.parentFor(c.object, r.id)
			st.sql = append(st.sql, fmt.Sprintf("UPDATE %s SET %s = %s WHERE id = %s", table, pcol, nullable(c.parent), sqlStr(c.id)))
			st.say("parent of %s to %q", k, c.parent)
		}
	}
	table, _ := tfTable(r.object)
	delete(s.recs, r.key())
	touched[r.key()] = true
	st.sql = append(st.sql, fmt.Sprintf("DELETE FROM %s WHERE id = %s", table, sqlStr(r.id)))
	st.say("delete %s", r.key())
}

// userOp changes one row of the users table, or adds one.
func (s *tfState) userOp(st *tfStep) bool {
	u := s.users[s.rng.IntN(len(s.users))]
	str := func(v string) *string { return &v }
	switch s.rng.IntN(6) {
	case 0:
		var a *bool
		if s.chance(0.6) {
			a = new(bool)
		}
		u.active = a
		st.sql = append(st.sql, fmt.Sprintf("UPDATE tf.usr SET active = %s WHERE id = %s", map[bool]string{true: "NULL", false: "false"}[a == nil], sqlStr(u.id)))
	case 1:
		u.active = new(bool)
		*u.active = true
		st.sql = append(st.sql, "UPDATE tf.usr SET active = true WHERE id = "+sqlStr(u.id))
	case 2:
		switch k := s.rng.IntN(10); {
		case k == 0:
			u.role = nil
		case k == 1:
			u.role = str("")
		case k == 2:
			u.role = str("rx")
		default:
			u.role = str(s.roles[s.rng.IntN(len(s.roles))].ID)
		}
		st.sql = append(st.sql, fmt.Sprintf("UPDATE tf.usr SET role_id = %s WHERE id = %s", ptrSQL(u.role), sqlStr(u.id)))
	case 3:
		switch k := s.rng.IntN(6); {
		case k == 0:
			u.kind = nil
		default:
			u.kind = str(s.pick("", "internal", "external", "external", "External"))
		}
		st.sql = append(st.sql, fmt.Sprintf("UPDATE tf.usr SET kind = %s WHERE id = %s", ptrSQL(u.kind), sqlStr(u.id)))
	case 4:
		if s.chance(0.3) && !s.named(u.id) {
			// A user nothing names goes: the import's users section lacks it.
			s.users = slices.DeleteFunc(s.users, func(o *tfUser) bool { return o == u })
			st.sql = append(st.sql, "DELETE FROM tf.usr WHERE id = "+sqlStr(u.id))
			st.say("user %q deleted", u.id)
			return true
		}
		if s.chance(0.3) {
			// A row holding a queue's id is no user (docs/attach.md).
			s.nextUser++
			st.sql = append(st.sql, fmt.Sprintf("INSERT INTO tf.usr VALUES (%s, NULL, NULL, true) ON CONFLICT (id) DO UPDATE SET role_id = %s",
				sqlStr(s.pick(s.queues...)), sqlStr(s.roles[0].ID)))
			st.say("a users row holds a queue's id")
			return false
		}
		fallthrough
	default:
		s.nextUser++
		act := s.chance(0.8)
		u = &tfUser{id: fmt.Sprintf("%s%d", s.pick("nu", "nü", "n,u", "n u"), s.nextUser), role: str(s.roles[s.rng.IntN(len(s.roles))].ID), active: &act}
		s.users = append(s.users, u)
		st.sql = append(st.sql, u.insertSQL())
	}
	st.say("user %q: role %v kind %v active %v", u.id, derefStr(u.role), derefStr(u.kind), u.active != nil && *u.active)
	return true
}

// named reports whether anything names user id: a record's owner, a
// share, a team entry, a group, territory or rule.
func (s *tfState) named(id string) bool {
	for _, r := range s.recs {
		if r.owner == id {
			return true
		}
	}
	for _, e := range slices.Concat(s.groups, s.territories, s.rules) {
		if strings.Contains(e, jsonStr("user:"+id)) || strings.Contains(e, jsonStr(id)) {
			return true
		}
	}
	return slices.ContainsFunc(s.shares, func(sh tfShare) bool { return sh.grantee == "user:"+id }) ||
		slices.ContainsFunc(s.teams, func(tm tfTeam) bool { return tm.user == id })
}

func derefStr(p *string) string {
	if p == nil {
		return "NULL"
	}
	return strconv.Quote(*p)
}

// shareStep changes shares and team entries, by import on both sides.
func (s *tfState) shareStep() *tfStep {
	st := &tfStep{kind: "shares"}
	open := s.keys(func(r *tfRec) bool { return !s.cbp(r.object) })
	for i, n := 0, 1+s.rng.IntN(3); i < n && len(open) > 0; i++ {
		switch k := s.rng.IntN(6); {
		case k < 3:
			r := s.recs[s.pick(open...)]
			cause := model.CauseManual
			if r.object == "project__c" && s.chance(0.5) {
				cause = "apex:sync"
			}
			sh := tfShare{object: r.object, record: r.key(), grantee: s.grantee(true), access: s.pick("read", "edit"), cause: cause}
			if slices.ContainsFunc(s.shares, func(o tfShare) bool { return o.record == sh.record && o.grantee == sh.grantee && o.cause == sh.cause }) {
				continue
			}
			s.shares = append(s.shares, sh)
			st.say("share %s with %s (%s, %s)", sh.record, sh.grantee, sh.access, sh.cause)
		case k < 4 && len(s.shares) > 0:
			i := s.rng.IntN(len(s.shares))
			st.say("unshare %v", s.shares[i])
			s.shares = slices.Delete(s.shares, i, i+1)
		case k < 5:
			teamable := s.keys(func(r *tfRec) bool {
				return (r.object == model.Account || r.object == model.Opportunity) && !s.cbp(r.object)
			})
			if len(teamable) == 0 {
				continue
			}
			tm := tfTeam{record: s.pick(teamable...), user: s.pick(s.userIDs()...), access: s.pick("read", "edit")}
			if strings.HasPrefix(tm.record, "account:") {
				c := s.childAccess()
				tm.child = fmt.Sprintf(`, "opportunity_access": %q, "contact_access": %q, "case_access": %q`, c.Opportunity, c.Contact, c.Case)
			}
			if slices.ContainsFunc(s.teams, func(o tfTeam) bool { return o.record == tm.record && o.user == tm.user }) {
				continue
			}
			s.teams = append(s.teams, tm)
			st.say("team %s + %q (%s%s)", tm.record, tm.user, tm.access, tm.child)
		case len(s.teams) > 0:
			i := s.rng.IntN(len(s.teams))
			st.say("team entry off %v", s.teams[i])
			s.teams = slices.Delete(s.teams, i, i+1)
		}
	}
	st.fileA = s.file("shares", "teams")
	st.fileB = st.fileA
	return st
}

// configStep changes the model: OWDs, roles, groups, territories, rules.
func (s *tfState) configStep() *tfStep {
	st := &tfStep{kind: "config"}
	secs := []string{}
	switch s.rng.IntN(7) {
	case 0:
		s.newOWDs()
		s.hierarchy = s.chance(0.5)
		s.rules = slices.DeleteFunc(s.rules, func(r string) bool {
			for _, o := range tfObjects {
				if s.cbp(o.object) && strings.Contains(r, fmt.Sprintf(`"object": %q`, o.object)) {
					return true
				}
			}
			return false
		})
		s.dropShares(func(sh tfShare) bool { return s.cbp(sh.object) })
		s.teams = slices.DeleteFunc(s.teams, func(tm tfTeam) bool { return s.cbp(s.recs[tm.record].object) })
		secs = append(secs, "objects", "rules", "shares", "teams")
		st.say("OWDs %v, project__c hierarchy %v", s.owd, s.hierarchy)
	case 1:
		i := s.rng.IntN(len(s.roles))
		under := map[string]bool{s.roles[i].ID: true}
		for changed := true; changed; {
			changed = false
			for _, r := range s.roles {
				if under[r.Parent] && !under[r.ID] {
					under[r.ID], changed = true, true
				}
			}
		}
		var ps []string
		for _, r := range s.roles {
			if !under[r.ID] {
				ps = append(ps, r.ID)
			}
		}
		s.roles[i].Parent = ""
		if len(ps) > 0 && s.chance(0.8) {
			s.roles[i].Parent = s.pick(ps...)
		}
		secs = append(secs, "roles")
		st.say("role %q moves under %q", s.roles[i].ID, s.roles[i].Parent)
	case 2:
		s.nextRole++
		r := model.Role{ID: fmt.Sprintf("new role %d", s.nextRole), Parent: s.roles[s.rng.IntN(len(s.roles))].ID, Child: s.childAccess()}
		s.roles = append(s.roles, r)
		for i := range s.roles {
			if s.chance(0.3) {
				s.roles[i].Child = s.childAccess()
			}
		}
		secs = append(secs, "roles")
		st.say("role %q added under %q; child access changed", r.ID, r.Parent)
	case 3:
		s.newGroups()
		secs = append(secs, "groups")
		st.say("groups %v", s.groups)
	case 4:
		s.newTerritories()
		secs = append(secs, "territories")
		st.say("territories %v", s.territories)
	default:
		s.newRules()
		secs = append(secs, "rules")
		st.say("rules %v", s.rules)
	}
	st.fileA = s.file(secs...)
	st.fileB = st.fileA
	return st
}

// --- running.

// tfRun holds the two databases of a seed.
type tfRun struct {
	t    *testing.T
	ctx  context.Context
	a    *pgxpool.Pool // by import only
	b    *bundle       // records and users attached
	live *engine.Live  // B's `recalc watch`
	log  []string      // the steps so far
}

func runTwoFeeds(t *testing.T, seed, steps int) {
	ctx := context.Background()
	s := tfNewState(seed)
	r := &tfRun{t: t, ctx: ctx, a: testdb.Migrated(t), b: setup(t),
		live: engine.NewLive(engine.Options{Trigger: "watch", Workers: 2, ChunkSize: 5}, []int{1000, 3, 1}[seed%3])}
	r.setupA(s)
	r.setupB(s)
	if !r.check(s, "setup") {
		return
	}
	deferred := 0
	for i := 0; i < steps; i++ {
		if deferred == 0 && s.chance(0.1) {
			sides := [][]string{{store.SideClosure, store.SideRules}, {store.SideRules}, {store.SideClosure}}[s.rng.IntN(3)]
			deferred = 1 + s.rng.IntN(3)
			r.deferBoth(sides)
			r.log = append(r.log, fmt.Sprintf("defer %v", sides))
		}
		st := s.next()
		r.log = append(r.log, fmt.Sprintf("#%d %s (%s): %s", i, st.kind, st.run, strings.Join(st.desc, "; ")))
		if !r.apply(s, st) {
			return
		}
		if deferred > 0 {
			if deferred--; deferred > 0 {
				continue
			}
			r.resumeBoth()
			r.log = append(r.log, "resume")
		}
		if !r.check(s, fmt.Sprintf("step %d", i)) {
			return
		}
	}
}

func (r *tfRun) importTo(pool *pgxpool.Pool, side, file string) bool {
	if _, err := testkit.ImportString(r.ctx, pool, file); err != nil {
		r.t.Errorf("import into %s: %v\n%s\nfile: %.3000s", side, err, strings.Join(r.log, "\n"), file)
		return false
	}
	return true
}

func (r *tfRun) setupA(s *tfState) {
	if !r.importTo(r.a, "A", s.file(tfAll...)) {
		r.t.FailNow()
	}
	if _, err := engine.Run(r.ctx, r.a, engine.Options{}, zerolog.Nop()); err != nil {
		r.t.Fatal(err)
	}
}

// setupB creates the tables and rows, imports the model (its users too,
// before they are attached), attaches, imports shares and teams, and runs.
func (r *tfRun) setupB(s *tfState) {
	t, b := r.t, r.b
	b.exec(t, b.admin, `GRANT CREATE ON DATABASE `+ident(dbName(t, b.url))+` TO `+ident(b.appRole))
	b.exec(t, b.app, tfSchema, `GRANT USAGE ON SCHEMA tf TO `+ident(b.engineRole),
		`GRANT SELECT, TRIGGER ON ALL TABLES IN SCHEMA tf TO `+ident(b.engineRole))
	// The rows in one round trip (one transaction: nothing is attached yet).
	var rows []string
	for _, u := range s.users {
		rows = append(rows, u.insertSQL())
	}
	for _, k := range mapsKeys(s.recs) {
		rows = append(rows, s.recs[k].insertSQL())
	}
	b.exec(t, b.app, strings.Join(rows, ";\n"))
	cfg := strings.TrimSuffix(s.file(append(slices.Clone(tfConfigSections), "users")...), "}") + `, "records": [], "shares": [], "teams": []}`
	if !r.importTo(b.engine, "B", cfg) {
		t.FailNow()
	}
	b.mustAttach(t, tfSpec)
	if !r.importTo(b.engine, "B", s.file("shares", "teams")) {
		t.FailNow()
	}
	b.run(t)
}

// apply applies st to both databases and recalculates as it says.
func (r *tfRun) apply(s *tfState, st *tfStep) bool {
	if st.sql != nil {
		err := pgx.BeginFunc(r.ctx, r.b.app, func(tx pgx.Tx) error {
			for _, q := range st.sql {
				if _, err := tx.Exec(r.ctx, q); err != nil {
					return fmt.Errorf("%.300s: %w", q, err)
				}
			}
			return nil
		})
		if err != nil {
			r.t.Errorf("B's transaction: %v\n%s", err, strings.Join(r.log, "\n"))
			return false
		}
	}
	if st.fileB != "" && !r.importTo(r.b.engine, "B", st.fileB) {
		return false
	}
	if st.fileA != "" && !r.importTo(r.a, "A", st.fileA) {
		return false
	}
	full := map[string][2]bool{"full": {true, true}, "fullA": {true, false}, "fullB": {false, true}}[st.run]
	for i, pool := range []*pgxpool.Pool{r.a, r.b.engine} {
		var err error
		switch {
		case i == 1 && st.run == "watch":
			_, err = r.live.Step(r.ctx, pool, zerolog.Nop())
		case full[i]:
			_, err = engine.Full(r.ctx, pool, engine.Options{Workers: 2}, zerolog.Nop())
		default:
			_, err = engine.Run(r.ctx, pool, engine.Options{Workers: 2, ChunkSize: 3}, zerolog.Nop())
		}
		if err != nil {
			r.t.Errorf("%s of %s: %v\n%s", st.run, "AB"[i:i+1], err, strings.Join(r.log, "\n"))
			return false
		}
	}
	return true
}

func (r *tfRun) deferBoth(sides []string) {
	for _, pool := range []*pgxpool.Pool{r.a, r.b.engine} {
		if err := store.Defer(r.ctx, pool, sides); err != nil {
			r.t.Fatal(err)
		}
	}
}

func (r *tfRun) resumeBoth() {
	for _, pool := range []*pgxpool.Pool{r.a, r.b.engine} {
		if err := store.Undefer(r.ctx, pool, []string{store.SideClosure, store.SideRules}); err != nil {
			r.t.Fatal(err)
		}
		if _, err := engine.Run(r.ctx, pool, engine.Options{Workers: 2}, zerolog.Nop()); err != nil {
			r.t.Fatal(err)
		}
	}
}

// check holds A's access, B's and the oracle's for the state to each other.
func (r *tfRun) check(s *tfState, after string) bool {
	m, _, err := model.Parse(strings.NewReader(s.file(tfAll...)))
	if err != nil {
		r.t.Fatalf("%s: the state's model is invalid (a bug of the test): %v", after, err)
	}
	want := oracle.CSV(oracle.Access(m))
	gotA, gotB := testkit.AccessCSV(r.t, r.ctx, r.a), testkit.AccessCSV(r.t, r.ctx, r.b.engine)
	if gotA == want && gotB == want {
		return true
	}
	r.t.Errorf("after %s: access differs (A by import %v, B attached %v)\nsteps:\n%s\noracle (<) vs A (>):\n%s\noracle (<) vs B (>):\n%s\nA (<) vs B (>):\n%s",
		after, gotA == want, gotB == want, strings.Join(r.log, "\n"), oracle.Diff(want, gotA), oracle.Diff(want, gotB), oracle.Diff(gotA, gotB))
	return false
}

// float64Midpoint is 2^1024 - 2^970: the least decimal that rounds past
// float64's range.
const float64Midpoint = "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792"

// TestTwoFeedsNumberNearFloat64Max: a number that rounds to the largest
// float64 is that double whichever way it comes. A model file's
// 1.7976931348623158e308 is read as 1.7976931348623157e308 and the record
// is valid; the same number in an attached numeric column failed closed
// (no access, its owner's included) while it was checked as written against
// 1.7976931348623157e308 (migration 070). From 2^1024 - 2^970 on, the
// number overflows: an import refuses it, and an attached row fails closed.
func TestTwoFeedsNumberNearFloat64Max(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := tfNewState(1)
	s.recs, s.shares, s.teams = map[string]*tfRec{}, nil, nil
	s.owd["project__c"] = [2]string{"private", "private"}
	s.rules = []string{`{"id": "big", "object": "project__c", "type": "criteria", "target": "role:rep", "access": "read",
		"criteria": {"conditions": [{"field": "budget", "op": "ge", "value": 1e308}]}}`}
	below := float64Midpoint[:len(float64Midpoint)-1] + "1"
	for i, v := range []tfVal{
		{"1.7976931348623157e308", "1.7976931348623157e308"},
		{"1.7976931348623158e308", "1.7976931348623158e308"},
		{below, below},
		{"'" + below + ".999'", "1.7976931348623157e308"},
		{"-1.7976931348623158e308", "-1.7976931348623158e308"},
	} {
		r := &tfRec{object: "project__c", id: fmt.Sprint("p", i), owner: "u1", fields: map[string]tfVal{"budget": v, "phase": tfNull}}
		s.recs[r.key()] = r
	}
	r := &tfRun{t: t, ctx: ctx, a: testdb.Migrated(t), b: setup(t)}
	r.setupA(s)
	r.setupB(s)
	if !r.check(s, "setup") {
		return
	}
	// At the midpoint, both refuse the number: the import, and the
	// attached row fails closed.
	file := strings.Replace(s.file("records"), `"budget": -1.7976931348623158e308`, `"budget": -`+float64Midpoint, 1)
	if _, err := testkit.ImportString(ctx, r.a, file); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("import of -(2^1024 - 2^970): %v, want out of range", err)
	}
	r.b.exec(t, r.b.app, `UPDATE tf.project SET budget = -`+float64Midpoint+` WHERE id = 'p4'`)
	r.b.run(t)
	var reason string
	if err := r.b.engine.QueryRow(ctx, `SELECT coalesce((SELECT reason FROM recalc.invalid_record WHERE record = 'project__c:p4'), 'valid')`).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reason, "out of bounds") {
		t.Errorf("attached row at -(2^1024 - 2^970): %q, want out of bounds", reason)
	}
}
