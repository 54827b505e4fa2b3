package oracle

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
)

const casesDir = "../../testdata/conformance/cases"

// TestConformance imports every public conformance case step by step and
// checks the oracle's access against the expected CSV.
func TestConformance(t *testing.T) {
	t.Parallel()
	cases, err := os.ReadDir(casesDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no conformance cases")
	}
	for _, c := range cases {
		t.Run(c.Name(), func(t *testing.T) {
			t.Parallel()
			runCase(t, filepath.Join(casesDir, c.Name(), "steps"))
		})
	}
}

func runCase(t *testing.T, dir string) {
	steps, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var state *model.Model
	for _, step := range steps {
		base := strings.TrimSuffix(step, ".json")
		name := filepath.Base(base)
		_, errExpected := os.Stat(base + ".error")
		wantErr := errExpected == nil

		next, err := importStep(state, step)
		if wantErr {
			if err == nil {
				t.Fatalf("step %s: invalid model was accepted", name)
			}
			t.Logf("step %s: rejected as expected: %v", name, err)
			continue
		}
		if err != nil {
			t.Fatalf("step %s: %v", name, err)
		}
		state = next
		want, err := os.ReadFile(base + ".csv")
		if err != nil {
			t.Fatal(err)
		}
		if got := CSV(Access(state)); got != string(want) {
			t.Fatalf("step %s: access differs:\n%s", name, Diff(string(want), got))
		}
	}
}

// importStep parses a step file, merges it onto state and validates the result.
func importStep(state *model.Model, path string) (*model.Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	file, present, err := model.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	merged := Merge(state, file, present)
	if _, err := merged.Validate(); err != nil {
		return nil, err
	}
	return merged, nil
}
