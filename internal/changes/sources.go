package changes

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
)

// SourceDrift is how the records that recalc mirrors from one attached
// source differ from the source itself.
type SourceDrift struct {
	Object string `json:"object"` // the attached object, or "users" for the users table
	// Differing counts the mirrored rows (records, or users) that a whole
	// re-read changed although no write to the source was pending: what no
	// capture saw, such as a view's rows that change with the clock.
	Differing int64 `json:"differing"`
	// Unchecked says why the source could not be compared, "" when it was.
	Unchecked string `json:"unchecked,omitempty"`
}

// Attached lists the attached objects, the users table's included.
func Attached(ctx context.Context, q pg.Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT object FROM recalc.attachment ORDER BY object`)
	if err != nil {
		return nil, fmt.Errorf("list attached objects: %w", err)
	}
	objects, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list attached objects: %w", err)
	}
	return objects, nil
}

// compareAttempts bounds the re-reads of a source that writes keep
// reaching between the absorb of what was pending and the re-read.
const compareAttempts = 3

// CompareSource absorbs the writes logged for object, then reads its
// source again whole, in tx, and counts the mirrored rows that the re-read
// changed (compareOnce, compareAttempts times at most). tx holds the
// object's registry lock, so no absorb runs beside it, and holds the
// repair: roll it back to compare only, or commit it, which wakes `recalc
// watch`. tx must be READ COMMITTED.
func CompareSource(ctx context.Context, tx pgx.Tx, object string) (SourceDrift, error) {
	d := SourceDrift{Object: object}
	wrap := func(err error) (SourceDrift, error) {
		return d, fmt.Errorf("compare attached source %s: %w", object, err)
	}
	var saved string
	if err := tx.QueryRow(ctx, `SELECT current_setting('statement_timeout')`).Scan(&saved); err != nil {
		return wrap(err)
	}
	timeout := absorbTimeout(0, true)
	for attempt := 0; ; attempt++ {
		if attempt == compareAttempts {
			d.Unchecked = "writes kept reaching it while it was read: verify again when it is quieter"
			break
		}
		done, err := compareOnce(ctx, tx, &d, timeout)
		if err != nil {
			return wrap(err)
		}
		if done {
			break
		}
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT recalc_compare`); err != nil {
			return wrap(err)
		}
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('statement_timeout', $1, true)`, saved); err != nil {
		return wrap(err)
	}
	return d, nil
}

// compareOnce absorbs what is pending for d.Object, then reads its source
// again whole, after a savepoint, and sets d from what the re-read changed.
// The ids of writes that commit meanwhile are left out: their change is
// no drift. done is false, and the caller rolls back to the savepoint, when
// such a write could not be told apart (a TRUNCATE, or an id the re-read
// absorbed that was not logged yet when it started).
func compareOnce(ctx context.Context, tx pgx.Tx, d *SourceDrift, timeout time.Duration) (done bool, err error) {
	// What the next absorb would read anyway is no drift: the writes
	// logged, and a source whose catalog fingerprint changed. Its stored
	// fingerprint is left alone: a lock on it would hold up every absorb
	// that checks fingerprints (attach_absorb_begin) until tx ends.
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.change (kind, object, keys) SELECT 'attached_all', $1, '{}'
		WHERE EXISTS (SELECT 1 FROM recalc.attach_capture c JOIN recalc.attach_fingerprints() f ON f.object = c.object AND f.relid = c.relid
		              WHERE c.object = $1 AND c.fingerprint IS DISTINCT FROM f.fingerprint)`, d.Object); err != nil {
		return false, err
	}
	// Its locks on the source's tables (ACCESS SHARE) are kept to the
	// end: no TRUNCATE, nor any change of a table, commits from here on.
	if a, found, err := absorbOne(ctx, tx, d.Object, timeout); err != nil || found && !a.Absorbed {
		d.Unchecked = unchecked(a)
		return err == nil, err
	}
	var mark int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM recalc.change`).Scan(&mark); err != nil {
		return false, err
	}
	before, err := attachedUsers(ctx, tx, d.Object)
	if err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, `SAVEPOINT recalc_compare`); err != nil {
		return false, err
	}
	early, whole, err := pendingKeys(ctx, tx, d.Object)
	if err != nil || whole {
		return false, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.change (kind, object, keys) VALUES ('attached_all', $1, '{}')`, d.Object); err != nil {
		return false, err
	}
	a, _, err := absorbOne(ctx, tx, d.Object, timeout)
	if err != nil || a.Keys > int64(len(early)) {
		return false, err
	}
	if !a.Absorbed {
		d.Unchecked = unchecked(a)
		return true, nil
	}
	late, whole, err := pendingKeys(ctx, tx, d.Object)
	if err != nil || whole {
		return false, err
	}
	skip := append(early, late...)
	if d.Object == model.UsersAttachment {
		after, err := attachedUsers(ctx, tx, d.Object)
		if err != nil {
			return false, err
		}
		for _, id := range skip {
			delete(before, id)
			delete(after, id)
		}
		d.Differing = differing(before, after)
	} else if err := tx.QueryRow(ctx, `SELECT count(DISTINCT k) FROM recalc.change c, unnest(c.keys) k
		WHERE c.seq > $1 AND c.kind = 'record' AND left(k, length($2) + 1) = $2 || ':'
		  AND k NOT IN (SELECT $2 || ':' || s FROM unnest($3::text[]) s)`,
		mark, d.Object, skip).Scan(&d.Differing); err != nil {
		return false, err
	}
	if d.Differing > 0 { // sent only if tx commits a repair: the watch recalculates it
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, 'reread')`, Channel); err != nil {
			return false, err
		}
	}
	return true, nil
}

