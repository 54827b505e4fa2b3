package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/bench/gen"
	"github.com/recalc-dev/recalc/internal/testdb"
)

func TestMain(m *testing.M) {
	code := testdb.Main(m)
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// processOrg is a database holding a generated org, recalculated once, and
// the means to run recalc processes against it.
type processOrg struct {
	t    *testing.T
	bin  string
	url  string
	pool *pgxpool.Pool
	tmpl *orgBuild
}

// newProcessOrg gives the test a database of its own holding a generated
// org of records records, recalculated once: a copy of a template the first
// test to want that size builds with recalc init, import and run --full.
func newProcessOrg(t *testing.T, records int) *processOrg {
	t.Helper()
	o := &processOrg{t: t, bin: buildRecalc(t)}
	o.tmpl = orgTemplate(t, o.bin, records)
	o.url = testdb.Clone(t, o.tmpl.name)
	cfg, err := pgxpool.ParseConfig(o.url)
	if err != nil {
		t.Fatal(err)
	}
	testdb.CloseIdle(cfg)
	if o.pool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.pool.Close)
	return o
}

// orgTemplates are the template databases of generated orgs, by size, made
// once per test process and dropped by testdb.Main.
var orgTemplates struct {
	sync.Mutex
	bySize map[int]*orgBuild
}

type orgBuild struct {
	once sync.Once
	name string
	err  error

	stateOnce sync.Once
	state     string // testdb.Materialized of the org: a full run's result on it
}

// orgTemplate returns the template holding a generated org of records
// records, recalculated once, building it if no test has yet.
func orgTemplate(t *testing.T, bin string, records int) *orgBuild {
	t.Helper()
	orgTemplates.Lock()
	if orgTemplates.bySize == nil {
		orgTemplates.bySize = map[int]*orgBuild{}
	}
	tmpl := orgTemplates.bySize[records]
	if tmpl == nil {
		tmpl = &orgBuild{}
		orgTemplates.bySize[records] = tmpl
	}
	orgTemplates.Unlock()
	tmpl.once.Do(func() {
		ctx := context.Background()
		if tmpl.name, tmpl.err = testdb.Create(ctx, ""); tmpl.err != nil {
			return
		}
		defer testdb.DropAtEnd(tmpl.name) // a template by then, unless the build failed
		if tmpl.err = buildOrg(ctx, bin, testdb.URL(tmpl.name), records); tmpl.err == nil {
			tmpl.err = testdb.MarkTemplate(ctx, tmpl.name)
		}
	})
	if tmpl.err != nil {
		t.Fatalf("build the template of a %d-record org: %v", records, tmpl.err)
	}
	return tmpl
}

// fullState returns the materialized tables of the org as the template
// holds them, rendered by testdb.Materialized: what a full run computes
// from the org's inputs as long as the test has not changed them. The
// first test to ask renders its own copy, so call it before changing the
// database; the others reuse that rendering.
func (o *processOrg) fullState() string {
	o.t.Helper()
	o.tmpl.stateOnce.Do(func() { o.tmpl.state = testdb.Materialized(o.t, o.pool) })
	if o.tmpl.state == "" {
		o.t.Fatal("the org's materialized tables were not rendered (the test that rendered them failed)")
	}
	return o.tmpl.state
}

// buildOrg generates an org of records records and loads it into the
// database at url with recalc init, import and run --full.
func buildOrg(ctx context.Context, bin, url string, records int) error {
	dir, err := os.MkdirTemp("", "recalc-org")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "org.json")
	if _, err := gen.WriteFile(path, gen.NewOptions(records, 3)); err != nil {
		return fmt.Errorf("generate the org: %w", err)
	}
	for _, args := range [][]string{{"init"}, {"import", path}, {"run", "--full"}} {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "RECALC_LOG_FORMAT=json")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("recalc %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func (o *processOrg) command(args ...string) *exec.Cmd {
	return recalcCommand(context.Background(), o.bin, o.url, args...)
}

// recalcCommand is recalc bin on the database at url, logging JSON, killed
// when ctx ends.
func recalcCommand(ctx context.Context, bin, url string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "RECALC_LOG_FORMAT=json")
	return cmd
}

