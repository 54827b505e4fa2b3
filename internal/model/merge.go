package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
)

// A merge file (`recalc import --merge`) has the sections of a model file,
// whose entries replace the stored entries with the same key, and a
// "delete" section naming stored entries to remove:
//
//	"delete": {"rules": ["r1"], "records": ["a1"],
//	           "shares": [{"record": "a1", "grantee": "user:u", "cause": "manual"}],
//	           "teams": [{"record": "a1", "user": "u"}]}
//
// Configuration entries are keyed by "name" (objects) or "id" (the rest),
// records by id, shares by (record, grantee, cause) and team entries by
// (record, user).

// ConfigSections are the configuration sections, in file order.
var ConfigSections = []string{"objects", "roles", "users", "groups", "territories", "rules"}

// DataSections are the large sections, streamed.
var DataSections = []string{"records", "shares", "teams"}

// keyField is the key of a configuration section's entries.
func keyField(sec string) string {
	if sec == "objects" {
		return "name"
	}
	return "id"
}

// revisionPattern is what a file's "revision" may be: what export writes.
var revisionPattern = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

// decodeRevision reads the file's "revision": the stored configuration's
// revision it was exported at.
func (d *decoder) decodeRevision(f *File) error {
	var v string
	if err := d.dec.Decode(&v); err != nil || !revisionPattern.MatchString(v) {
		return fmt.Errorf(`"revision" must be the string that recalc export wrote (lower-case hex): leave it out to skip the check`)
	}
	f.Revision = v
	return nil
}

type rawKey string

func (r rawKey) id() string { return string(r) }

func keyFromRaw(r *rawKey, lim *Limits) (string, error) {
	if err := lim.checkID("id", string(*r)); err != nil {
		return "", err
	}
	if *r == "" {
		return "", fmt.Errorf("id is required")
	}
	return string(*r), nil
}

type rawShareKey struct {
	Record  string `json:"record"`
	Grantee string `json:"grantee"`
	Cause   string `json:"cause"`
}

func (r rawShareKey) id() string { return "" }

func shareKeyFromRaw(r *rawShareKey, lim *Limits) (Share, error) {
	if err := lim.checkIDs([]string{"record", "grantee", "cause"}, &r.Record, &r.Grantee, &r.Cause); err != nil {
		return Share{}, err
	}
	if r.Record == "" || r.Grantee == "" || r.Cause == "" {
		return Share{}, fmt.Errorf("record, grantee and cause are required: they name the share to delete")
	}
	g, err := ParseGrantee(r.Grantee, false)
	return Share{Record: r.Record, Grantee: g, Cause: r.Cause}, err
}

type rawTeamKey struct {
	Record string `json:"record"`
	User   string `json:"user"`
}

func (r rawTeamKey) id() string { return "" }

func teamKeyFromRaw(r *rawTeamKey, lim *Limits) (Team, error) {
	if err := lim.checkIDs([]string{"record", "user"}, &r.Record, &r.User); err != nil {
		return Team{}, err
	}
	if r.Record == "" || r.User == "" {
		return Team{}, fmt.Errorf("record and user are required: they name the team entry to delete")
	}
	return Team{Record: r.Record, User: r.User}, nil
}

// decodeDelete reads the "delete" section of a merge file: configuration
// keys into f.Delete, within what is left of Limits.ConfigBytes, and
// records, shares and team entries to the sink, streamed.
func (d *decoder) decodeDelete(f *File) error {
	if !d.sink.Merge {
		return fmt.Errorf(`section "delete" is allowed only in a merge file: import it with recalc import --merge`)
	}
	if err := d.expectDelim('{', `section "delete" must be a JSON object of lists, as {"rules": ["r1"]}`, `section "delete"`); err != nil {
		return err
	}
	f.Delete = map[string][]string{}
	for {
		d.armToken()
		off := d.dec.InputOffset()
		d.pos.forget(off)
		if !d.dec.More() {
			break
		}
		tok, err := d.dec.Token()
		if err != nil {
			return d.syntaxError(err, off, `section "delete"`)
		}
		key, _ := tok.(string)
		if _, dup := f.Delete[key]; dup {
			return fmt.Errorf("delete: %q appears twice", key)
		}
		if err := d.deleteList(f, key); err != nil {
			return err
		}
	}
	return d.expectDelim('}', `section "delete" must be a JSON object of lists`, `section "delete"`)
}

