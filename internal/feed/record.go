package feed

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Records records pending record entries for the records named by ids and
// objects (parallel slices), in tx: the transaction that changes their
// rows.
func Records(ctx context.Context, tx pgx.Tx, ids, objects []string) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.feed_pending (kind, key, object)
		SELECT 'record', id, object FROM unnest($1::text[], $2::text[]) AS r (id, object)`, ids, objects); err != nil {
		return fmt.Errorf("record changed records: %w", err)
	}
	return nil
}

// Grantees records pending grantee entries for the grantees whose
// dictionary ids are gids, in tx: the transaction that changes their
// closure.
func Grantees(ctx context.Context, tx pgx.Tx, gids []int32) error {
	if len(gids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.feed_pending (kind, key)
		SELECT DISTINCT 'grantee', g.key FROM recalc.grantee g WHERE g.gid = ANY($1::int[])`, gids); err != nil {
		return fmt.Errorf("record changed grantees: %w", err)
	}
	return nil
}

// Users records pending user entries for the users whose acl_user row
// differs from (ids, internal), the rows about to replace them, in tx.
// Call it before the replacement.
func Users(ctx context.Context, tx pgx.Tx, ids []string, internal []bool) error {
	if _, err := tx.Exec(ctx, `
		WITH want AS (SELECT * FROM unnest($1::text[], $2::boolean[]) AS w (id, internal)),
		have AS (SELECT id, internal FROM recalc.acl_user)
		INSERT INTO recalc.feed_pending (kind, key)
		SELECT DISTINCT 'user', id FROM ((TABLE have EXCEPT TABLE want) UNION ALL (TABLE want EXCEPT TABLE have)) d`,
		ids, internal); err != nil {
		return fmt.Errorf("record changed users: %w", err)
	}
	return nil
}

// Objects records pending owd entries for the objects whose acl_object row
// differs from the rows about to replace them (parallel slices), and then
// for every object controlled by its parent too, in tx. Call it before the
// replacement.
func Objects(ctx context.Context, tx pgx.Tx, names []string, internal, external []int16, cbp []bool) error {
	if _, err := tx.Exec(ctx, `
		WITH want AS (SELECT * FROM unnest($1::text[], $2::smallint[], $3::smallint[], $4::boolean[]) AS w (name, i, e, cbp)),
		have AS (SELECT name, internal_level, external_level, cbp FROM recalc.acl_object),
		changed AS (SELECT name FROM ((TABLE have EXCEPT TABLE want) UNION ALL (TABLE want EXCEPT TABLE have)) d)
		INSERT INTO recalc.feed_pending (kind, key, object)
		SELECT DISTINCT 'owd', name, name FROM (
			TABLE changed
			UNION ALL -- their records take their access root's defaults
			SELECT name FROM want WHERE cbp AND EXISTS (SELECT FROM changed)) x`,
		names, internal, external, cbp); err != nil {
		return fmt.Errorf("record changed org-wide defaults: %w", err)
	}
	return nil
}

// diffShares writes the records whose share rows differ between acl_share
// and acl_share_next into acl_share_diff, and returns how many share rows
// differ.
const diffShares = `
	WITH d AS MATERIALIZED (
		SELECT coalesce(a.rid, b.rid) AS rid
		FROM recalc.acl_share a FULL JOIN recalc.acl_share_next b USING (rid, gid, cause)
		WHERE a.rid IS NULL OR b.rid IS NULL OR a.level <> b.level OR a.boss_ok <> b.boss_ok
	), ins AS (INSERT INTO recalc.acl_share_diff SELECT DISTINCT rid FROM d)
	SELECT count(*) FROM d`

// Diff finds, set-based, the records whose share rows a full job's staging
// table changes and keeps them for Swap, in tx, and returns how many share
// rows differ (the drift a nightly run repairs). Call it once every chunk
// has written acl_share_next; it may run beside the staging index builds.
// Over empty live tables (the first computation) it keeps no record, and
// counts acl_share_next's rows only when count: Swap then tells every
// record. It keeps a marker row first (diffDone).
func Diff(ctx context.Context, tx pgx.Tx, count bool) (int64, error) {
	if _, err := tx.Exec(ctx, `TRUNCATE recalc.acl_share_diff; INSERT INTO recalc.acl_share_diff VALUES (`+diffDone+`)`); err != nil {
		return 0, fmt.Errorf("diff share rows: %w", err)
	}
	empty, err := liveEmpty(ctx, tx)
	if err != nil {
		return 0, err
	}
	sql := diffShares
	switch {
	case empty && !count:
		return 0, nil
	case empty:
		sql = `SELECT count(*) FROM recalc.acl_share_next`
	}
	var n int64
	if err := tx.QueryRow(ctx, sql).Scan(&n); err != nil {
		return 0, fmt.Errorf("diff share rows: %w", err)
	}
	return n, nil
}

