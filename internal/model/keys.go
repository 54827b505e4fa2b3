package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// keyChecker holds a model file's entries to exact, unique keys, which
// encoding/json does not: it matches a key to a field case-insensitively
// ("OWNER" sets owner) and lets the last of two equal keys win. Either way
// a reader of the file that takes keys as written (a validating proxy, a
// diff in review) would see a different owner or access than recalc
// stores, so a key that is not a field's exact name, and a key that appears
// twice in one object (a record's fields included), are refused.
type keyChecker struct {
	fields map[reflect.Type]map[string]reflect.Type // a struct's keys and their types
	seen   [][]byte                                 // the keys of the objects being read, outermost first
}

// keyError is a refused key or string; at is the path to its object.
type keyError struct {
	at, msg string
}

func (e *keyError) Error() string {
	if e.at != "" {
		return e.at + ": " + e.msg
	}
	return e.msg
}

// stringNUL is the error for a string that escapes U+0000, whatever the
// limits (which check it, naming the string, unless lifted).
const stringNUL = "a string holds the character \\u0000, which PostgreSQL cannot store: remove it"

// loneSurrogate is the error for a string that escapes half a UTF-16
// surrogate pair, which encoding/json reads as U+FFFD: "\ud800" and
// "\ud801" would read as one id, and as the id written "\ufffd".
const loneSurrogate = "a string escapes half a surrogate pair (\\ud800 to \\udfff without its other half), which would read as U+FFFD: write the character itself"

// checkKeys holds the entry raw, read from offset start, to exact and
// unique keys when d reads an untrusted file.
func (d *decoder) checkKeys(start int64, raw any) error {
	if d.keys == nil {
		return nil
	}
	b := d.pos.slice(d.origin+start, d.origin+d.dec.InputOffset())
	if b == nil {
		return fmt.Errorf("the entry's bytes are no longer held to check its keys")
	}
	return d.keys.check(b, reflect.TypeOf(raw))
}

// check walks the JSON value in b, which encoding/json has read as t
// (a nil t: any value), and returns the first key it refuses.
func (k *keyChecker) check(b []byte, t reflect.Type) error {
	w := keyWalker{b: b, k: k}
	w.space()
	if w.i < len(w.b) && w.b[w.i] == ',' {
		w.i++
	}
	return w.value(t)
}

// structKeys are the JSON keys of struct t, by exact name.
func (k *keyChecker) structKeys(t reflect.Type) map[string]reflect.Type {
	if keys, ok := k.fields[t]; ok {
		return keys
	}
	keys := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct: // its fields are the outer's
			for n, ft := range k.structKeys(f.Type) {
				keys[n] = ft
			}
			continue
		case name == "-" || !f.IsExported():
			continue
		case name == "":
			name = f.Name
		}
		keys[name] = f.Type
	}
	if k.fields == nil {
		k.fields = map[reflect.Type]map[string]reflect.Type{}
	}
	k.fields[t] = keys
	return keys
}

// keyWalker reads one JSON value that encoding/json has already accepted,
// so it checks no syntax.
type keyWalker struct {
	b []byte
	i int
	k *keyChecker
}

func (w *keyWalker) space() {
	for w.i < len(w.b) && (w.b[w.i] == ' ' || w.b[w.i] == '\t' || w.b[w.i] == '\n' || w.b[w.i] == '\r') {
		w.i++
	}
}

func (w *keyWalker) value(t reflect.Type) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(json.RawMessage(nil)) {
		t = nil
	}
	w.space()
	if w.i >= len(w.b) {
		return nil
	}
	switch w.b[w.i] {
	case '{':
		return w.object(t)
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		w.i++
		for {
			w.space()
			if w.i >= len(w.b) || w.b[w.i] == ']' {
				w.i++
				return nil
			}
			if w.b[w.i] == ',' {
				w.i++
				continue
			}
			if err := w.value(elem); err != nil {
				return err
			}
		}
	case '"':
		if _, bad := w.str(); bad != "" {
			return &keyError{msg: bad}
		}
	default:
		for w.i < len(w.b) && !strings.ContainsRune(",]} \t\n\r", rune(w.b[w.i])) {
			w.i++
		}
	}
	return nil
}

