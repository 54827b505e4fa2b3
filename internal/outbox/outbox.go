// Package outbox keeps the completion notifications that could not be
// delivered (table recalc.notification, migration 013), so that a later
// `recalc run`, `recalc resume` or `recalc watch` delivers them again with
// backoff. A notification is kept per (job, target); the target is known by
// the SHA-256 of its full destination, so only a process configured with the
// same webhook URL or the same email recipients redelivers it, and by a
// label without credentials or query string, which `recalc status` shows.
//
// Delivery is at least once: a claimed entry is leased for a while, and an
// entry whose process died mid-delivery is delivered again when the lease
// ends. Receivers deduplicate on the job and its status.
package outbox

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/pg"
)

// MaxAttempts is how many deliveries an entry gets, the first included,
// before recalc gives up on it. With Backoff's doubling, capped at an hour,
// the last one is about 14 hours after the first.
const MaxAttempts = 20

// keepGivenUp is how long an entry that gave up stays visible.
const keepGivenUp = "7 days"

// maxError bounds the stored error text.
const maxError = 1000

// Entry is one kept notification.
type Entry struct {
	ID        int64     `json:"id"`
	Job       int64     `json:"job"`
	Channel   string    `json:"channel"` // webhook or email
	TargetKey string    `json:"-"`
	Target    string    `json:"target"`
	Payload   []byte    `json:"-"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error"`
	CreatedAt time.Time `json:"created_at"`
	NextAt    time.Time `json:"next_at"`
	GivenUp   bool      `json:"given_up"`
}

// Backoff is the wait after the attempts-th failed delivery: a minute,
// doubling, at most an hour.
func Backoff(attempts int) time.Duration {
	return min(time.Minute<<min(max(attempts-1, 0), 6), time.Hour)
}

// Keep stores a notification whose first delivery failed, or records one
// more failed attempt of one already kept. It also forgets entries that
// gave up more than a week ago.
func Keep(ctx context.Context, q pg.Querier, e Entry) error {
	if len(e.LastError) > maxError {
		e.LastError = strings.ToValidUTF8(e.LastError[:maxError], "")
	}
	_, err := q.Exec(ctx, `
		INSERT INTO recalc.notification AS n (job_id, channel, target_key, target, payload, attempts, last_error, next_at)
		VALUES ($1, $2, $3, $4, $5, 1, $6, now() + make_interval(secs => $7))
		ON CONFLICT (job_id, target_key) DO UPDATE SET payload = excluded.payload, attempts = n.attempts + 1,
			last_error = excluded.last_error, next_at = excluded.next_at`,
		e.Job, e.Channel, e.TargetKey, e.Target, string(e.Payload), e.LastError, Backoff(1).Seconds())
	if err != nil {
		return fmt.Errorf("keep notification of job %d: %w", e.Job, err)
	}
	return prune(ctx, q)
}

// Underway is the last error of an entry whose first delivery is under
// way (Begin): once its lease ends, the process delivering it died first.
const Underway = "first delivery under way, or cut short by the end of the process delivering it"

// Begin stores a notification before its first delivery, leased for lease
// (the longest the delivery may take): a process that dies while delivering
// it leaves it to be delivered again once the lease ends. It returns the
// entry for Delivered or Failed. A notification kept before (its job ended
// again) gets the new payload, and one more attempt.
func Begin(ctx context.Context, q pg.Querier, e Entry, lease time.Duration) (Entry, error) {
	err := q.QueryRow(ctx, `
		INSERT INTO recalc.notification AS n (job_id, channel, target_key, target, payload, attempts, last_error, next_at)
		VALUES ($1, $2, $3, $4, $5, 1, $6, now() + make_interval(secs => $7))
		ON CONFLICT (job_id, target_key) DO UPDATE SET payload = excluded.payload, attempts = n.attempts + 1,
			next_at = excluded.next_at
		RETURNING n.id, n.attempts`,
		e.Job, e.Channel, e.TargetKey, e.Target, string(e.Payload), Underway, lease.Seconds()).Scan(&e.ID, &e.Attempts)
	if err != nil {
		return e, fmt.Errorf("keep notification of job %d before its delivery: %w", e.Job, err)
	}
	return e, prune(ctx, q)
}

// Reserve keeps e before its job's end commits, in the transaction that
// ends it, with no attempt counted and leased for lease: a process that
// dies between that commit and Begin leaves it to the next process with the
// same target once the lease ends, where Begin alone, after the commit,
// would have lost it. The lease runs from now, not from the start of tx,
// which may be older than a lease. An entry already kept for the job and
// target (its job ended before, and was resumed) takes the new payload and
// one more attempt, as in Begin: left as it was, a process killed before
// Begin left the old end to deliver, and a redelivery of the old end under
// way as tx commits would forget the new one (Delivered).
func Reserve(ctx context.Context, q pg.Querier, e Entry, lease time.Duration) error {
	_, err := q.Exec(ctx, `
		INSERT INTO recalc.notification AS n (job_id, channel, target_key, target, payload, attempts, last_error, next_at)
		VALUES ($1, $2, $3, $4, $5, 0, $6, clock_timestamp() + make_interval(secs => $7))
		ON CONFLICT (job_id, target_key) DO UPDATE SET payload = excluded.payload, attempts = n.attempts + 1,
			next_at = excluded.next_at`,
		e.Job, e.Channel, e.TargetKey, e.Target, string(e.Payload), Underway, lease.Seconds())
	if err != nil {
		return fmt.Errorf("keep notification of job %d with its end: %w", e.Job, err)
	}
	return nil
}

