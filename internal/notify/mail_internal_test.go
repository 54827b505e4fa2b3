package notify

import (
	"bytes"
	"net/mail"
	"strings"
	"testing"
	"time"
)

// TestNoHeaderInjection: values from the payload (the database name) and
// configured addresses never add a header line.
func TestNoHeaderInjection(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		n       Notifier
		payload string
		fails   bool
	}{
		{"database name", Notifier{From: "r@example.com", Email: []string{"a@example.com"}},
			`{"job":1,"status":"done","kind":"full","database":"crm\r\nBcc: evil@example.com"}`, false},
		{"status", Notifier{From: "r@example.com", Email: []string{"a@example.com"}},
			`{"job":1,"status":"done\nBcc: evil@example.com","kind":"full"}`, false},
		{"from", Notifier{From: "r@example.com\r\nBcc: evil@example.com", Email: []string{"a@example.com"}},
			`{"job":1,"status":"done","kind":"full"}`, true},
		{"recipient", Notifier{From: "r@example.com", Email: []string{"a@example.com\nBcc: evil@example.com"}},
			`{"job":1,"status":"done","kind":"full"}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			err := tc.n.writeMessage(&buf, []byte(tc.payload), time.Now())
			if tc.fails {
				if err == nil || !strings.Contains(err.Error(), "line break") {
					t.Errorf("got %v, want the message refused", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			msg, err := mail.ReadMessage(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if msg.Header.Get("Bcc") != "" || len(msg.Header["Subject"]) != 1 {
				t.Errorf("a header was injected: %v", msg.Header)
			}
		})
	}
}
