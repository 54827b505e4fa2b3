package engine

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestDryProgress: a dry run says nothing in its first two seconds, then
// logs where it is at most every two seconds (a JSON line with numbers and
// units), or, on a terminal, redraws one line and ends it; it does so in
// every phase, while one long statement runs too (nothing calls it then).
func TestDryProgress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		age     time.Duration // how long the dry run has lasted
		live    bool
		step    string // the phase it is in, with 5 of 10 families applied
		want    []string
		wantNot []string
	}{
		{"quiet at first", time.Second, false, "apply", nil, []string{"progress"}},
		{"a log line", 3 * time.Second, false, "apply", []string{`"message":"dry run progress"`, `"families_done":5`, `"families":10`, `"percent":50`, `"elapsed_ms":3`, `"phase":"apply"`}, nil},
		{"a live line", 3 * time.Second, true, "apply", []string{"\rdry run: apply,  50%  5/10 families  3s", "\n"}, []string{"message"}},
		{"comparing", 3 * time.Second, false, "compare", []string{`"phase":"compare"`, `"percent":100`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logged, live bytes.Buffer
			var terminal io.Writer
			if tc.live {
				terminal = &live
			}
			p := newDryProgress(zerolog.New(&logged), terminal, time.Now().Add(-tc.age))
			p.phase(tc.step, 10)
			p.families(5)
			p.begin()
			time.Sleep(600 * time.Millisecond) // the ticker reports
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
