package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hookBodies is a webhook receiver that keeps what it is sent.
type hookBodies struct {
	mu     sync.Mutex
	bodies []map[string]any
}

func (h *hookBodies) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var p map[string]any
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bodies = append(h.bodies, p)
}

func (h *hookBodies) all() []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.bodies)
}

// TestInterruptedJobPayload: a job whose run got SIGINT reads interrupted
// in its payload once no process heartbeats it, naming the database and
// host; the next run resumes it, and its stdout report and webhook payload
// have one shape, with duration_ms.
func TestInterruptedJobPayload(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 2000)
	hook := &hookBodies{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	cmd := o.command("run", "--full", "--chunk-size", "20", "--workers", "1", "--notify-url", srv.URL)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var done int
		if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM recalc.chunk c JOIN recalc.job j ON j.id = c.job_id
			WHERE j.status = 'running' AND c.status = 'done'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done > 0 {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("SIGINT'd run: %v, want exit 130", err)
	}
	o.exec(`UPDATE recalc.job_worker SET seen_at = now() - interval '1 minute'`) // as if 10 s had passed
	var raw string
	if err := o.pool.QueryRow(ctx, `SELECT recalc.job_payload(id)::text FROM recalc.job WHERE status = 'running'`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		t.Fatal(err)
	}
	if p["status"] != "interrupted" || p["database"] != o.pool.Config().ConnConfig.Database || p["host"] == nil || p["duration_ms"] == nil {
		t.Fatalf("payload of the interrupted job: %s; want interrupted, with database, host and duration_ms", raw)
	}

	var stdout strings.Builder
	next := o.command("run", "--notify-url", srv.URL)
	next.Stdout = &stdout
	if err := next.Run(); err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
		t.Fatalf("report %q: %v", stdout.String(), err)
	}
	bodies := hook.all()
	if len(bodies) != 1 || bodies[0]["job"] != p["job"] || bodies[0]["status"] != "done" || rep["job"] != p["job"] {
		t.Fatalf("resumed job %v: report %v, webhook %v; want the job done, once", p["job"], rep, bodies)
	}
	delete(rep, "nothing_to_do")
	if got, want := slices.Sorted(maps.Keys(rep)), slices.Sorted(maps.Keys(bodies[0])); !slices.Equal(got, want) {
		t.Errorf("the report's fields %v differ from the payload's %v", got, want)
	}
}

// TestNotifyAndMetricsFlagsAtStart: bad targets and addresses fail before
// any work, with exit 2 and one line.
func TestNotifyAndMetricsFlagsAtStart(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--notify-url", "not a url"}, "--notify-url"},
		{[]string{"run", "--notify-email", "Ops <ops@example.com>"}, "--notify-email"},
		{[]string{"resume", "--notify-url", "https://h.example/x", "--notify-secret", "short"}, "--notify-secret"},
		{[]string{"watch", "--metrics-addr", "nowhere"}, "--metrics-addr"},
	} {
		cmd := o.command(tc.args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(stderr.String(), tc.want) ||
			strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 {
			t.Errorf("recalc %s: %v, stderr %q; want exit 2 and one line about %s", strings.Join(tc.args, " "), err, stderr.String(), tc.want)
		}
	}
	if st := o.run("status"); strings.Contains(st, "DEFERRED") || strings.Contains(st, "running") {
		t.Errorf("a refused command changed something:\n%s", st)
	}
}

// TestWatchServesMetrics: `recalc watch --metrics-addr` answers /healthz
// and /metrics while it runs, and stops on SIGTERM.
func TestWatchServesMetrics(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := o.command("watch", "--metrics-addr", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	healthy := false
	for deadline := time.Now().Add(20 * time.Second); !healthy && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			healthy = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
	}
	var body []byte
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	werr := cmd.Wait()
	if !healthy || !strings.Contains(string(body), `recalc_jobs{kind="full",status="done"} 1`) {
		t.Errorf("watch --metrics-addr: healthy %v, metrics:\n%s", healthy, body)
	}
	if werr != nil {
		t.Errorf("watch after SIGTERM: %v", werr)
	}
}