func (o *processOrg) run(args ...string) string {
	o.t.Helper()
	out, err := o.command(args...).CombinedOutput()
	if err != nil {
		o.t.Fatalf("recalc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (o *processOrg) exec(sql string, args ...any) {
	o.t.Helper()
	if _, err := o.pool.Exec(context.Background(), sql, args...); err != nil {
		o.t.Fatalf("%s: %v", sql, err)
	}
}

// changeRecords changes the owner and a field of every nth record with plain
// SQL, as an application would; the change-log triggers pick it up.
func (o *processOrg) changeRecords(n, offset int) {
	o.exec(`UPDATE recalc.record r SET owner = o.owner, fields = r.fields || jsonb_build_object('tier', (r.rid % 5)::int)
		FROM (SELECT rid, lag(owner) OVER (ORDER BY rid) AS owner FROM recalc.record) o
		WHERE o.rid = r.rid AND o.owner IS NOT NULL AND r.rid % $1 = $2`, n, offset)
}

// holdChangedRows changes every 7th record, as changeRecords does, and
// returns an application transaction that holds their materialized rows,
// so that the next run's job waits for it; the test's end rolls it back.
func (o *processOrg) holdChangedRows() pgx.Tx {
	o.t.Helper()
	o.changeRecords(7, 0)
	ctx := context.Background()
	app, err := o.pool.Begin(ctx)
	if err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() { app.Rollback(ctx) })
	if _, err := app.Exec(ctx, `SELECT FROM recalc.acl_record WHERE rid % 7 = 0 FOR UPDATE`); err != nil {
		o.t.Fatal(err)
	}
	return app
}

// waitLockWaiter waits until a backend of the org's database waits for a
// lock, such as a run for the rows holdChangedRows holds.
func (o *processOrg) waitLockWaiter(limit time.Duration) {
	o.t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(10 * time.Millisecond) {
		var waiting bool
		if err := o.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
			o.t.Fatal(err)
		}
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			o.t.Fatalf("no backend waited for a lock within %s", limit)
		}
	}
}

// checkEqualsFull holds the materialized tables to what a from-scratch full
// run computes from the same stored model, and returns that rendering.
func (o *processOrg) checkEqualsFull(what string) string {
	o.t.Helper()
	got := testdb.Materialized(o.t, o.pool)
	o.run("run", "--full")
	want := testdb.Materialized(o.t, o.pool)
	if got != want {
		o.t.Fatalf("%s: materialized tables differ from a full run (%d vs %d bytes)", what, len(got), len(want))
	}
	return want
}

// checkEquals holds the materialized tables to want, the rendering of a
// full run over the inputs the database holds (fullState, or what
// checkEqualsFull returned before: a full run is a function of its inputs),
// and so saves checkEqualsFull's full run where the test has not changed
// the inputs since.
func (o *processOrg) checkEquals(what, want string) {
	o.t.Helper()
	if got := testdb.Materialized(o.t, o.pool); got != want {
		o.t.Fatalf("%s: materialized tables differ from a full run over the same inputs (%d vs %d bytes)", what, len(got), len(want))
	}
}

// TestKillAndResume kills real `recalc run` processes with SIGKILL at random
// moments, full and incremental, resumes with another run, and requires the
// result to equal a from-scratch full run. Two orgs take three trials each,
// in parallel.
func TestKillAndResume(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("kills processes on a 20k-record org")
	}
	for shard := range 2 {
		t.Run(fmt.Sprintf("trials %d-%d", 3*shard, 3*shard+2), func(t *testing.T) {
			t.Parallel()
			o := newProcessOrg(t, 20000)
			rng := rand.New(rand.NewPCG(1, uint64(2+shard)))
			interrupted, full := 0, o.fullState()
			for trial := 3 * shard; trial < 3*shard+3; trial++ {
				var killed bool
				if killed, full = o.killAndResume(rng, trial, full); killed {
					interrupted++
				}
			}
			if interrupted == 0 {
				t.Fatal("no run was interrupted: the org is too small for this machine to kill anything mid-job")
			}
		})
	}
}

