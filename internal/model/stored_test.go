package model

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestRecordsPastStoredBounds: recalc.record holds at most 1,000 territories
// a record (1,024,000 bytes of names together) and ids and references of at
// most 1,024 bytes, whatever the limits say. A file past them passed the
// decoder and failed the import in PostgreSQL, with a raw constraint error
// (SQLSTATE 23514). So did fields within --max-entry-bytes as written that
// PostgreSQL prints longer than 1 MiB (fields::text: a space after each colon
// and comma, numbers in full). CheckStored, which an import applies to each
// record it streams, must refuse each, saying what to fix; one just within
// must pass.
func TestRecordsPastStoredBounds(t *testing.T) {
	t.Parallel()
	terr := func(n, size int) []string {
		ts := make([]string, n)
		for i := range ts {
			ts[i] = strings.Repeat("t", size-4) + fmt.Sprintf("%04d", i)
		}
		return ts
	}
	unlimited := DefaultLimits()
	unlimited.IDBytes, unlimited.EntryBytes = 0, 0
	for _, tc := range []struct {
		name   string
		lim    Limits
		id     string
		terrs  []string
		parent string
		fields map[string]any
		want   string // "" when accepted
	}{
		{"1,000 territories", DefaultLimits(), "a1", terr(1000, 5), "", nil, ""},
		{"1,001 territories", DefaultLimits(), "a1", terr(1001, 5), "", nil, `1001 territories, over the 1000`},
		{"1,000 territories of 1,024 bytes", unlimited, "a1", terr(1000, 1024), "", nil, ""},
		{"1,000 territories of 1,025 bytes", unlimited, "a1", terr(1000, 1025), "", nil, `its territories' names take 1025000 bytes`},
		{"an id of 1,025 bytes, no id limit", unlimited, strings.Repeat("i", 1025), nil, "", nil, `id is 1025 bytes long, over the 1024 bytes`},
		{"a parent of 1,025 bytes, no id limit", unlimited, "a1", nil, strings.Repeat("p", 1025), nil, `parent is 1025 bytes long`},
		// 990,000 bytes as written; 1,170,000 as stored.
		{"90,000 small fields", DefaultLimits(), "a1", nil, "", fields(90000, 0), `fields take 1170000 bytes as stored`},
		{"80,000 small fields", DefaultLimits(), "a1", nil, "", fields(80000, 0), ""},
		// 5 bytes each as written, 301 digits stored.
		{"3,500 fields of 1e300", DefaultLimits(), "a1", nil, "", fields(3500, 1e300), `fields take`},
		{"3,000 fields of 1e300", DefaultLimits(), "a1", nil, "", fields(3000, 1e300), ""},
		{"fields of escaped strings", DefaultLimits(), "a1", nil, "", map[string]any{"s": strings.Repeat("\x01\"", 40000), "t": strings.Repeat("\x01\"", 40000)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := map[string]any{"object": "account", "id": tc.id, "owner": "u"}
			if tc.terrs != nil {
				rec["territories"] = tc.terrs
			}
			if tc.fields != nil {
				rec["fields"] = tc.fields
			}
			if tc.parent != "" {
				rec["parent"] = tc.parent
			}
			doc, err := json.Marshal(map[string]any{"records": []any{rec}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodeLimited(strings.NewReader(string(doc)), Sink{Record: CheckStored}, tc.lim)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			case err != nil && len(err.Error()) > 400:
				t.Errorf("a %d-byte error: %.200q", len(err.Error()), err)
			}
		})
	}
}

// fields returns n fields named f00000 on, each of value v.
func fields(n int, v float64) map[string]any {
	f := make(map[string]any, n)
	for i := range n {
		f[fmt.Sprintf("f%05d", i)] = v
	}
	return f
}
