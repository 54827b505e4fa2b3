package model_test

// Spec-derived validity cases: every rule of the sharing-model contract
// (sharing-model.md and interface.md, restated in docs/semantics.md and
// docs/model.md) that makes a model invalid, each with a minimal model that
// breaks it and a near miss that the contract allows. The cases were written
// from the contract, not from the code; each names the sentence it comes from.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
)

// secretValue is a record field value. No error may echo it.
const secretValue = "SECRET_FIELD_VALUE_7f3a"

// specBase is a valid model exercising every section, as lists of entries.
var specBase = map[string][]string{
	"objects": {
		`{"name":"account","internal_owd":"private","external_owd":"private"}`,
		`{"name":"contact","parent":"account","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`,
		`{"name":"opportunity","parent":"account","internal_owd":"private"}`,
		`{"name":"case","parent":"account","internal_owd":"public_read_only"}`,
		`{"name":"lead","internal_owd":"private"}`,
		`{"name":"proj__c","internal_owd":"private","hierarchy":false}`,
		`{"name":"task__c","parent":"proj__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`,
	},
	"roles": {`{"id":"ceo"}`, `{"id":"vp","parent":"ceo","case_access":"edit"}`},
	"users": {`{"id":"u1","role":"vp"}`, `{"id":"u2","type":"external"}`, `{"id":"u3","active":false}`},
	"groups": {
		`{"id":"g1","members":["user:u1","role:ceo"]}`,
		`{"id":"q1","queue":true,"members":["user:u1"]}`,
	},
	"territories": {`{"id":"t1","users":["u1"]}`, `{"id":"t2","parent":"t1","account_access":"edit"}`},
	"records": {
		`{"object":"account","id":"a1","owner":"u1","territories":["t1"],"fields":{"industry":"` + secretValue + `","n":1,"b":true,"z":null}}`,
		`{"object":"contact","id":"c1","owner":"u2","parent":"a1","fields":{"name":"` + secretValue + `"}}`,
		`{"object":"opportunity","id":"o1","owner":"q1","parent":"a1","fields":{"stage":"` + secretValue + `"}}`,
		`{"object":"case","id":"s1","owner":"u1","parent":"a1"}`,
		`{"object":"lead","id":"l1","owner":"u1","fields":{"src":"` + secretValue + `"}}`,
		`{"object":"proj__c","id":"p1","owner":"u3","fields":{"code":"` + secretValue + `"}}`,
		`{"object":"task__c","id":"k1","owner":"u1","parent":"p1"}`,
	},
	"rules": {
		`{"id":"r1","object":"account","type":"owner","source":"role_and_subordinates:ceo","target":"group:g1","access":"read","case_access":"edit"}`,
		`{"id":"r2","object":"opportunity","type":"criteria","target":"all_internal_users","access":"edit","criteria":{"conditions":[{"field":"stage","op":"equals","value":"Won,Lost"},{"field":"amount","op":"ge","value":10}],"logic":"1 OR 2"}}`,
	},
	"shares": {
		`{"object":"account","record":"a1","grantee":"user:u2","access":"read","cause":"manual"}`,
		`{"object":"proj__c","record":"p1","grantee":"group:g1","access":"edit","cause":"apex:sync_1"}`,
	},
	"teams": {
		`{"record":"a1","user":"u2","access":"edit","contact_access":"read"}`,
		`{"record":"o1","user":"u1","access":"read"}`,
	},
}

var specSections = []string{"objects", "roles", "users", "groups", "territories", "records", "rules", "shares", "teams"}

// specDoc is a model file being built from specBase. pos is where the
// entry last added or swapped in sits, as "section[index]": an error may
// name the offending entry by that position instead of by its id.
type specDoc struct {
	secs map[string][]string
	pos  string
}

func sdoc() *specDoc {
	d := &specDoc{secs: map[string][]string{}}
	for k, v := range specBase {
		d.secs[k] = append([]string(nil), v...)
	}
	return d
}

// add appends entries to a section.
func (d *specDoc) add(sec string, entries ...string) *specDoc {
	d.pos = fmt.Sprintf("%s[%d]", sec, len(d.secs[sec]))
	d.secs[sec] = append(d.secs[sec], entries...)
	return d
}

// swap replaces the one entry of sec that contains key (such as
// `"id":"r2"`) by entry, or drops it when entry is "".
func (d *specDoc) swap(sec, key, entry string) *specDoc {
	n := -1
	for i, e := range d.secs[sec] {
		if strings.Contains(e, key) {
			if n >= 0 {
				panic("swap: " + key + " matches twice in " + sec)
			}
			n = i
		}
	}
	if n < 0 {
		panic("swap: " + key + " not in " + sec)
	}
	if entry == "" {
		d.secs[sec] = append(d.secs[sec][:n:n], d.secs[sec][n+1:]...)
	} else {
		d.secs[sec][n] = entry
		d.pos = fmt.Sprintf("%s[%d]", sec, n)
	}
	return d
}

func (d *specDoc) String() string {
	var parts []string
	for _, s := range specSections {
		parts = append(parts, fmt.Sprintf("%q: [\n  %s]", s, strings.Join(d.secs[s], ",\n  ")))
	}
	return "{" + strings.Join(parts, ",\n") + "}"
}

// specCheck reads and validates doc the way an import does: DecodeLimited
// within the default limits, the configuration within them, then every
// record, share and team entry with its references.
func specCheck(doc string) error {
	m := &model.Model{}
	lim := model.DefaultLimits()
	f, err := model.DecodeLimited(strings.NewReader(doc), model.Sink{
		Record: func(r *model.Record) error { m.Records = append(m.Records, *r); return nil },
		Share:  func(s *model.Share) error { m.Shares = append(m.Shares, *s); return nil },
		Team:   func(t *model.Team) error { m.Teams = append(m.Teams, *t); return nil },
	}, lim)
	if err != nil {
		return err
	}
	m.Config = f.Config
	if _, err := f.Config.ValidateLimited(lim); err != nil {
		return err
	}
	_, err = m.Validate()
	return err
}

// manyRules returns n rules on object: owner-based ones, or criteria-based ones.
func manyRules(prefix, object string, n int, criteria bool) []string {
	out := make([]string, n)
	for i := range out {
		if criteria {
			out[i] = fmt.Sprintf(`{"id":"%s%d","object":"%s","type":"criteria","target":"all_internal_users","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":"v"}]}}`, prefix, i, object)
		} else {
			out[i] = fmt.Sprintf(`{"id":"%s%d","object":"%s","type":"owner","source":"role:ceo","target":"group:g1","access":"read"}`, prefix, i, object)
		}
	}
	return out
}

// critRule is a criteria rule r9 on lead with the given criteria JSON.
func critRule(criteria string) string {
	return `{"id":"r9","object":"lead","type":"criteria","target":"group:g1","access":"read","criteria":` + criteria + `}`
}

