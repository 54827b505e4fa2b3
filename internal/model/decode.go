package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// Sink receives the entries of the large sections as Decode reads them. A nil
// func means the section is not expected; Decode then collects nothing for it.
type Sink struct {
	Record func(*Record) error
	Share  func(*Share) error
	Team   func(*Team) error
	// Merge accepts the "delete" section of a merge file (merge.go); the
	// records, shares (Record, Grantee, Cause) and team entries (Record,
	// User) it names go to the Delete funcs.
	Merge        bool
	DeleteRecord func(*string) error
	DeleteShare  func(*Share) error
	DeleteTeam   func(*Team) error
}

// File is what Decode returns: the configuration sections (nil when absent)
// and which large sections were present.
type File struct {
	Config
	HasRecords, HasShares, HasTeams bool
	// Raw holds each configuration section present, as the JSON list it was
	// written as, so it can be stored verbatim.
	Raw map[string]json.RawMessage
	// Delete holds the "delete" section of a merge file: for each section
	// it names, the configuration keys to delete (nil for records, shares
	// and teams, which went to the sink). Nil when absent.
	Delete map[string][]string
	// Revision is the stored configuration's revision the file was
	// exported at, "" when it has none.
	Revision string
}

// Present lists the sections the file contains, in file-format names.
func (f *File) Present() []string {
	var out []string
	add := func(ok bool, name string) {
		if ok {
			out = append(out, name)
		}
	}
	add(f.Objects != nil, "objects")
	add(f.Roles != nil, "roles")
	add(f.Users != nil, "users")
	add(f.Groups != nil, "groups")
	add(f.Territories != nil, "territories")
	add(f.HasRecords, "records")
	add(f.Rules != nil, "rules")
	add(f.HasShares, "shares")
	add(f.HasTeams, "teams")
	add(f.Delete != nil, "delete")
	return out
}

// Parse reads a whole model file into memory. It is for tests and small files;
// imports use Decode, which streams.
func Parse(r io.Reader) (*Model, *File, error) {
	m := &Model{}
	f, err := Decode(r, Sink{
		Record: func(rec *Record) error { m.Records = append(m.Records, *rec); return nil },
		Share:  func(s *Share) error { m.Shares = append(m.Shares, *s); return nil },
		Team:   func(t *Team) error { m.Teams = append(m.Teams, *t); return nil },
	})
	if err != nil {
		return nil, nil, err
	}
	m.Config = f.Config
	return m, f, nil
}

// Decode reads a model file, checks each entry's own shape, streams records,
// shares and teams to sink and returns the configuration sections. It does not
// check references between entries: see Config.Validate and Model.Validate.
// It applies no Limits: it is for trusted input, such as the stored
// configuration; untrusted files go through DecodeLimited.
func Decode(r io.Reader, sink Sink) (*File, error) {
	return decode(r, sink, Limits{}, false)
}

// DecodeLimited is Decode for an untrusted file, within lim: the file's
// size, the configuration sections' size, each entry's size as written, and
// each entry's strings, conditions and filter logic. It reads past no limit
// by more than a read buffer, so a huge value is refused, not buffered.
// Counts and depths, which need the whole configuration, are
// Config.ValidateLimited's. Whatever the limits (0 lifts one), the file must
// be UTF-8, its keys exact and unique, its strings free of U+0000 and of half
// surrogate pairs (keys.go), and its filter logic grouped (checkGrouping).
func DecodeLimited(r io.Reader, sink Sink, lim Limits) (*File, error) {
	return decode(r, sink, lim, true)
}

func decode(r io.Reader, sink Sink, lim Limits, untrusted bool) (*File, error) {
	d := &decoder{lim: &lim, sink: sink, configLeft: lim.ConfigBytes}
	if untrusted {
		d.cr = &capReader{r: r, file: lim.FileBytes, window: -1,
			fileErr: fmt.Errorf("model file: %w", limitErr(LimitFileBytes, lim.FileBytes,
				fmt.Sprintf("larger than the limit of %d bytes", lim.FileBytes)))}
		r = d.cr
		// Keep the file's bytes around the entry being read, so errors
		// can give a line and column, and its keys be checked.
		d.pos = newPosReader(r)
		r = d.pos
		d.keys = &keyChecker{}
	}
	d.dec = json.NewDecoder(r)
	d.dec.DisallowUnknownFields()
	f, err := d.file()
	if err != nil && d.cr != nil && d.cr.tripped != nil {
		// encoding/json reports a reader's error in its own words, or
		// as the syntax error it causes.
		return nil, d.cr.tripped
	}
	return f, err
}

