package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExitStatuses holds the command line to its documented exit statuses
// and one-line errors: 0 success, 1 failure, 2 usage, 3 no database.
func TestExitStatuses(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	prof := t.TempDir()
	for _, tc := range []struct {
		name     string
		env      string // DATABASE_URL, when not the org's
		args     []string
		code     int
		want     string // in stderr
		profiles bool   // the CPU and heap profiles are written to prof
	}{
		{"version", "", []string{"--version"}, 0, "", false},
		{"mistyped command", "", []string{"stat"}, 2, `did you mean "status"?`, false},
		{"unknown flag", "", []string{"run", "--bogus"}, 2, "unknown flag --bogus (see `recalc run --help`)", false},
		{"mistyped flag", "", []string{"run", "--fulll"}, 2, "unknown flag --fulll: did you mean --full? (see `recalc run --help`)", false},
		{"global option after the command", "", []string{"status", "--log-level", "debug"}, 2,
			"--log-level is an option of recalc itself: give it before the command (recalc --log-level ... status) (see `recalc --help`)", false},
		{"unknown format", "", []string{"access", "--format", "xml"}, 2, `--format must be text, csv or json, not "xml" (see`, false},
		{"no database", "postgres://postgres@127.0.0.1:1/nope?connect_timeout=5", []string{"status"}, 3, `database "nope" on 127.0.0.1:1`, false},
		{"invalid model", "", []string{"import", "/dev/null"}, 1, "invalid model", false},
		{"grant without a role", "", []string{"grant", "reader"}, 2, "recalc grant reader|writer ROLE", false},
		{"a nice ratio out of range", "", []string{"run", "--nice", "-1"}, 2, "--nice must be between 0 and 100, not -1 (see `recalc run --help`)", false},
		{"a poll too short", "", []string{"changes", "--follow", "--poll", "1ms"}, 2, "--poll must be 10ms or more, not 1ms (see `recalc changes --help`)", false},
		{"grant of an unknown kind", "", []string{"grant", "admin", "x"}, 2, `unknown kind of access "admin"`, false},
		{"an argument to a command that takes none", "", []string{"init", "extra"}, 2, `init takes no arguments, got "extra" (see`, false},
		{"a job number with a tail", "", []string{"wait", "1x"}, 2, "JOB must be a job number", false},
		{"a job that does not exist", "", []string{"wait", "999"}, 1, "job 999 does not exist", false},
		{"a flag after a plan's file", "", []string{"plan", "/dev/null", "--full"}, 2, `give one FILE, and the flags before it (got "--full" after it)`, false},
		{"a flag after an import's file", "", []string{"import", "/dev/null", "--wait-job", "3s"}, 2, `give one FILE, and the flags before it (got "--wait-job" after it) (see`, false},
		{"an import without a file", "", []string{"import"}, 2, "give one FILE (or - for standard input) (see `recalc import --help`)", false},
		{"a flag after detach's objects", "", []string{"detach", "lead", "--all"}, 2, `give the OBJECTs, and the flags before them (got "--all" after them)`, false},
		{"an unknown subcommand", "", []string{"rls", "x"}, 2, `unknown subcommand "x": give enable or disable`, false},
		{"help after grant's arguments", "", []string{"grant", "reader", "--help"}, 2, `give the flags before the kind of access and the role (got "--help" after them)`, false},
		{"a table name of three parts", "", []string{"rls", "disable", "--table", "a.b.c"}, 2, `table "a.b.c" holds more than one dot: --table is TABLE or SCHEMA.TABLE, split at the dot, so a schema or table whose name holds a dot cannot be named; rename it`, false},
		{"a command's help subcommand", "", []string{"run", "help"}, 0, "", false},
		{"help before an operand", "", []string{"grant", "--help", "reader"}, 0, "", false},
		{"help of an unknown command", "", []string{"help", "stat"}, 2, `unknown command "stat": did you mean "status"?`, false},
		{"help flag before an unknown command", "", []string{"--help", "stat"}, 2, `unknown command "stat": did you mean "status"?`, false},
		{"help of an unknown subcommand", "", []string{"rls", "--help", "enabel"}, 2, `unknown command "enabel": did you mean "enable"?`, false},
		{"missing required flags", "", []string{"explain"}, 2, "give --user (see `recalc explain --help`)", false},
		{"a missing required flag", "", []string{"explain", "--user", "u1"}, 2, "give --record R, or --object O and --id ID (see `recalc explain --help`)", false},
		{"a subcommand's missing flag", "", []string{"rls", "enable", "--object", "account"}, 2, "give --table (see `recalc rls enable --help`)", false},
		{"profiles of a failing command", "postgres://postgres@127.0.0.1:1/nope?connect_timeout=5",
			[]string{"--cpu-profile", prof + "/cpu.pprof", "--mem-profile", prof + "/mem.pprof", "status"}, 3, `database "nope"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := o.command(tc.args...)
			if tc.env != "" {
				cmd.Env = append(cmd.Env, "DATABASE_URL="+tc.env)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("recalc %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, stderr.String(), tc.code, tc.want)
			}
			for _, f := range []string{"cpu.pprof", "mem.pprof"} {
				if st, err := os.Stat(prof + "/" + f); tc.profiles && (err != nil || st.Size() == 0) {
					t.Errorf("recalc %s: profile %s: %v, want it written", strings.Join(tc.args, " "), f, err)
				}
			}
			if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); code > 1 && lines > 0 {
				t.Errorf("recalc %s: the error takes %d lines, want one:\n%s", strings.Join(tc.args, " "), lines+1, stderr.String())
			}
		})
	}
}

// TestInterruptExits130: SIGINT during a run that waits for rows another
// writer holds exits 130 and says the job is resumable; the next run
// finishes the work.
func TestInterruptExits130(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	app := o.holdChangedRows()
	cmd := o.command("run", "--lock-timeout", "60s")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o.waitLockWaiter(20 * time.Second) // for the held records
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 || !strings.Contains(stderr.String(), "interrupted") {
		t.Fatalf("interrupted run: %v, stderr %q; want exit 130 saying it was interrupted", err, stderr.String())
	}
	if err := app.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	o.run("run")
	o.checkEqualsFull("after the interrupted run")
}

// TestInterruptedJobReadsInterrupted: a job whose process was killed reads
// as interrupted, not running, once no process heartbeats it: in `recalc
// status`, the payload, `recalc wait` (which says so instead of blocking)
// and imports; the next run resumes it.
func TestInterruptedJobReadsInterrupted(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 2000)
	cmd := o.command("run", "--full", "--chunk-size", "20", "--workers", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var done int
		if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM recalc.chunk c JOIN recalc.job j ON j.id = c.job_id
			WHERE j.status = 'running' AND c.status = 'done'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if st := o.run("status", "--format", "json"); !strings.Contains(st, `"status":"running"`) {
		t.Fatalf("right after the kill the job still reads running (a heartbeat is recent):\n%s", st)
	}
	o.exec(`UPDATE recalc.job_worker SET seen_at = now() - interval '1 minute'`) // as if 10 s had passed
	if st := o.run("status"); !strings.Contains(st, "interrupted") || !strings.Contains(st, "`recalc run` resumes it") {
		t.Errorf("status does not say the job was interrupted:\n%s", st)
	}
	var payload string
	if err := o.pool.QueryRow(ctx, `SELECT recalc.job_payload(id)->>'status' FROM recalc.job WHERE status = 'running'`).Scan(&payload); err != nil || payload != "interrupted" {
		t.Errorf("payload status %q (%v), want interrupted", payload, err)
	}
	out, err := o.command("wait").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no process is working on it") {
		t.Errorf("recalc wait on an interrupted job: %v\n%s", err, out)
	}
	out, err = o.command("import", "-").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "was interrupted") {
		t.Errorf("import during an interrupted job: %v\n%s", err, out)
	}
	o.run("run")
	if st := o.run("status"); strings.Contains(st, "interrupted") {
		t.Errorf("after the resuming run, status still says interrupted:\n%s", st)
	}
	o.checkEqualsFull("after resuming the interrupted job")
}

// TestChangesFollowStopsOnSignal: `recalc changes --follow` prints the
// entries a run publishes while it follows, and SIGTERM, the way to stop
// it, ends it with exit 0 and whole lines of increasing cursors.
func TestChangesFollowStopsOnSignal(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	var head int64
	if err := o.pool.QueryRow(context.Background(), `SELECT recalc.access_changes_head()`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	cmd := o.command("changes", "--follow", "--poll", "10ms", "--since", strconv.FormatInt(head, 10))
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o.changeRecords(20, 1)
	o.run("run")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "\n") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("recalc changes --follow stopped by SIGTERM: %v, want exit 0\n%s", err, stderr.String())
	}
	if stdout.String() == "" {
		t.Fatal("the follower printed nothing of the run's entries within 30 s")
	}
	last := head
	for _, line := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
		var e struct{ Cursor int64 }
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Cursor <= last {
			t.Fatalf("line %q: %v, want an entry with a cursor after %d", line, err, last)
		}
		last = e.Cursor
	}
}

