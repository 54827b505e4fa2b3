package engine

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestDryProgress: a dry run says nothing in its first two seconds, then
// logs where it is at most every two seconds (a JSON line with numbers and
// units), or, on a terminal, redraws one line and ends it.
func TestDryProgress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		age     time.Duration // how long the dry run has lasted
		live    bool
		want    []string // in what is written after 5 of 10 families
		wantNot []string
	}{
		{"quiet at first", time.Second, false, nil, []string{"progress"}},
		{"a log line", 3 * time.Second, false, []string{`"message":"dry run progress"`, `"families_done":5`, `"families":10`, `"percent":50`, `"elapsed_ms":3`, `"phase":"apply"`}, nil},
		{"a live line", 3 * time.Second, true, []string{"\rdry run: apply,  50%  5/10 families  3s", "\n"}, []string{"message"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logged, live bytes.Buffer
			p := newDryProgress(zerolog.New(&logged), nil, 10)
			if tc.live {
				p.live = &live
			}
			p.start, p.last = time.Now().Add(-tc.age), time.Now().Add(-tc.age)
			p.families(5)
			p.finish()
			out := logged.String() + live.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("want %q in %q", w, out)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("want no %q in %q", w, out)
				}
			}
			if tc.want == nil && out != "" {
				t.Errorf("wrote %q, want nothing", out)
			}
		})
	}
}