// decoder is one model file being read.
type decoder struct {
	dec        *json.Decoder
	cr         *capReader // nil: a trusted file (the stored configuration)
	lim        *Limits
	sink       Sink
	configLeft int64 // bytes the configuration sections may still take
	// pos keeps the file's bytes around the entry being read, for the
	// line and column of errors; origin is the file offset of the first
	// byte dec reads (a configuration section is read again from memory).
	pos    *posReader
	origin int64
	keys   *keyChecker // nil: a trusted file
}

// tokenSlack is the whitespace allowed around a section name or delimiter
// on top of IDBytes: the window bounds memory, it is no limit of its own.
const tokenSlack = 64 << 10

// armToken bounds what the next section name, version or delimiter reads.
func (d *decoder) armToken() {
	if d.cr == nil {
		return
	}
	if d.lim.IDBytes == 0 {
		d.cr.arm(-1, nil)
		return
	}
	d.cr.arm(d.dec.InputOffset()+d.lim.IDBytes+tokenSlack, d.tokenErr)
}

func (d *decoder) tokenErr() error {
	return limitErr(LimitIDBytes, d.lim.IDBytes, fmt.Sprintf("model file: a section name or delimiter is longer than the limit of %d bytes (with %d bytes of whitespace)",
		d.lim.IDBytes, tokenSlack))
}

func (d *decoder) file() (*File, error) {
	dec := d.dec
	d.armToken()
	if err := d.expectDelim('{', "the model file must be one JSON object", ""); err != nil {
		if d.pos != nil && d.pos.base == 0 && len(d.pos.buf) > 0 && d.pos.buf[0] == 0xef { // what a byte order mark starts with
			return nil, fmt.Errorf("the model file starts with a byte order mark (EF BB BF), which JSON does not allow: save it as UTF-8 without one")
		}
		return nil, err
	}
	f := &File{Raw: map[string]json.RawMessage{}}
	seen := map[string]bool{}
	for {
		d.armToken()
		off := dec.InputOffset()
		d.pos.forget(off)
		if !dec.More() {
			break
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, d.syntaxError(err, off, "")
		}
		key, _ := tok.(string)
		if seen[key] {
			return nil, fmt.Errorf("section %q appears twice", key)
		}
		seen[key] = true
		if key == "version" {
			var v json.RawMessage // not json.Number, which also takes the string "1"
			if err := dec.Decode(&v); err != nil || !isOne(v) {
				return nil, fmt.Errorf("version must be 1")
			}
			continue
		}
		var err2 error
		switch key {
		case "revision":
			err2 = d.decodeRevision(f)
		case "delete":
			err2 = d.decodeDelete(f)
		case "objects":
			f.Objects, err2 = section(d, f, key, objectFromRaw)
		case "roles":
			f.Roles, err2 = section(d, f, key, roleFromRaw)
		case "users":
			f.Users, err2 = section(d, f, key, userFromRaw)
		case "groups":
			f.Groups, err2 = section(d, f, key, groupFromRaw)
		case "territories":
			f.Territories, err2 = section(d, f, key, territoryFromRaw)
		case "rules":
			f.Rules, err2 = d.rules(f)
		case "records":
			f.HasRecords = true
			err2 = stream(d, key, recordFromRaw, d.sink.Record)
		case "shares":
			f.HasShares = true
			err2 = stream(d, key, shareFromRaw, d.sink.Share)
		case "teams":
			f.HasTeams = true
			err2 = stream(d, key, teamFromRaw, d.sink.Team)
		default:
			return nil, fmt.Errorf("unknown section %q (known: version, revision, delete, objects, roles, users, groups, territories, records, rules, shares, teams)", key)
		}
		if err2 != nil {
			return nil, err2
		}
	}
	if err := d.expectDelim('}', "the model file must be one JSON object", ""); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("unexpected data after the model object")
	}
	return f, nil
}