// killAndResume starts a run (full in even trials, else incremental over
// changed records), SIGKILLs it at a random moment of its job, resumes it with
// another run, and checks the result against a full run: against full, the
// rendering of a full run over the inputs before the trial, when the trial
// changes no input (an even trial that imports nothing), else against a
// full run it does. It says whether the kill interrupted the run, and
// returns the rendering of a full run over the inputs after the trial.
func (o *processOrg) killAndResume(rng *rand.Rand, trial int, full string) (bool, string) {
	t := o.t
	t.Helper()
	args := []string{"run", "--chunk-size", "40", "--workers", "2"}
	changed := trial%2 == 1 // the trial changes an input: records, or below the configuration
	if changed {
		o.changeRecords(15, trial)
	} else {
		args = append(args, "--full")
	}
	cmd := o.command(args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill at a random moment of the job: once it runs (on a fast machine
	// a fixed delay outlasted the whole run), within the next 50 ms.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		var running bool
		if o.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM recalc.job WHERE status = 'running')`).Scan(&running) == nil && running {
			break
		}
	}
	time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	var exit *exec.ExitError
	var unfinished int
	_ = o.pool.QueryRow(context.Background(), `SELECT count(*) FROM recalc.job WHERE status <> 'done'`).Scan(&unfinished)
	t.Logf("trial %d (%s): killed=%v, unfinished jobs after kill: %d", trial, strings.Join(args, " "), err != nil, unfinished)
	if trial%3 == 2 {
		o.importFlippedOWD() // an import right after the kill stores its file (finishing the job first)
		changed = true
	}
	o.run("run")
	what := fmt.Sprintf("trial %d", trial)
	if changed {
		full = o.checkEqualsFull(what)
	} else {
		o.checkEquals(what, full)
	}
	return errors.As(err, &exit) && !exit.Exited(), full
}

// importFlippedOWD imports the stored objects with the account's internal
// OWD flipped between private and public_read_only: a change of the
// configuration, through the CLI, which must succeed.
func (o *processOrg) importFlippedOWD() {
	o.t.Helper()
	file := filepath.Join(o.t.TempDir(), "objects.json")
	o.run("export", "--section", "objects", "-o", file)
	raw, err := os.ReadFile(file)
	if err != nil {
		o.t.Fatal(err)
	}
	var m struct {
		Objects []map[string]any `json:"objects"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		o.t.Fatalf("exported model: %v", err)
	}
	i := slices.IndexFunc(m.Objects, func(obj map[string]any) bool { return obj["name"] == "account" })
	if i < 0 {
		o.t.Fatalf("the exported model has no account object: %s", raw)
	}
	if m.Objects[i]["internal_owd"] == "private" { // its external OWD is private
		m.Objects[i]["internal_owd"] = "public_read_only"
	} else {
		m.Objects[i]["internal_owd"] = "private"
	}
	if raw, err = json.Marshal(m); err != nil {
		o.t.Fatal(err)
	}
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		o.t.Fatal(err)
	}
	o.run("import", file)
}

// TestTwoProcessesShareAJob starts a full job in one process, joins it from
// a second, and checks that the chunks were split between them, each done
// exactly once, none lost.
func TestTwoProcessesShareAJob(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs processes on a 20k-record org")
	}
	o := newProcessOrg(t, 20000)
	full := o.fullState()
	ctx := context.Background()
	a := o.command("run", "--full", "--in-place=false", "--chunk-size", "30", "--workers", "1") // a full job that swaps: chunks copy into staging tables
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	var job int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		var done int
		err := o.pool.QueryRow(ctx, `SELECT j.id, count(c.*) FILTER (WHERE c.status = 'done') FROM recalc.job j
			JOIN recalc.chunk c ON c.job_id = j.id WHERE j.status = 'running' GROUP BY j.id`).Scan(&job, &done)
		if err == nil && done > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first process never completed a chunk")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b := o.command("run", "--workers", "1")
	outB, errB := b.CombinedOutput()
	if errB != nil {
		t.Fatalf("second process: %v\n%s", errB, outB)
	}
	if err := a.Wait(); err != nil {
		t.Fatalf("first process: %v", err)
	}
	var status string
	var chunks, doneChunks, workers int
	var rowsAdded, shareRows int64
	err := o.pool.QueryRow(ctx, `SELECT j.status, j.chunks, count(*) FILTER (WHERE c.status = 'done'), count(DISTINCT c.done_by),
		sum(c.rows_added), (SELECT count(*) FROM recalc.acl_share)
		FROM recalc.job j JOIN recalc.chunk c ON c.job_id = j.id WHERE j.id = $1 GROUP BY j.id`, job).
		Scan(&status, &chunks, &doneChunks, &workers, &rowsAdded, &shareRows)
	if err != nil {
		t.Fatal(err)
	}
	if status != "done" || doneChunks != chunks {
		t.Fatalf("job %d: status %s, %d of %d chunks done", job, status, doneChunks, chunks)
	}
	if workers != 2 {
		t.Errorf("chunks were done by %d processes, want 2", workers)
	}
	// Each chunk copies its rows once: a chunk done twice would add rows
	// (and break the primary key), a chunk lost would miss them.
	if rowsAdded != shareRows {
		t.Errorf("chunks wrote %d share rows, the table holds %d", rowsAdded, shareRows)
	}
	o.checkEquals("shared job", full)
}

