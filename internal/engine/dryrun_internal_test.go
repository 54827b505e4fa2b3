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
// units), or, on a terminal, redraws one line and ends it, in every phase.
func TestDryProgress(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		age     time.Duration // how long the dry run has lasted when it reports
		live    bool
		step    string // the phase it is in, with 5 of 10 families applied
		want    []string
		wantNot []string
	}{
		{"quiet at first", time.Second, false, "apply", nil, []string{"progress"}},
		{"a log line", 3 * time.Second, false, "apply", []string{`"message":"dry run progress"`, `"families_done":5`, `"families":10`, `"percent":50`, `"elapsed_ms":3000`, `"phase":"apply"`}, nil},
		{"a live line", 3 * time.Second, true, "apply", []string{"\rdry run: apply,  50%  5/10 families  3s", "\n"}, []string{"message"}},
		{"planning", 3 * time.Second, false, "plan", []string{`"phase":"plan"`, `"percent":0`}, nil},
		{"comparing", 3 * time.Second, false, "compare", []string{`"phase":"compare"`, `"percent":100`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logged, live bytes.Buffer
			var terminal io.Writer
			if tc.live {
				terminal = &live
			}
			p := newDryProgress(zerolog.New(&logged), terminal, start)
			p.phase(tc.step, 10)
			p.families(5)
			p.report(start.Add(tc.age))
			p.report(start.Add(tc.age + 400*time.Millisecond)) // too soon after the first: nothing more
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
			if n := strings.Count(logged.String(), "\n"); !tc.live && tc.want != nil && n != 1 {
				t.Errorf("%d log lines, want one (reports two seconds apart at most)", n)
			}
		})
	}
}

// TestDryProgressTicks: once begun, the reports come from a ticker, while
// nothing calls in (one long statement runs).
func TestDryProgressTicks(t *testing.T) {
	t.Parallel()
	var logged bytes.Buffer // written by the ticker, read once finish has stopped it
	p := newDryProgress(zerolog.New(&logged), nil, time.Now().Add(-time.Minute))
	p.phase("compare", 1)
	p.begin()
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(50 * time.Millisecond)
		p.mu.Lock()
		reported := p.last.After(p.start)
		p.mu.Unlock()
		if reported || time.Now().After(deadline) {
			break
		}
	}
	p.finish()
	if !strings.Contains(logged.String(), `"phase":"compare"`) {
		t.Fatalf("no report from the ticker within 10 s: %q", logged.String())
	}
}