// rules reads the rules section. Its raw JSON, which an import stores,
// keeps its numbers (conditions' values, the configuration's only ones) in
// their float64 form: canonicalNumbers says why.
func (d *decoder) rules(f *File) ([]Rule, error) {
	rules, err := section(d, f, "rules", ruleFromRaw)
	if err == nil && d.cr != nil {
		err = checkGrouping(rules)
	}
	if err == nil {
		f.Raw["rules"], err = canonicalNumbers(f.Raw["rules"])
	}
	return rules, err
}

// expectDelim reads the delimiter delim, failing with msg when the next
// token is another one; path names where for a malformed file.
func (d *decoder) expectDelim(delim json.Delim, msg, path string) error {
	off := d.dec.InputOffset()
	tok, err := d.dec.Token()
	if err != nil {
		return d.syntaxError(err, d.origin+off, path)
	}
	if tok != delim {
		return errors.New(msg + d.entryAt(off))
	}
	return nil
}

// entryErr names an entry by its id when it has one, else by its position.
// An id past the limit is not repeated.
func entryErr(lim *Limits, section string, i int, id string, err error) error {
	if id != "" && (lim.IDBytes == 0 || int64(len(id)) <= lim.IDBytes) {
		return fmt.Errorf("%s %q: %w", singular(section), id, err)
	}
	return fmt.Errorf("%s[%d]: %w", section, i, err)
}

func singular(section string) string {
	if section == "territories" {
		return "territory"
	}
	return strings.TrimSuffix(section, "s")
}

// decodeEntry reads entry i of section sec, which starts after offset off
// of d's input.
func decodeEntry[R any](d *decoder, sec string, i int, off int64, raw *R) error {
	if err := d.dec.Decode(raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field == "" {
				return fmt.Errorf("%s[%d]: must be a %s, not %s%s", sec, i, typeName(te.Type), te.Value, d.entryAt(off))
			}
			return fmt.Errorf("%s[%d]: field %q must be a %s, not %s%s", sec, i, te.Field, typeName(te.Type), te.Value, d.entryAt(off))
		}
		var se *json.SyntaxError
		if errors.As(err, &se) || err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return d.syntaxError(err, d.origin+off, fmt.Sprintf("%s[%d]", sec, i))
		}
		return fmt.Errorf("%s[%d]: %v%s", sec, i, strings.TrimPrefix(err.Error(), "json: "), d.entryAt(off))
	}
	return nil
}

// typeName names the JSON type that encoding/json reads into t.
func typeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if t == reflect.TypeOf(json.RawMessage(nil)) {
			return "JSON value"
		}
		return "list"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Map, reflect.Struct:
		return "JSON object"
	}
	return "number"
}

type identified interface{ id() string }

// section reads a small section whole, keeping its raw JSON in f.Raw. The
// configuration sections share one budget of bytes (Limits.ConfigBytes).
func section[R identified, T any](d *decoder, f *File, sec string, conv func(*R, *Limits) (T, error)) ([]T, error) {
	start := d.dec.InputOffset()
	tooBig := func() error {
		return fmt.Errorf("section %q: %w", sec, limitErr(LimitConfigBytes, d.lim.ConfigBytes,
			fmt.Sprintf("the configuration sections up to this one are larger than the limit of %d bytes", d.lim.ConfigBytes)))
	}
	if d.cr != nil && d.lim.ConfigBytes > 0 {
		d.cr.arm(start+d.configLeft, tooBig)
	}
	var raw json.RawMessage
	if err := d.dec.Decode(&raw); err != nil {
		return nil, d.syntaxError(err, start, fmt.Sprintf("section %q", sec))
	}
	if d.lim.ConfigBytes > 0 {
		used := d.dec.InputOffset() - start
		if used > d.configLeft {
			return nil, tooBig()
		}
		d.configLeft -= used
	}
	f.Raw[sec] = raw
	sub := json.NewDecoder(bytes.NewReader(raw))
	sub.DisallowUnknownFields()
	out := []T{}
	err := stream(&decoder{dec: sub, lim: d.lim, pos: d.pos, origin: d.pos.valueStart(start), keys: d.keys}, sec, conv, func(t *T) error { out = append(out, *t); return nil })
	return out, err
}

