package attach

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
)

// Bounds of a spec file: it is untrusted input.
const (
	MaxSpecBytes = 1 << 20 // the file
	MaxObjects   = 100     // attached objects
	MaxFields    = 100     // fields of one object
	MaxCapture   = 16      // base tables of one view
)

// Spec is an attachment file: the objects attached to application tables,
// and optionally the table of the model's users.
type Spec struct {
	Objects []Object `json:"objects"`
	Users   *Users   `json:"users"`
}

// Users attaches the model's users to a table (or a view): each row is a
// user, its id the id column's value as text.
type Users struct {
	Table   string    `json:"table"`   // schema.name of the table or view
	ID      string    `json:"id"`      // id column: text, varchar, bigint, integer or uuid
	Role    string    `json:"role"`    // the column holding the user's role id (NULL: none)
	Type    *string   `json:"type"`    // a text column: internal or external (NULL: internal); absent: all internal
	Active  *string   `json:"active"`  // a boolean column (NULL: inactive); absent: all active
	Capture []Capture `json:"capture"` // a view's base tables
}

// object is the users' attachment as an attached object's entry, its type
// and active columns as fields.
func (u *Users) object() Object {
	o := Object{Object: model.UsersAttachment, Table: u.Table, ID: u.ID, Owner: u.Role, Fields: []string{}, Capture: u.Capture}
	for _, c := range []*string{u.Type, u.Active} {
		if c != nil {
			o.Fields = append(o.Fields, *c)
		}
	}
	return o
}

// check checks the users entry's names and bounds.
func (u *Users) check() error {
	if err := pg.CheckName("role", u.Role); err != nil {
		return err
	}
	if u.Type != nil && u.Active != nil && *u.Type == *u.Active {
		return fmt.Errorf("type and active name the same column %q", *u.Type)
	}
	o := u.object()
	return o.check()
}

// Object attaches one object of the model to a table or a view.
type Object struct {
	Object      string    `json:"object"`      // the object's name in the model
	Table       string    `json:"table"`       // schema.name of the table or view
	ID          string    `json:"id"`          // id column: text, varchar, bigint, integer or uuid
	Owner       string    `json:"owner"`       // owner column: the owning user's id
	Parent      *string   `json:"parent"`      // parent column, iff the object has a parent in the model
	Fields      []string  `json:"fields"`      // columns criteria rules may read
	Territories *string   `json:"territories"` // a text[] column of territory ids (accounts only)
	Capture     []Capture `json:"capture"`     // a view's base tables
}

// Capture is a base table of an attached view, and its column holding the
// view's id of the record each of its rows belongs to.
type Capture struct {
	Table string `json:"table"`
	ID    string `json:"id"`
}

// Parse reads and checks a spec file's shape and bounds; Apply checks it
// against the database.
func Parse(r io.Reader) (*Spec, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSpecBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read attachment spec: %w", err)
	}
	if len(b) > MaxSpecBytes {
		return nil, fmt.Errorf("attachment spec is over %d bytes: split it, or attach fewer objects", MaxSpecBytes)
	}
	if len(bytes.TrimSpace(b)) == 0 { // decoding said "EOF"
		return nil, errors.New(`attachment spec is empty: give {"objects": [...]} (docs/attach.md), or {"objects": []} to detach everything`)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("attachment spec is not valid JSON of the documented shape (docs/attach.md): %w", err)
	}
	if dec.More() {
		return nil, errors.New("attachment spec has data after its JSON object: give one object {\"objects\": [...]}")
	}
	if s.Objects == nil {
		return nil, errors.New(`attachment spec has no "objects" list: give {"objects": []} to detach everything`)
	}
	if len(s.Objects) > MaxObjects {
		return nil, fmt.Errorf("attachment spec attaches %d objects, more than %d", len(s.Objects), MaxObjects)
	}
	if s.Users != nil {
		if err := s.Users.check(); err != nil {
			return nil, fmt.Errorf("users: %w", err)
		}
	}
	seen := map[string]bool{}
	for i := range s.Objects {
		o := &s.Objects[i]
		if err := o.check(); err != nil {
			return nil, fmt.Errorf("attachment %d (%q): %w", i+1, o.Object, err)
		}
		if seen[o.Object] {
			return nil, fmt.Errorf("object %q is attached twice: give each object one entry", o.Object)
		}
		seen[o.Object] = true
	}
	return &s, nil
}

// check checks one entry's required names and bounds.
func (o *Object) check() error {
	names := []struct{ what, v string }{{"object", o.Object}, {"id", o.ID}, {"owner", o.Owner}}
	if o.Parent != nil {
		names = append(names, struct{ what, v string }{"parent", *o.Parent})
	}
	if o.Territories != nil {
		names = append(names, struct{ what, v string }{"territories", *o.Territories})
	}
	for _, n := range names {
		if err := pg.CheckName(n.what, n.v); err != nil {
			return err
		}
	}
	if _, _, err := splitTable(o.Table); err != nil {
		return err
	}
	if len(o.Fields) > MaxFields {
		return fmt.Errorf("%d fields, more than %d", len(o.Fields), MaxFields)
	}
	seen := map[string]bool{}
	for _, f := range o.Fields {
		if err := pg.CheckName("a field", f); err != nil {
			return err
		}
		if seen[f] {
			return fmt.Errorf("field %q is listed twice", f)
		}
		seen[f] = true
	}
	return o.checkCapture()
}

// checkCapture checks the base tables of a view.
func (o *Object) checkCapture() error {
	if len(o.Capture) > MaxCapture {
		return fmt.Errorf("%d capture tables, more than %d", len(o.Capture), MaxCapture)
	}
	seen := map[string]bool{}
	for _, c := range o.Capture {
		if _, _, err := splitTable(c.Table); err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		if err := pg.CheckName("capture id of "+c.Table, c.ID); err != nil {
			return err
		}
		if seen[c.Table] {
			return fmt.Errorf("capture table %s is listed twice", c.Table)
		}
		seen[c.Table] = true
	}
	return nil
}

// splitTable splits schema.name; names are as stored in the catalog (no
// quotes), and the schema is required so that no search_path decides.
func splitTable(t string) (schema, name string, err error) {
	schema, name, ok := strings.Cut(t, ".")
	if ok && strings.Contains(name, ".") {
		return "", "", fmt.Errorf("table %q holds more than one dot: it must be schema.name, and a schema or table whose name holds a dot cannot be named; attach a view over it, in a schema without one", t)
	}
	if !ok || pg.CheckName("schema", schema) != nil || pg.CheckName("table", name) != nil {
		return "", "", fmt.Errorf("table %q must be schema-qualified, as schema.name", t)
	}
	return schema, name, nil
}
