package model

import (
	"fmt"
	"strconv"
)

// The bounds the constraints record_refs_bounded and record_fields_scalar of
// recalc.record (schema 070) put on every record, whatever Limits say. An
// import refuses a record past them as it streams it (CheckStored), naming
// what to fix: it used to fail in PostgreSQL, with SQLSTATE 23514 and no
// guidance. The decoder does not: what it reads is valid by the spec.
const (
	// MaxStoredIDBytes bounds a record's id, object, owner and parent.
	MaxStoredIDBytes = 1024
	// MaxRecordTerritories bounds the territories of one record.
	MaxRecordTerritories = 1000
	// MaxTerritoryNamesBytes bounds the names of one record's territories
	// together.
	MaxTerritoryNamesBytes = 1024000
	// MaxStoredFieldsBytes bounds a record's fields as PostgreSQL prints
	// them (fields::text), which may be longer than as written.
	MaxStoredFieldsBytes = 1 << 20
)

// CheckStored refuses a record that recalc.record cannot hold.
func CheckStored(r *Record) error {
	for _, ref := range []struct {
		what, s string
	}{{"id", r.ID}, {"object", r.Object}, {"owner", r.Owner}, {"parent", r.Parent}} {
		if len(ref.s) > MaxStoredIDBytes {
			return fmt.Errorf("%s is %d bytes long, over the %d bytes a record's ids and references are stored in, whatever --max-id-bytes says: shorten it",
				ref.what, len(ref.s), MaxStoredIDBytes)
		}
	}
	if n := len(r.Territories); n > MaxRecordTerritories {
		return fmt.Errorf("%d territories, over the %d a record is stored with: assign it to fewer", n, MaxRecordTerritories)
	}
	total := 0
	for _, t := range r.Territories {
		total += len(t)
	}
	if total > MaxTerritoryNamesBytes {
		return fmt.Errorf("its territories' names take %d bytes together, over the %d a record is stored with: assign it to fewer, or shorten their names",
			total, MaxTerritoryNamesBytes)
	}
	return checkStoredFields(r.Fields)
}

// checkStoredFields refuses fields longer than MaxStoredFieldsBytes as
// PostgreSQL prints them: `{"k": v, "k2": v2}`, with a space after each
// colon and comma, and numbers in plain notation (1e300 is 301 digits). So
// fields written within --max-entry-bytes may be past it. A cheap bound
// comes first: nearly every record is far below.
func checkStoredFields(f Fields) error {
	bound := 2
	for k, v := range f {
		bound += 6*len(k) + 6 + valueBound(v)
	}
	if bound <= MaxStoredFieldsBytes {
		return nil
	}
	if n := jsonbTextBytes(f); n > MaxStoredFieldsBytes {
		return fmt.Errorf("fields take %d bytes as stored (a space after each colon and comma, numbers written out in full: 1e300 is 301 digits), "+
			"over the %d a record is stored with: drop fields, or write such numbers as strings", n, MaxStoredFieldsBytes)
	}
	return nil
}

// valueBound is at least the length of v as PostgreSQL prints it in jsonb:
// a float64 written out in full takes at most 327 characters (5e-324).
func valueBound(v Value) int {
	switch v.Kind {
	case String:
		return 6*len(v.Str) + 2
	case Number:
		return 330
	}
	return 5
}

// jsonbTextBytes is the length of f as PostgreSQL prints it as jsonb, or one
// more for each -0 (which it prints as 0).
func jsonbTextBytes(f Fields) int {
	n := 2 + 2*max(len(f)-1, 0)
	for k, v := range f {
		n += jsonbStringBytes(k) + 2
		switch v.Kind {
		case String:
			n += jsonbStringBytes(v.Str)
		case Number:
			n += len(strconv.FormatFloat(v.Num, 'f', -1, 64))
		case Bool:
			n += len(strconv.FormatBool(v.Bool))
		default:
			n += len("null")
		}
	}
	return n
}

// jsonbStringBytes is the length of s as PostgreSQL's jsonb prints it:
// quoted, with `"` and `\` escaped, \b \f \n \r \t as such and the other
// control characters as \u00XX; every other byte as it is.
func jsonbStringBytes(s string) int {
	n := 2
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
			n += 2
		case c < 0x20:
			n += 6
		default:
			n++
		}
	}
	return n
}