// stream reads the list sec entry by entry. When d reads a file, each
// entry may take Limits.EntryBytes, counted from the end of the one before.
func stream[R identified, T any](d *decoder, sec string, conv func(*R, *Limits) (T, error), sink func(*T) error) error {
	dec := d.dec
	d.armToken()
	if err := d.expectDelim('[', fmt.Sprintf("section %q must be a list", sec), fmt.Sprintf("section %q", sec)); err != nil {
		return err
	}
	i := 0
	tooBig := func() error { // of entry i
		return fmt.Errorf("%s[%d]: %w", sec, i, limitErr(LimitEntryBytes, d.lim.EntryBytes,
			fmt.Sprintf("larger than the limit of %d bytes as written", d.lim.EntryBytes)))
	}
	for ; ; i++ {
		start := dec.InputOffset()
		if d.origin == 0 { // reading the file itself, not a section again from memory
			d.pos.forget(start)
		}
		if d.cr != nil {
			if d.lim.EntryBytes > 0 {
				d.cr.arm(start+d.lim.EntryBytes, tooBig)
			} else {
				d.cr.arm(-1, nil)
			}
		}
		if !dec.More() {
			break
		}
		var raw R
		if err := decodeEntry(d, sec, i, start, &raw); err != nil {
			return err
		}
		if d.cr != nil && d.lim.EntryBytes > 0 && dec.InputOffset()-start > d.lim.EntryBytes {
			return tooBig()
		}
		t, err := conv(&raw, d.lim)
		if err == nil { // after conv, whose messages are the more precise
			err = d.checkKeys(start, &raw)
		}
		if err != nil {
			return entryErr(d.lim, sec, i, raw.id(), err)
		}
		if sink != nil {
			if err := sink(&t); err != nil {
				return err
			}
		}
	}
	d.armToken()
	return d.expectDelim(']', fmt.Sprintf("section %q must be a list", sec), fmt.Sprintf("section %q", sec))
}

type rawObject struct {
	Name        string  `json:"name"`
	Parent      *string `json:"parent"`
	InternalOWD *string `json:"internal_owd"`
	ExternalOWD *string `json:"external_owd"`
	Hierarchy   *bool   `json:"hierarchy"`
}

func (r rawObject) id() string { return r.Name }

var objectName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func objectFromRaw(r *rawObject, lim *Limits) (Object, error) {
	if err := lim.checkIDs([]string{"name", "parent", "internal_owd", "external_owd"}, &r.Name, r.Parent, r.InternalOWD, r.ExternalOWD); err != nil {
		return Object{}, err
	}
	if err := emptyKey([]string{"parent"}, r.Parent); err != nil {
		return Object{}, err
	}
	o := Object{Name: r.Name, Parent: str(r.Parent), Hierarchy: r.Hierarchy == nil || *r.Hierarchy}
	if !objectName.MatchString(r.Name) {
		return o, fmt.Errorf("name must match [a-z][a-z0-9_]*")
	}
	if !IsStandard(r.Name) && !strings.HasSuffix(r.Name, "__c") {
		return o, fmt.Errorf("not a standard object (account, contact, opportunity, case, lead), and a custom object's name must end in __c")
	}
	if r.InternalOWD == nil {
		return o, fmt.Errorf("internal_owd is required")
	}
	var ok bool
	if o.InternalOWD, ok = ParseOWD(*r.InternalOWD); !ok {
		return o, fmt.Errorf("internal_owd %q is not private, public_read_only, public_read_write or controlled_by_parent", *r.InternalOWD)
	}
	if r.ExternalOWD != nil {
		if o.ExternalOWD, ok = ParseOWD(*r.ExternalOWD); !ok {
			return o, fmt.Errorf("external_owd %q is not private, public_read_only, public_read_write or controlled_by_parent", *r.ExternalOWD)
		}
	}
	switch {
	case (o.InternalOWD == ControlledByParent) != (o.ExternalOWD == ControlledByParent):
		return o, fmt.Errorf("internal_owd is %s but external_owd is %s: both or neither must be controlled_by_parent", o.InternalOWD, o.ExternalOWD)
	case o.ExternalOWD > o.InternalOWD:
		return o, fmt.Errorf("external OWD %s is more open than internal OWD %s", o.ExternalOWD, o.InternalOWD)
	case o.CBP() && o.Parent == "":
		return o, fmt.Errorf("controlled_by_parent needs a parent object")
	case !o.Hierarchy && IsStandard(o.Name):
		return o, fmt.Errorf("hierarchy can be false only on a custom object")
	}
	return o, nil
}

