package changes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/recalc-dev/recalc/internal/pg"
)

// NotFresh is the SQLSTATE recalc.wait_fresh raises when its timeout ends
// before the changes it waits for are materialized (migration 011).
const NotFresh = "RC001"

// IsNotFresh reports whether err is recalc.wait_fresh's timeout.
func IsNotFresh(err error) bool { return pg.Code(err) == NotFresh }

// CaptureStuck is the SQLSTATE recalc.wait_fresh raises as soon as all it
// still waits for is writes of attached objects that cannot be absorbed
// until someone repairs their capture or rights (migration 020).
const CaptureStuck = "RC002"

// IsCaptureStuck reports whether err is recalc.wait_fresh's CaptureStuck.
func IsCaptureStuck(err error) bool { return pg.Code(err) == CaptureStuck }

// Batch is the head of the change log as one statement saw it, for the
// fast path of `recalc watch`.
type Batch struct {
	Seqs        []int64 // the first rows, in order, naming at most maxKeys record ids in all: consume exactly these
	OnlyRecords bool    // every row read is a record change (no section, no truncate)
	More        bool    // the log holds more rows than these
}

// ReadBatch reads the first rows of the change log committed now, as many
// as name at most maxKeys record ids in all (repeats counted), and whether
// more follow. Rows that commit later, even with lower seqs, are left for
// the next batch. A first row naming more than maxKeys ids alone gives no
// rows and More.
func ReadBatch(ctx context.Context, q pg.Querier, maxKeys int) (*Batch, error) {
	b := &Batch{}
	err := q.QueryRow(ctx, `SELECT coalesce(array_agg(seq ORDER BY seq) FILTER (WHERE n <= $1), '{}'),
		coalesce(bool_and(kind = 'record') FILTER (WHERE n <= $1), true), coalesce(bool_or(n > $1), false)
		FROM (SELECT seq, kind, sum(cardinality(keys)) OVER (ORDER BY seq) AS n
		      FROM recalc.change WHERE kind NOT IN ('attached', 'attached_all') ORDER BY seq LIMIT $1::int + 1) x`, maxKeys).Scan(&b.Seqs, &b.OnlyRecords, &b.More)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	return b, nil
}

// Idle reports, with reads only, whether nothing waits to be materialized
// since recalc.config_version was version: the same version, no unfinished
// job, no mark for rebuilding the users section (UsersMarked), and a
// change log empty but for the writes of attached objects that
// Absorb could not absorb less than StuckRetry ago and the changes to the
// sections named by waiting (those a deferred side keeps), and no captured
// table written without its capture (migration 020); and the schema still
// at schemaVersion, so that a process a newer recalc's upgrade left running
// finds out at its next poll, not at its next write.
func Idle(ctx context.Context, q pg.Querier, version int64, waiting []string, schemaVersion int) (bool, error) {
	if waiting == nil {
		waiting = []string{}
	}
	var idle bool
	if err := q.QueryRow(ctx, `SELECT (SELECT version FROM recalc.config_version) = $1
		AND NOT EXISTS (SELECT FROM recalc.change c WHERE NOT (c.kind = 'section' AND c.keys <@ $3) AND (c.object IS NULL OR NOT EXISTS (
			SELECT FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - $2::interval)))
		AND NOT EXISTS (SELECT FROM recalc.job WHERE status <> 'done')
		AND NOT EXISTS (SELECT FROM recalc.attached_users_mark)
		AND NOT recalc.attach_fingerprints_changed()
		AND (SELECT max(version) FROM recalc.schema_version) = $4`, version, StuckRetry, waiting, schemaVersion).Scan(&idle); err != nil {
		return false, fmt.Errorf("read change log: %w", err)
	}
	return idle, nil
}