// object reads an object as t: a struct's keys must be its fields' exact
// names, and no key may appear twice.
func (w *keyWalker) object(t reflect.Type) error {
	var keys map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		keys = w.k.structKeys(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	base := len(w.k.seen) // this object's keys are w.k.seen[base:]
	defer func() { w.k.seen = w.k.seen[:base] }()
	var many map[string]bool
	w.i++
	for {
		w.space()
		if w.i >= len(w.b) || w.b[w.i] == '}' {
			w.i++
			return nil
		}
		if w.b[w.i] == ',' {
			w.i++
			continue
		}
		key, bad := w.str()
		switch {
		case bad != "":
			return &keyError{msg: bad}
		case !w.k.add(base, &many, key):
			return &keyError{msg: fmt.Sprintf("key %.100q appears twice", key)}
		}
		vt := elem
		if keys != nil {
			var ok bool
			if vt, ok = keys[string(key)]; !ok {
				return &keyError{msg: fmt.Sprintf("key %.100q is not %q (keys are case-sensitive)", key, caseMatch(keys, string(key)))}
			}
		}
		w.space()
		w.i++ // the colon
		if err := w.value(vt); err != nil {
			if ke, ok := err.(*keyError); ok {
				step := string(key) // a field's name; a map's key is quoted: it may hold anything
				if keys == nil {
					step = fmt.Sprintf("[%.100q]", key)
				}
				if ke.at != "" && !strings.HasPrefix(ke.at, "[") {
					step += "."
				}
				ke.at = step + ke.at
			}
			return err
		}
	}
}

// caseMatch is the key of keys that key matches but for case, the only way
// encoding/json accepts a key that is not a field's name.
func caseMatch(keys map[string]reflect.Type, key string) string {
	for name := range keys {
		if strings.EqualFold(name, key) {
			return name
		}
	}
	return "a field"
}

// add adds key to the keys of the object whose keys start at base (in a
// map once there are many) and reports whether it was new.
func (k *keyChecker) add(base int, many *map[string]bool, key []byte) bool {
	if *many != nil {
		if (*many)[string(key)] {
			return false
		}
		(*many)[string(key)] = true
		return true
	}
	for _, s := range k.seen[base:] {
		if bytes.Equal(s, key) {
			return false
		}
	}
	k.seen = append(k.seen, key)
	if len(k.seen)-base > 16 {
		*many = make(map[string]bool, 2*(len(k.seen)-base))
		for _, s := range k.seen[base:] {
			(*many)[string(s)] = true
		}
	}
	return true
}

// str reads a string and returns its value (in w.b unless escaped), and
// what is wrong with it: an escaped U+0000 or half a surrogate pair.
func (w *keyWalker) str() (s []byte, bad string) {
	start := w.i
	w.i++
	escaped := false
	for w.i < len(w.b) {
		c := w.b[w.i]
		w.i++
		if c == '"' {
			break
		}
		if c != '\\' {
			continue
		}
		escaped = true
		if w.b[w.i] != 'u' {
			w.i++
			continue
		}
		switch r := hex4(w.b[w.i+1 : w.i+5]); {
		case r >= 0xd800 && r < 0xdc00: // the high half: the low half must follow
			w.i += 5
			if w.i+6 > len(w.b) || w.b[w.i] != '\\' || w.b[w.i+1] != 'u' {
				bad = loneSurrogate
				continue
			}
			if low := hex4(w.b[w.i+2 : w.i+6]); low < 0xdc00 || low >= 0xe000 {
				bad = loneSurrogate
				continue
			}
			w.i += 6
		case r >= 0xdc00 && r < 0xe000:
			bad = loneSurrogate
			w.i += 5
		case r == 0:
			bad = stringNUL
			w.i += 5
		default:
			w.i += 5
		}
	}
	raw := w.b[start:w.i]
	if !escaped {
		return raw[1 : len(raw)-1], bad
	}
	var v string
	_ = json.Unmarshal(raw, &v) // valid: encoding/json has read it
	return []byte(v), bad
}

// hex4 is the value of four hexadecimal digits (valid: encoding/json has
// read them).
func hex4(b []byte) rune {
	v, _ := strconv.ParseUint(string(b), 16, 32)
	return rune(v)
}