// Renew extends the lease of an entry kept by Begin for lease more, before
// its delivery, and reports whether it is still the caller's: false when
// it was claimed since (its lease had ended: another process delivers it),
// kept again (its job ended again), or forgotten.
func Renew(ctx context.Context, q pg.Querier, e Entry, lease time.Duration) (bool, error) {
	tag, err := q.Exec(ctx, `UPDATE recalc.notification SET next_at = now() + make_interval(secs => $3)
		WHERE id = $1 AND attempts = $2`, e.ID, e.Attempts, lease.Seconds())
	if err != nil {
		return false, fmt.Errorf("renew the lease of notification %d: %w", e.ID, err)
	}
	return tag.RowsAffected() == 1, nil
}

func prune(ctx context.Context, q pg.Querier) error {
	_, err := q.Exec(ctx, `DELETE FROM recalc.notification WHERE attempts >= $1 AND next_at < now() - $2::interval`,
		MaxAttempts, keepGivenUp)
	if err != nil {
		return fmt.Errorf("forget notifications that gave up: %w", err)
	}
	return nil
}

// Claim leases the due entries of the targets keys names, at most limit of
// them, for lease: another process claims them again only when the lease
// ends. Each claim counts as an attempt.
func Claim(ctx context.Context, q pg.Querier, keys []string, limit int, lease time.Duration) ([]Entry, error) {
	rows, err := q.Query(ctx, `
		UPDATE recalc.notification n SET attempts = n.attempts + 1, next_at = now() + make_interval(secs => $4)
		WHERE n.id IN (SELECT id FROM recalc.notification
		               WHERE target_key = ANY($1) AND next_at <= now() AND attempts < $2
		               ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
		RETURNING n.id, n.job_id, n.channel, n.target_key, n.target, n.payload::text, n.attempts, n.last_error,
		          n.created_at, n.next_at, false`, keys, MaxAttempts, limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claim kept notifications: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return nil, fmt.Errorf("claim kept notifications: %w", err)
	}
	return out, nil
}

// Delivered forgets the claimed entry, unless it was kept again since the
// claim (its job ended again, with a newer payload): that one is still to
// be delivered.
func Delivered(ctx context.Context, q pg.Querier, e Entry) error {
	if _, err := q.Exec(ctx, `DELETE FROM recalc.notification WHERE id = $1 AND attempts = $2`, e.ID, e.Attempts); err != nil {
		return fmt.Errorf("forget delivered notification %d: %w", e.ID, err)
	}
	return nil
}

// Failed records that the claimed entry's delivery failed with msg, and
// when to try again, unless it was kept again since the claim.
func Failed(ctx context.Context, q pg.Querier, e Entry, msg string) error {
	if len(msg) > maxError {
		msg = strings.ToValidUTF8(msg[:maxError], "")
	}
	_, err := q.Exec(ctx, `UPDATE recalc.notification SET last_error = $2, next_at = now() + make_interval(secs => $3)
		WHERE id = $1 AND attempts = $4`, e.ID, msg, Backoff(e.Attempts).Seconds(), e.Attempts)
	if err != nil {
		return fmt.Errorf("record failed delivery of notification %d: %w", e.ID, err)
	}
	return nil
}

// List returns the kept entries, oldest first, at most limit, and how many
// there are in all.
func List(ctx context.Context, q pg.Querier, limit int) ([]Entry, int64, error) {
	var total int64
	if err := q.QueryRow(ctx, `SELECT count(*) FROM recalc.notification`).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count kept notifications: %w", err)
	}
	rows, err := q.Query(ctx, `
		SELECT id, job_id, channel, target_key, target, payload::text, attempts, last_error, created_at, next_at, attempts >= $1
		FROM recalc.notification ORDER BY id LIMIT $2`, MaxAttempts, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("list kept notifications: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return nil, 0, fmt.Errorf("list kept notifications: %w", err)
	}
	return out, total, nil
}

func scanEntry(row pgx.CollectableRow) (Entry, error) {
	var e Entry
	var payload string
	err := row.Scan(&e.ID, &e.Job, &e.Channel, &e.TargetKey, &e.Target, &payload, &e.Attempts, &e.LastError,
		&e.CreatedAt, &e.NextAt, &e.GivenUp)
	e.Payload = []byte(payload)
	return e, err
}