// cond is a criteria rule r9 on lead with one condition, op and value as JSON.
func cond(op, value string) string {
	return critRule(`{"conditions":[{"field":"f","op":"` + op + `","value":` + value + `}]}`)
}

// logic is a criteria rule r9 on lead with two conditions and logic (JSON).
func logic(l string) string {
	return critRule(`{"conditions":[{"field":"f","op":"equals","value":"x"},{"field":"g","op":"gt","value":1}],"logic":` + l + `}`)
}

type specCase struct {
	spec  string // the spec sentence the case comes from
	name  string
	doc   string
	valid bool
	want  string // for an invalid model: what the error must name (case-insensitive)
	pos   string // or the offending entry's position, "section[index]"
}

func specCases() []specCase {
	var cs []specCase
	bad := func(spec, name, want string, doc fmt.Stringer) {
		c := specCase{spec: spec, name: name, doc: doc.String(), want: want}
		if d, ok := doc.(*specDoc); ok {
			c.pos = d.pos
		}
		cs = append(cs, c)
	}
	ok := func(spec, name string, doc fmt.Stringer) {
		cs = append(cs, specCase{spec: spec, name: name, doc: doc.String(), valid: true})
	}
	raw := func(s string) fmt.Stringer { return rawDoc(s) }

	// ---- interface.md: the file ----
	const ifFile = "interface.md: Malformed JSON, unknown keys, wrong types ... get a non-zero exit"
	ok("interface.md: a section's entries follow sharing-model.md (base model)", "base model", sdoc())
	ok(`interface.md: "version": 1 may be present`, "version 1", raw(`{"version":1,`+strings.TrimPrefix(sdoc().String(), "{")))
	ok("interface.md: Each top-level key is a section (none is required)", "empty object", raw(`{}`))
	ok("interface.md: Each top-level key is a section", "empty sections", raw(`{"objects":[],"roles":[],"users":[],"groups":[],"territories":[],"records":[],"rules":[],"shares":[],"teams":[]}`))
	bad(ifFile, "truncated JSON", "", raw(strings.TrimSuffix(sdoc().String(), "}")))
	bad("interface.md: There is one JSON object per file", "two objects", "", raw(`{} {}`))
	bad("interface.md: There is one JSON object per file", "top-level array", "", raw(`[]`))
	bad(ifFile, "unknown section", "profiles", raw(`{"profiles":[]}`))
	bad(ifFile, "unknown key in an entry", "colour", sdoc().add("users", `{"id":"u9","colour":"red"}`))
	bad(ifFile, "key differing only in case", "Owner", sdoc().add("records", `{"object":"lead","id":"l9","Owner":"u1"}`))
	bad(ifFile, "section not a list", "users", raw(`{"users":{"id":"u1"}}`))
	bad(ifFile, "id of the wrong type", "users", raw(`{"users":[{"id":7}]}`))
	bad(ifFile, "boolean written as a string", "u9", sdoc().add("users", `{"id":"u9","active":"false"}`))
	bad(ifFile+" (a key given twice is not the exact key set)", "duplicate key", "id", sdoc().add("users", `{"id":"u9","id":"u8"}`))

	// ---- objects ----
	const objName = "sharing-model.md 1 Objects: `name`: `[a-z][a-z0-9_]*`"
	bad(objName, "upper-case name", "Widget__c", sdoc().add("objects", `{"name":"Widget__c","internal_owd":"private"}`))
	bad(objName, "name starting with a digit", "1w__c", sdoc().add("objects", `{"name":"1w__c","internal_owd":"private"}`))
	bad(objName, "name with a hyphen", "w-x__c", sdoc().add("objects", `{"name":"w-x__c","internal_owd":"private"}`))
	bad(objName, "empty name", "name", sdoc().add("objects", `{"name":"","internal_owd":"private"}`))
	bad("sharing-model.md 1 Objects: Standard objects are ...; a custom object's name ends in `__c`", "neither standard nor custom", "widget", sdoc().add("objects", `{"name":"widget","internal_owd":"private"}`))
	ok(objName, "digits and underscores", sdoc().add("objects", `{"name":"w_2_x__c","internal_owd":"private"}`))
	bad("sharing-model.md 1: ids must be unique within their kind", "object listed twice", "lead", sdoc().add("objects", `{"name":"lead","internal_owd":"private"}`))
	const objParent = "sharing-model.md 1 Objects: `parent` names an unknown object"
	bad(objParent, "unknown parent object", "w__c", sdoc().add("objects", `{"name":"w__c","parent":"nope__c","internal_owd":"private"}`))
	bad("sharing-model.md 1 Objects: `parent`: optional, another object's name", "object its own parent", `object "w__c" cannot be its own parent`, sdoc().add("objects", `{"name":"w__c","parent":"w__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`))
	bad("sharing-model.md 3.3: controlled_by_parent reads the parent record's access (a cycle has none)", "controlled_by_parent object cycle", "__c",
		sdoc().add("objects", `{"name":"w__c","parent":"x__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`,
			`{"name":"x__c","parent":"w__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`))
	ok(objParent, "parent listed after its child", sdoc().add("objects", `{"name":"w__c","parent":"x__c","internal_owd":"private"}`, `{"name":"x__c","internal_owd":"private"}`))
	ok(objParent, "standard object with a custom parent", sdoc().swap("objects", `"name":"lead"`, `{"name":"lead","parent":"proj__c","internal_owd":"private"}`))
	bad("sharing-model.md 1 Objects: Each object has ... `internal_owd` (no default, unlike external_owd)", "internal_owd missing", "w__c", sdoc().add("objects", `{"name":"w__c"}`))
	bad("sharing-model.md 1 Objects: `internal_owd`: private | public_read_only | public_read_write | controlled_by_parent", "unknown internal_owd", "w__c", sdoc().add("objects", `{"name":"w__c","internal_owd":"read_only"}`))
	bad("sharing-model.md 1 Objects: `external_owd`: the same values", "unknown external_owd", "w__c", sdoc().add("objects", `{"name":"w__c","internal_owd":"public_read_write","external_owd":"public"}`))
	const extOpen = "sharing-model.md 1 Objects: external_owd is more open than internal_owd"
	bad(extOpen, "private internal, read-only external", "w__c", sdoc().add("objects", `{"name":"w__c","internal_owd":"private","external_owd":"public_read_only"}`))
	bad(extOpen, "read-only internal, read-write external", "w__c", sdoc().add("objects", `{"name":"w__c","internal_owd":"public_read_only","external_owd":"public_read_write"}`))
	ok(extOpen, "equal OWDs", sdoc().add("objects", `{"name":"w__c","internal_owd":"public_read_write","external_owd":"public_read_write"}`))
	ok(extOpen+" (external defaults to private)", "open internal, external omitted", sdoc().add("objects", `{"name":"w__c","internal_owd":"public_read_write"}`))
	bad("sharing-model.md 1 Objects: controlled_by_parent is used on an object with no parent", "cbp without parent", "w__c", sdoc().add("objects", `{"name":"w__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`))
	const cbpBoth = "sharing-model.md 1 Objects: one of the two OWDs is controlled_by_parent and the other is not"
	bad(cbpBoth, "cbp internal, private external", "w__c", sdoc().add("objects", `{"name":"w__c","parent":"proj__c","internal_owd":"controlled_by_parent","external_owd":"private"}`))
	bad(cbpBoth, "private internal, cbp external", "w__c", sdoc().add("objects", `{"name":"w__c","parent":"proj__c","internal_owd":"private","external_owd":"controlled_by_parent"}`))
	bad(cbpBoth+" (external_owd defaults to private)", "cbp internal, external omitted", "w__c", sdoc().add("objects", `{"name":"w__c","parent":"proj__c","internal_owd":"controlled_by_parent"}`))
	ok(cbpBoth, "cbp on both, with a parent", sdoc().add("objects", `{"name":"w__c","parent":"proj__c","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`))
	const hier = "sharing-model.md 1 Objects: a standard object sets hierarchy to false"
	bad(hier, "standard object without hierarchy", "lead", sdoc().swap("objects", `"name":"lead"`, `{"name":"lead","internal_owd":"private","hierarchy":false}`))
	ok(hier, "standard object with hierarchy true", sdoc().swap("objects", `"name":"lead"`, `{"name":"lead","internal_owd":"private","hierarchy":true}`))
	bad("sharing-model.md 1 Objects: `hierarchy`: a boolean", "hierarchy as a string", "w__c", sdoc().add("objects", `{"name":"w__c","internal_owd":"private","hierarchy":"false"}`))

	// ---- roles ----
	bad("sharing-model.md 1 Roles: A cycle is invalid", "role cycle", "x", sdoc().add("roles", `{"id":"x1","parent":"x2"}`, `{"id":"x2","parent":"x1"}`))
	bad("sharing-model.md 1 Roles: A cycle is invalid", "role its own parent", "x1", sdoc().add("roles", `{"id":"x1","parent":"x1"}`))
	bad("sharing-model.md 1: Every reference must resolve (to a ... role ...)", "unknown parent role", "x1", sdoc().add("roles", `{"id":"x1","parent":"nope"}`))
	bad("sharing-model.md 1: ids must be unique within their kind", "role listed twice", "vp", sdoc().add("roles", `{"id":"vp"}`))
	bad("sharing-model.md 1 Roles: `opportunity_access`, ...: each none | read | edit", "role child access all", "x1", sdoc().add("roles", `{"id":"x1","opportunity_access":"all"}`))
	bad(ifFile+" (roles have no lead_access)", "role lead_access", "lead_access", sdoc().add("roles", `{"id":"x1","lead_access":"read"}`))
	ok("sharing-model.md 1 Roles: A forest (order in the list is free)", "role listed before its parent", sdoc().add("roles", `{"id":"x2","parent":"x1","contact_access":"edit","opportunity_access":"none"}`, `{"id":"x1"}`))
	ok("sharing-model.md 1: ids must be unique within their kind (kinds apart)", "role id equal to a user id and a group id", sdoc().add("roles", `{"id":"u1"}`, `{"id":"g1"}`))

	// ---- users ----
	bad("sharing-model.md 1: Every reference must resolve (to a ... role ...)", "user with an unknown role", "u9", sdoc().add("users", `{"id":"u9","role":"nope"}`))
	bad("sharing-model.md 1 Users: a `type` (internal | external)", "unknown user type", "u9", sdoc().add("users", `{"id":"u9","type":"partner"}`))
	bad("sharing-model.md 1: ids must be unique within their kind", "user listed twice", "u2", sdoc().add("users", `{"id":"u2"}`))
	bad("sharing-model.md 1 Users: Each user has `id`", "user without an id", "user", sdoc().add("users", `{"role":"vp"}`))
	ok("sharing-model.md 1 Users (no id format is given)", "id with odd characters", sdoc().add("users", `{"id":"Jane.Doe@example.com #2 é"}`))
	ok("sharing-model.md 1 Users: Inactive users ... still own records", "inactive external user with a role", sdoc().add("users", `{"id":"u9","type":"external","role":"vp","active":false}`))

	// ---- groups and grantees ----
	const grantee = "sharing-model.md 1 Grantees: A grantee is written as ..."
	bad(grantee, "unknown grantee kind", "g9", sdoc().add("groups", `{"id":"g9","members":["profile:x"]}`))
	bad(grantee, "all_internal_users with an id", "g9", sdoc().add("groups", `{"id":"g9","members":["all_internal_users:u1"]}`))
	bad(grantee, "grantee without a kind", "g9", sdoc().add("groups", `{"id":"g9","members":["u1"]}`))
	const ref = "sharing-model.md 1: Every reference must resolve (to a user, role, group, territory, record or object)"
	bad(ref, "group member: unknown user", "g9", sdoc().add("groups", `{"id":"g9","members":["user:nope"]}`))
	bad(ref, "group member: unknown group", "g9", sdoc().add("groups", `{"id":"g9","members":["group:nope"]}`))
	bad(ref, "group member: unknown role", "g9", sdoc().add("groups", `{"id":"g9","members":["role:nope"]}`))
	bad(ref, "group member: unknown role and internal subordinates", "g9", sdoc().add("groups", `{"id":"g9","members":["role_and_internal_subordinates:nope"]}`))
	bad(ref, "group member: user id used as a role", "g9", sdoc().add("groups", `{"id":"g9","members":["role:u1"]}`))
	bad("sharing-model.md 1 Groups: Nesting cycles are invalid", "group cycle", "g", sdoc().add("groups", `{"id":"g8","members":["group:g9"]}`, `{"id":"g9","members":["group:g8"]}`))
	bad("sharing-model.md 1 Groups: Nesting cycles are invalid", "group in itself", "g9", sdoc().add("groups", `{"id":"g9","members":["user:u1","group:g9"]}`))
	ok("sharing-model.md 1 Groups: Nesting cycles are invalid", "diamond nesting", sdoc().add("groups",
		`{"id":"g5","members":["group:g6","group:g7"]}`, `{"id":"g6","members":["group:g8"]}`, `{"id":"g7","members":["group:g8"]}`, `{"id":"g8","members":["user:u1"]}`))
	ok(grantee, "every grantee kind as a member", sdoc().add("groups",
		`{"id":"g9","members":["user:u3","group:q1","role:ceo","role_and_subordinates:ceo","role_and_internal_subordinates:vp","all_internal_users"],"include_bosses":false}`))
	ok("sharing-model.md 1 Groups: members: a list of grantees", "group without members", sdoc().add("groups", `{"id":"g9","members":[]}`, `{"id":"q9","queue":true,"members":[]}`))
	const queueID = "sharing-model.md 1 Groups: A queue can own records, so its id may not equal a user's id"
	bad(queueID, "queue with a user's id", "u2", sdoc().add("groups", `{"id":"u2","queue":true,"members":["user:u1"]}`))
	ok(queueID+" (only a queue)", "plain group with a user's id", sdoc().add("groups", `{"id":"u2","members":["user:u1"]}`))
	bad("sharing-model.md 1: ids must be unique within their kind", "group listed twice", "g1", sdoc().add("groups", `{"id":"g1","members":[]}`))
	bad("sharing-model.md 1: ids must be unique within their kind (a queue is a group)", "queue with a group's id", "g1", sdoc().add("groups", `{"id":"g1","queue":true,"members":[]}`))
	bad(ifFile, "include_bosses as a string", "g9", sdoc().add("groups", `{"id":"g9","members":[],"include_bosses":"yes"}`))
	bad(ifFile, "members as a string", "g9", sdoc().add("groups", `{"id":"g9","members":"user:u1"}`))

	// ---- territories ----
	bad("sharing-model.md 1 Territories: A cycle is invalid", "territory cycle", "x", sdoc().add("territories", `{"id":"x1","parent":"x2"}`, `{"id":"x2","parent":"x1"}`))
	bad("sharing-model.md 1 Territories: A cycle is invalid", "territory its own parent", "x1", sdoc().add("territories", `{"id":"x1","parent":"x1"}`))
	bad(ref, "unknown parent territory", "x1", sdoc().add("territories", `{"id":"x1","parent":"nope"}`))
	bad(ref, "territory with an unknown user", "x1", sdoc().add("territories", `{"id":"x1","users":["nope"]}`))
	bad("sharing-model.md 1 Territories: `account_access`: read | edit", "territory account access none", "x1", sdoc().add("territories", `{"id":"x1","account_access":"none"}`))
	bad("sharing-model.md 1 Territories: `account_access`: read | edit", "territory account access all", "x1", sdoc().add("territories", `{"id":"x1","account_access":"all"}`))
	bad("sharing-model.md 1 Territories: `opportunity_access`, ...: none | read | edit", "territory child access all", "x1", sdoc().add("territories", `{"id":"x1","case_access":"all"}`))
	bad("sharing-model.md 1: ids must be unique within their kind", "territory listed twice", "t1", sdoc().add("territories", `{"id":"t1"}`))
	ok("sharing-model.md 1 Territories: `users`: user ids", "inactive and external users, parent listed later", sdoc().add("territories",
		`{"id":"x2","parent":"x1","users":["u2","u3"],"account_access":"edit","opportunity_access":"edit","case_access":"none","contact_access":"read"}`, `{"id":"x1"}`))

	// ---- records ----
	const recID = "sharing-model.md 1 Records: `id` (unique across the whole model)"
	bad(recID, "record id reused on another object", "a1", sdoc().add("records", `{"object":"lead","id":"a1","owner":"u1"}`))
	bad(recID, "record listed twice", "l1", sdoc().add("records", `{"object":"lead","id":"l1","owner":"u1"}`))
	ok(recID+" (records only)", "record id equal to a user, group, role and territory id", sdoc().add("records",
		`{"object":"lead","id":"u1","owner":"u1"}`, `{"object":"lead","id":"g1","owner":"u1"}`, `{"object":"lead","id":"vp","owner":"u1"}`, `{"object":"lead","id":"t1","owner":"u1"}`))
	bad(ref, "record of an unknown object", "l9", sdoc().add("records", `{"object":"widget__c","id":"l9","owner":"u1"}`))
	const owner = "sharing-model.md 1 Records: `owner` is a user id or the id of a queue group"
	bad(owner, "owner unknown", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"nope"}`))
	bad(owner, "owner a plain group", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"g1"}`))
	bad(owner, "owner a role id", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"ceo"}`))
	bad(owner+" (written as an id, not a grantee)", "owner written as a grantee", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"user:u1"}`))
	ok(owner, "owners: inactive user, queue, external user", sdoc().add("records",
		`{"object":"lead","id":"l7","owner":"u3"}`, `{"object":"lead","id":"l8","owner":"q1"}`, `{"object":"account","id":"a9","owner":"u2"}`))
	const recParent = "sharing-model.md 1 Records: `parent`, if set, is the id of a record of the object's parent object"
	bad(recParent, "parent on an object with no parent", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"u1","parent":"a1"}`))
	bad(recParent, "parent record of the wrong object", "o9", sdoc().add("records", `{"object":"opportunity","id":"o9","owner":"u1","parent":"p1"}`))
	bad(recParent, "parent record unknown", "o9", sdoc().add("records", `{"object":"opportunity","id":"o9","owner":"u1","parent":"nope"}`))
	bad(recParent, "record its own parent", "o9", sdoc().add("records", `{"object":"opportunity","id":"o9","owner":"u1","parent":"o9"}`))
	ok(recParent, "parent listed after the child; child without parent", sdoc().add("records",
		`{"object":"case","id":"s9","owner":"u1","parent":"a9"}`, `{"object":"account","id":"a9","owner":"u1"}`,
		`{"object":"opportunity","id":"o9","owner":"u1"}`, `{"object":"task__c","id":"k9","owner":"u1"}`))
	const fields = "sharing-model.md 1 Records: `fields` maps names to strings, numbers, booleans or null"
	bad(fields, "field value a list", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"u1","fields":{"a":"`+secretValue+`","b":[1]}}`))
	bad(fields, "field value an object", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"u1","fields":{"a":"`+secretValue+`","b":{"c":1}}}`))
	bad(fields, "fields not an object", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"u1","fields":"`+secretValue+`"}`))
	ok(fields, "every value type, odd field names", sdoc().add("records",
		`{"object":"lead","id":"l9","owner":"u1","fields":{"Name":"x","Amount__c":1.5e300,"big":9007199254740993,"neg":-0,"ok":false,"gone":null,"with space":"","[":"{"}}`,
		`{"object":"lead","id":"l8","owner":"u1","fields":{}}`))
	const terr = "sharing-model.md 1 Records: `territories` is a list of territory ids, and only an account may have it"
	bad(terr, "territories on an opportunity", "o9", sdoc().add("records", `{"object":"opportunity","id":"o9","owner":"u1","parent":"a1","territories":["t1"]}`))
	bad(terr, "territories on a custom object", "p9", sdoc().add("records", `{"object":"proj__c","id":"p9","owner":"u1","territories":["t1"]}`))
	bad(ref, "unknown territory on an account", "a9", sdoc().add("records", `{"object":"account","id":"a9","owner":"u1","territories":["nope"]}`))
	ok(terr, "account with a child territory, and with none", sdoc().add("records",
		`{"object":"account","id":"a9","owner":"u1","territories":["t2","t1"]}`, `{"object":"account","id":"a8","owner":"u1","territories":[]}`))

	// ---- sharing rules ----
	const tooMany = "sharing-model.md 1 Sharing rules (at most 300 per object, of which at most 50 criteria-based); invalid for too many rules"
	bad(tooMany, "301 rules on one object", "lead", sdoc().add("rules", manyRules("x", "lead", 301, false)...))
	bad(tooMany, "51 criteria rules on one object", "lead", sdoc().add("rules", manyRules("x", "lead", 51, true)...))
	bad(tooMany, "251 owner and 50 criteria rules on one object", "lead", sdoc().add("rules", append(manyRules("x", "lead", 251, false), manyRules("y", "lead", 50, true)...)...))
	ok(tooMany, "250 owner and 50 criteria rules on one object", sdoc().add("rules", append(manyRules("x", "lead", 250, false), manyRules("y", "lead", 50, true)...)...))
	ok(tooMany+" (per object)", "300 rules on each of two objects", sdoc().add("rules", append(manyRules("x", "lead", 300, false), manyRules("y", "proj__c", 300, false)...)...))
	ok(tooMany+" (per object)", "50 criteria rules on each of two objects", sdoc().add("rules", append(manyRules("x", "lead", 50, true), manyRules("y", "proj__c", 50, true)...)...))
	bad("sharing-model.md 1: ids must be unique within their kind", "rule listed twice", "r1", sdoc().add("rules", `{"id":"r1","object":"account","type":"owner","source":"role:ceo","target":"group:g1","access":"read"}`))
	bad("sharing-model.md 1: ids must be unique within their kind (rules are one kind)", "rule id reused on another object", "r1", sdoc().add("rules", `{"id":"r1","object":"lead","type":"owner","source":"role:ceo","target":"group:g1","access":"read"}`))
	ok("sharing-model.md 1: ids must be unique within their kind (kinds apart)", "rule id equal to a record and user id", sdoc().add("rules", `{"id":"u1","object":"lead","type":"owner","source":"role:ceo","target":"group:g1","access":"read"}`, `{"id":"a1","object":"lead","type":"owner","source":"role:ceo","target":"group:g1","access":"read"}`))
	bad(ref, "rule on an unknown object", "r9", sdoc().add("rules", `{"id":"r9","object":"widget__c","type":"owner","source":"role:ceo","target":"group:g1","access":"read"}`))
	const cbpRule = "sharing-model.md 1 Sharing rules: invalid for a rule, manual share or team entry on an object whose OWD is controlled_by_parent"
	bad(cbpRule, "owner rule on a cbp object", "r9", sdoc().add("rules", `{"id":"r9","object":"contact","type":"owner","source":"role:ceo","target":"group:g1","access":"read"}`))
	bad(cbpRule, "criteria rule on a cbp custom object", "r9", sdoc().add("rules", `{"id":"r9","object":"task__c","type":"criteria","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":"v"}]}}`))
	bad("sharing-model.md 1 Sharing rules: `type: owner` ... `type: criteria`", "unknown rule type", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"territory","source":"role:ceo","target":"group:g1","access":"read"}`))
	bad("sharing-model.md 1 Sharing rules: Every rule has ... `target` (a grantee)", "target of an unknown kind", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"role:ceo","target":"profile:x","access":"read"}`))
	bad(ref, "target an unknown group", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"role:ceo","target":"group:nope","access":"read"}`))
	bad("sharing-model.md 1 Sharing rules: Every rule has ... `target`", "rule without a target", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"role:ceo","access":"read"}`))
	ok("sharing-model.md 1 Sharing rules: `target` (a grantee) — any kind, user: included", "targets user, queue, all internal users", sdoc().add("rules",
		`{"id":"r7","object":"lead","type":"owner","source":"role:ceo","target":"user:u3","access":"read"}`,
		`{"id":"r8","object":"lead","type":"owner","source":"role:ceo","target":"group:q1","access":"edit"}`,
		`{"id":"r9","object":"lead","type":"owner","source":"role:ceo","target":"all_internal_users","access":"read"}`))
	const access = "sharing-model.md 1 Sharing rules: invalid for `access` that is not read or edit"
	bad(access, "rule access all", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"role:ceo","target":"group:g1","access":"all"}`))
	bad(access, "rule access none", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"role:ceo","target":"group:g1","access":"none"}`))
	bad(access, "rule access missing", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"role:ceo","target":"group:g1"}`))
	const child = "sharing-model.md 1 Sharing rules: invalid for child access set on a rule of any object but account"
	bad(child, "opportunity_access on a case rule", "r9", sdoc().add("rules", `{"id":"r9","object":"case","type":"owner","source":"role:ceo","target":"group:g1","access":"read","opportunity_access":"read"}`))
	bad(child, "contact_access on a custom object rule", "r9", sdoc().add("rules", `{"id":"r9","object":"proj__c","type":"owner","source":"role:ceo","target":"group:g1","access":"read","contact_access":"edit"}`))
	bad("sharing-model.md 1 Sharing rules: A rule on account may also set ... (none | read | edit)", "account rule child access all", "r9", sdoc().add("rules", `{"id":"r9","object":"account","type":"owner","source":"role:ceo","target":"group:g1","access":"read","contact_access":"all"}`))
	ok("sharing-model.md 1 Sharing rules: A rule on account may also set opportunity_access, case_access and contact_access", "account rule with all three child levels", sdoc().add("rules",
		`{"id":"r9","object":"account","type":"criteria","target":"group:g1","access":"read","opportunity_access":"edit","case_access":"none","contact_access":"read","criteria":{"conditions":[{"field":"industry","op":"equals","value":"x"}]}}`))
	const ownerRule = "sharing-model.md 1 Sharing rules: `type: owner` has a `source` grantee (any kind except `user:`) and no `criteria`"
	bad(ownerRule, "owner rule without a source", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","target":"group:g1","access":"read"}`))
	bad(ownerRule, "owner rule with a user source", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"user:u1","target":"group:g1","access":"read"}`))
	bad(ownerRule, "owner rule with criteria", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"role:ceo","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":"v"}]}}`))
	bad(ref, "owner rule with an unknown source role", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"owner","source":"role_and_subordinates:nope","target":"group:g1","access":"read"}`))
	ok(ownerRule, "sources: all internal users, queue, group, internal subordinates", sdoc().add("rules",
		`{"id":"r6","object":"lead","type":"owner","source":"all_internal_users","target":"group:g1","access":"read"}`,
		`{"id":"r7","object":"lead","type":"owner","source":"group:q1","target":"group:g1","access":"read"}`,
		`{"id":"r8","object":"lead","type":"owner","source":"group:g1","target":"group:g1","access":"read"}`,
		`{"id":"r9","object":"lead","type":"owner","source":"role_and_internal_subordinates:vp","target":"group:g1","access":"read"}`))
	const critRuleS = "sharing-model.md 1 Sharing rules: `type: criteria` has `criteria` and no `source`"
	bad(critRuleS, "criteria rule without criteria", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"criteria","target":"group:g1","access":"read"}`))
	bad(critRuleS, "criteria rule with a source", "r9", sdoc().add("rules", `{"id":"r9","object":"lead","type":"criteria","source":"role:ceo","target":"group:g1","access":"read","criteria":{"conditions":[{"field":"f","op":"equals","value":"v"}]}}`))
	bad("sharing-model.md 1 Sharing rules: invalid for an empty conditions list", "empty conditions", "r9", sdoc().add("rules", critRule(`{"conditions":[]}`)))
	bad("sharing-model.md 1 Sharing rules: invalid for an empty conditions list", "conditions missing", "r9", sdoc().add("rules", critRule(`{"logic":"1"}`)))
	const op = "sharing-model.md 1 Sharing rules: invalid for an unknown op"
	bad(op, "unknown op", "r9", sdoc().add("rules", cond("in", `"x"`)))
	bad(op+" (op names are lower case; only logic is case-insensitive)", "op in capitals", "r9", sdoc().add("rules", cond("EQUALS", `"x"`)))
	bad(op, "op missing", "r9", sdoc().add("rules", critRule(`{"conditions":[{"field":"f","value":"x"}]}`)))
	bad("sharing-model.md 1 Sharing rules: `conditions`: a list of `{field, op, value}`", "field missing", "r9", sdoc().add("rules", critRule(`{"conditions":[{"op":"equals","value":"x"}]}`)))
	for _, o := range []string{"equals", "not_equals", "lt", "le", "gt", "ge", "contains", "not_contains", "starts_with"} {
		ok(op, "op "+o+" with a string", sdoc().add("rules", cond(o, `"x"`)))
	}
	for _, o := range []string{"equals", "not_equals", "lt", "le", "gt", "ge"} {
		ok(op, "op "+o+" with a number", sdoc().add("rules", cond(o, `9007199254740993`)))
	}
	const value = "sharing-model.md 1 Sharing rules: `value`: a string, number or boolean"
	bad(value, "value null", "r9", sdoc().add("rules", cond("equals", `null`)))
	bad(value, "value a list", "r9", sdoc().add("rules", cond("equals", `["a","b"]`)))
	bad(value, "value an object", "r9", sdoc().add("rules", cond("equals", `{"a":1}`)))
	bad(value, "value missing", "r9", sdoc().add("rules", critRule(`{"conditions":[{"field":"f","op":"equals"}]}`)))
	ok(value+"; equals with commas matches any of the trimmed values", "comma list with blanks", sdoc().add("rules", cond("equals", `" a, ,b ,,"`)))
	ok(value, "empty string and negative fraction", sdoc().add("rules", critRule(`{"conditions":[{"field":"f","op":"not_equals","value":""},{"field":"g","op":"lt","value":-0.5}]}`)))
	const strOnly = "sharing-model.md 1 Conditions: `contains`, `not_contains` and `starts_with` take strings only"
	bad(strOnly, "contains with a number", "r9", sdoc().add("rules", cond("contains", `5`)))
	bad(strOnly, "starts_with with a boolean", "r9", sdoc().add("rules", cond("starts_with", `true`)))
	bad(strOnly, "not_contains with a number", "r9", sdoc().add("rules", cond("not_contains", `0`)))
	const boolOnly = "sharing-model.md 1 Conditions: Booleans take only `equals` and `not_equals`"
	bad(boolOnly, "lt with a boolean", "r9", sdoc().add("rules", cond("lt", `true`)))
	bad(boolOnly, "ge with a boolean", "r9", sdoc().add("rules", cond("ge", `false`)))
	ok(boolOnly, "equals and not_equals with booleans", sdoc().add("rules", critRule(`{"conditions":[{"field":"f","op":"equals","value":true},{"field":"g","op":"not_equals","value":false}]}`)))
	const logicS = "sharing-model.md 1 Sharing rules: invalid for unparsable logic, or logic naming a condition that does not exist"
	bad(logicS, "dangling AND", "r9", sdoc().add("rules", logic(`"1 AND"`)))
	bad(logicS, "unclosed parenthesis", "r9", sdoc().add("rules", logic(`"(1 OR 2"`)))
	bad(logicS, "stray closing parenthesis", "r9", sdoc().add("rules", logic(`"1 OR 2)"`)))
	bad(logicS, "two numbers without an operator", "r9", sdoc().add("rules", logic(`"1 2"`)))
	bad(logicS, "unknown operator", "r9", sdoc().add("rules", logic(`"1 & 2"`)))
	bad(logicS, "empty parentheses", "r9", sdoc().add("rules", logic(`"1 AND ()"`)))
	bad(logicS, "condition 3 of 2", "r9", sdoc().add("rules", logic(`"1 OR 3"`)))
	bad(logicS+" (condition numbers are 1-based)", "condition 0", "r9", sdoc().add("rules", logic(`"0 OR 1"`)))
	bad(logicS, "condition number past any integer", "r9", sdoc().add("rules", logic(`"1 OR 99999999999999999999999"`)))
	bad(ifFile, "logic a number", "r9", sdoc().add("rules", logic(`1`)))
	ok("sharing-model.md 1: logic ... case-insensitive", "lower-case operators", sdoc().add("rules", logic(`"1 and (2 or not 1)"`)))
	ok("sharing-model.md 1: logic ... case-insensitive", "mixed-case operators", sdoc().add("rules", logic(`"Not 1 oR 2"`)))
	ok("sharing-model.md 1: an empty or blank `logic` is the same as none", "empty logic", sdoc().add("rules", logic(`""`)))
	ok("sharing-model.md 1: an empty or blank `logic` is the same as none", "blank logic", sdoc().add("rules", logic(`"  \t "`)))
	ok(logicS+" (naming only some conditions is allowed)", "logic naming one of two conditions", sdoc().add("rules", logic(`"2"`)))
	ok(logicS, "nested parentheses and repeated conditions", sdoc().add("rules", logic(`"((1)) AND NOT (2 OR (1))"`)))
	ok(logicS, "spacing-free logic", sdoc().add("rules", logic(`"(1)AND(NOT 2)"`)))

	// ---- shares ----
	bad(ref, "share on an unknown object", "l1", sdoc().add("shares", `{"object":"widget__c","record":"l1","grantee":"user:u1","access":"read","cause":"manual"}`))
	bad(ref, "share on an unknown record", "l9", sdoc().add("shares", `{"object":"lead","record":"l9","grantee":"user:u1","access":"read","cause":"manual"}`))
	bad(ref+" (record must be of the share's object)", "share naming the wrong object", "p1", sdoc().add("shares", `{"object":"lead","record":"p1","grantee":"user:u1","access":"read","cause":"manual"}`))
	bad(ref, "share to an unknown user", "l1", sdoc().add("shares", `{"object":"lead","record":"l1","grantee":"user:nope","access":"read","cause":"manual"}`))
	bad(grantee, "share to an unknown grantee kind", "l1", sdoc().add("shares", `{"object":"lead","record":"l1","grantee":"profile:x","access":"read","cause":"manual"}`))
	const shareAccess = "sharing-model.md 1 Manual and programmatic shares: `access`: read | edit"
	bad(shareAccess, "share access all", "l1", sdoc().add("shares", `{"object":"lead","record":"l1","grantee":"user:u2","access":"all","cause":"manual"}`))
	bad(shareAccess, "share access none", "l1", sdoc().add("shares", `{"object":"lead","record":"l1","grantee":"user:u2","access":"none","cause":"manual"}`))
	const cause = "sharing-model.md 1 Manual and programmatic shares: `cause` (required): `manual`, or `apex:NAME` where NAME is `[a-z0-9_]+`"
	bad(cause, "cause missing", "p1", sdoc().add("shares", `{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read"}`))
	bad(cause, "cause Manual", "p1", sdoc().add("shares", `{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"Manual"}`))
	bad(cause, "apex without a name", "p1", sdoc().add("shares", `{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"apex:"}`))
	bad(cause, "apex name in capitals", "p1", sdoc().add("shares", `{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"apex:Sync"}`))
	bad(cause, "apex name with a hyphen", "p1", sdoc().add("shares", `{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"apex:a-b"}`))
	bad(cause, "apex without a colon", "p1", sdoc().add("shares", `{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"apex"}`))
	bad(cause, "another cause kind", "p1", sdoc().add("shares", `{"object":"proj__c","record":"p1","grantee":"user:u2","access":"read","cause":"rule:x"}`))
	bad("sharing-model.md 1 Manual and programmatic shares: Apex causes are allowed on custom objects only", "apex share on a standard object", "l1", sdoc().add("shares", `{"object":"lead","record":"l1","grantee":"user:u2","access":"read","cause":"apex:sync"}`))
	ok(cause, "apex names of digits and underscores; every grantee kind", sdoc().add("shares",
		`{"object":"proj__c","record":"p1","grantee":"user:u3","access":"read","cause":"apex:0"}`,
		`{"object":"proj__c","record":"p1","grantee":"group:q1","access":"edit","cause":"apex:_"}`,
		`{"object":"proj__c","record":"p1","grantee":"role:ceo","access":"read","cause":"manual"}`,
		`{"object":"lead","record":"l1","grantee":"role_and_subordinates:ceo","access":"edit","cause":"manual"}`,
		`{"object":"lead","record":"l1","grantee":"role_and_internal_subordinates:ceo","access":"read","cause":"manual"}`,
		`{"object":"lead","record":"l1","grantee":"all_internal_users","access":"read","cause":"manual"}`))
	const shareID = "sharing-model.md 1 Manual and programmatic shares: Two entries with the same identity make the model invalid"
	bad(shareID, "manual share listed twice", "a1", sdoc().add("shares", `{"object":"account","record":"a1","grantee":"user:u2","access":"edit","cause":"manual"}`))
	bad(shareID, "apex share listed twice", "p1", sdoc().add("shares", `{"object":"proj__c","record":"p1","grantee":"group:g1","access":"read","cause":"apex:sync_1"}`))
	ok(shareID+" (identity is record, grantee, cause)", "same record and grantee, other causes; same cause, other grantee", sdoc().add("shares",
		`{"object":"proj__c","record":"p1","grantee":"group:g1","access":"read","cause":"manual"}`,
		`{"object":"proj__c","record":"p1","grantee":"group:g1","access":"read","cause":"apex:sync_2"}`,
		`{"object":"proj__c","record":"p1","grantee":"user:u1","access":"read","cause":"apex:sync_1"}`))
	bad(cbpRule, "manual share on a cbp record", "c1", sdoc().add("shares", `{"object":"contact","record":"c1","grantee":"user:u1","access":"read","cause":"manual"}`))
	bad(cbpRule, "apex share on a cbp custom record", "k1", sdoc().add("shares", `{"object":"task__c","record":"k1","grantee":"user:u2","access":"read","cause":"apex:x"}`))

	// ---- teams ----
	const teamObj = "sharing-model.md 1 Teams: only on account, opportunity and case records"
	bad(teamObj, "team on a lead", "l1", sdoc().add("teams", `{"record":"l1","user":"u1","access":"read"}`))
	bad(teamObj, "team on a custom record", "p1", sdoc().add("teams", `{"record":"p1","user":"u1","access":"read"}`))
	bad(teamObj+"; "+cbpRule, "team on a contact", "c1", sdoc().add("teams", `{"record":"c1","user":"u1","access":"read"}`))
	bad(cbpRule, "team on an opportunity whose OWD is cbp", "o1",
		sdoc().swap("objects", `"name":"opportunity"`, `{"name":"opportunity","parent":"account","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`).
			swap("rules", `"id":"r2"`, ""))
	ok(teamObj, "teams on a case, an opportunity and an account", sdoc().add("teams",
		`{"record":"s1","user":"u1","access":"edit"}`, `{"record":"o1","user":"u3","access":"edit"}`,
		`{"record":"a1","user":"u1","access":"read","opportunity_access":"edit","case_access":"none","contact_access":"read"}`))
	const teamAccess = "sharing-model.md 1 Teams: `access`: read | edit"
	bad(teamAccess, "team access all", "s1", sdoc().add("teams", `{"record":"s1","user":"u1","access":"all"}`))
	bad(teamAccess, "team access none", "s1", sdoc().add("teams", `{"record":"s1","user":"u1","access":"none"}`))
	const teamChild = "sharing-model.md 1 Teams: account team entries may also set the three child access levels"
	bad(teamChild, "case_access on an opportunity team", "o1", sdoc().add("teams", `{"record":"o1","user":"u3","access":"read","case_access":"read"}`))
	bad(teamChild+" (none | read | edit)", "account team child access all", "a1", sdoc().add("teams", `{"record":"a1","user":"u1","access":"read","case_access":"all"}`))
	const teamDup = "sharing-model.md 1 Teams: two entries for the same (record, user) make the model invalid"
	bad(teamDup, "team entry listed twice", "a1", sdoc().add("teams", `{"record":"a1","user":"u2","access":"read"}`))
	ok(teamDup, "same user on another record, same record with another user", sdoc().add("teams",
		`{"record":"s1","user":"u2","access":"read"}`, `{"record":"a1","user":"u1","access":"read"}`))
	bad(ref, "team with an unknown user", "s1", sdoc().add("teams", `{"record":"s1","user":"nope","access":"read"}`))
	bad(ref+" (a team member is a user)", "team with a queue as user", "s1", sdoc().add("teams", `{"record":"s1","user":"q1","access":"read"}`))
	bad(ref, "team on an unknown record", "s9", sdoc().add("teams", `{"record":"s9","user":"u1","access":"read"}`))

	// ---- choices where the spec is silent (docs/model.md, docs/limits.md) ----
	ok(logicS+" (a chain of one operator needs no parentheses)", "OR chain", sdoc().add("rules", critRule(`{"conditions":[{"field":"f","op":"equals","value":"x"},{"field":"g","op":"gt","value":1},{"field":"h","op":"gt","value":1}],"logic":"1 or 2 OR 3"}`)))
	ok(logicS, "NOT before AND", sdoc().add("rules", logic(`"NOT 1 AND NOT NOT 2"`)))
	bad(logicS+" (the spec gives no precedence; as in Salesforce, AND and OR may not meet unparenthesized: docs/model.md)", "AND and OR without parentheses", "r9",
		sdoc().add("rules", critRule(`{"conditions":[{"field":"f","op":"equals","value":"x"},{"field":"g","op":"gt","value":1},{"field":"h","op":"gt","value":1}],"logic":"1 AND 2 OR 3"}`)))
	bad(`interface.md: "version": 1 may be present (no other version is)`, "version 2", "version", raw(`{"version":2}`))
	bad(`interface.md: "version": 1 may be present`, "version as a string", "version", raw(`{"version":"1"}`))
	ok(`interface.md: "version": 1 may be present`, "version written 1.0", raw(`{"version":1.0}`))
	ok(`interface.md: "version": 1 may be present`, "version written 10e-1", raw(`{"version":10e-1}`))
	bad(`interface.md: "version": 1 may be present`, "version a double rounds to 1", "version", raw(`{"version":1.00000000000000001}`))
	bad(`interface.md: "version": 1 may be present`, "version 1 with a huge exponent", "version", raw(`{"version":1e999999999}`))
	ok("sharing-model.md 1 Roles: A forest (no depth bound)", "role chain 100 deep", sdoc().add("roles", chainOf("z", 100)...))
	bad("docs/limits.md: recalc bounds each input's cost, --max-role-depth 100 by default", "role chain 101 deep", "max-role-depth", sdoc().add("roles", chainOf("z", 101)...))
	bad("docs/limits.md: --max-group-depth 100 by default", "groups nested 101 deep", "max-group-depth", sdoc().add("groups", nestOf("h", 101)...))
	ok("sharing-model.md 1 Sharing rules: `conditions`: a list (no length bound)", "1000 conditions", sdoc().add("rules", critRule(`{"conditions":[`+strings.Repeat(`{"field":"f","op":"equals","value":"x"},`, 999)+`{"field":"f","op":"equals","value":"x"}]}`)))
	bad("docs/limits.md: --max-conditions 1000 by default", "1001 conditions", "max-conditions", sdoc().add("rules", critRule(`{"conditions":[`+strings.Repeat(`{"field":"f","op":"equals","value":"x"},`, 1000)+`{"field":"f","op":"equals","value":"x"}]}`)))
	bad("docs/limits.md: --max-id-bytes 1024 by default", "user id of 1025 bytes", "max-id-bytes", sdoc().add("users", `{"id":"`+strings.Repeat("u", 1025)+`"}`))
	bad("docs/model.md: every id and name is a non-empty string (a condition names its field)", "condition on the empty field name", "field is required",
		sdoc().add("rules", critRule(`{"conditions":[{"field":"","op":"equals","value":"x"}]}`)))

	// ---- empty strings where an enum or a reference is expected ----
	bad("sharing-model.md 1 Users: a `type` (internal | external, default internal)", "user type empty", "u9", sdoc().add("users", `{"id":"u9","type":""}`))
	bad(objParent+" (\"\" is no object's name)", "object parent empty", "w__c", sdoc().add("objects", `{"name":"w__c","parent":"","internal_owd":"private"}`))
	bad(ref+" (\"\" is no role's id)", "role parent empty", "x1", sdoc().add("roles", `{"id":"x1","parent":""}`))
	bad(ref+" (\"\" is no role's id)", "user role empty", "u9", sdoc().add("users", `{"id":"u9","role":""}`))
	bad(ref+" (\"\" is no territory's id)", "territory parent empty", "x1", sdoc().add("territories", `{"id":"x1","parent":""}`))
	bad(recParent+" (\"\" is no record's id)", "record parent empty", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":"u1","parent":""}`))
	bad(objParent+"; external_owd: the same values", "external_owd empty", "w__c", sdoc().add("objects", `{"name":"w__c","internal_owd":"private","external_owd":""}`))
	bad(owner, "owner empty", "l9", sdoc().add("records", `{"object":"lead","id":"l9","owner":""}`))
	bad("sharing-model.md 1 Users: Each user has `id`", "user id empty", "users[3]", sdoc().add("users", `{"id":""}`))
	bad("sharing-model.md 1 Records: Each record has ... `id`", "record id empty", "records[7]", sdoc().add("records", `{"object":"lead","id":"","owner":"u1"}`))
	return cs
}