type rawChild struct {
	Contact     *string `json:"contact_access"`
	Opportunity *string `json:"opportunity_access"`
	Case        *string `json:"case_access"`
}

func (r rawChild) check(lim *Limits) error {
	return lim.checkIDs([]string{"contact_access", "opportunity_access", "case_access"}, r.Contact, r.Opportunity, r.Case)
}

func (r rawChild) set() bool { return r.Contact != nil || r.Opportunity != nil || r.Case != nil }

func (r rawChild) parse() (ChildAccess, error) {
	var c ChildAccess
	for _, f := range []struct {
		name string
		raw  *string
		dst  *Level
	}{{"contact_access", r.Contact, &c.Contact}, {"opportunity_access", r.Opportunity, &c.Opportunity}, {"case_access", r.Case, &c.Case}} {
		if f.raw == nil {
			continue
		}
		l, ok := ParseLevel(*f.raw)
		if !ok || l == All {
			return c, fmt.Errorf("%s %q is not none, read or edit", f.name, *f.raw)
		}
		*f.dst = l
	}
	return c, nil
}

func parseAccess(s string) (Level, error) {
	l, ok := ParseLevel(s)
	if !ok || (l != Read && l != Edit) {
		return None, fmt.Errorf("access %q is not read or edit", s)
	}
	return l, nil
}

type rawRole struct {
	ID     string  `json:"id"`
	Parent *string `json:"parent"`
	rawChild
}

func (r rawRole) id() string { return r.ID }

func roleFromRaw(r *rawRole, lim *Limits) (Role, error) {
	if err := lim.checkIDs([]string{"id", "parent"}, &r.ID, r.Parent); err != nil {
		return Role{}, err
	}
	if err := r.rawChild.check(lim); err != nil {
		return Role{}, err
	}
	if r.ID == "" {
		return Role{}, fmt.Errorf("id is required")
	}
	if err := emptyKey([]string{"parent"}, r.Parent); err != nil {
		return Role{}, err
	}
	c, err := r.rawChild.parse()
	return Role{ID: r.ID, Parent: str(r.Parent), Child: c}, err
}

type rawUser struct {
	ID     string  `json:"id"`
	Role   *string `json:"role"`
	Type   *string `json:"type"`
	Active *bool   `json:"active"`
}

func (r rawUser) id() string { return r.ID }

func userFromRaw(r *rawUser, lim *Limits) (User, error) {
	if err := lim.checkIDs([]string{"id", "role", "type"}, &r.ID, r.Role, r.Type); err != nil {
		return User{}, err
	}
	if err := emptyKey([]string{"role", "type"}, r.Role, r.Type); err != nil {
		return User{}, err
	}
	u := User{ID: r.ID, Role: str(r.Role), Active: r.Active == nil || *r.Active}
	if r.ID == "" {
		return u, fmt.Errorf("id is required")
	}
	switch str(r.Type) {
	case "", "internal": // "" is the absent key
	case "external":
		u.External = true
	default:
		return u, fmt.Errorf("type %q is not internal or external", *r.Type)
	}
	return u, nil
}

type rawGroup struct {
	ID            string   `json:"id"`
	Members       []string `json:"members"`
	IncludeBosses *bool    `json:"include_bosses"`
	Queue         *bool    `json:"queue"`
}

func (r rawGroup) id() string { return r.ID }

func groupFromRaw(r *rawGroup, lim *Limits) (Group, error) {
	if err := lim.checkID("id", r.ID); err != nil {
		return Group{}, err
	}
	for i, m := range r.Members {
		if lim.checkGrantee("", m) != nil {
			return Group{}, lim.checkGrantee(fmt.Sprintf("member %d", i+1), m)
		}
	}
	g := Group{ID: r.ID, IncludeBosses: r.IncludeBosses == nil || *r.IncludeBosses, Queue: r.Queue != nil && *r.Queue}
	if r.ID == "" {
		return g, fmt.Errorf("id is required")
	}
	for _, m := range r.Members {
		gr, err := ParseGrantee(m, false)
		if err != nil {
			return g, fmt.Errorf("member: %w", err)
		}
		g.Members = append(g.Members, gr)
	}
	return g, nil
}

