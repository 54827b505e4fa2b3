package model

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Limits bound the size and the cost of a model file, which is untrusted
// input. DecodeLimited enforces the limits on one entry (its strings, its
// conditions, its size as written) while it reads, and Config.ValidateLimited
// those on the whole configuration (counts and hierarchy depths), so one
// message names the entry at fault, the limit and how to raise it.
//
// A zero field means no limit; the zero Limits is for trusted input, such as
// the stored configuration a limited import already accepted.
//
// The defaults (DefaultLimits) sit far above real orgs (Salesforce's own
// limits are lower still). Only the configuration is ever held whole, and
// it within ConfigBytes:
//
//   - FileBytes, 4 GiB: records, shares and teams are streamed, so the file
//     costs import time and staging disk, not memory. The benchmark org takes
//     about 160 bytes a record: 4 GiB holds some 25 million records.
//   - ConfigBytes, 128 MiB: the configuration sections (objects, roles,
//     users, groups, territories, rules) are held in memory, and stored as
//     JSON documents that every run decodes again. A million users of about
//     60 bytes each take 60 MB.
//   - EntryBytes, 1 MiB: one record, share or team entry as written, counted
//     from the end of the entry before it, so a record's fields together.
//     It is enforced while reading: a 100 MB field value is refused after
//     reading 1 MiB of it, not buffered whole.
//   - IDBytes, 1 KiB: every id, name, field name, reference, grantee (after
//     its kind prefix) and keyword. Ids are keys of maps, indexes and
//     closure rows, and are quoted in messages.
//   - ValueBytes, 128 KiB: one string value, of a record field or of a
//     condition. Criteria compare values with every matching record.
//   - Conditions, 1,000 per criteria rule (Salesforce allows 10 to 25): a
//     rule is evaluated on every record of its object.
//   - LogicChars, 10,000 characters of filter logic: enough to name 1,000
//     conditions; nesting is limited to 100 levels besides.
//   - Roles, Territories and Groups, 100,000 each, and Users, 1,000,000:
//     every one is a grantee with a closure of its own.
//   - RoleDepth, TerritoryDepth and GroupDepth, 100 levels (a root role, a
//     root territory or a group with no nested group is at level 1): each
//     user of a level reaches the levels above it, so the closure grows with
//     depth times users. Real hierarchies are under 20 levels.
//   - Closure, 50,000,000 closure entries (acl_member rows, as
//     sharing.Org.ClosureEstimate bounds them): about 4 GB of acl_member
//     with its indexes. The limits above allow a few kilobytes of groups
//     that each hold a role and its subordinates to make groups times users
//     entries, some 10^11, and a run's time and memory grow with them (2,000
//     such groups over 2,000 users: 4 million entries, a 57 s full run
//     using 520 MB). A chain of 1,000 roles with a user each makes 3
//     million entries (255 MB). The bench's 10,000,000-record org makes
//     207,552.
//   - ClosureWarn, 10,000,000 entries: not a limit but the size at which
//     `recalc import` and `recalc plan` warn.
type Limits struct {
	FileBytes   int64
	ConfigBytes int64
	EntryBytes  int64
	IDBytes     int64
	ValueBytes  int64

	Conditions int64
	LogicChars int64

	Users          int64
	Roles          int64
	RoleDepth      int64
	Territories    int64
	TerritoryDepth int64
	Groups         int64
	GroupDepth     int64

	Closure     int64
	ClosureWarn int64
}

// DefaultLimits returns the limits an import applies unless told otherwise.
// The Limits doc says why each value.
func DefaultLimits() Limits {
	return Limits{
		FileBytes:   4 << 30,
		ConfigBytes: 128 << 20,
		EntryBytes:  1 << 20,
		IDBytes:     1 << 10,
		ValueBytes:  128 << 10,

		Conditions: 1000,
		LogicChars: 10000,

		Users:          1000000,
		Roles:          100000,
		RoleDepth:      100,
		Territories:    100000,
		TerritoryDepth: 100,
		Groups:         100000,
		GroupDepth:     100,

		Closure:     50000000,
		ClosureWarn: 10000000,
	}
}

// LimitInfo describes one field of Limits for the command line and docs.
type LimitInfo struct {
	// Name is the limit's name: its command-line flag without the dashes,
	// and, upper-cased with RECALC_ in front, its environment variable.
	Name  string
	Usage string
	Field func(*Limits) *int64
}

// EnvVar is the environment variable that sets the limit.
func (i LimitInfo) EnvVar() string { return EnvVar(i.Name) }

