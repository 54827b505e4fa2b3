package engine_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestOversizedChunkWarns: a job whose biggest chunk holds more than ten
// times the chunk size (here one account with its contacts, a family
// written in one transaction) says so in a warning, and every plan logs
// its biggest chunk: the first run's full job (chunked by root range),
// then an incremental one after the account's owner changes (by root list).
func TestOversizedChunkWarns(t *testing.T) {
	t.Parallel()
	var records []string
	records = append(records, `{"object": "account", "id": "a1", "owner": "u1"}`, `{"object": "account", "id": "a2", "owner": "u1"}`)
	for i := range 12 {
		records = append(records, fmt.Sprintf(`{"object": "contact", "id": "c%02d", "owner": "u1", "parent": "a1"}`, i))
	}
	org := `{"objects": [{"name": "account", "internal_owd": "private"},
	  {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}],
	  "users": [{"id": "u1"}, {"id": "u2"}], "records": [` + strings.Join(records, ",") + `]}`
	moved := strings.Replace(org, `"id": "a1", "owner": "u1"`, `"id": "a1", "owner": "u2"`, 1)
	for _, tc := range []struct {
		chunkSize int
		firstJob  int64 // records in the first job's biggest chunk
		warns     bool
	}{
		{1, 13, true},    // a1's family of 13 records, against 10 × 1
		{2, 13, false},   // against 10 × 2
		{100, 14, false}, // both families in one chunk
	} {
		t.Run(fmt.Sprint(tc.chunkSize), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			var logged bytes.Buffer
			for _, file := range []string{org, moved} {
				b.importFile(t, file)
				if _, err := engine.Run(b.ctx, b.pool, engine.Options{ChunkSize: tc.chunkSize}, zerolog.New(&logged)); err != nil {
					t.Fatal(err)
				}
			}
			out := logged.String()
			for _, want := range []string{fmt.Sprintf(`"largest_chunk_records":%d,"message":"job planned"`, tc.firstJob), `"kind":"incremental","full":false`, `"largest_chunk_records":13,"message":"job planned"`} {
				if !strings.Contains(out, want) {
					t.Errorf("chunk size %d: no %s in the log: %s", tc.chunkSize, want, out)
				}
			}
			want := 0
			if tc.warns {
				want = 2
			}
			if got := strings.Count(out, "more than ten times the chunk size"); got != want {
				t.Errorf("chunk size %d: %d warnings, want %d: %s", tc.chunkSize, got, want, out)
			}
			b.checkOracle(t, "the full run")
		})
	}
}