type rawTerritory struct {
	ID            string   `json:"id"`
	Parent        *string  `json:"parent"`
	Users         []string `json:"users"`
	AccountAccess *string  `json:"account_access"`
	rawChild
}

func (r rawTerritory) id() string { return r.ID }

func territoryFromRaw(r *rawTerritory, lim *Limits) (Territory, error) {
	if err := lim.checkIDs([]string{"id", "parent", "account_access"}, &r.ID, r.Parent, r.AccountAccess); err != nil {
		return Territory{}, err
	}
	for i, u := range r.Users {
		if !lim.idOK(u) {
			return Territory{}, lim.checkID(fmt.Sprintf("user %d", i+1), u)
		}
	}
	if err := r.rawChild.check(lim); err != nil {
		return Territory{}, err
	}
	if err := emptyKey([]string{"parent"}, r.Parent); err != nil {
		return Territory{}, err
	}
	t := Territory{ID: r.ID, Parent: str(r.Parent), Users: r.Users, AccountAccess: Read}
	if r.ID == "" {
		return t, fmt.Errorf("id is required")
	}
	if r.AccountAccess != nil {
		l, err := parseAccess(*r.AccountAccess)
		if err != nil {
			return t, fmt.Errorf("account_%w", err)
		}
		t.AccountAccess = l
	}
	var err error
	t.Child, err = r.rawChild.parse()
	return t, err
}

type rawRecord struct {
	Object      string   `json:"object"`
	ID          string   `json:"id"`
	Owner       string   `json:"owner"`
	Parent      *string  `json:"parent"`
	Fields      Fields   `json:"fields"`
	Territories []string `json:"territories"`
}

func (r rawRecord) id() string { return r.ID }

func recordFromRaw(r *rawRecord, lim *Limits) (Record, error) {
	if err := lim.checkIDs([]string{"id", "object", "owner", "parent"}, &r.ID, &r.Object, &r.Owner, r.Parent); err != nil {
		return Record{}, err
	}
	for i, t := range r.Territories {
		if !lim.idOK(t) {
			return Record{}, lim.checkID(fmt.Sprintf("territory %d", i+1), t)
		}
	}
	if err := checkFields(lim, r.Fields); err != nil {
		return Record{}, err
	}
	if err := emptyKey([]string{"parent"}, r.Parent); err != nil {
		return Record{}, err
	}
	rec := Record{Object: r.Object, ID: r.ID, Owner: r.Owner, Parent: str(r.Parent), Fields: r.Fields, Territories: r.Territories}
	switch {
	case r.ID == "":
		return rec, fmt.Errorf("id is required")
	case r.Object == "":
		return rec, fmt.Errorf("object is required")
	case r.Owner == "":
		return rec, fmt.Errorf("owner is required")
	}
	return rec, nil
}

// checkFields bounds a record's field names and string values, reporting
// the first field at fault in byte order (never its value).
func checkFields(lim *Limits, f Fields) error {
	if lim.IDBytes == 0 && lim.ValueBytes == 0 {
		return nil
	}
	bad, found := "", false
	for k, v := range f {
		if (!lim.idOK(k) || !lim.valueOK(v)) && (!found || k < bad) {
			bad, found = k, true
		}
	}
	if !found {
		return nil
	}
	if err := lim.checkID("a field name", bad); err != nil {
		return err
	}
	return lim.checkValue(fmt.Sprintf("field %q", bad), f[bad])
}

type rawCriteria struct {
	Conditions []struct {
		Field string          `json:"field"`
		Op    string          `json:"op"`
		Value json.RawMessage `json:"value"`
	} `json:"conditions"`
	Logic *string `json:"logic"`
}

type rawRule struct {
	ID       string       `json:"id"`
	Object   string       `json:"object"`
	Type     string       `json:"type"`
	Source   *string      `json:"source"`
	Criteria *rawCriteria `json:"criteria"`
	Target   string       `json:"target"`
	Access   string       `json:"access"`
	rawChild
}

func (r rawRule) id() string { return r.ID }

