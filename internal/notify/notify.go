// Package notify sends a finished job's completion notification beyond
// PostgreSQL's NOTIFY: a webhook POST of the JSON payload, optionally
// signed with HMAC-SHA256, and an email through an SMTP relay. Salesforce
// admins learn that a recalculation finished from an email; so can
// recalc's.
//
// A notification is not missed: each attempt has a timeout and a few quick
// retries, and one that still fails is kept in the outbox
// (internal/outbox) and delivered again, with backoff, by the next run,
// resume or watch configured with the same target. Targets are validated
// before any work starts (Validate). The payload is the job's figures
// (recalc.job_payload): it never carries a record's field values.
package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/outbox"
	"github.com/recalc-dev/recalc/internal/queue"
)

// Notifier says where to send notifications. The zero value sends nothing.
type Notifier struct {
	URL      string        // webhook: POST the payload here
	Secret   string        // when set, sign webhook bodies with HMAC-SHA256 (SignatureHeader)
	Email    []string      // mail the payload to these addresses
	SMTPAddr string        // relay, host:port
	From     string        // sender address
	Timeout  time.Duration // per attempt (default 10s)
	Retries  int           // quick retries of a delivery after the first attempt, with backoff
}

// Channels of a target.
const (
	Webhook = "webhook"
	Email   = "email"
)

// Bounds of the configured values.
const (
	maxURL       = 2048
	maxAddress   = 254
	minSecret    = 16
	maxSecret    = 1024
	maxRecipient = 20
	maxLabel     = 300
	redeliverMax = 5 // kept notifications one run redelivers
)

// Enabled reports whether n sends anything.
func (n *Notifier) Enabled() bool { return n != nil && (n.URL != "" || len(n.Email) > 0) }

// lease is the longest a delivery with n's quick retries may take, and a
// minute more: how long an entry kept before its first delivery waits
// before another process may deliver it.
func (n *Notifier) lease() time.Duration {
	return time.Duration(n.Retries+1)*(n.timeout()+5*time.Second) + time.Minute
}

func (n *Notifier) timeout() time.Duration {
	if n.Timeout > 0 {
		return n.Timeout
	}
	return 10 * time.Second
}

// Validate checks every configured target and says what is wrong with the
// first bad one, in one line that never repeats the secret.
func (n *Notifier) Validate() error {
	if n == nil {
		return nil
	}
	if n.URL != "" {
		if err := checkURL(n.URL); err != nil {
			return fmt.Errorf("--notify-url: %w", err) // the URL may hold a token: never echoed
		}
	}
	if n.Secret != "" && (len(n.Secret) < minSecret || len(n.Secret) > maxSecret) {
		return fmt.Errorf("--notify-secret must be %d to %d characters long", minSecret, maxSecret)
	}
	if len(n.Email) == 0 {
		return nil
	}
	if len(n.Email) > maxRecipient {
		return fmt.Errorf("--notify-email: at most %d addresses", maxRecipient)
	}
	for _, a := range append([]string{n.From}, n.Email...) {
		if err := checkAddress(a); err != nil {
			flag := "--notify-email"
			if a == n.From {
				flag = "--smtp-from"
			}
			return fmt.Errorf("%s %q: %w", flag, trim(a, 100), err)
		}
	}
	if err := checkHostPort(n.SMTPAddr); err != nil {
		return fmt.Errorf("--smtp-addr %q: %w", trim(n.SMTPAddr, 100), err)
	}
	return nil
}

func checkURL(s string) error {
	const want = "give an absolute http:// or https:// URL"
	if len(s) > maxURL {
		return fmt.Errorf("longer than %d characters", maxURL)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("contains spaces or control characters: " + want)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("not a URL: " + want)
	}
	if u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
			return errors.New("bad port: " + want)
		}
	}
	return nil
}

