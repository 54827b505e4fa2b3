package engine_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/notify"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/testkit"
)

type payload struct {
	Job            int64  `json:"job"`
	Status         string `json:"status"`
	Kind           string `json:"kind"`
	Trigger        string `json:"trigger"`
	Records        int64  `json:"records"`
	ShareRowsAdded int64  `json:"share_rows_added"`
	Error          string `json:"error"`
	DurationMS     *int64 `json:"duration_ms"`
}

// listen subscribes to the jobs channel on a connection of its own.
func listen(t *testing.T, ctx context.Context, pool *pgxpool.Pool) *pgxpool.Conn {
	t.Helper()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	if _, err := conn.Exec(ctx, "LISTEN "+queue.Channel); err != nil {
		t.Fatal(err)
	}
	return conn
}

func nextPayload(t *testing.T, ctx context.Context, conn *pgxpool.Conn) payload {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := conn.Conn().WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("no NOTIFY on %s: %v", queue.Channel, err)
	}
	var p payload
	if err := json.Unmarshal([]byte(n.Payload), &p); err != nil {
		t.Fatalf("NOTIFY payload %q: %v", n.Payload, err)
	}
	return p
}

// TestCompletionNotifications: a finished job and a failed job each send a
// NOTIFY with their JSON payload, a webhook POST (retried after a failure)
// and an email through an SMTP relay.
func TestCompletionNotifications(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.importFile(t, minimalOrg())
	ctx, pool := b.ctx, b.pool
	conn := listen(t, ctx, pool)

	var mu sync.Mutex
	var hooks [][]byte
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		hooks = append(hooks, body)
		if calls == 1 || calls == 3 { // the first attempt of each job fails
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
	}))
	defer srv.Close()
	smtp := testkit.StartSMTP(t)
	n := &notify.Notifier{URL: srv.URL, Email: []string{"admin@example.com"}, SMTPAddr: smtp.Addr, From: "recalc@example.com",
		Timeout: 5 * time.Second, Retries: 2}

	rep, err := engine.Run(ctx, pool, engine.Options{Notify: n}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	p := nextPayload(t, ctx, conn)
	if p.Job != rep.Job || p.Status != "done" || p.Kind != "full" || p.Records != 300 || p.ShareRowsAdded == 0 || p.DurationMS == nil {
		t.Errorf("NOTIFY payload %+v does not describe job %d done", p, rep.Job)
	}
	mu.Lock()
	if calls != 2 || !strings.Contains(string(hooks[1]), `"status": "done"`) || string(hooks[0]) != string(hooks[1]) {
		t.Errorf("webhook: %d calls, bodies %q; want a failed attempt then the same payload again", calls, hooks)
	}
	mu.Unlock()
	if mail := smtp.Next(t); !strings.Contains(mail.Data, "Subject: recalc job 1 done (full)") || !strings.Contains(mail.Data, `"share_rows_added"`) ||
		strings.Join(mail.Rcpt, ",") != "admin@example.com" {
		t.Errorf("email to %v:\n%s", mail.Rcpt, mail.Data)
	}

	// A failing job notifies too: hold a record's materialized row so its chunk fails.
	if _, err := pool.Exec(ctx, `UPDATE recalc.record SET owner = 'u5' WHERE id = 'a001'`); err != nil {
		t.Fatal(err)
	}
	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, `SELECT 1 FROM recalc.acl_record WHERE id = 'a001' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{Notify: n, LockTimeout: 50 * time.Millisecond}, zerolog.Nop()); err == nil {
		t.Fatal("run under a held lock succeeded")
	}
	p = nextPayload(t, ctx, conn)
	if p.Status != "failed" || !strings.Contains(p.Error, "UNABLE_TO_LOCK_ROW") {
		t.Errorf("NOTIFY payload of the failed job: %+v", p)
	}
	mu.Lock()
	if calls != 4 || !strings.Contains(string(hooks[3]), `"status": "failed"`) {
		t.Errorf("webhook for the failed job: %d calls, last %q", calls, hooks[len(hooks)-1])
	}
	mu.Unlock()
	if mail := smtp.Next(t); !strings.Contains(mail.Data, "Subject: recalc job 2 failed (incremental)") {
		t.Errorf("email of the failed job:\n%s", mail.Data)
	}
}