// diffDone is the rid, no record's, of the row Diff writes first into
// acl_share_diff: Swap finds no diff without it, only for a job a binary
// older than schema version 14 staged, and makes the diff then.
const diffDone = "0"

// liveEmpty tells whether the live share and record tables are both empty.
func liveEmpty(ctx context.Context, tx pgx.Tx) (bool, error) {
	var empty bool
	err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM recalc.acl_share) AND NOT EXISTS (SELECT FROM recalc.acl_record)`).Scan(&empty)
	if err != nil {
		return false, fmt.Errorf("read the share tables: %w", err)
	}
	return empty, nil
}

// swapRecords finds, set-based, the records whose share rows (acl_share_diff,
// from Diff) or record row differ between the live tables and a full job's
// staging tables, and the records that take their access from one of them
// (access_root), old or new, under their old and new ids.
const swapRecords = `
	WITH changed AS (
		SELECT rid FROM recalc.acl_share_diff
		UNION
		SELECT coalesce(a.rid, b.rid)
		FROM recalc.acl_record a FULL JOIN recalc.acl_record_next b USING (rid)
		WHERE a.rid IS NULL OR b.rid IS NULL
		   OR (a.id, a.object, a.access_root, a.invalid) IS DISTINCT FROM (b.id, b.object, b.access_root, b.invalid)
	), affected AS (
		SELECT rid FROM changed
		UNION SELECT r.rid FROM recalc.acl_record r JOIN changed c ON r.access_root = c.rid
		UNION SELECT r.rid FROM recalc.acl_record_next r JOIN changed c ON r.access_root = c.rid
	)
	INSERT INTO recalc.feed_pending (kind, key, object)
	SELECT 'record', id, object FROM (
		SELECT r.id, r.object FROM affected JOIN recalc.acl_record r USING (rid)
		UNION
		SELECT r.id, r.object FROM affected JOIN recalc.acl_record_next r USING (rid)) d`

// swapGrantees finds the grantees whose closure differs between acl_member
// and acl_member_next.
const swapGrantees = `
	INSERT INTO recalc.feed_pending (kind, key)
	SELECT 'grantee', g.key FROM recalc.grantee g WHERE g.gid IN (
		SELECT coalesce(a.gid, b.gid)
		FROM recalc.acl_member a FULL JOIN recalc.acl_member_next b USING (gid, uid)
		WHERE a.gid IS NULL OR b.gid IS NULL OR a.boss <> b.boss)`

// Swap records pending entries for what swapping in a full job's staging
// tables (with closure, acl_member_next too) changes, in tx, before the
// swap: the records Diff kept, and set-based full joins of the record (and
// closure) tables with their staging tables, along their primary keys. It
// empties acl_share_diff, and records the swap's own entry (KindSwap).
// Over empty live tables it records no record entry and reports every:
// each record's access changed, and the caller publishes them all with
// PublishEvery after the swap.
func Swap(ctx context.Context, tx pgx.Tx, closure bool) (every bool, err error) {
	if every, err = liveEmpty(ctx, tx); err != nil {
		return false, err
	}
	sql := `TRUNCATE recalc.acl_share_diff;
		INSERT INTO recalc.feed_pending (kind, key) VALUES ('swap', '')`
	if !every {
		sql = swapRecords + `;
		` + sql
		var done bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.acl_share_diff WHERE rid = `+diffDone+`)`).Scan(&done); err != nil {
			return false, fmt.Errorf("record records changed by the swap: %w", err)
		}
		if !done {
			if _, err := tx.Exec(ctx, diffShares); err != nil {
				return false, fmt.Errorf("diff share rows: %w", err)
			}
		}
	}
	if _, err := tx.Exec(ctx, sql); err != nil {
		return false, fmt.Errorf("record records changed by the swap: %w", err)
	}
	if !closure {
		return every, nil
	}
	if _, err := tx.Exec(ctx, swapGrantees); err != nil {
		return false, fmt.Errorf("record grantees changed by the swap: %w", err)
	}
	return every, nil
}