func checkAddress(s string) error {
	const want = "give a bare address such as admin@example.com"
	if len(s) > maxAddress {
		return fmt.Errorf("longer than %d characters", maxAddress)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || !strings.Contains(s, "@") ||
		strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '"' || r == ',' || r == '<' || r == '>' }) {
		return errors.New("not an email address: " + want)
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	p, perr := strconv.Atoi(port)
	if err != nil || host == "" || perr != nil || p < 1 || p > 65535 || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' }) {
		return errors.New("give the relay as host:port, such as localhost:25")
	}
	return nil
}

// trim cuts s to at most n bytes, on a character boundary, marking the cut.
func trim(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "") + "..."
	}
	return s
}

// Target is one destination: the webhook, or the email recipients.
type Target struct {
	Channel string
	Key     string // SHA-256 of the full destination: which kept notifications are its own
	Label   string // the destination without credentials, path or query string (webhook tokens live there)
}

// Targets lists n's destinations.
func (n *Notifier) Targets() []Target {
	var out []Target
	if n.URL != "" {
		label := n.URL
		if u, err := url.Parse(n.URL); err == nil {
			label = u.Scheme + "://" + u.Host
			if p := u.EscapedPath(); p != "" && p != "/" {
				label += "/..."
			}
		}
		out = append(out, Target{Channel: Webhook, Key: key(Webhook, n.URL), Label: trim(label, maxLabel-3)})
	}
	if len(n.Email) > 0 {
		to := slices.Sorted(slices.Values(n.Email))
		out = append(out, Target{Channel: Email, Key: key(Email, n.SMTPAddr, n.From, strings.Join(to, ",")),
			Label: trim(strings.Join(to, ", ")+" via "+n.SMTPAddr, maxLabel-3)})
	}
	return out
}

func key(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:])
}

// send delivers payload to t, with n's quick retries for a webhook.
func (n *Notifier) send(ctx context.Context, t Target, payload []byte, retries int) error {
	if t.Channel == Webhook {
		return n.post(ctx, payload, retries)
	}
	return n.mail(payload)
}

// Send delivers payload (a job's JSON) to every configured target, with
// quick retries, and returns the errors of those that failed. It keeps
// nothing: Announce does.
func (n *Notifier) Send(ctx context.Context, payload []byte) error {
	if !n.Enabled() {
		return nil
	}
	var errs []error
	for _, t := range n.Targets() {
		if err := n.send(ctx, t, payload, n.Retries); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", t.Channel, t.Label, err))
		}
	}
	return errors.Join(errs...)
}

// Announce sends job's completion notification to every target, and keeps
// it in the outbox for a target it could not reach. Failures are logged,
// never fatal: the job itself is over.
func (n *Notifier) Announce(ctx context.Context, pool *pgxpool.Pool, job int64, log zerolog.Logger) {
	if !n.Enabled() {
		return
	}
	for _, p := range n.begin(ctx, pool, job, log) {
		n.deliver(ctx, pool, p, log)
	}
}

// Reserve keeps job's completion notification in the outbox for each
// target in tx, the transaction that ends the job (outbox.Reserve), so
// that a process killed after that commit and before Announce or the
// announce of Background kept it does not lose it.
func (n *Notifier) Reserve(ctx context.Context, tx pgx.Tx, job int64) error {
	if !n.Enabled() {
		return nil
	}
	payload, err := queue.Payload(ctx, tx, job)
	if err != nil {
		return err
	}
	for _, t := range n.Targets() {
		e := outbox.Entry{Job: job, Channel: t.Channel, TargetKey: t.Key, Target: t.Label, Payload: payload}
		if err := outbox.Reserve(ctx, tx, e, n.lease()); err != nil {
			return err
		}
	}
	return nil
}

// pending is a completion notification to one target, kept (begin) before
// its first attempt (deliver).
type pending struct {
	target Target
	entry  outbox.Entry // as outbox.Begin returned it
	kept   error        // outbox.Begin's error: not kept
}

