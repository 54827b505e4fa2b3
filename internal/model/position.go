package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// posReader passes a model file through and keeps the bytes read since the
// start of the entry being decoded, so an error can name its line and
// column. The window is dropped lazily (when at least half of it is
// behind the mark), so it costs linear time and holds about one entry plus
// the JSON decoder's read-ahead, which the decoder buffers anyway.
type posReader struct {
	r      io.Reader
	buf    []byte // the bytes from offset base on
	base   int64  // file offset of buf[0]
	lines  int64  // newlines before base
	lastNL int64  // file offset of the last newline before base; -1: none
	mark   int64  // bytes before mark may be dropped
}

func newPosReader(r io.Reader) *posReader { return &posReader{r: r, lastNL: -1} }

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.buf = append(p.buf, b[:n]...)
	}
	return n, err
}

// forget lets the bytes before file offset off go. A nil posReader keeps
// nothing.
func (p *posReader) forget(off int64) {
	if p == nil || off <= p.mark {
		return
	}
	p.mark = off
	drop := off - p.base
	if drop < 4096 || drop < int64(len(p.buf))/2 || drop > int64(len(p.buf)) {
		return
	}
	gone := p.buf[:drop]
	if k := bytes.Count(gone, []byte{'\n'}); k > 0 {
		p.lines += int64(k)
		p.lastNL = p.base + int64(bytes.LastIndexByte(gone, '\n'))
	}
	p.buf = p.buf[:copy(p.buf, p.buf[drop:])]
	p.base = off
}

// slice is the bytes from file offset from to offset to, or nil when they
// are not all held.
func (p *posReader) slice(from, to int64) []byte {
	if p == nil || from < p.base || to > p.end() || from > to {
		return nil
	}
	return p.buf[from-p.base : to-p.base]
}

// end is the offset of the first byte not read yet.
func (p *posReader) end() int64 { return p.base + int64(len(p.buf)) }

// at describes file offset off as "line L, column C" (1-based; the column
// counts bytes), or "" when off is no longer held.
func (p *posReader) at(off int64) string {
	if off < p.base || off > p.end() {
		return ""
	}
	before := p.buf[:off-p.base]
	line, lastNL := p.lines, p.lastNL
	if k := bytes.Count(before, []byte{'\n'}); k > 0 {
		line += int64(k)
		lastNL = p.base + int64(bytes.LastIndexByte(before, '\n'))
	}
	return fmt.Sprintf("line %d, column %d", line+1, off-lastNL)
}

// valueStart is the offset of the first byte of the value that follows
// off, past white space and one comma or colon; off itself when off is not
// held.
func (p *posReader) valueStart(off int64) int64 {
	if p == nil || off < p.base || off > p.end() {
		return off
	}
	b := p.buf[off-p.base:]
	sep := false
	for i, c := range b {
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		case (c == ',' || c == ':') && !sep:
			sep = true
		default:
			return off + int64(i)
		}
	}
	return p.end()
}

// syntaxAt finds the offset of the syntax error in the value that starts
// at off, by scanning it again from the window: encoding/json's own
// offsets do not count the bytes its Token calls read. ok is false when
// the value is no longer held or scans clean.
func (p *posReader) syntaxAt(off int64) (int64, bool) {
	start := p.valueStart(off)
	if start < p.base || start > p.end() {
		return 0, false
	}
	var raw json.RawMessage
	err := json.NewDecoder(bytes.NewReader(p.buf[start-p.base:])).Decode(&raw)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		// Offset counts the bytes read, the bad one included.
		return start + max(se.Offset-1, 0), true
	}
	return 0, false
}

// where is the position part of a message: " at line L, column C (in
// PATH)", the parts that are known.
func where(pos, path string) string {
	var b strings.Builder
	if pos != "" {
		b.WriteString(" at " + pos)
	}
	if path != "" {
		b.WriteString(" (in " + path + ")")
	}
	return b.String()
}

// syntaxError is a malformed-JSON message for err, read from the value that
// starts at file offset off; path names the section or entry when known.
func (d *decoder) syntaxError(err error, off int64, path string) error {
	var se *json.SyntaxError
	eof := err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)
	pos := ""
	if p := d.pos; p != nil {
		switch {
		case eof:
			pos = p.at(p.end())
		case errors.As(err, &se):
			if at, ok := p.syntaxAt(off); ok {
				pos = p.at(at)
			} else if at := d.origin + se.Offset; at >= off { // a Token error: Offset is the bad byte's
				pos = p.at(at)
			}
		}
	}
	msg := "unexpected end of file"
	if !eof {
		msg = strings.TrimPrefix(err.Error(), "json: ")
	}
	return fmt.Errorf("malformed JSON%s: %s: fix the file there and import it again", where(pos, path), msg)
}

// entryAt is " (at line L, column C)", the start of the entry that
// follows offset off of d's input, or "" when unknown. Messages end with it,
// so they begin as they did before positions were given.
func (d *decoder) entryAt(off int64) string {
	if d.pos == nil {
		return ""
	}
	if pos := d.pos.at(d.pos.valueStart(d.origin + off)); pos != "" {
		return " (at " + pos + ")"
	}
	return ""
}
