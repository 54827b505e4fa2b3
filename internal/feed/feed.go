// Package feed is the feed of access changes: what each write of the
// materialized tables changed, under a cursor that increases in commit
// order, for consumers such as a search index, a cache or an audit log
// (docs/feed.md).
//
// Writing is two steps. The storage code that changes share, record,
// closure, user or OWD rows records pending entries in the same transaction
// (Records, Grantees, Users, Objects, Swap): they commit or roll back with
// the change. A publisher then moves every committed pending entry to the
// feed (Publish): a job's finish does, and so must any other writer of the
// share tables, in its own transaction. Publishers serialize on a lock of
// recalc.feed_state's row, held until they commit, and take cursors from a
// sequence after taking it, so a reader that has seen cursor N never later
// finds an entry at or below N.
//
// Entries name records, grantees, users and objects by id: never a
// record's field values.
package feed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recalc-dev/recalc/internal/pg"
)

// Kinds of entry.
const (
	// KindRecord: the record's share rows or its record row (its
	// controlled-by-parent root, or whether it is invalid) changed, or those
	// of the record it takes its access from. Key is the record id.
	KindRecord = "record"
	// KindGrantee: the users a grantee reaches (its closure) changed, so
	// access changed to every record shared with it. Key is the grantee key
	// (group:g1, role:r1, user:u1, ...).
	KindGrantee = "grantee"
	// KindUser: the user was activated, deactivated or changed between
	// internal and external, so their access to any record may have changed.
	// Key is the user id.
	KindUser = "user"
	// KindOWD: the object's org-wide defaults changed, so access to any of
	// its records may have changed. Key and Object are the object's name.
	// A change of any object's defaults also names every object controlled
	// by its parent: their records take their access root's defaults.
	KindOWD = "owd"
	// KindSwap: a full job swapped new share tables in. It changes no
	// access by itself (the swap's changes have entries of their own), but
	// a REPEATABLE READ transaction whose snapshot is older than the swap
	// reads the new tables as empty: a resync whose head is below this
	// entry's cursor must be done again. Key is empty.
	KindSwap = "swap"
)

// MaxLimit is the most entries one read returns.
const MaxLimit = 10000

// Entry is one access change.
type Entry struct {
	Cursor int64     `json:"cursor"`
	Kind   string    `json:"kind"`
	Key    string    `json:"key"`
	Object *string   `json:"object"`
	Job    *int64    `json:"job"`
	At     time.Time `json:"at"`
}

// Read returns at most limit (1 to MaxLimit) entries after cursor since, in
// cursor order, through recalc.access_changes: a cursor older than the
// retention fails with the function's message, which says how to resync.
func Read(ctx context.Context, q pg.Querier, since int64, limit int) ([]Entry, error) {
	rows, err := q.Query(ctx, `SELECT cursor, kind, key, object, job, at FROM recalc.access_changes($1, $2)`, since, limit)
	if err != nil {
		return nil, readError(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Entry])
	if err != nil {
		return nil, readError(err)
	}
	return out, nil
}

// readError wraps an error of access_changes with its hint, which says
// how to resync after falling behind the retention.
func readError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Hint != "" {
		return fmt.Errorf("read access changes: %w; %s", err, pe.Hint)
	}
	return fmt.Errorf("read access changes: %w", err)
}

// Head is the last published cursor: where a consumer that has just
// resynced (in the same snapshot) resumes.
func Head(ctx context.Context, q pg.Querier) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, `SELECT recalc.access_changes_head()`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read feed head: %w", err)
	}
	return n, nil
}

// Retention is how long published entries are kept.
func Retention(ctx context.Context, q pg.Querier) (time.Duration, error) {
	var d time.Duration
	if err := q.QueryRow(ctx, `SELECT retention FROM recalc.feed_state`).Scan(&d); err != nil {
		return 0, fmt.Errorf("read feed retention: %w", err)
	}
	return d, nil
}

// MinRetention and MaxRetention bound the retention.
const (
	MinRetention = time.Minute
	MaxRetention = 10 * 365 * 24 * time.Hour
)

// SetRetention sets how long published entries are kept; the next Prune
// applies it.
func SetRetention(ctx context.Context, q pg.Querier, d time.Duration) error {
	if d < MinRetention || d > MaxRetention {
		return fmt.Errorf("feed retention %s is out of range: give between %s and %s (e.g. 7d, 36h)", d, MinRetention, "3650d")
	}
	if _, err := q.Exec(ctx, `UPDATE recalc.feed_state SET retention = $1`, d); err != nil {
		return fmt.Errorf("set feed retention: %w", err)
	}
	return nil
}