// TestWatchExitsOnNewerSchema: a watch left running when a newer recalc
// upgrades the schema exits 1 at its next poll (no write needed), saying so, instead of
// logging the error forever, so that its service manager starts the new
// binary.
func TestWatchExitsOnNewerSchema(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	cmd := o.command("watch", "--debounce", "5ms", "--poll", "100ms")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), `"watching for changes"`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	o.exec(`INSERT INTO recalc.schema_version (version, name) SELECT max(version) + 1, 'from_the_future' FROM recalc.schema_version`)
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(lastLine(stderr.String()), "newer than this recalc") {
			t.Fatalf("watch after a newer schema: %v, want exit 1 saying the schema is newer\n%s", err, lastLines(stderr.String(), 4))
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the watch still runs 30 s after a newer recalc upgraded the schema\n%s", lastLines(stderr.String(), 4))
	}
}

// TestNoDatabaseURLSaysSo: a command run with neither DATABASE_URL nor any
// PG* variable (a service whose environment file is missing) says that
// libpq's defaults chose the database, and names the database the server
// picks (the user's name), rather than "database """ and a bare "run
// `recalc init`" that would create the schema wherever the defaults reach.
func TestNoDatabaseURLSaysSo(t *testing.T) {
	t.Parallel()
	bin := buildRecalc(t)
	cmd := exec.Command(bin, "status")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PGCONNECT_TIMEOUT=5")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "DATABASE_URL is not set") || strings.Contains(string(out), `database ""`) {
		t.Errorf("recalc status without DATABASE_URL: %s", out)
	}
}

