package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/testdb"
)

// deferralState reads the deferral as `recalc status` prints it.
func (o *processOrg) deferralState() string {
	o.t.Helper()
	var lines []string
	for _, l := range strings.Split(o.run("status"), "\n") {
		if strings.HasPrefix(l, "Calculation") || strings.HasPrefix(l, "Pending") {
			if i := strings.Index(l, " since "); i > 0 {
				l = l[:i]
			}
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// stdout runs recalc and returns its standard output (its log goes to
// standard error).
func (o *processOrg) stdout(args ...string) string {
	o.t.Helper()
	out, err := o.command(args...).Output()
	if err != nil {
		o.t.Fatalf("recalc %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// jobCount reads how many jobs there are.
func (o *processOrg) jobCount() string {
	o.t.Helper()
	var n int
	if err := o.pool.QueryRow(context.Background(), `SELECT count(*) FROM recalc.job`).Scan(&n); err != nil {
		o.t.Fatal(err)
	}
	return fmt.Sprintf("%d jobs", n)
}

// TestStrayArgumentChangesNothing: a command that takes no arguments
// refuses one (exit 2) and changes nothing. urfave/cli passes a word
// without dashes on as an argument, so `recalc defer closure` (meant:
// --closure) deferred both sides, `recalc resume rules` lifted both, and
// `recalc run full` (meant: --full) ran an incremental job. (Found by an
// attack helper.)
func TestStrayArgumentChangesNothing(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	for _, tc := range []struct {
		prepare []string // a recalc call before, or nil
		args    []string
	}{
		{nil, []string{"defer", "closure"}},
		{[]string{"defer"}, []string{"resume", "rules"}},
		{[]string{"resume"}, []string{"run", "full"}},
	} {
		if tc.prepare != nil {
			o.run(tc.prepare...)
		}
		o.changeRecords(50, 1)
		before := o.deferralState() + "; " + o.jobCount()
		out, err := o.command(tc.args...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "takes no arguments") {
			t.Errorf("recalc %s: %v, want exit 2 saying it takes no arguments\n%s", strings.Join(tc.args, " "), err, out)
		}
		if after := o.deferralState() + "; " + o.jobCount(); after != before {
			t.Errorf("recalc %s was refused but changed the state %q -> %q", strings.Join(tc.args, " "), before, after)
		}
	}
}

// TestDeferDuringRunThenResumesRace: a run's job is in progress
// when `defer` is called, and pauses: the run exits 0 saying so, and an
// import finishes the job first (its chunks leaving out a family written
// since), then imports; a `run` changes nothing and
// says so; then an import and application
// writes accumulate, and two
// `resume`s and a `run` start at once. All exit 0, nothing is left
// pending, and the tables equal a from-scratch full run of the final model.
func TestDeferDuringRunThenResumesRace(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs processes on a 3k-record org")
	}
	o := newProcessOrg(t, 3000)
	ctx := context.Background()
	dir := t.TempDir()

	// A rules-only file: every other stored rule.
	full := filepath.Join(dir, "export.json")
	o.run("export", "-o", full)
	b, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var rules []json.RawMessage
	if err := json.Unmarshal(m["rules"], &rules); err != nil {
		t.Fatal(err)
	}
	var half []json.RawMessage
	for i := 0; i < len(rules); i += 2 {
		half = append(half, rules[i])
	}
	rulesFile := filepath.Join(dir, "rules.json")
	hb, _ := json.Marshal(map[string]any{"rules": half})
	if err := os.WriteFile(rulesFile, hb, 0o644); err != nil {
		t.Fatal(err)
	}

	o.changeRecords(3, 0) // a long incremental job
	var runOut bytes.Buffer
	run := o.command("run", "--chunk-size", "20", "--workers", "1", "--nice", "3")
	run.Stdout, run.Stderr = &runOut, &runOut
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		_ = o.pool.QueryRow(ctx, `SELECT count(*) FROM recalc.job WHERE status = 'running'`).Scan(&n)
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no job ran within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	o.run("defer")
	if err := run.Wait(); err != nil {
		t.Fatalf("run under defer: %v\n%s", err, runOut.String())
	}
	if strings.Contains(runOut.String(), `"paused":true`) {
		// Written after `recalc defer` returned, in a family the paused job
		// has left to work: the import's chunks leave that family as it was,
		// for the resume.
		var id string
		if err := o.pool.QueryRow(ctx, `SELECT r.id FROM recalc.chunk c CROSS JOIN LATERAL unnest(c.roots) f (root)
			JOIN recalc.record r ON r.root_id = f.root WHERE c.status = 'pending' ORDER BY r.rid LIMIT 1`).Scan(&id); err != nil {
			t.Fatalf("a record of a chunk left: %v", err)
		}
		written := o.shareRowsOf(id)
		o.exec(`UPDATE recalc.record r SET owner = (SELECT min(x.owner) FROM recalc.record x WHERE x.owner <> r.owner),
			fields = r.fields || '{"tier": 9}' WHERE r.id = $1`, id)
		out := o.run("import", rulesFile)
		if after := o.shareRowsOf(id); after != written {
			t.Errorf("the share rows of %s, written after `recalc defer` returned, changed when an import finished the paused job:\n%s\nwant them as they were:\n%s",
				id, after, written)
		}
		if !strings.Contains(out, "was paused by `recalc defer`: the import finishes it first") {
			t.Errorf("an import beside the paused job did not say it finishes the job first:\n%s", out)
		}
		var unfinished int
		if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM recalc.job WHERE status <> 'done'`).Scan(&unfinished); err != nil || unfinished != 0 {
			t.Errorf("%d jobs unfinished after an import beside the paused job (%v), want none", unfinished, err)
		}
	} else {
		t.Log("the job ended before the deferral: nothing paused")
	}

	// Deferred: run changes nothing and says so.
	o.run("import", rulesFile)
	o.changeRecords(7, 2)
	before := testdb.Materialized(t, o.pool)
	out := o.run("run")
	if !strings.Contains(out, "calculation is deferred") {
		t.Errorf("deferred run did not say so:\n%s", out)
	}
	if after := testdb.Materialized(t, o.pool); after != before {
		t.Fatal("a deferred run changed the materialized tables")
	}

	// Two resumes and a run at once.
	args := [][]string{{"resume", "--chunk-size", "20"}, {"resume", "--chunk-size", "20"}, {"run", "--chunk-size", "20"}}
	var wg sync.WaitGroup
	outs := make([][]byte, len(args))
	errs := make([]error, len(args))
	for i, a := range args {
		wg.Add(1)
		go func(i int, a []string) {
			defer wg.Done()
			time.Sleep(time.Duration(i*15) * time.Millisecond)
			outs[i], errs[i] = o.command(a...).CombinedOutput()
		}(i, a)
	}
	wg.Wait()
	for i := range args {
		if errs[i] != nil {
			t.Fatalf("recalc %s: %v\n%s", strings.Join(args[i], " "), errs[i], outs[i])
		}
	}
	if st := o.deferralState(); !strings.Contains(st, "Calculation: active") || !strings.Contains(st, "Pending: 0 changes") {
		t.Fatalf("after the resumes: %s", st)
	}
	o.checkEqualsFull("after defer during a run, imports, and racing resumes")
}

// shareRowsOf lists the materialized share rows of record id.
func (o *processOrg) shareRowsOf(id string) string {
	o.t.Helper()
	var rows string
	if err := o.pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(format('%s %s %s %s', s.gid, s.cause, s.level, s.boss_ok), E'\n'
		ORDER BY s.gid, s.cause), '') FROM recalc.acl_share s JOIN recalc.acl_record a USING (rid) WHERE a.id = $1`, id).Scan(&rows); err != nil {
		o.t.Fatal(err)
	}
	return rows
}

// TestImportWaitsForARunningJob: an import while a job runs waits for the
// job to end (sharing changes wait for a recalculation), then imports;
// with --wait-job shorter than the job it is refused, storing nothing. The
// job is held by an application transaction's row locks.
func TestImportWaitsForARunningJob(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	app := o.holdChangedRows()
	run := o.command("run", "--lock-timeout", "60s")
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Process.Kill(); _ = run.Wait() }) // before the rows are let go
	for deadline := time.Now().Add(20 * time.Second); o.runningJobs() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no job ran within 20s")
		}
	}
	file := filepath.Join(t.TempDir(), "users.json")
	exported := o.stdout("export", "--section", "users")
	if err := os.WriteFile(file, []byte(strings.Replace(exported, `"users": [`, `"users": [{"id": "waited"},`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	stored := o.stdout("export", "--no-records")
	out, err := o.command("import", "--wait-job", "300ms", file).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is running") || o.stdout("export", "--no-records") != stored {
		t.Fatalf("import with --wait-job shorter than the job: %v, want refused, storing nothing\n%s", err, out)
	}
	imp := o.command("import", file)
	var impOut bytes.Buffer
	imp.Stdout, imp.Stderr = &impOut, &impOut
	if err := imp.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- imp.Wait() }()
	t.Cleanup(func() { _ = imp.Process.Kill() })
	select {
	case err := <-done:
		t.Fatalf("the import did not wait for the job: %v\n%s", err, impOut.String())
	case <-time.After(time.Second):
	}
	if err := app.Rollback(ctx); err != nil { // the job goes on, and ends
		t.Fatal(err)
	}
	if err := <-done; err != nil || !strings.Contains(impOut.String(), "waits for it to end") {
		t.Fatalf("import after waiting: %v\n%s", err, impOut.String())
	}
	if o.runningJobs() != 0 || !strings.Contains(o.stdout("export", "--section", "users"), `"waited"`) {
		t.Fatal("the import did not store its file after the job")
	}
}

// runningJobs counts the running jobs.
func (o *processOrg) runningJobs() int {
	o.t.Helper()
	var n int
	if err := o.pool.QueryRow(context.Background(), `SELECT count(*) FROM recalc.job WHERE status = 'running'`).Scan(&n); err != nil {
		o.t.Fatal(err)
	}
	return n
}