// begin reads job's completion notification and keeps it in the outbox for
// each target, leased for as long as its attempts may take: a process that
// dies delivering it (a SIGKILL, an OOM kill, a service manager's stop
// timeout), or before it got to it, leaves it to the next process with the
// same target. Delivery is at least once.
func (n *Notifier) begin(ctx context.Context, pool *pgxpool.Pool, job int64, log zerolog.Logger) []pending {
	// Read even once ctx has ended (a SIGTERM as the job ended), so that
	// the notification is kept rather than lost.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	payload, err := queue.Payload(rctx, pool, job)
	cancel()
	if err != nil {
		log.Error().Int64("job", job).Err(err).Msg("completion notification not sent: cannot read it")
		return nil
	}
	var out []pending
	for _, t := range n.Targets() {
		e := outbox.Entry{Job: job, Channel: t.Channel, TargetKey: t.Key, Target: t.Label, Payload: payload}
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		begun, berr := outbox.Begin(bctx, pool, e, n.lease())
		cancel()
		if berr != nil {
			log.Warn().Int64("job", job).Str("channel", t.Channel).Str("target", t.Label).Err(berr).
				Msg("completion notification not kept before its delivery: a process that dies delivering it loses it")
		}
		out = append(out, pending{target: t, entry: begun, kept: berr})
	}
	return out
}

