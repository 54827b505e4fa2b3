package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/notify"
	"github.com/recalc-dev/recalc/internal/outbox"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// org is a small model whose records carry a field value that must never
// reach a notification.
const org = `{"objects":[{"name":"account","internal_owd":"private"}],
	"roles":[{"id":"ceo"},{"id":"rep","parent":"ceo"}],
	"users":[{"id":"u1","role":"rep"},{"id":"u2","role":"ceo"}],
	"records":[{"object":"account","id":"a1","owner":"u1","fields":{"secret":"FIELD-VALUE-1"}},
	           {"object":"account","id":"a2","owner":"u2","fields":{"secret":"FIELD-VALUE-2"}}]}`

// payloadKeys are every key a payload may have.
var payloadKeys = []string{"job", "kind", "trigger", "status", "chunks", "records", "invalid_records", "share_rows_added",
	"share_rows_removed", "share_rows_updated", "closure_added", "closure_removed", "drift_fixed", "error", "created_at",
	"finished_at", "duration_ms", "database", "host"}

// bundle is a database with org imported, not yet recalculated.
type bundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{ctx: context.Background(), pool: testdb.Migrated(t)}
	if _, err := testkit.ImportString(b.ctx, b.pool, org); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bundle) run(t *testing.T, n *notify.Notifier) *engine.Report {
	t.Helper()
	rep, err := engine.Run(b.ctx, b.pool, engine.Options{Notify: n}, zerolog.Nop())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return rep
}