// TestApplicationWritesDuringJob commits owner and field updates with plain
// SQL while an incremental job runs: neither side deadlocks or fails, and
// the next run brings the tables to what a full run computes.
func TestApplicationWritesDuringJob(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs processes on a 20k-record org")
	}
	o := newProcessOrg(t, 20000)
	o.changeRecords(12, 0)
	job := o.command("run", "--chunk-size", "20", "--workers", "2")
	if err := job.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- job.Wait() }()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	var updates int
	var jobErr error
loop:
	for {
		select {
		case jobErr = <-exited:
			break loop
		default:
		}
		uctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := o.pool.Exec(uctx, `UPDATE recalc.record r SET owner = o.owner, fields = r.fields || '{"tier": 1}'
			FROM (SELECT owner FROM recalc.record WHERE rid = $2) o WHERE r.rid = $1`, 1+rng.IntN(20000), 1+rng.IntN(20000))
		cancel()
		if err != nil {
			t.Fatalf("application update %d failed while the job ran: %v", updates, err)
		}
		updates++
	}
	if jobErr != nil {
		t.Fatalf("job failed while the application wrote: %v", jobErr)
	}
	t.Logf("%d application updates committed during the job", updates)
	if updates == 0 {
		t.Fatal("the job finished before any application update: make it longer")
	}
	o.run("run")
	o.checkEqualsFull("after application writes")
}

