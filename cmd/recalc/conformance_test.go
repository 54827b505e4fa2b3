package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestConformance builds the recalc binary and drives it through every case
// in testdata/conformance/cases: per step, import then run then access
// --format csv (or, where the step has an .error file, a failing import that
// leaves access as it was), against a fresh database per case. Every other
// case's database makes SERIALIZABLE its default isolation, as some
// applications' do: recalc's sessions run READ COMMITTED all the same. Those
// cases start empty, so their `recalc init` migrates under that default;
// the others start from a copy of the migrated schema (testdb.Migrated),
// where init finds nothing to do, sparing each the migrations' work
// (buildOrg and every scripts/conformance.sh case init an empty database).
func TestConformance(t *testing.T) {
	t.Parallel()
	bin := buildRecalc(t)
	cases, err := filepath.Glob("../../testdata/conformance/cases/*")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no conformance cases found (%v)", err)
	}
	for i, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			var recalc func(args ...string) (string, error)
			if i%2 == 1 {
				recalc = caseRecalcOn(t, bin, serializableDB(t))
			} else {
				recalc = caseRecalc(t, bin)
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

// caseRecalc makes a fresh database holding recalc's schema (a copy of
// testdb's migrated template: `recalc init` finds nothing to do) and
// returns a function that runs the recalc binary bin against it, returning
// its standard output, and an error carrying its standard error when it
// fails.
func caseRecalc(t *testing.T, bin string) func(args ...string) (string, error) {
	return caseRecalcOn(t, bin, testdb.Migrated(t).Config().ConnString())
}

// caseRecalcOn is caseRecalc against the database of url.
func caseRecalcOn(t *testing.T, bin, url string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "RECALC_LOG_FORMAT=json")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return stdout.String(), &cmdError{err, stderr.String()}
		}
		return stdout.String(), nil
	}
}

// TestDeferSequence drives a conformance case's step files through defer,
// resume, run while deferred and run --full in the order its `sequence`
// file gives (the conformance format has no deferral step). One command a
// line: `import NN` (must succeed), `import! NN` (must fail), `run`,
// `defer`, `resume` and their arguments (must exit 0), `run-deferred`
// (`recalc run` while deferred: exits 0, changes nothing and says it is
// deferred), `access NN` (`access --format csv` equals steps/NN.csv).
// While deferred, access shows the last computed state.
func TestDeferSequence(t *testing.T) {
	t.Parallel()
	bin := buildRecalc(t)
	seqs, err := filepath.Glob("../../testdata/conformance/cases/*/sequence")
	if err != nil || len(seqs) == 0 {
		t.Fatalf("no sequence files found (%v)", err)
	}
	for _, seq := range seqs {
		dir := filepath.Dir(seq)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			recalc := caseRecalc(t, bin)
			if _, err := recalc("init"); err != nil {
				t.Fatalf("init: %v", err)
			}
			text, err := os.ReadFile(seq)
			if err != nil {
				t.Fatal(err)
			}
			for n, line := range strings.Split(string(text), "\n") {
				line, _, _ = strings.Cut(line, "#")
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				step := func(i int) string { return filepath.Join(dir, "steps", f[i]) }
				where := fmt.Sprintf("%s:%d %q", filepath.Base(seq), n+1, strings.TrimSpace(line))
				switch f[0] {
				case "import":
					if _, err := recalc("import", step(1)+".json"); err != nil {
						t.Fatalf("%s: %v", where, err)
					}
				case "import!":
					if _, err := recalc("import", step(1)+".json"); err == nil {
						t.Fatalf("%s: invalid model was accepted", where)
					}
				case "run", "defer", "resume":
					if _, err := recalc(f...); err != nil {
						t.Fatalf("%s: %v", where, err)
					}
				case "run-deferred":
					out, err := recalc(append([]string{"run"}, f[1:]...)...)
					if err != nil || !strings.Contains(strings.ToLower(out), "defer") {
						t.Fatalf("%s: exit %v, output %q; want exit 0 and a word that it is deferred", where, err, out)
					}
				case "access":
					want, err := os.ReadFile(step(1) + ".csv")
					if err != nil {
						t.Fatal(err)
					}
					got, err := recalc("access", "--format", "csv")
					if err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					if got != string(want) {
						t.Fatalf("%s: access differs\n%s", where, oracle.Diff(string(want), got))
					}
				default:
					t.Fatalf("%s: unknown command %q", where, f[0])
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

// serializableDB makes a fresh database whose sessions' default isolation
// is SERIALIZABLE, and returns its URL.
func serializableDB(t *testing.T) string {
	url := testdb.New(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = serializable', current_database()); END $$`); err != nil {
		t.Fatal(err)
	}
	return url
}