// kept reads the outbox as `recalc status` does.
func (b *bundle) kept(t *testing.T) *access.Status {
	t.Helper()
	st, err := access.ReadStatus(b.ctx, b.pool, 1)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// keptCount counts the rows of the outbox.
func (b *bundle) keptCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.notification`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// due makes every kept notification due now, as if its backoff had passed.
func (b *bundle) due(t *testing.T) {
	t.Helper()
	if _, err := b.pool.Exec(b.ctx, `UPDATE recalc.notification SET next_at = now()`); err != nil {
		t.Fatal(err)
	}
}

// checkPayload checks that body is a payload of job with every key known,
// the database named, and no record field value.
func checkPayload(t *testing.T, body []byte, job int64, status string) {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("payload %q: %v", body, err)
	}
	for k := range p {
		if !slices.Contains(payloadKeys, k) {
			t.Errorf("payload has an unknown key %q: %s", k, body)
		}
	}
	if p["job"] != float64(job) || p["status"] != status || p["database"] == "" || p["database"] == nil || p["host"] == nil {
		t.Errorf("payload %s: want job %d %s with database and host", body, job, status)
	}
	if _, ok := p["duration_ms"].(float64); !ok {
		t.Errorf("payload %s: duration_ms is not a number", body)
	}
	if strings.Contains(string(body), "FIELD-VALUE") {
		t.Errorf("payload carries a record field value: %s", body)
	}
}

// receiver is a webhook endpoint that verifies signatures and answers
// with the status its next answer says.
type receiver struct {
	mu     sync.Mutex
	secret string
	answer int
	calls  int
	bodies [][]byte // the bodies it accepted
	bad    int      // requests whose signature did not verify
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err := notify.Verify(r.secret, req.Header, body, time.Minute, time.Now()); err != nil {
		r.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if r.answer != http.StatusOK {
		http.Error(w, "down", r.answer)
		return
	}
	r.bodies = append(r.bodies, body)
}

func (r *receiver) state() (calls, bad int, bodies [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls, r.bad, slices.Clone(r.bodies)
}

// TestWebhookRedeliveredAfter500: a receiver answering 500 gets the quick
// retries, then the notification is kept (listed by status) and the next
// run delivers it, signed, once the receiver is back; nothing is left kept.
func TestWebhookRedeliveredAfter500(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := &receiver{secret: "0123456789abcdef-secret", answer: http.StatusInternalServerError}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := &notify.Notifier{URL: srv.URL + "/hook?token=abc", Secret: rcv.secret, Timeout: 5 * time.Second, Retries: 1}

	rep := b.run(t, n)
	calls, bad, bodies := rcv.state()
	if calls != 2 || bad != 0 || len(bodies) != 0 {
		t.Fatalf("first delivery: %d calls, %d bad signatures, %d accepted; want 2 signed attempts, none accepted", calls, bad, len(bodies))
	}
	st := b.kept(t)
	if st.NotificationsKept != 1 || len(st.Notifications) != 1 {
		t.Fatalf("kept notifications: %d %+v; want the one not delivered", st.NotificationsKept, st.Notifications)
	}
	e := st.Notifications[0]
	if e.Job != rep.Job || e.Channel != notify.Webhook || e.Attempts != 1 || !strings.Contains(e.LastError, "500") ||
		strings.Contains(e.Target, "token") || strings.Contains(e.Target, "/hook") || !strings.HasSuffix(e.Target, "/...") ||
		!e.NextAt.After(time.Now()) {
		t.Errorf("kept entry %+v: want job %d's webhook, 1 attempt, a 500, the URL without its path or query, a later next try", e, rep.Job)
	}

	b.run(t, n) // not due yet: no request
	if calls, _, _ := rcv.state(); calls != 2 {
		t.Errorf("a run before the backoff ended posted again: %d calls", calls)
	}
	rcv.mu.Lock()
	rcv.answer = http.StatusOK
	rcv.mu.Unlock()
	b.due(t)
	if again := b.run(t, n); !again.Nothing {
		t.Fatalf("second run: %+v, want nothing to do", again)
	}
	_, bad, bodies = rcv.state()
	if bad != 0 || len(bodies) != 1 {
		t.Fatalf("redelivery: %d accepted, %d bad signatures; want one accepted", len(bodies), bad)
	}
	checkPayload(t, bodies[0], rep.Job, "done")
	if st := b.kept(t); st.NotificationsKept != 0 {
		t.Errorf("after redelivery %d notifications are still kept", st.NotificationsKept)
	}
}

// TestRedeliveryOnlyToItsTarget: a run configured with another URL does not
// take a kept notification; a wrong secret fails verification.
func TestRedeliveryOnlyToItsTarget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	down := &receiver{secret: "0123456789abcdef-secret", answer: http.StatusServiceUnavailable}
	srvDown := httptest.NewServer(down)
	defer srvDown.Close()
	other := &receiver{secret: "another-secret-0123456789", answer: http.StatusOK}
	srvOther := httptest.NewServer(other)
	defer srvOther.Close()

	b.run(t, &notify.Notifier{URL: srvDown.URL, Secret: down.secret, Timeout: 5 * time.Second})
	b.due(t)
	b.run(t, &notify.Notifier{URL: srvOther.URL, Secret: down.secret, Timeout: 5 * time.Second})
	if calls, bad, _ := other.state(); calls != 0 || bad != 0 {
		t.Errorf("another target received %d requests of a notification kept for the first", calls)
	}
	if st := b.kept(t); st.NotificationsKept != 1 {
		t.Errorf("kept: %d, want 1", st.NotificationsKept)
	}
	// The same target with the wrong secret: delivered, but the receiver
	// refuses it, and it stays kept with one more attempt.
	b.run(t, &notify.Notifier{URL: srvDown.URL, Secret: "wrong-secret-0123456789", Timeout: 5 * time.Second})
	if _, bad, _ := down.state(); bad != 1 {
		t.Errorf("a wrong signature verified: %d refused", bad)
	}
	if st := b.kept(t); st.NotificationsKept != 1 || st.Notifications[0].Attempts != 2 || !strings.Contains(st.Notifications[0].LastError, "401") {
		t.Errorf("kept after a refused redelivery: %+v", st.Notifications)
	}
}

// TestValidate: bad targets fail at startup with one line naming the flag,
// never repeating the secret.
func TestValidate(t *testing.T) {
	t.Parallel()
	ok := notify.Notifier{URL: "https://hooks.example.com/recalc?x=1", Email: []string{"ops@example.com"}, SMTPAddr: "mail:25",
		From: "recalc@example.com", Secret: "0123456789abcdef"}
	for _, tc := range []struct {
		name string
		edit func(n *notify.Notifier)
		want string // "" for valid
	}{
		{"valid", func(n *notify.Notifier) {}, ""},
		{"nothing", func(n *notify.Notifier) { *n = notify.Notifier{} }, ""},
		{"not a url", func(n *notify.Notifier) { n.URL = "not a url" }, "--notify-url"},
		{"no scheme", func(n *notify.Notifier) { n.URL = "hooks.example.com/x" }, "--notify-url"},
		{"ftp", func(n *notify.Notifier) { n.URL = "ftp://hooks.example.com/x" }, "--notify-url"},
		{"no host", func(n *notify.Notifier) { n.URL = "http:///x" }, "--notify-url"},
		{"line break", func(n *notify.Notifier) { n.URL = "http://a.example/x\r\nX: y" }, "--notify-url"},
		{"bad port", func(n *notify.Notifier) { n.URL = "http://a.example:99999/" }, "--notify-url"},
		{"short secret", func(n *notify.Notifier) { n.Secret = "short-secret" }, "--notify-secret"},
		{"bad email", func(n *notify.Notifier) { n.Email = []string{"not an address"} }, "--notify-email"},
		{"display name", func(n *notify.Notifier) { n.Email = []string{"Ops <ops@example.com>"} }, "--notify-email"},
		{"injected email", func(n *notify.Notifier) { n.Email = []string{"ops@example.com\r\nBcc: x@evil.example"} }, "--notify-email"},
		{"list in one", func(n *notify.Notifier) { n.Email = []string{"a@example.com, b@example.com"} }, "--notify-email"},
		{"bad from", func(n *notify.Notifier) { n.From = "recalc" }, "--smtp-from"},
		{"bad relay", func(n *notify.Notifier) { n.SMTPAddr = "mail" }, "--smtp-addr"},
		{"relay port", func(n *notify.Notifier) { n.SMTPAddr = "mail:0" }, "--smtp-addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := ok
			tc.edit(&n)
			err := n.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("valid configuration refused: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Errorf("got %v, want an error about %s", err, tc.want)
			case err != nil && (strings.Contains(err.Error(), "\n") || (n.Secret != "" && strings.Contains(err.Error(), n.Secret))):
				t.Errorf("error %q spans lines or repeats the secret", err)
			}
		})
	}
}

// TestRedeliverEvery: the watch loop's redelivery runs in the background,
// at most once per interval.
func TestRedeliverEvery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := &receiver{secret: "0123456789abcdef-secret", answer: http.StatusBadGateway}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := &notify.Notifier{URL: srv.URL, Secret: rcv.secret, Timeout: 5 * time.Second}
	rep := b.run(t, n)
	rcv.mu.Lock()
	rcv.answer = http.StatusOK
	rcv.mu.Unlock()
	b.due(t)
	redeliver := n.RedeliverEvery(time.Hour, b.pool, zerolog.Nop())
	for range 3 {
		redeliver(b.ctx)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.kept(t).NotificationsKept > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	calls, _, bodies := rcv.state()
	if len(bodies) != 1 || calls != 2 {
		t.Fatalf("%d calls, %d accepted; want the failed first one and one redelivery", calls, len(bodies))
	}
	checkPayload(t, bodies[0], rep.Job, "done")
}

// TestKeptAgainWhileRedelivering: a notification kept again (its job ended
// again, with a newer payload) while an older one is being redelivered is
// not forgotten when that delivery succeeds.
func TestKeptAgainWhileRedelivering(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := &receiver{secret: "0123456789abcdef-secret", answer: http.StatusInternalServerError}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := &notify.Notifier{URL: srv.URL, Secret: rcv.secret, Timeout: 5 * time.Second}
	rep := b.run(t, n)
	target := n.Targets()[0]
	claimed, err := outbox.Claim(b.ctx, b.pool, []string{target.Key}, 5, time.Minute)
	if err == nil && len(claimed) != 0 {
		t.Fatalf("claimed %d entries before they were due", len(claimed))
	}
	b.due(t)
	if claimed, err = outbox.Claim(b.ctx, b.pool, []string{target.Key}, 5, time.Minute); err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v, %d entries; want 1", err, len(claimed))
	}
	newer := []byte(`{"job": 1, "status": "done", "kind": "full"}`)
	if err := outbox.Keep(b.ctx, b.pool, outbox.Entry{Job: rep.Job, Channel: target.Channel, TargetKey: target.Key,
		Target: target.Label, Payload: newer, LastError: "answered 500"}); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Delivered(b.ctx, b.pool, claimed[0]); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Failed(b.ctx, b.pool, claimed[0], "stale"); err != nil {
		t.Fatal(err)
	}
	st := b.kept(t)
	if st.NotificationsKept != 1 || st.Notifications[0].LastError != "answered 500" || st.Notifications[0].Attempts != 3 {
		t.Errorf("kept after the stale claim ended: %+v; want the newer entry, untouched", st.Notifications)
	}
}

// TestRedirectSaysWhatToDo: a webhook that redirects is not followed (a
// POST would become a GET without its body, or carry the signature
// elsewhere); the error says so, and what to do, and names no URL.
func TestRedirectSaysWhatToDo(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.example/hook?token=t0k3n", http.StatusFound)
	}))
	defer srv.Close()
	n := &notify.Notifier{URL: srv.URL + "/hook?token=s3cr3t", Timeout: 5 * time.Second}
	err := n.Send(context.Background(), []byte(`{"job":1}`))
	if err == nil || !strings.Contains(err.Error(), "302 Found") || !strings.Contains(err.Error(), "a redirect, which recalc does not follow") ||
		strings.Contains(err.Error(), "t0k3n") || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("a redirecting webhook: %v", err)
	}
}

// TestBackgroundKeepsWhatAStopLeaves: a notification handed to Background
// is delivered beside the caller; one handed over as the process stops,
// after its goroutine has ended, is kept for the next process rather than
// lost.
func TestBackgroundKeepsWhatAStopLeaves(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := &receiver{secret: "0123456789abcdef", answer: http.StatusOK}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	rep := b.run(t, nil)
	n := &notify.Notifier{URL: srv.URL + "/hook", Secret: rec.secret, Timeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(b.ctx)
	announce, wait := n.Background(ctx, b.pool, zerolog.Nop())
	announce(rep.Job)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if calls, _, _ := rec.state(); calls == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the notification handed to Background was never posted")
		}
	}
	cancel()
	time.Sleep(50 * time.Millisecond) // the goroutine has ended
	announce(rep.Job)                 // a job that finished as the process stopped
	wait()
	if st := b.kept(t); st.NotificationsKept != 1 || len(st.Notifications) != 1 || st.Notifications[0].Job != rep.Job {
		t.Errorf("after a stop, kept: %d %+v, want the job's notification", st.NotificationsKept, st.Notifications)
	}
	if calls, _, _ := rec.state(); calls != 1 {
		t.Errorf("%d posts, want 1: the one handed over after the stop is kept, not sent", calls)
	}
}

// TestBackgroundKeepsWhatItQueues: a notification handed to Background
// while the one before it is still being delivered (a slow receiver) is
// kept in the outbox at once, before announce returns: a process killed
// then (a SIGKILL, a service manager's stop timeout) leaves it to the next
// process, as the README promises of every notification, instead of losing
// it with the goroutine's queue. It is then delivered once.
func TestBackgroundKeepsWhatItQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := queueBehindSlowReceiver(t, b)
	q.announce(q.second.Job) // queued behind the slow one
	var kept int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.notification WHERE job_id = $1`, q.second.Job).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if kept != 1 {
		t.Errorf("the queued notification of job %d is kept %d times, want 1: a process killed now loses it", q.second.Job, kept)
	}
	q.free()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left, got := b.keptCount(t), q.posts(q.second.Job)
		if left == 0 && got == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the slow receiver answered: %d kept, job %d posted %d times; want none kept, posted once", left, q.second.Job, got)
		}
	}
	q.stop()
}

