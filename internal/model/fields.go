package model

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// ParseFields reads a record's fields as PostgreSQL prints a jsonb object.
// Flat objects of plain scalars (strings without escapes, numbers,
// booleans, null), which is what records hold, take a fast path that skips
// encoding/json's reflection; anything else goes through UnmarshalJSON, so
// both paths accept and reject exactly the same input.
func ParseFields(b []byte) (Fields, error) {
	if f, ok := parseFlat(b); ok {
		return f, nil
	}
	var f Fields
	err := f.UnmarshalJSON(b)
	return f, err
}

// parseFlat is ParseFields' fast path; ok is false when b is not a flat
// object of plain scalars.
func parseFlat(b []byte) (f Fields, ok bool) {
	p := flatParser{b: b}
	p.space()
	if !p.eat('{') {
		return nil, false
	}
	f = Fields{}
	p.space()
	if p.eat('}') {
		return f, p.end()
	}
	for {
		p.space()
		key, ok := p.str()
		if !ok {
			return nil, false
		}
		p.space()
		if !p.eat(':') {
			return nil, false
		}
		p.space()
		v, ok := p.value()
		if !ok {
			return nil, false
		}
		if _, dup := f[key]; dup { // encoding/json keeps the last; leave it the work
			return nil, false
		}
		f[key] = v
		p.space()
		if p.eat('}') {
			return f, p.end()
		}
		if !p.eat(',') {
			return nil, false
		}
	}
}

type flatParser struct {
	b []byte
	i int
}

func (p *flatParser) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *flatParser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *flatParser) end() bool {
	p.space()
	return p.i == len(p.b)
}

// str reads a string of valid UTF-8 without escapes or control characters.
func (p *flatParser) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	j := bytes.IndexByte(p.b[p.i:], '"')
	if j < 0 {
		return "", false
	}
	s := p.b[p.i : p.i+j]
	for _, c := range s {
		if c == '\\' || c < 0x20 {
			return "", false
		}
	}
	if !utf8.Valid(s) { // encoding/json would replace the invalid bytes
		return "", false
	}
	p.i += j + 1
	return string(s), true
}

func (p *flatParser) value() (Value, bool) {
	if p.i >= len(p.b) {
		return Value{}, false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		s, ok := p.str()
		return Value{Kind: String, Str: s}, ok
	case c == 't' && bytes.HasPrefix(p.b[p.i:], []byte("true")):
		p.i += 4
		return Value{Kind: Bool, Bool: true}, true
	case c == 'f' && bytes.HasPrefix(p.b[p.i:], []byte("false")):
		p.i += 5
		return Value{Kind: Bool}, true
	case c == 'n' && bytes.HasPrefix(p.b[p.i:], []byte("null")):
		p.i += 4
		return Value{Kind: Null}, true
	case c == '-' || c >= '0' && c <= '9':
		j := p.i
		for j < len(p.b) && (p.b[j] == '-' || p.b[j] == '+' || p.b[j] == '.' || p.b[j] == 'e' || p.b[j] == 'E' || p.b[j] >= '0' && p.b[j] <= '9') {
			j++
		}
		if !jsonNumber(p.b[p.i:j]) {
			return Value{}, false
		}
		n, err := strconv.ParseFloat(string(p.b[p.i:j]), 64)
		if err != nil {
			return Value{}, false
		}
		p.i = j
		return Value{Kind: Number, Num: n}, true
	}
	return Value{}, false
}

// jsonNumber reports whether b is a number in JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func jsonNumber(b []byte) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i, n = i+1, n+1
		}
		return n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}