// TestWatchSIGTERMAndRestart sends SIGTERM to `recalc watch` in the middle
// of a job: it stops cleanly, the job stays resumable, and a restarted watch
// finishes it to the state a full run computes.
func TestWatchSIGTERMAndRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs processes on a 20k-record org")
	}
	o := newProcessOrg(t, 20000)
	ctx := context.Background()
	o.changeRecords(9, 1)
	watchArgs := []string{"watch", "--chunk-size", "20", "--workers", "1", "--debounce", "50ms", "--poll", "1s"}
	w := o.command(watchArgs...)
	var stderr syncBuffer
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var done int
		err := o.pool.QueryRow(ctx, `SELECT count(*) FROM recalc.chunk c JOIN recalc.job j ON j.id = c.job_id
			WHERE j.status = 'running' AND c.status = 'done'`).Scan(&done)
		if err == nil && done > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watch never got a job going")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("watch did not exit cleanly on SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		_ = w.Process.Kill()
		t.Fatal("watch did not stop within 20s of SIGTERM")
	}
	var unfinished int
	var job string
	_ = o.pool.QueryRow(ctx, `SELECT count(*), max(id)::text FROM recalc.job WHERE status = 'running'`).Scan(&unfinished, &job)
	if unfinished != 1 {
		t.Fatalf("%d running jobs after SIGTERM, want the interrupted one", unfinished)
	}
	if log := stderr.String(); !strings.Contains(log, "job "+job+" interrupted; the next `recalc run` or `recalc watch` resumes it") {
		t.Errorf("the watch's log does not name the job it left unfinished (%s):\n%s", job, lastLines(log, 4))
	}
	w = o.command(watchArgs...)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Process.Kill(); _ = w.Wait() }()
	deadline = time.Now().Add(60 * time.Second)
	for {
		var pending, unfinished int
		_ = o.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.change), (SELECT count(*) FROM recalc.job WHERE status <> 'done')`).Scan(&pending, &unfinished)
		if pending == 0 && unfinished == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted watch did not finish: %d changes pending, %d jobs unfinished", pending, unfinished)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := w.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); err != nil {
		t.Fatalf("second watch on SIGTERM: %v", err)
	}
	o.checkEqualsFull("after watch restart")
}

// TestWaitAndStatus: `recalc wait` prints the payload of the latest job and
// exits 0 when it succeeded; `recalc status --format json` reports deferral
// and pending changes.
func TestWaitAndStatus(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 2000)
	out := o.run("wait")
	var p struct {
		Job    int64  `json:"job"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(lastLine(out))), &p); err != nil || p.Status != "done" || p.Job != 1 {
		t.Fatalf("recalc wait printed %q (%v), want job 1 done", out, err)
	}
	o.run("defer", "--rules")
	o.changeRecords(10, 3)
	var st struct {
		Deferred       map[string]time.Time `json:"deferred"`
		PendingRecords int64                `json:"pending_records"`
		Jobs           []struct {
			Status string `json:"status"`
		} `json:"jobs"`
	}
	stdout, err := o.command("status", "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(stdout, &st); err != nil {
		t.Fatalf("status --format json: %v\n%s", err, stdout)
	}
	if _, ok := st.Deferred["rules"]; !ok || st.PendingRecords == 0 || len(st.Jobs) != 1 {
		t.Errorf("status = %+v, want rules deferred, records pending, one job", st)
	}
	// A failed job makes wait exit 1.
	o.exec(`INSERT INTO recalc.job (kind, trigger, status, change_seq, config, plan, chunks, error)
		VALUES ('incremental', 'test', 'failed', 0, '{}', '{}', 0, 'boom')`)
	cmd := o.command("wait")
	if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("recalc wait on a failed job: %v, want exit status 1", err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestBlastRadiusGuard: removing every sharing rule revokes much access;
// `recalc plan FILE` shows it without storing anything, `import
// --max-revoke` refuses it and stores nothing, and --yes imports it.
func TestBlastRadiusGuard(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 2000)
	path := filepath.Join(t.TempDir(), "no-rules.json")
	if err := os.WriteFile(path, []byte(`{"rules": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	before := testdb.Materialized(t, o.pool)
	plan, err := o.command("plan", path).Output()
	if err != nil || !strings.Contains(string(plan), "lose it") || !strings.Contains(string(plan), "loses, e.g.") {
		t.Fatalf("recalc plan FILE: %v\n%s", err, plan)
	}
	cmd := o.command("import", "--max-revoke", "0.05", path)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refused") || !strings.Contains(string(out), "--yes") {
		t.Fatalf("guarded import: %v\n%s", err, out)
	}
	// A merge file deleting one rule: `recalc plan --merge` dry-runs it as
	// the refusal of `import --merge` advises.
	var rule string
	if err := o.pool.QueryRow(context.Background(), `SELECT doc->0->>'id' FROM recalc.model_section WHERE name = 'rules'`).Scan(&rule); err != nil {
		t.Fatal(err)
	}
	del := filepath.Join(t.TempDir(), "delete.json")
	if err := os.WriteFile(del, []byte(`{"delete": {"rules": ["`+rule+`"]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if plan, err := o.command("plan", "--merge", del).Output(); err != nil || !strings.Contains(string(plan), "lose it") {
		t.Fatalf("recalc plan --merge FILE: %v\n%s", err, plan)
	}
	if out, err := o.command("import", "--merge", "--max-revoke", "0", del).CombinedOutput(); err == nil || !strings.Contains(string(out), "recalc plan --merge FILE") {
		t.Fatalf("guarded merge: %v\n%s", err, out)
	}
	var sections int
	_ = o.pool.QueryRow(context.Background(), `SELECT count(*) FROM recalc.change`).Scan(&sections)
	if after := testdb.Materialized(t, o.pool); after != before || sections != 0 {
		t.Fatalf("a refused import or a plan changed the database (%d changes logged)", sections)
	}
	o.run("import", "--max-revoke", "0.05", "--yes", path)
	o.run("run")
	o.checkEqualsFull("after the confirmed import")
}