func ruleFromRaw(r *rawRule, lim *Limits) (Rule, error) {
	if err := r.checkLimits(lim); err != nil {
		return Rule{}, err
	}
	rule := Rule{ID: r.ID, Object: r.Object}
	if r.ID == "" {
		return rule, fmt.Errorf("id is required")
	}
	if r.Object == "" {
		return rule, fmt.Errorf("object is required")
	}
	var err error
	if rule.Target, err = ParseGrantee(r.Target, false); err != nil {
		return rule, fmt.Errorf("target: %w", err)
	}
	if rule.Access, err = parseAccess(r.Access); err != nil {
		return rule, err
	}
	if rule.Child, err = r.rawChild.parse(); err != nil {
		return rule, err
	}
	if r.rawChild.set() && r.Object != Account {
		return rule, fmt.Errorf("child access (contact_access, opportunity_access, case_access) is allowed only on account rules")
	}
	switch r.Type {
	case "owner":
		rule.Type = OwnerRule
		if r.Criteria != nil {
			return rule, fmt.Errorf("an owner rule takes a source, not criteria")
		}
		if r.Source == nil {
			return rule, fmt.Errorf("an owner rule needs a source")
		}
		if rule.Source, err = ParseGrantee(*r.Source, false); err != nil {
			return rule, fmt.Errorf("source: %w", err)
		}
		if rule.Source.Kind == GUser {
			return rule, fmt.Errorf("source %q: an owner rule's source cannot be a single user", *r.Source)
		}
	case "criteria":
		rule.Type = CriteriaRule
		if r.Source != nil {
			return rule, fmt.Errorf("a criteria rule takes criteria, not a source")
		}
		if r.Criteria == nil {
			return rule, fmt.Errorf("a criteria rule needs criteria")
		}
		if rule.Criteria, err = r.Criteria.parse(lim); err != nil {
			return rule, err
		}
	default:
		return rule, fmt.Errorf("type %q is not owner or criteria", r.Type)
	}
	return rule, nil
}

// checkLimits checks the rule's strings, conditions and filter logic
// against lim, before anything else is read of it.
func (r *rawRule) checkLimits(lim *Limits) error {
	if err := lim.checkIDs([]string{"id", "object", "type", "access"}, &r.ID, &r.Object, &r.Type, &r.Access); err != nil {
		return err
	}
	if err := lim.checkGrantee("target", r.Target); err != nil {
		return err
	}
	if r.Source != nil {
		if err := lim.checkGrantee("source", *r.Source); err != nil {
			return err
		}
	}
	if err := r.rawChild.check(lim); err != nil {
		return err
	}
	c := r.Criteria
	if c == nil {
		return nil
	}
	if err := over(int64(len(c.Conditions)), lim.Conditions, LimitConditions,
		fmt.Sprintf("%d conditions", len(c.Conditions)), "conditions"); err != nil {
		return err
	}
	if c.Logic != nil {
		if err := over(int64(len(*c.Logic)), lim.LogicChars, LimitLogicChars,
			fmt.Sprintf("filter logic of %d characters", len(*c.Logic)), "characters"); err != nil {
			return err
		}
	}
	for i, cond := range c.Conditions {
		if !lim.idOK(cond.Field) || !lim.idOK(cond.Op) {
			return lim.checkIDs([]string{fmt.Sprintf("condition %d: field", i+1), fmt.Sprintf("condition %d: op", i+1)}, &cond.Field, &cond.Op)
		}
	}
	return nil
}

// parse reads a criteria rule's conditions, each value within lim, and its
// filter logic.
func (c *rawCriteria) parse(lim *Limits) (*Criteria, error) {
	conds := make([]Condition, len(c.Conditions))
	for i, rc := range c.Conditions {
		op, ok := ParseOp(rc.Op)
		if !ok {
			return nil, fmt.Errorf("condition %d: unknown op %q (known: %s)", i+1, rc.Op, strings.Join(opNames[:], ", "))
		}
		if rc.Field == "" {
			return nil, fmt.Errorf("condition %d: field is required", i+1)
		}
		conds[i] = Condition{Field: rc.Field, Op: op}
		if len(rc.Value) == 0 {
			return nil, fmt.Errorf("condition %d: value is required", i+1)
		}
		if err := conds[i].Value.UnmarshalJSON(rc.Value); err != nil {
			return nil, fmt.Errorf("condition %d: value %w", i+1, conditionValueError(rc.Value, err))
		}
		if err := lim.checkValue(fmt.Sprintf("condition %d: value", i+1), conds[i].Value); err != nil {
			return nil, err
		}
	}
	return NewCriteria(conds, str(c.Logic))
}