// unchecked says why an absorb of the object did not absorb.
func unchecked(a Absorbed) string {
	if a.Code == "" {
		return "its capture is not intact (run `recalc attach` again)"
	}
	return fmt.Sprintf("its read failed with SQLSTATE %s (`recalc attach --list` says what to do once an absorb has failed the same way)", a.Code)
}

// Unstick lets the next absorb of object try it at once, when the last one
// found its lock taken (as by a comparison, which holds it while it reads),
// and wakes `recalc watch`, which would otherwise wait StuckRetry.
func Unstick(ctx context.Context, q pg.Querier, object string) error {
	if _, err := q.Exec(ctx, `WITH gone AS (DELETE FROM recalc.attach_stuck WHERE object = $1 AND error_code = $2 RETURNING 1)
		SELECT pg_notify($3, 'unstick') FROM gone`, object, pg.LockNotAvailable, Channel); err != nil {
		return fmt.Errorf("retry absorbing %s: %w", object, err)
	}
	return nil
}

// pendingKeys returns the ids of the writes to object's source logged and
// not absorbed, and whether a whole re-read is logged (a TRUNCATE).
func pendingKeys(ctx context.Context, tx pgx.Tx, object string) (keys []string, whole bool, err error) {
	err = tx.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT k) FILTER (WHERE k IS NOT NULL), '{}'), coalesce(bool_or(c.kind = 'attached_all'), false)
		FROM recalc.change c LEFT JOIN LATERAL unnest(c.keys) k ON true
		WHERE c.kind IN ('attached', 'attached_all') AND c.object = $1`, object).Scan(&keys, &whole)
	return keys, whole, err
}

// attachedUsers reads the users mirrored from the users table, by id, when
// object is the users attachment; nil otherwise.
func attachedUsers(ctx context.Context, tx pgx.Tx, object string) (map[string]string, error) {
	if object != model.UsersAttachment {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `SELECT id, row(role, type, active)::text FROM recalc.attached_user`)
	if err != nil {
		return nil, err
	}
	users := map[string]string{}
	var id, row string
	_, err = pgx.ForEachRow(rows, []any{&id, &row}, func() error {
		users[id] = row
		return nil
	})
	return users, err
}

// differing counts the ids whose rows differ between a and b, or that one
// of them lacks.
func differing(a, b map[string]string) int64 {
	var n int64
	for id, row := range a {
		if r, ok := b[id]; !ok || r != row {
			n++
		}
	}
	for id := range b {
		if _, ok := a[id]; !ok {
			n++
		}
	}
	return n
}
