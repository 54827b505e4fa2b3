package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Headers of a signed webhook request. The signature is
// "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)), where
// timestamp is the TimestampHeader's value, in Unix seconds.
const (
	SignatureHeader = "X-Recalc-Signature"
	TimestampHeader = "X-Recalc-Timestamp"
)

// Sign returns the signature of body sent at ts, as SignatureHeader carries it.
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.", ts)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a received webhook: its signature and timestamp headers
// against body, and that it was sent within maxAge of now (replays of
// older requests fail). A receiver in another Go module cannot import this
// internal package: it copies Verify and Sign.
func Verify(secret string, h http.Header, body []byte, maxAge time.Duration, now time.Time) error {
	ts, err := strconv.ParseInt(h.Get(TimestampHeader), 10, 64)
	if err != nil {
		return fmt.Errorf("verify webhook: missing or bad %s", TimestampHeader)
	}
	if age := now.Sub(time.Unix(ts, 0)); age > maxAge || age < -maxAge {
		return fmt.Errorf("verify webhook: sent %s ago, more than %s", age.Round(time.Second), maxAge)
	}
	if !hmac.Equal([]byte(h.Get(SignatureHeader)), []byte(Sign(secret, ts, body))) {
		return errors.New("verify webhook: signature does not match")
	}
	return nil
}

// post sends the payload, retrying up to retries times on network errors
// and 5xx answers with capped exponential backoff. A 4xx answer is final.
// Errors never carry the URL: it may hold a token.
func (n *Notifier) post(ctx context.Context, payload []byte, retries int) error {
	client := &http.Client{Timeout: n.timeout(), CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var last error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(250*time.Millisecond<<(attempt-1), 5*time.Second)):
			}
		}
		var final bool
		if final, last = n.postOnce(ctx, client, payload); last == nil || final {
			return last
		}
	}
	if retries == 0 {
		return last
	}
	return fmt.Errorf("%d attempts: %w", retries+1, last)
}

// postOnce makes one request; final says a retry would not help.
func (n *Notifier) postOnce(ctx context.Context, client *http.Client, payload []byte) (final bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(payload))
	if err != nil {
		return true, errors.New("build request: bad URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "recalc")
	if n.Secret != "" {
		ts := time.Now().Unix()
		req.Header.Set(TimestampHeader, strconv.FormatInt(ts, 10))
		req.Header.Set(SignatureHeader, Sign(n.Secret, ts, payload))
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return false, fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	status := strings.ToValidUTF8(resp.Status, "?")
	switch {
	case resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode < 400:
		return true, fmt.Errorf("answered %s: a redirect, which recalc does not follow (the POST's body and signature would not go with it): "+
			"give --notify-url the URL it redirects to", trim(status, 100))
	case resp.StatusCode < 500:
		return true, fmt.Errorf("answered %s", trim(status, 100))
	}
	return false, fmt.Errorf("answered %s", trim(status, 100))
}