// EnvVar returns the environment variable of the limit named name.
func EnvVar(name string) string {
	return "RECALC_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Limit names, used in messages, flags and environment variables.
const (
	LimitFileBytes      = "max-file-bytes"
	LimitConfigBytes    = "max-config-bytes"
	LimitEntryBytes     = "max-entry-bytes"
	LimitIDBytes        = "max-id-bytes"
	LimitValueBytes     = "max-value-bytes"
	LimitConditions     = "max-conditions"
	LimitLogicChars     = "max-logic-chars"
	LimitUsers          = "max-users"
	LimitRoles          = "max-roles"
	LimitRoleDepth      = "max-role-depth"
	LimitTerritories    = "max-territories"
	LimitTerritoryDepth = "max-territory-depth"
	LimitGroups         = "max-groups"
	LimitGroupDepth     = "max-group-depth"
	LimitClosure        = "max-closure"
	LimitClosureWarn    = "closure-warn"
)

// LimitInfos lists every field of Limits, in the order of the docs.
func LimitInfos() []LimitInfo {
	return []LimitInfo{
		{LimitFileBytes, "largest model file, in bytes", func(l *Limits) *int64 { return &l.FileBytes }},
		{LimitConfigBytes, "largest configuration sections (objects, roles, users, groups, territories, rules) together, in bytes as written", func(l *Limits) *int64 { return &l.ConfigBytes }},
		{LimitEntryBytes, "largest record, share or team entry (a record's fields included), in bytes as written", func(l *Limits) *int64 { return &l.EntryBytes }},
		{LimitIDBytes, "longest id, name, field name, grantee or keyword, in bytes", func(l *Limits) *int64 { return &l.IDBytes }},
		{LimitValueBytes, "longest string value of a record field or a condition, in bytes", func(l *Limits) *int64 { return &l.ValueBytes }},
		{LimitConditions, "most conditions in one criteria rule", func(l *Limits) *int64 { return &l.Conditions }},
		{LimitLogicChars, "longest filter logic of a criteria rule, in characters (bytes)", func(l *Limits) *int64 { return &l.LogicChars }},
		{LimitUsers, "most users", func(l *Limits) *int64 { return &l.Users }},
		{LimitRoles, "most roles", func(l *Limits) *int64 { return &l.Roles }},
		{LimitRoleDepth, "most levels of the role hierarchy", func(l *Limits) *int64 { return &l.RoleDepth }},
		{LimitTerritories, "most territories", func(l *Limits) *int64 { return &l.Territories }},
		{LimitTerritoryDepth, "most levels of the territory hierarchy", func(l *Limits) *int64 { return &l.TerritoryDepth }},
		{LimitGroups, "most groups and queues", func(l *Limits) *int64 { return &l.Groups }},
		{LimitGroupDepth, "most levels of groups nested in groups", func(l *Limits) *int64 { return &l.GroupDepth }},
		{LimitClosure, "most closure entries (acl_member rows) the configuration may make, as estimated from its hierarchies and groups", func(l *Limits) *int64 { return &l.Closure }},
		{LimitClosureWarn, "warn when the closure (acl_member) may exceed this many entries", func(l *Limits) *int64 { return &l.ClosureWarn }},
	}
}

// LimitError is input past one of the Limits. The caller prefixes the entry
// at fault.
type LimitError struct {
	Limit string // the limit's name, e.g. LimitConditions
	Max   int64  // its value
	Msg   string // what is past it, the limit included
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s (%s: raise it with --%s or %s)", e.Msg, e.Limit, e.Limit, EnvVar(e.Limit))
}

// over reports n past max, unless max is zero (no limit), as "what, over
// the limit of max unit".
func over(n, max int64, limit, what, unit string) error {
	if max > 0 && n > max {
		return limitErr(limit, max, fmt.Sprintf("%s, over the limit of %d %s", what, max, unit))
	}
	return nil
}

func limitErr(limit string, max int64, msg string) *LimitError {
	return &LimitError{Limit: limit, Max: max, Msg: msg}
}

// idOK reports whether an id or keyword is within the limit.
func (l *Limits) idOK(s string) bool {
	return (l.IDBytes == 0 || int64(len(s)) <= l.IDBytes) && !strings.ContainsRune(s, 0)
}

// valueOK reports whether a value is within the limit.
func (l *Limits) valueOK(v Value) bool {
	return v.Kind != String || (l.ValueBytes == 0 || int64(len(v.Str)) <= l.ValueBytes) && !strings.ContainsRune(v.Str, 0)
}

// errNUL is the error of a string holding U+0000, which PostgreSQL cannot
// store in text or jsonb.
func errNUL(what string) error {
	return fmt.Errorf("%s holds the character \\u0000, which PostgreSQL cannot store: remove it", what)
}

// checkID bounds an id or keyword; what names it, as "parent" or "member 3".
func (l *Limits) checkID(what, s string) error {
	switch {
	case l.idOK(s):
		return nil
	case strings.ContainsRune(s, 0):
		return errNUL(what)
	}
	return over(int64(len(s)), l.IDBytes, LimitIDBytes, fmt.Sprintf("%s is %d bytes long", what, len(s)), "bytes")
}

// checkIDs bounds optional ids (nil is absent).
func (l *Limits) checkIDs(what []string, s ...*string) error {
	for i, p := range s {
		if p != nil {
			if err := l.checkID(what[i], *p); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxGranteePrefix is the longest grantee kind prefix.
const maxGranteePrefix = len("role_and_internal_subordinates:")

// checkGrantee bounds the id of a grantee string, after its kind prefix.
func (l *Limits) checkGrantee(what, s string) error {
	if l.IDBytes == 0 {
		return nil
	}
	_, id, found := strings.Cut(s, ":")
	if !found || len(s)-len(id) > maxGranteePrefix {
		id = s
	}
	if l.idOK(id) {
		return nil
	}
	return over(int64(len(id)), l.IDBytes, LimitIDBytes, fmt.Sprintf("%s has an id of %d bytes", what, len(id)), "bytes")
}

// checkValue bounds a string value. The message never shows the value.
func (l *Limits) checkValue(what string, v Value) error {
	switch {
	case l.valueOK(v):
		return nil
	case strings.ContainsRune(v.Str, 0):
		return errNUL(what)
	}
	return over(int64(len(v.Str)), l.ValueBytes, LimitValueBytes, fmt.Sprintf("%s is a string of %d bytes", what, len(v.Str)), "bytes")
}

// capReader counts the bytes it delivers and stops at the file limit and at
// a window the decoder arms before each value it reads, so that a value past
// its limit is refused before it is buffered whole. Short reads are fine for
// encoding/json: a value that ends within the window decodes.
type capReader struct {
	r       io.Reader
	n       int64 // bytes delivered
	file    int64 // the file limit; 0: none
	fileErr error
	window  int64        // absolute offset not to read past; < 0: none
	winErr  func() error // what reading past window reports, built only then
	tripped error        // the limit error last returned, reset by arm
	// tail is the start of a UTF-8 sequence the last read cut: every byte
	// must be UTF-8, or encoding/json would read it as U+FFFD, and two
	// ids that differ only there would read alike.
	tail []byte
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.file > 0 {
		// Read one byte past the limit, to tell a file of exactly the
		// limit from a longer one.
		if c.n > c.file {
			c.tripped = c.fileErr
			return 0, c.fileErr
		}
		p = p[:min(int64(len(p)), c.file+1-c.n)]
	}
	if c.window >= 0 {
		if c.n >= c.window {
			c.tripped = c.winErr()
			return 0, c.tripped
		}
		p = p[:min(int64(len(p)), c.window-c.n)]
	}
	k, err := c.r.Read(p)
	c.n += int64(k)
	if c.file > 0 && c.n > c.file {
		c.tripped = c.fileErr
		return 0, c.fileErr
	}
	if uerr := c.checkUTF8(p[:k], err == io.EOF); uerr != nil {
		c.tripped = uerr
		return 0, uerr
	}
	return k, err
}

// checkUTF8 fails when the bytes read so far, b the last of them, are not
// UTF-8, but for a sequence b ends in the middle of, unless at the end.
func (c *capReader) checkUTF8(b []byte, end bool) error {
	buf := b
	if len(c.tail) > 0 { // a few bytes: copy them before the read
		buf = append(c.tail, b...)
	}
	cut := len(buf)
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-utf8.UTFMax; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) && !end {
				cut = i
			}
			break
		}
	}
	if !utf8.Valid(buf[:cut]) {
		i := 0
		for i < cut {
			r, size := utf8.DecodeRune(buf[i:cut])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
		}
		return fmt.Errorf("model file: byte %d is not UTF-8: save the file as UTF-8", c.n-int64(len(buf))+int64(i)+1)
	}
	c.tail = append(c.tail[:0], buf[cut:]...)
	return nil
}

// arm sets the window: no reading past offset at (none when at < 0); err
// builds what reading past it reports.
func (c *capReader) arm(at int64, err func() error) {
	c.window, c.winErr, c.tripped = at, err, nil
}
