package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestConformance builds the recalc binary and drives it through every case
// in testdata/conformance/cases: per step, import then run then access
// --format csv (or, where the step has an .error file, a failing import that
// leaves access as it was), against a fresh database per case.
func TestConformance(t *testing.T) {
	t.Parallel()
	bin := buildRecalc(t)
	cases, err := filepath.Glob("../../testdata/conformance/cases/*")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no conformance cases found (%v)", err)
	}
	for _, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			url := testdb.New(t)
			recalc := func(args ...string) (string, error) {
				cmd := exec.Command(bin, args...)
				cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "RECALC_LOG_FORMAT=json")
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				if err != nil {
					return stdout.String(), &cmdError{err, stderr.String()}
				}
				return stdout.String(), nil
			}
			if _, err := recalc("init"); err != nil {
				t.Fatalf("init: %v", err)
			}
			steps, _ := filepath.Glob(filepath.Join(dir, "steps", "*.json"))
			prev := ""
			for _, step := range steps {
				base := strings.TrimSuffix(step, ".json")
				name := filepath.Base(base)
				_, invalid := os.Stat(base + ".error")
				want := prev
				if invalid == nil {
					if _, err := recalc("import", step); err == nil {
						t.Fatalf("step %s: invalid model was accepted", name)
					}
				} else {
					if _, err := recalc("import", step); err != nil {
						t.Fatalf("step %s: import: %v", name, err)
					}
					b, err := os.ReadFile(base + ".csv")
					if err != nil {
						t.Fatal(err)
					}
					want = string(b)
					prev = want
				}
				if _, err := recalc("run"); err != nil {
					t.Fatalf("step %s: run: %v", name, err)
				}
				got, err := recalc("access", "--format", "csv")
				if err != nil {
					t.Fatalf("step %s: access: %v", name, err)
				}
				if got != want {
					t.Fatalf("step %s: access differs\n%s", name, oracle.Diff(want, got))
				}
			}
		})
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildRecalc builds the recalc binary once per test process.
func buildRecalc(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "recalc-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "recalc")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build recalc: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + e.stderr }