// TestBackgroundSkipsWhatAnotherProcessTookOver: a queued notification
// whose lease ran out while it waited its turn (a slow receiver) is taken
// over by another process's redelivery; when its turn comes, Background
// does not send it again.
func TestBackgroundSkipsWhatAnotherProcessTookOver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := queueBehindSlowReceiver(t, b)
	q.announce(q.second.Job)
	if _, err := b.pool.Exec(b.ctx, `UPDATE recalc.notification SET next_at = now() - interval '1 second' WHERE job_id = $1`, q.second.Job); err != nil {
		t.Fatal(err)
	}
	other := &notify.Notifier{URL: q.url, Timeout: 30 * time.Second}
	if got, err := other.Redeliver(b.ctx, b.pool, zerolog.Nop()); err != nil || got != 1 {
		t.Fatalf("the other process's redelivery: %d, %v; want 1", got, err)
	}
	q.free()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left := b.keptCount(t)
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d notifications still kept", left)
		}
	}
	time.Sleep(300 * time.Millisecond)
	q.stop()
	if got := q.posts(q.second.Job); got != 1 {
		t.Errorf("job %d posted %d times, want 1: the process it was queued in sent it after another took it over", q.second.Job, got)
	}
}

// slowQueue is the setup of the Background queue tests: two finished jobs,
// a receiver that holds the first POST of the first job until free, and a
// Background delivery that has begun posting the first job.
type slowQueue struct {
	first, second *engine.Report
	url           string
	announce      func(job int64)
	free          func() // the receiver answers
	stop          func() // ends the delivery, and waits for it
	mu            sync.Mutex
	posted        map[int64]int
}