// UsersMarked reports whether the users section built from an attached
// users table is marked for rebuilding, by a team entry or share that
// went (migration 057): only a run's plan rebuilds it, and a mark can
// outlive the change row its delete logged, which a plan that had read
// the names already consumed. First it drops the marks whose users are
// all still attached: none of them is a stub, so the section has nothing
// to rebuild for them (a user's removal, absorbed later under the model
// lock, finds the name gone). Its caller holds the model lock.
//
// The marks left are those the delete's condition refuses, read from the
// same snapshot (a data-modifying WITH runs to completion, read or not),
// each tested on its own: in linear time. Telling them from the deleted
// ones by `ctid NOT IN (the deleted)` checked every mark against the whole
// list once it outgrew work_mem's hash table, quadratic in the marks a
// writer's statements left (TestUsersMarksDroppedInLinearTime).
func UsersMarked(ctx context.Context, q pg.Querier) (bool, error) {
	var marked bool
	if err := q.QueryRow(ctx, `WITH live AS (
			DELETE FROM recalc.attached_users_mark m WHERE m.users IS NOT NULL
			AND NOT EXISTS (SELECT FROM unnest(m.users) n (id) WHERE NOT EXISTS (SELECT FROM recalc.attached_user u WHERE u.id = n.id)))
		SELECT EXISTS (SELECT FROM recalc.attached_users_mark m WHERE m.users IS NULL
			OR EXISTS (SELECT FROM unnest(m.users) n (id) WHERE NOT EXISTS (SELECT FROM recalc.attached_user u WHERE u.id = n.id)))`).Scan(&marked); err != nil {
		return false, fmt.Errorf("read the attached users' marks: %w", err)
	}
	return marked, nil
}

// UsersMarkLeft reports whether a mark for rebuilding the users section
// (UsersMarked) is left: in a plan, after SyncAttachedUsers took the
// marks, one that a team entry or share deleted since has left.
func UsersMarkLeft(ctx context.Context, q pg.Querier) (bool, error) {
	var left bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.attached_users_mark)`).Scan(&left); err != nil {
		return false, fmt.Errorf("read the attached users' marks: %w", err)
	}
	return left, nil
}

// ConfigVersion returns the counter of writes to the configuration, the
// applied configuration and the deferral: while it stays the same, so do
// they (migration 011).
func ConfigVersion(ctx context.Context, q pg.Querier) (int64, error) {
	var v int64
	if err := q.QueryRow(ctx, `SELECT version FROM recalc.config_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read configuration version: %w", err)
	}
	return v, nil
}

// FreshToken returns recalc.fresh_token(): a token covering every
// transaction committed before the call.
func FreshToken(ctx context.Context, q pg.Querier) (int64, error) {
	var t int64
	if err := q.QueryRow(ctx, `SELECT recalc.fresh_token()`).Scan(&t); err != nil {
		return 0, fmt.Errorf("take freshness token: %w", err)
	}
	return t, nil
}

// WaitFresh calls recalc.wait_fresh(token, timeout), or the form without
// a token when token is 0. Its error is IsNotFresh on timeout.
func WaitFresh(ctx context.Context, q pg.Querier, token int64, timeout time.Duration) error {
	var err error
	if token == 0 {
		_, err = q.Exec(ctx, `SELECT recalc.wait_fresh($1::interval)`, timeout)
	} else {
		_, err = q.Exec(ctx, `SELECT recalc.wait_fresh($1::bigint, $2::interval)`, token, timeout)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Hint != "" {
		return fmt.Errorf("wait until fresh: %w (%s)", err, pgErr.Hint)
	}
	if err != nil {
		return fmt.Errorf("wait until fresh: %w", err)
	}
	return nil
}

// CatalogStamp returns recalc.attach_catalog_stamp() (migration 076): a
// digest of the catalog rows that say what the attached sources show, but
// for enums, which it stands for by a digest of all enum labels. `recalc
// watch` reads it between steps, and steps when it moves: a view
// redefined, an enum label renamed or the capture's triggers disabled
// around a write log no change row and send no notification. It costs a
// few index lookups per captured table and a scan of pg_enum; "" when
// nothing is attached.
func CatalogStamp(ctx context.Context, q pg.Querier) (string, error) {
	var s string
	if err := q.QueryRow(ctx, `SELECT recalc.attach_catalog_stamp()`).Scan(&s); err != nil {
		return "", fmt.Errorf("read the attached sources' catalog stamp: %w", err)
	}
	return s, nil
}
