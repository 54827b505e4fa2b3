// Package notify sends a finished job's completion notification beyond
// PostgreSQL's NOTIFY: a webhook POST of the JSON payload, with a timeout
// and retries, and an email through an SMTP relay. Salesforce admins learn
// that a recalculation finished from an email; so can recalc's.
package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"strings"
	"time"
)

// Notifier says where to send notifications. The zero value sends nothing.
type Notifier struct {
	URL      string        // webhook: POST the payload here
	Email    []string      // mail the payload to these addresses
	SMTPAddr string        // relay, host:port
	From     string        // sender address
	Timeout  time.Duration // per attempt (default 10s)
	Retries  int           // webhook retries after the first attempt, with backoff
}

// Enabled reports whether n sends anything.
func (n *Notifier) Enabled() bool { return n != nil && (n.URL != "" || len(n.Email) > 0) }

func (n *Notifier) timeout() time.Duration {
	if n.Timeout > 0 {
		return n.Timeout
	}
	return 10 * time.Second
}

// Send delivers payload (a job's JSON) to every configured target and
// returns the errors of those that failed.
func (n *Notifier) Send(ctx context.Context, payload []byte) error {
	if !n.Enabled() {
		return nil
	}
	var errs []error
	if n.URL != "" {
		if err := n.post(ctx, payload); err != nil {
			errs = append(errs, fmt.Errorf("webhook %s: %w", n.URL, err))
		}
	}
	if len(n.Email) > 0 {
		if err := n.mail(payload); err != nil {
			errs = append(errs, fmt.Errorf("email via %s: %w", n.SMTPAddr, err))
		}
	}
	return errors.Join(errs...)
}

// post sends the payload, retrying on network errors and 5xx answers with
// capped exponential backoff. A 4xx answer is final.
func (n *Notifier) post(ctx context.Context, payload []byte) error {
	client := &http.Client{Timeout: n.timeout()}
	var last error
	for attempt := 0; attempt <= n.Retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(250*time.Millisecond<<(attempt-1), 5*time.Second)):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "recalc")
		resp, err := client.Do(req)
		if err != nil {
			last = err
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		switch {
		case resp.StatusCode < 300:
			return nil
		case resp.StatusCode < 500:
			return fmt.Errorf("answered %s", resp.Status)
		}
		last = fmt.Errorf("answered %s", resp.Status)
	}
	return fmt.Errorf("%d attempts: %w", n.Retries+1, last)
}

// mail sends the payload as a plain-text email, using STARTTLS when the
// relay offers it.
func (n *Notifier) mail(payload []byte) error {
	var p struct {
		Job    int64  `json:"job"`
		Status string `json:"status"`
		Kind   string `json:"kind"`
	}
	_ = json.Unmarshal(payload, &p)
	host, _, err := net.SplitHostPort(n.SMTPAddr)
	if err != nil {
		return fmt.Errorf("bad --smtp-addr %q: %w", n.SMTPAddr, err)
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
	var pretty bytes.Buffer
	if json.Indent(&pretty, payload, "", "  ") != nil {
		pretty.Write(payload)
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: recalc job %d %s (%s)\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		n.From, strings.Join(n.Email, ", "), p.Job, p.Status, p.Kind, strings.ReplaceAll(pretty.String(), "\n", "\r\n"))
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