// posts returns how many times job was posted.
func (q *slowQueue) posts(job int64) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.posted[job]
}

func queueBehindSlowReceiver(t *testing.T, b *bundle) *slowQueue {
	t.Helper()
	q := &slowQueue{first: b.run(t, nil), posted: map[int64]int{}}
	var err error
	q.second, err = engine.Run(b.ctx, b.pool, engine.Options{Full: true}, zerolog.Nop())
	if err != nil || q.second.Job == 0 || q.second.Job == q.first.Job {
		t.Fatalf("second job: %+v, %v", q.second, err)
	}
	release := make(chan struct{})
	q.free = sync.OnceFunc(func() { close(release) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p struct {
			Job int64 `json:"job"`
		}
		_ = json.Unmarshal(body, &p)
		q.mu.Lock()
		q.posted[p.Job]++
		n := q.posted[p.Job]
		q.mu.Unlock()
		if p.Job == q.first.Job && n == 1 {
			<-release // a slow receiver
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(q.free) // before the server closes
	q.url = srv.URL + "/hook"
	n := &notify.Notifier{URL: q.url, Timeout: 30 * time.Second}
	ctx, cancel := context.WithCancel(b.ctx)
	var wait func()
	q.announce, wait = n.Background(ctx, b.pool, zerolog.Nop())
	q.stop = sync.OnceFunc(func() { cancel(); wait() })
	t.Cleanup(q.stop) // before the receiver answers: its post is cut short
	q.announce(q.first.Job)
	for deadline := time.Now().Add(10 * time.Second); q.posts(q.first.Job) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first notification was never posted")
		}
	}
	return q
}

// TestReserveKeepsTheNewerEnd: a job that ended before (failed, its
// notification kept after a failed delivery) and ends again (resumed) has
// its new end reserved in the transaction that ends it. A process killed
// after that commit, before Begin, must leave the new payload to deliver,
// not the old one, and a redelivery of the old one under way as it
// commits must not forget the new one.
func TestReserveKeepsTheNewerEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rep := b.run(t, nil)
	n := &notify.Notifier{URL: "http://127.0.0.1:1/hook"}
	target := n.Targets()[0]
	entry := func(status string) outbox.Entry {
		return outbox.Entry{Job: rep.Job, Channel: target.Channel, TargetKey: target.Key, Target: target.Label,
			Payload: []byte(`{"status": "` + status + `"}`), LastError: "answered 500"}
	}
	if err := outbox.Keep(b.ctx, b.pool, entry("failed")); err != nil {
		t.Fatal(err)
	}
	b.due(t)
	claimed, err := outbox.Claim(b.ctx, b.pool, []string{target.Key}, 5, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v, %d entries; want 1", err, len(claimed))
	}
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Reserve(b.ctx, tx, entry("done"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	// The redelivery of the old end completes; the process that ended the
	// job again died before Begin.
	if err := outbox.Delivered(b.ctx, b.pool, claimed[0]); err != nil {
		t.Fatal(err)
	}
	b.due(t)
	left, err := outbox.Claim(b.ctx, b.pool, []string{target.Key}, 5, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || !strings.Contains(string(left[0].Payload), `"done"`) {
		var payloads []string
		for _, e := range left {
			payloads = append(payloads, string(e.Payload))
		}
		t.Errorf("left to deliver after the job ended again: %q; want its new end (done)", payloads)
	}
}

// TestReserveLeasedFromItsCommit: the lease of a notification reserved in
// the transaction that ends its job runs from the reservation, not from
// the transaction's start: a finish longer than the lease would otherwise
// commit it already due, for another process (or this one's own periodic
// redelivery) to claim and send while this one begins and sends it too.
func TestReserveLeasedFromItsCommit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rep := b.run(t, nil)
	n := &notify.Notifier{URL: "http://127.0.0.1:1/hook"}
	target := n.Targets()[0]
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	if _, err := tx.Exec(b.ctx, `SELECT pg_sleep(1.5)`); err != nil { // a long finish
		t.Fatal(err)
	}
	e := outbox.Entry{Job: rep.Job, Channel: target.Channel, TargetKey: target.Key, Target: target.Label, Payload: []byte(`{"status": "done"}`)}
	if err := outbox.Reserve(b.ctx, tx, e, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	claimed, err := outbox.Claim(b.ctx, b.pool, []string{target.Key}, 5, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 0 {
		t.Errorf("a notification reserved with a lease of 1 s was claimed as soon as its transaction of 1.5 s committed: its lease ran from the transaction's start")
	}
}
