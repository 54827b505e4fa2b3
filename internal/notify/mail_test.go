package notify_test

import (
	"io"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/notify"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestMain drops the tests' databases when they have all run (testdb.Main).
func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// TestEmailHeaders: the email a job sends has Date, Message-ID,
// MIME-Version and Content-Type, a subject naming the job and the
// database, and the payload as its quoted-printable body.
func TestEmailHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	relay := testkit.StartSMTP(t)
	n := &notify.Notifier{Email: []string{"ops@example.com", "dba@example.com"}, SMTPAddr: relay.Addr, From: "recalc@example.org",
		Timeout: 5 * time.Second}
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	rep := b.run(t, n)
	m := relay.Next(t)
	if strings.Join(m.Rcpt, ",") != "ops@example.com,dba@example.com" {
		t.Errorf("recipients %v", m.Rcpt)
	}
	msg, err := mail.ReadMessage(strings.NewReader(m.Data))
	if err != nil {
		t.Fatalf("email does not parse: %v\n%s", err, m.Data)
	}
	h := msg.Header
	date, err := h.Date()
	if err != nil || time.Since(date) > time.Minute || time.Since(date) < -time.Minute {
		t.Errorf("Date %q: %v, want now", h.Get("Date"), err)
	}
	checks := []struct{ header, pattern string }{
		{"Message-ID", `^<recalc\.job1\.\d+\.[0-9a-f]{16}@example\.org>$`},
		{"MIME-Version", `^1\.0$`},
		{"Content-Type", `^text/plain; charset=utf-8$`},
		{"Content-Transfer-Encoding", `^quoted-printable$`},
		{"Subject", `^recalc job 1 done \(full\) on recalc_`},
		{"From", `^recalc@example\.org$`},
		{"To", `^ops@example\.com, dba@example\.com$`},
	}
	for _, c := range checks {
		if v := h.Get(c.header); !regexp.MustCompile(c.pattern).MatchString(v) {
			t.Errorf("%s: %q does not match %s", c.header, v, c.pattern)
		}
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	checkPayload(t, body, rep.Job, "done")
}

// TestEmailNotDeliveredIsKept: a relay that does not answer leaves the
// notification kept, as an email, and a later run delivers it.
func TestEmailNotDeliveredIsKept(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	n := &notify.Notifier{Email: []string{"ops@example.com"}, SMTPAddr: addr, From: "recalc@example.org", Timeout: 2 * time.Second}
	rep := b.run(t, n)
	st := b.kept(t)
	if st.NotificationsKept != 1 || st.Notifications[0].Channel != notify.Email || st.Notifications[0].Job != rep.Job {
		t.Fatalf("kept: %+v, want job %d's email", st.Notifications, rep.Job)
	}
	relay := testkit.StartSMTP(t)
	if relay.Addr == addr {
		t.Skip("the relay got the closed port back")
	}
	n.SMTPAddr = relay.Addr // another relay is another target: the kept email stays
	b.due(t)
	b.run(t, n)
	if m, ok := relay.Received(); ok {
		t.Errorf("a kept email went to another relay: %v", m.Rcpt)
	}
	if st := b.kept(t); st.NotificationsKept != 1 {
		t.Errorf("kept: %d, want the email still kept", st.NotificationsKept)
	}
}
