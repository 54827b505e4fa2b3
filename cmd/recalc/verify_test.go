package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestVerifyReportsStrayRoots: `recalc verify` counts the records whose
// stored family root is wrong as drift (exit 1, in text and JSON), says
// that `recalc run --full` repairs them, and --repair repairs them.
func TestVerifyReportsStrayRoots(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	verify := func(code int, args ...string) string {
		t.Helper()
		got, out, stderr := o.attackRun(nil, append([]string{"verify"}, args...)...)
		if got != code {
			t.Fatalf("recalc verify %s: exit %d, want %d\n%s%s", strings.Join(args, " "), got, code, out, stderr)
		}
		return out
	}
	stray := func(out string) int64 {
		t.Helper()
		var rep struct {
			StrayRoots *int64 `json:"stray_roots"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.StrayRoots == nil {
			t.Fatalf("verify --format json: %v, no stray_roots in %s", err, out)
		}
		return *rep.StrayRoots
	}
	if n := stray(verify(0, "--format", "json")); n != 0 {
		t.Fatalf("verify of a clean org: stray_roots %d, want 0", n)
	}
	// A leaf's root set to its own id, as a root fix writes it.
	o.exec(`DO $$ BEGIN
		PERFORM set_config('recalc.fixing_roots', 'on', true);
		UPDATE recalc.record SET root_id = id WHERE rid = (SELECT rid FROM recalc.record c
		    WHERE c.parent IN (SELECT id FROM recalc.record) AND c.id NOT IN (SELECT parent FROM recalc.record WHERE parent IS NOT NULL)
		    ORDER BY rid LIMIT 1);
	END $$`)
	if n := stray(verify(1, "--format", "json")); n != 1 {
		t.Errorf("verify of a stray root: stray_roots %d, want 1", n)
	}
	if out := verify(1); !strings.Contains(out, "Records whose family root is wrong: 1 (each fails closed; `recalc run --full` repairs them too)") {
		t.Errorf("verify of a stray root says:\n%s", out)
	}
	if out := verify(0, "--repair"); !strings.Contains(out, "Repaired.") {
		t.Errorf("verify --repair of a stray root says:\n%s", out)
	}
	o.run("run")
	if n := stray(verify(0, "--format", "json")); n != 0 {
		t.Errorf("verify after the repair and a run: stray_roots %d, want 0", n)
	}
}

// TestVerifyWhileDeferred: while share rows are deferred, the records
// changed since are no drift for `recalc verify` (exit 0): it says that
// their families are pending until `recalc resume`, and why, and reports
// the deferral in JSON.
func TestVerifyWhileDeferred(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	o.run("defer", "--rules")
	o.changeRecords(7, 3)
	got, out, stderr := o.attackRun(nil, "verify")
	if got != 0 || !strings.Contains(out, "skipped: changes pending until `recalc resume`).") || strings.Contains(out, "(0 skipped") ||
		!strings.Contains(out, "Calculation of rules is deferred: what it waits for is pending, not drift, and a repair leaves it to `recalc resume`.") ||
		!strings.Contains(out, "No drift") {
		t.Errorf("recalc verify while deferred: exit %d, want 0, saying the families written are pending until the resume:\n%s%s", got, out, stderr)
	}
	var rep struct {
		Deferred map[string]string `json:"deferred"`
	}
	if got, out, stderr := o.attackRun(nil, "verify", "--format", "json"); got != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Deferred["rules"] == "" {
		t.Errorf("recalc verify --format json while deferred: exit %d, want 0 and the deferral of rules:\n%s%s", got, out, stderr)
	}
}
