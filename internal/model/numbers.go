package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
)

// canonicalNumbers returns doc with every number in its shortest float64
// form, Value.MarshalJSON's, the form records' fields are stored in. A
// number is a float64 (sharing-model.md), so this changes no comparison;
// but a number written with an exponent past PostgreSQL's numeric range
// (1e-20000, zero as a float64) failed the jsonb a configuration section
// is stored as, and the whole import with a raw SQL error. Everything else
// is kept: structure, key order, strings (re-escaped).
func canonicalNumbers(doc json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var buf bytes.Buffer
	buf.Grow(len(doc))
	type frame struct {
		object bool
		n      int // tokens written in the container: keys and values alike
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			buf.WriteByte(byte(d))
			stack = stack[:len(stack)-1]
			continue
		}
		if len(stack) > 0 {
			f := &stack[len(stack)-1]
			switch {
			case f.object && f.n%2 == 1:
				buf.WriteByte(':')
			case f.n > 0:
				buf.WriteByte(',')
			}
			f.n++
		}
		if err := writeToken(&buf, tok); err != nil {
			return nil, err
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, frame{object: d == '{'})
		}
	}
}

// writeToken writes one token of canonicalNumbers: a number in its float64
// form, anything else as JSON.
func writeToken(buf *bytes.Buffer, tok json.Token) error {
	switch t := tok.(type) {
	case json.Delim:
		buf.WriteByte(byte(t))
	case json.Number:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil {
			return errors.New("number is out of range") // values stay out of messages
		}
		buf.Write(strconv.AppendFloat(nil, f, 'g', -1, 64))
	default:
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		buf.Write(b)
	}
	return nil
}