// deleteList reads the list of the "delete" section for section sec.
func (d *decoder) deleteList(f *File, sec string) error {
	path := "delete." + sec
	switch sec {
	case "records":
		f.Delete[sec] = nil
		return stream(d, path, keyFromRaw, func(id *string) error { return callSink(d.sink.DeleteRecord, id) })
	case "shares":
		f.Delete[sec] = nil
		return stream(d, path, shareKeyFromRaw, func(s *Share) error { return callSink(d.sink.DeleteShare, s) })
	case "teams":
		f.Delete[sec] = nil
		return stream(d, path, teamKeyFromRaw, func(t *Team) error { return callSink(d.sink.DeleteTeam, t) })
	}
	known := false
	for _, s := range ConfigSections {
		known = known || s == sec
	}
	if !known {
		return fmt.Errorf("delete: unknown section %q (known: objects, roles, users, groups, territories, rules, records, shares, teams)", sec)
	}
	start := d.dec.InputOffset()
	keys := []string{}
	err := stream(d, path, keyFromRaw, func(id *string) error {
		if d.lim.ConfigBytes > 0 && d.dec.InputOffset()-start > d.configLeft {
			return fmt.Errorf("%s: %w", path, limitErr(LimitConfigBytes, d.lim.ConfigBytes,
				fmt.Sprintf("the configuration sections and deletions are larger than the limit of %d bytes", d.lim.ConfigBytes)))
		}
		keys = append(keys, *id)
		return nil
	})
	d.configLeft -= d.dec.InputOffset() - start
	f.Delete[sec] = keys
	return err
}

func callSink[T any](fn func(*T) error, v *T) error {
	if fn == nil {
		return nil
	}
	return fn(v)
}

// MergeSection applies a merge file's section to the stored one: each
// entry of file (a JSON list, or nil) replaces the stored entry with the
// same key, in place, or is appended; the entries keyed in del are removed.
// Stored entries keep their order and their JSON as written. A key given
// twice, both replaced and deleted, or deleted but not stored is refused.
func MergeSection(sec string, stored, file json.RawMessage, del []string) (json.RawMessage, error) {
	var have, add []json.RawMessage
	if len(stored) > 0 {
		if err := json.Unmarshal(stored, &have); err != nil {
			return nil, fmt.Errorf("stored section %s: %w", sec, err)
		}
	}
	if len(file) > 0 {
		if err := json.Unmarshal(file, &add); err != nil {
			return nil, fmt.Errorf("section %s: %w", sec, err)
		}
	}
	at := make(map[string]int, len(have)) // key to index in have
	for i, e := range have {
		at[entryKey(sec, e)] = i
	}
	gone := make(map[string]bool, len(del))
	for _, k := range del {
		if _, ok := at[k]; !ok {
			return nil, fmt.Errorf("delete.%s: %s %q is not stored: check the key (recalc export --section %s lists them)", sec, singular(sec), k, sec)
		}
		if gone[k] {
			return nil, fmt.Errorf("delete.%s: %s %q is listed twice", sec, singular(sec), k)
		}
		gone[k] = true
	}
	seen := make(map[string]bool, len(add))
	for _, e := range add {
		k := entryKey(sec, e)
		switch {
		case seen[k]:
			return nil, fmt.Errorf("%s %q is listed twice in the merge file", singular(sec), k)
		case gone[k]:
			return nil, fmt.Errorf("%s %q is both in section %s and in delete.%s: keep one", singular(sec), k, sec, sec)
		}
		seen[k] = true
		if i, ok := at[k]; ok {
			have[i] = e
			continue
		}
		at[k] = len(have)
		have = append(have, e)
	}
	var b bytes.Buffer
	b.WriteByte('[')
	n := 0
	for _, e := range have {
		if gone[entryKey(sec, e)] {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.Write(e)
		n++
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// entryKey is the key of a configuration entry, "" when it has none (the
// decoder has refused such an entry already).
func entryKey(sec string, e json.RawMessage) string {
	var k map[string]json.RawMessage
	if json.Unmarshal(e, &k) != nil {
		return ""
	}
	var s string
	_ = json.Unmarshal(k[keyField(sec)], &s)
	return s
}
