package gen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strconv"
)

// jsonWriter writes the model file section by section, one JSON-encoded entry per line:
//
//	{"version": 1,
//	"objects": [
//	{"name":"account",...},
//	...
//	],
//	...
//	}
//
// The first error sticks and is returned by close.
type jsonWriter struct {
	w        *bufio.Writer
	buf      bytes.Buffer
	enc      *json.Encoder
	sections int
	entries  int
	err      error
}

func newJSONWriter(w *bufio.Writer) *jsonWriter {
	j := &jsonWriter{w: w}
	j.enc = json.NewEncoder(&j.buf)
	j.enc.SetEscapeHTML(false)
	j.write([]byte(`{"version": 1`))
	return j
}

func (j *jsonWriter) write(b []byte) {
	if j.err == nil {
		_, j.err = j.w.Write(b)
	}
}

func (j *jsonWriter) begin(section string) {
	j.write([]byte(",\n" + strconv.Quote(section) + ": ["))
	j.sections++
	j.entries = 0
}

func (j *jsonWriter) entry(v any) {
	if j.err != nil {
		return
	}
	j.buf.Reset()
	if j.err = j.enc.Encode(v); j.err != nil {
		return
	}
	b := bytes.TrimSuffix(j.buf.Bytes(), []byte("\n"))
	if j.entries > 0 {
		j.write([]byte(",\n"))
	} else {
		j.write([]byte("\n"))
	}
	j.write(b)
	j.entries++
}

func (j *jsonWriter) end() { j.write([]byte("\n]")) }

func (j *jsonWriter) close() error {
	j.write([]byte("\n}\n"))
	if j.err != nil {
		return j.err
	}
	return j.w.Flush()
}

// fields is a record's fields in a fixed order (encoding/json would sort a map's keys and
// allocate doing it). A nil value is written as null; a field left out is missing.
type fields []field

type field struct {
	name string
	val  any // string, int64, float64, bool or nil
}

func (f fields) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 24*len(f)+2)
	b = append(b, '{')
	for i, x := range f {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, x.name)
		b = append(b, ':')
		switch v := x.val.(type) {
		case nil:
			b = append(b, "null"...)
		case string:
			b = appendString(b, v)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case float64:
			b = strconv.AppendFloat(b, v, 'f', -1, 64)
		case bool:
			b = strconv.AppendBool(b, v)
		default:
			vb, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			b = append(b, vb...)
		}
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