// chainOf is n roles or territories, each the parent of the next.
func chainOf(prefix string, n int) []string {
	out := []string{fmt.Sprintf(`{"id":"%s0"}`, prefix)}
	for i := 1; i < n; i++ {
		out = append(out, fmt.Sprintf(`{"id":"%s%d","parent":"%s%d"}`, prefix, i, prefix, i-1))
	}
	return out
}

// nestOf is n groups, each holding the next; the last holds user u1.
func nestOf(prefix string, n int) []string {
	var out []string
	for i := 0; i < n-1; i++ {
		out = append(out, fmt.Sprintf(`{"id":"%s%d","members":["group:%s%d"]}`, prefix, i, prefix, i+1))
	}
	return append(out, fmt.Sprintf(`{"id":"%s%d","members":["user:u1"]}`, prefix, n-1))
}

type rawDoc string

func (r rawDoc) String() string { return string(r) }

func TestSpecValidity(t *testing.T) {
	t.Parallel()
	names := map[string]bool{}
	for _, tc := range specCases() {
		if names[tc.name] {
			t.Fatalf("case name %q used twice", tc.name)
		}
		names[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := specCheck(tc.doc)
			if tc.valid {
				if err != nil {
					t.Errorf("refused a model the spec allows\n  spec: %s\n  error: %v", tc.spec, err)
				}
				return
			}
			if err == nil {
				t.Errorf("accepted a model the spec makes invalid\n  spec: %s", tc.spec)
				return
			}
			msg := err.Error()
			t.Logf("refused: %s", msg)
			if strings.TrimSpace(msg) == "" {
				t.Errorf("empty error message\n  spec: %s", tc.spec)
			}
			named := tc.want == "" || strings.Contains(strings.ToLower(msg), strings.ToLower(tc.want)) ||
				tc.pos != "" && strings.Contains(msg, tc.pos)
			if !named {
				t.Errorf("error names neither %q nor %q\n  spec: %s\n  error: %s", tc.want, tc.pos, tc.spec, msg)
			}
			if strings.Contains(msg, secretValue) {
				t.Errorf("error echoes a record field value\n  error: %s", msg)
			}
		})
	}
}

// TestSpecBaseIsJSON guards the builder: the base model must be plain JSON.
func TestSpecBaseIsJSON(t *testing.T) {
	t.Parallel()
	if !json.Valid([]byte(sdoc().String())) {
		t.Fatal("base model is not JSON")
	}
}
