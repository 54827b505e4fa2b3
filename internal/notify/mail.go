package notify

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/smtp"
	"strings"
	"time"
	"unicode"
)

// mail sends the payload as a plain-text email, using STARTTLS when the
// relay offers it.
func (n *Notifier) mail(payload []byte) error {
	host, _, err := net.SplitHostPort(n.SMTPAddr)
	if err != nil {
		return fmt.Errorf("bad --smtp-addr: %w", err)
	}
	conn, err := net.DialTimeout("tcp", n.SMTPAddr, n.timeout())
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(n.timeout()))
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return err
		}
	}
	if err := c.Mail(n.From); err != nil {
		return err
	}
	for _, to := range n.Email {
		if err := c.Rcpt(to); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if err := n.writeMessage(w, payload, time.Now()); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// writeMessage writes the headers and the quoted-printable body: the
// payload, indented. Every header value is checked for line breaks, and the
// subject's free text (the database name) is stripped of control
// characters and MIME-encoded.
func (n *Notifier) writeMessage(w io.Writer, payload []byte, now time.Time) error {
	var p struct {
		Job      int64  `json:"job"`
		Status   string `json:"status"`
		Kind     string `json:"kind"`
		Database string `json:"database"`
	}
	_ = json.Unmarshal(payload, &p)
	subject := fmt.Sprintf("recalc job %d %s (%s)", p.Job, word(p.Status), word(p.Kind))
	if p.Database != "" {
		subject += " on " + word(p.Database)
	}
	headers := [][2]string{
		{"From", n.From},
		{"To", strings.Join(n.Email, ", ")},
		{"Subject", mime.QEncoding.Encode("utf-8", subject)},
		{"Date", now.Format(time.RFC1123Z)},
		{"Message-ID", messageID(p.Job, n.From, now)},
		{"MIME-Version", "1.0"},
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Content-Transfer-Encoding", "quoted-printable"},
		{"Auto-Submitted", "auto-generated"},
	}
	var buf bytes.Buffer
	for _, h := range headers {
		if strings.ContainsAny(h[1], "\r\n") {
			return fmt.Errorf("write email: header %s would contain a line break", h[0])
		}
		fmt.Fprintf(&buf, "%s: %s\r\n", h[0], h[1])
	}
	buf.WriteString("\r\n")
	var pretty bytes.Buffer
	if json.Indent(&pretty, payload, "", "  ") != nil {
		pretty.Write(payload)
	}
	qp := quotedprintable.NewWriter(&buf)
	if _, err := qp.Write([]byte(strings.ReplaceAll(pretty.String(), "\n", "\r\n") + "\r\n")); err != nil {
		return err
	}
	if err := qp.Close(); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// word keeps a subject's value printable and short.
func word(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	return trim(s, 63)
}

// messageID is a unique Message-ID in the sender's domain.
func messageID(job int64, from string, now time.Time) string {
	domain := "localhost"
	if _, d, ok := strings.Cut(from, "@"); ok && d != "" {
		domain = d
	}
	var r [8]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("<recalc.job%d.%d.%s@%s>", job, now.UnixNano(), hex.EncodeToString(r[:]), domain)
}
