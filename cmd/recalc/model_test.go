package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// recalcFails runs recalc, which must fail with exit status code and a
// one-line error containing want.
func (o *processOrg) recalcFails(code int, want string, args ...string) {
	o.t.Helper()
	cmd := o.command(args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != code || !strings.Contains(stderr.String(), want) {
		o.t.Fatalf("recalc %s: %v, stderr %q; want exit %d and %q", strings.Join(args, " "), err, stderr.String(), code, want)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, want) || strings.Count(stderr.String(), want) != 1 {
		o.t.Errorf("recalc %s: the error is not one line:\n%s", strings.Join(args, " "), stderr.String())
	}
}

// TestExportEditImport drives the model edit workflow through the binary:
// an export imports back as a no-op, one rule is edited with --merge, the
// stale export is then refused, and a JSON error names its line and column.
func TestExportEditImport(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	dir := t.TempDir()
	full := filepath.Join(dir, "org.json")
	o.run("export", "--output", full)
	o.run("import", full)
	var rep struct {
		Nothing bool `json:"nothing_to_do"`
	}
	if err := json.Unmarshal([]byte(lastLine(o.run("run"))), &rep); err != nil || !rep.Nothing {
		t.Fatalf("a run after importing the export has something to do (%v)", err)
	}

	// Edit one rule: export the rules, flip the first one's access, merge it.
	out, err := o.command("export", "--section", "rules").Output()
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Revision string           `json:"revision"`
		Rules    []map[string]any `json:"rules"`
	}
	if err := json.Unmarshal(out, &rules); err != nil || len(rules.Rules) < 2 {
		t.Fatalf("export --section rules: %v\n%s", err, out)
	}
	// A device or pipe named by --output is written to, never replaced.
	if dev, err := o.command("export", "--section", "rules", "--output", "/dev/stdout").Output(); err != nil || string(dev) != string(out) {
		t.Fatalf("export --output /dev/stdout: %v, wrote %d bytes, want the %d of standard output", err, len(dev), len(out))
	}
	edited := rules.Rules[0]
	edited["access"] = map[any]string{"read": "edit", "edit": "read"}[edited["access"]]
	edit, _ := json.Marshal(map[string]any{"revision": rules.Revision, "rules": []any{edited}})
	editPath := filepath.Join(dir, "edit.json")
	if err := os.WriteFile(editPath, edit, 0o600); err != nil {
		t.Fatal(err)
	}
	o.run("import", "--merge", editPath)
	var after struct {
		Rules []map[string]any `json:"rules"`
	}
	out, _ = o.command("export", "--no-records").Output()
	if err := json.Unmarshal(out, &after); err != nil || len(after.Rules) != len(rules.Rules) || after.Rules[0]["access"] != edited["access"] {
		t.Fatalf("after the merge: %d rules, first %v; want %d, first %v (%v)", len(after.Rules), after.Rules[0], len(rules.Rules), edited, err)
	}
	o.run("run")
	o.checkEqualsFull("a run after a merge")

	// The first export, and the edit file again, predate the edit.
	o.recalcFails(1, "run `recalc export` again", "import", full)
	o.recalcFails(1, "run `recalc export` again", "import", "--merge", editPath)

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{\"rules\": [\n  {\"id\": \"r\",,}]}"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.recalcFails(1, "malformed JSON at line 2, column 14", "import", "--merge", bad)
	o.recalcFails(2, `unknown --section "people"`, "export", "--section", "people")
}