// deliver sends p, with n's quick retries, unless ctx has ended, and
// forgets it once sent, or records the failure for redelivery.
func (n *Notifier) deliver(ctx context.Context, pool *pgxpool.Pool, p pending, log zerolog.Logger) {
	t, job := p.target, p.entry.Job
	err := errStopped
	if ctx.Err() == nil {
		if err = n.send(ctx, t, p.entry.Payload, n.Retries); err != nil && ctx.Err() != nil {
			err = errStopped
		}
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	var kerr error
	switch {
	case err == nil && p.kept == nil:
		kerr = outbox.Delivered(kctx, pool, p.entry)
	case err == nil:
	case p.kept == nil:
		kerr = outbox.Failed(kctx, pool, p.entry, err.Error())
	default:
		e := p.entry
		e.LastError = err.Error()
		kerr = outbox.Keep(kctx, pool, e)
	}
	cancel()
	if err == nil {
		if kerr != nil {
			log.Warn().Int64("job", job).Str("channel", t.Channel).Str("target", t.Label).Err(kerr).
				Msg("completion notification sent, but still kept: it may be sent again")
		}
		log.Info().Int64("job", job).Str("channel", t.Channel).Str("target", t.Label).Msg("completion notification sent")
		return
	}
	if kerr != nil {
		log.Error().Int64("job", job).Str("channel", t.Channel).Str("target", t.Label).AnErr("delivery", err).Err(kerr).
			Msg("completion notification not delivered, and could not be kept for redelivery")
		return
	}
	log.Warn().Int64("job", job).Str("channel", t.Channel).Str("target", t.Label).Err(err).
		Int64("retry_in_ms", outbox.Backoff(1).Milliseconds()).Msg("completion notification not delivered: kept, the next run or watch retries it (`recalc status` lists it)")
}

// errStopped is the delivery error of a notification that the process's
// stop cut short, or left unsent.
var errStopped = errors.New("not delivered before the process stopped")

// Background returns announce, which keeps a finished job's completion
// notification in the outbox (as Announce does before its first attempt)
// and hands it to a goroutine that delivers them one after another, and
// returns: a receiver that is slow or hangs never holds up the caller's
// next step (`recalc watch`), and a process killed while notifications
// wait their turn leaves them to the next process with the same targets.
// wait returns once ctx has ended and the goroutine with it (call it after
// the last announce). What was left undelivered then (cut short or not yet
// begun) stays kept in the outbox, for the next process with the same
// targets to deliver.
func (n *Notifier) Background(ctx context.Context, pool *pgxpool.Pool, log zerolog.Logger) (announce func(job int64), wait func()) {
	var mu sync.Mutex
	var queued []pending
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	next := func() (pending, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(queued) == 0 {
			return pending{}, false
		}
		p := queued[0]
		queued = queued[1:]
		return p, true
	}
	go func() {
		defer close(done)
		for {
			p, ok := next()
			if !ok {
				select {
				case <-ctx.Done():
				case <-wake:
					continue
				}
			}
			if ctx.Err() != nil {
				if ok { // wait keeps it, with what is left
					mu.Lock()
					queued = append([]pending{p}, queued...)
					mu.Unlock()
				}
				return
			}
			if p.kept == nil {
				// Its lease began when it was queued: renew it, unless
				// another process took it over once it ended (a
				// redelivery's claim), or its job ended again since.
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				mine, err := outbox.Renew(rctx, pool, p.entry, n.lease())
				cancel()
				if err == nil && !mine {
					continue
				}
			}
			n.deliver(ctx, pool, p, log)
		}
	}()
	announce = func(job int64) {
		if !n.Enabled() {
			return
		}
		ps := n.begin(ctx, pool, job, log)
		mu.Lock()
		queued = append(queued, ps...)
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	wait = func() {
		<-done
		// Record what is left, queued even after the goroutine ended (a job
		// that finished as the process stopped): deliver, its context
		// ended, keeps what it does not send.
		for p, ok := next(); ok; p, ok = next() {
			n.deliver(ctx, pool, p, log)
		}
	}
	return announce, wait
}

// Redeliver delivers the kept notifications of n's targets that are due,
// one attempt each, and returns how many it delivered. A target that fails
// again gets the rest of its entries back with the same error.
func (n *Notifier) Redeliver(ctx context.Context, pool *pgxpool.Pool, log zerolog.Logger) (int, error) {
	if !n.Enabled() {
		return 0, nil
	}
	delivered := 0
	for _, t := range n.Targets() {
		lease := n.timeout()*redeliverMax + time.Minute
		entries, err := outbox.Claim(ctx, pool, []string{t.Key}, redeliverMax, lease)
		if err != nil {
			return delivered, err
		}
		var fail error
		for _, e := range entries {
			if fail == nil {
				fail = n.send(ctx, t, e.Payload, 0)
			}
			if fail == nil {
				delivered++
				log.Info().Int64("job", e.Job).Str("channel", t.Channel).Str("target", t.Label).Int("attempt", e.Attempts).
					Msg("kept completion notification delivered")
				err = outbox.Delivered(ctx, pool, e)
			} else {
				log.Warn().Int64("job", e.Job).Str("channel", t.Channel).Str("target", t.Label).Int("attempt", e.Attempts).
					Err(fail).Int64("retry_in_ms", outbox.Backoff(e.Attempts).Milliseconds()).Msg("kept completion notification not delivered again")
				err = outbox.Failed(context.WithoutCancel(ctx), pool, e, fail.Error())
			}
			if err != nil {
				return delivered, err
			}
		}
	}
	return delivered, nil
}

// RedeliverEvery returns a function that starts Redeliver in the
// background, at most once per every and one at a time, for a loop whose
// steps may be milliseconds apart (`recalc watch`, whose fast path runs no
// job): a receiver that hangs never delays a step. A failure is logged, and
// the next call after every tries again.
func (n *Notifier) RedeliverEvery(every time.Duration, pool *pgxpool.Pool, log zerolog.Logger) func(context.Context) {
	var mu sync.Mutex // held while a redelivery runs
	var last time.Time
	return func(ctx context.Context) {
		if !n.Enabled() || time.Since(last) < every || !mu.TryLock() {
			return
		}
		last = time.Now()
		go func() {
			defer mu.Unlock()
			if _, err := n.Redeliver(ctx, pool, log); err != nil && ctx.Err() == nil {
				log.Warn().Err(err).Msg("kept notifications not redelivered; retrying later")
			}
		}()
	}
}