// TestWatchSlowWebhookDoesNotHoldFreshness: a webhook that does not answer
// holds up neither the watch's next steps nor its stop. A job's completion
// notification is delivered beside the loop, so a single-record write made
// while it hangs is materialized at once, and a SIGTERM while it hangs keeps
// the notification for the next process to redeliver.
func TestWatchSlowWebhookDoesNotHoldFreshness(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	release := make(chan struct{})
	var posts sync.WaitGroup
	var got atomicCount
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		defer posts.Done()
		got.add()
		select { // hang, as a receiver whose backend is stuck does
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hook.Close()
	defer close(release)
	var before int64
	if err := o.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM recalc.job`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	w := o.command("watch", "--fast-records", "1", "--poll", "100ms", "--notify-url", hook.URL+"/hook",
		"--notify-timeout", "30s", "--notify-retries", "0")
	var stderr syncBuffer
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.Wait() }()
	defer func() { _ = w.Process.Kill(); <-exited }()
	o.changeRecords(3, 0) // more records than --fast-records: a job
	deadline := time.Now().Add(30 * time.Second)
	for got.get() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the job's notification was never posted:\n%s", lastLines(stderr.String(), 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The webhook hangs now. A single-record write takes the fast path.
	var id, owner string
	if err := o.pool.QueryRow(ctx, `SELECT r.id, u.id FROM recalc.record r, recalc.acl_user u
		WHERE u.internal AND recalc.access_level(u.id, r.id) <> 'all' ORDER BY r.rid, u.id LIMIT 1`).Scan(&id, &owner); err != nil {
		t.Fatal(err)
	}
	wrote := time.Now()
	o.exec(`UPDATE recalc.record SET owner = $1 WHERE id = $2`, owner, id)
	for {
		var level string
		if err := o.pool.QueryRow(ctx, `SELECT recalc.access_level($1, $2)`, owner, id).Scan(&level); err != nil {
			t.Fatal(err)
		}
		if level == "all" {
			break
		}
		if time.Since(wrote) > 5*time.Second {
			t.Fatalf("a write made while the webhook hangs was not materialized within 5s (the notification's delivery holds the watch):\n%s",
				lastLines(stderr.String(), 6))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("watch on SIGTERM while the webhook hangs: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("watch did not stop within 10s of SIGTERM while the webhook hangs:\n%s", lastLines(stderr.String(), 6))
	}
	var kept int
	if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM recalc.notification WHERE job_id > $1`, before).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if kept != 1 {
		t.Errorf("%d notifications kept after a SIGTERM cut their delivery short, want 1:\n%s", kept, lastLines(stderr.String(), 6))
	}
}

// atomicCount counts across goroutines.
type atomicCount struct {
	mu sync.Mutex
	n  int
}

func (c *atomicCount) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *atomicCount) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestNotificationSurvivesKill: a run killed (SIGKILL, an OOM kill, a
// service manager's stop timeout) while its webhook hangs leaves the job's
// notification kept, for a later run with the same target to deliver:
// delivery is at least once.
func TestNotificationSurvivesKill(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	release := make(chan struct{})
	var got atomicCount
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.add()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hook.Close()
	defer close(release)
	o.changeRecords(3, 0)
	run := o.command("run", "--notify-url", hook.URL+"/hook", "--notify-timeout", "30s", "--notify-retries", "0")
	var stderr syncBuffer
	run.Stderr = &stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for got.get() == 0 {
		if time.Now().After(deadline) {
			_ = run.Process.Kill()
			<-exited
			t.Fatalf("the job's notification was never posted:\n%s", lastLines(stderr.String(), 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = run.Process.Kill()
	<-exited
	var kept int
	if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM recalc.notification n JOIN recalc.job j ON j.id = n.job_id
		WHERE j.status = 'done'`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if kept != 1 {
		t.Errorf("%d notifications kept after the run delivering it was killed, want 1: the notification is lost", kept)
	}
}

// TestNotificationKeptWithTheJobsEnd: a process killed after its job's end
// commits and before it kept the job's notification for delivery does not
// lose it. The test holds recalc.notification so that the watch stops
// where it keeps the notification, kills the watch and its backend there,
// and a later run with the same target must deliver the job's end. Before
// the notification was kept in the transaction that ends the job, the job
// was done by then, with nothing kept: nobody ever delivered it.
func TestNotificationKeptWithTheJobsEnd(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ctx := context.Background()
	hook := &hookBodies{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	hold, err := o.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `LOCK TABLE recalc.notification IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	notifyFlags := []string{"--notify-url", srv.URL + "/hook", "--notify-retries", "0"}
	w := o.command(append([]string{"watch", "--fast-records", "1", "--poll", "100ms"}, notifyFlags...)...)
	var stderr syncBuffer
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.Wait() }()
	o.changeRecords(3, 0) // more records than --fast-records: a job
	// The watch's backend waiting to write its notification: kill both,
	// as a crash between the two would leave it.
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for pid == 0 {
		if time.Now().After(deadline) {
			_ = w.Process.Kill()
			<-exited
			t.Fatalf("the watch never came to keep its job's notification:\n%s", lastLines(stderr.String(), 10))
		}
		time.Sleep(10 * time.Millisecond)
		if err := o.pool.QueryRow(ctx, `SELECT coalesce(min(pid), 0) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO recalc.notification%'`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.Process.Kill()
	<-exited
	o.exec(`SELECT pg_terminate_backend($1)`, pid)
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	o.run(append([]string{"run"}, notifyFlags...)...)
	var statuses []any
	for _, b := range hook.all() {
		statuses = append(statuses, b["status"])
	}
	if !slices.Contains(statuses, any("done")) {
		var jobs, kept int
		if err := o.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.job WHERE status = 'done'), (SELECT count(*) FROM recalc.notification)`).Scan(&jobs, &kept); err != nil {
			t.Fatal(err)
		}
		t.Fatalf("no job's end was delivered after the watch died keeping it (delivered statuses %v; %d jobs done, %d notifications kept): the notification is lost",
			statuses, jobs, kept)
	}
}