// TestWaitSurvivesLostConnection: `recalc wait` whose connection is killed
// (a server restart, a pooler's cut) reconnects and goes on waiting, rather
// than exit 1, which says the job failed.
func TestWaitSurvivesLostConnection(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	var id int64
	if err := o.pool.QueryRow(ctx, `INSERT INTO recalc.job (kind, trigger, status, change_seq, config, plan, chunks)
		VALUES ('incremental', 'test', 'running', 0, '{}', '{}', 0) RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	beat := func() {
		o.exec(`INSERT INTO recalc.job_worker (job_id, worker) VALUES ($1, 'test')
			ON CONFLICT (job_id, worker) DO UPDATE SET seen_at = clock_timestamp()`, id)
	}
	beat()
	// Once it waits (its backend has read the job), every connection it has is killed.
	_, stdout, stderr, exited := startAndCut(t, o, "%FROM recalc.job WHERE id%", "wait", strconv.FormatInt(id, 10))
	time.Sleep(500 * time.Millisecond)
	beat()
	o.exec(`UPDATE recalc.job SET status = 'done', finished_at = now() WHERE id = $1`, id)
	o.exec(`SELECT pg_notify('recalc_jobs', $1::text)`, strconv.FormatInt(id, 10))
	select {
	case err := <-exited:
		var p struct {
			Status string `json:"status"`
		}
		if err != nil || json.Unmarshal([]byte(stdout.String()), &p) != nil || p.Status != "done" {
			t.Errorf("recalc wait after its connection was killed: %v, stdout %q, stderr:\n%s", err, stdout.String(), stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("recalc wait did not return within 20s of the job's end:\n%s", stderr.String())
	}
}

// TestChangesFollowSurvivesLostConnection: `recalc changes --follow` whose
// connections are killed (a server restart) reconnects and goes on from
// its cursor, rather than exit 1 and leave the consumer's service manager
// to restart it.
func TestChangesFollowSurvivesLostConnection(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	var head int64
	if err := o.pool.QueryRow(ctx, `SELECT recalc.access_changes_head()`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	// Once it follows (its backend has read the feed), every connection it has is killed.
	cmd, stdout, stderr, exited := startAndCut(t, o, "%access_changes%", "changes", "--follow", "--poll", "20ms", "--since", strconv.FormatInt(head, 10))
	o.changeRecords(20, 1)
	o.run("run")
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(stdout.String(), "\n"); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("the follower exited (%v) when its connection was killed:\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower printed nothing of the run's entries within 20 s after its connection was killed:\n%s", stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("recalc changes --follow stopped by SIGTERM: %v, want exit 0\n%s", err, stderr.String())
	}
}

// TestUnansweringServerTimesOut: a server that accepts the connection and
// never answers (hung, stopped, a half-open network path) makes a command
// exit 3 within its connect timeout (10 s unless the URL or PGCONNECT_TIMEOUT
// says), saying it cannot reach the database, rather than hang for ever: a
// nightly `recalc run` or a probe's `recalc status` would never end.
func TestUnansweringServerTimesOut(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it, answering nothing
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := recalcCommand(ctx, buildRecalc(t), "postgres://postgres@"+ln.Addr().String()+"/db?sslmode=disable", "status")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if took > 25*time.Second || cmd.ProcessState.ExitCode() != 3 || !strings.Contains(string(out), "cannot reach database") {
		t.Errorf("recalc status on a server that never answers: %v after %s, exit %d:\n%s", err, took.Round(time.Second), cmd.ProcessState.ExitCode(), out)
	}
}

// startAndCut starts recalc with args, and once one of its backends runs a
// query LIKE query, kills every connection it has (a server restart, as
// the process sees it). It returns the process, its output and where its
// exit comes.
func startAndCut(t *testing.T, o *processOrg, query string, args ...string) (cmd *exec.Cmd, stdout, stderr *syncBuffer, exited <-chan error) {
	t.Helper()
	app := "recalc-cut-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	cmd = o.command(args...)
	cmd.Env = append(cmd.Env, "PGAPPNAME="+app)
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	killed := 0
	for deadline := time.Now().Add(20 * time.Second); killed == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("recalc %s never connected:\n%s", strings.Join(args, " "), stderr.String())
		}
		if err := o.pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()
			AND EXISTS (SELECT FROM pg_stat_activity WHERE application_name = $1 AND query LIKE $2)`, app, query).Scan(&killed); err != nil {
			t.Fatal(err)
		}
	}
	return cmd, stdout, stderr, done
}