// conditionValueError is err, the error of a field's value, as a
// condition's value: that one can be null, a condition's cannot, so the
// message does not offer it.
func conditionValueError(raw json.RawMessage, err error) error {
	switch b := bytes.TrimSpace(raw); {
	case len(b) > 0 && b[0] == '{':
		return fmt.Errorf("must be a string, number or boolean, not an object")
	case len(b) > 0 && b[0] == '[':
		return fmt.Errorf("must be a string, number or boolean, not a list")
	}
	return err
}

type rawShare struct {
	Object  string `json:"object"`
	Record  string `json:"record"`
	Grantee string `json:"grantee"`
	Access  string `json:"access"`
	Cause   string `json:"cause"`
}

func (r rawShare) id() string { return "" }

var apexCause = regexp.MustCompile(`^apex:[a-z0-9_]+$`)

func shareFromRaw(r *rawShare, lim *Limits) (Share, error) {
	if err := lim.checkIDs([]string{"object", "record", "access", "cause"}, &r.Object, &r.Record, &r.Access, &r.Cause); err != nil {
		return Share{}, err
	}
	if err := lim.checkGrantee("grantee", r.Grantee); err != nil {
		return Share{}, err
	}
	s := Share{Object: r.Object, Record: r.Record, Cause: r.Cause}
	var err error
	switch {
	case r.Object == "":
		return s, fmt.Errorf("object is required")
	case r.Record == "":
		return s, fmt.Errorf("record is required")
	case r.Cause == "":
		return s, fmt.Errorf("cause is required: manual or apex:NAME with NAME in [a-z0-9_]+")
	case r.Cause != CauseManual && !apexCause.MatchString(r.Cause):
		return s, fmt.Errorf("cause %q is not manual or apex:NAME with NAME in [a-z0-9_]+", r.Cause)
	}
	if s.Grantee, err = ParseGrantee(r.Grantee, false); err != nil {
		return s, err
	}
	s.Access, err = parseAccess(r.Access)
	return s, err
}

type rawTeam struct {
	Record string `json:"record"`
	User   string `json:"user"`
	Access string `json:"access"`
	rawChild
}

func (r rawTeam) id() string { return "" }

func teamFromRaw(r *rawTeam, lim *Limits) (Team, error) {
	if err := lim.checkIDs([]string{"record", "user", "access"}, &r.Record, &r.User, &r.Access); err != nil {
		return Team{}, err
	}
	if err := r.rawChild.check(lim); err != nil {
		return Team{}, err
	}
	t := Team{Record: r.Record, User: r.User, ChildGiven: r.rawChild.set()}
	var err error
	switch {
	case r.Record == "":
		return t, fmt.Errorf("record is required")
	case r.User == "":
		return t, fmt.Errorf("user is required")
	}
	if t.Access, err = parseAccess(r.Access); err != nil {
		return t, err
	}
	t.Child, err = r.rawChild.parse()
	return t, err
}

// isOne says whether v is a JSON number equal to 1 exactly (1, 1.0, 1e0):
// a string or a boolean is not, nor is 1.00000000000000001.
func isOne(v json.RawMessage) bool {
	s := strings.TrimSpace(string(v))
	// The float check first: a number near 1 has an exponent no larger
	// than its length, so the exact one then costs little.
	if f, err := strconv.ParseFloat(s, 64); err != nil || f != 1 {
		return false
	}
	r, ok := new(big.Rat).SetString(s)
	return ok && r.Cmp(big.NewRat(1, 1)) == 0
}

// emptyKey refuses an optional key given as "": an id is never empty
// (docs/model.md), so "" names nothing; leave the key out, or give null, for
// none.
func emptyKey(keys []string, ps ...*string) error {
	for i, p := range ps {
		if p != nil && *p == "" {
			return fmt.Errorf("%s is empty: leave the key out for none", keys[i])
		}
	}
	return nil
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
