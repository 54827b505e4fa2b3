package access

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// A dry run applies a plan in a transaction that is rolled back and
// compares access before and after, for the (record, user) pairs whose
// access can change only. A pair's access is read from the share rows of
// its record and of its access root, the closure, the active users and
// the OWDs (streamSQL), so:
//   - a record whose row changes (added, deleted, moved, a new access
//     root) or whose access root's OWD changes is compared for every user,
//     from snapshots taken before its family is applied and at the end;
//   - every other pair is compared at the end, in one pass, from the
//     tables as they are then and what the change replaced in them: the
//     share rows of changed grants and the deleted closure entries, kept
//     before they are written over. The pairs are those of the records
//     whose share rows (or their access root's) change, for every user
//     they reach, and those of the users whose closure entries, activation
//     or type change, for every record they reach.
//
// Its tables are temporary and dropped at commit:
//   - dry_owd: each object's OWD levels after the change;
//   - dry_member_ins, dry_member_del (gid, uid, boss): the closure entries
//     the change inserts, and those it deletes as they were;
//   - dry_user_before (uid, internal): the active users before;
//   - dry_grant (rid, gid): the (record, grantee) pairs whose share rows
//     change, and dry_share_before their share rows before;
//   - dry_record (rid): the records compared for every user in the batch
//     being scoped, accumulated in dry_record_all;
//   - dry_before (object, record, uid, level): their access before;
//   - dry_diff: the (object, record, user) pairs whose level differs.
//
// Batch 0 is scoped before anything is applied (BeginDryRun), each later
// batch, a chunk of families, just before it is applied (ScopeFamilies):
// a record's access depends on its own family's rows only, so until its
// family is applied it is still as before.

// ClosureChange is the closure entries a change inserts (gid InsGIDs[i]
// reaches user InsUIDs[i], through the role hierarchy only when
// InsBoss[i]) and deletes.
type ClosureChange struct {
	InsGIDs, InsUIDs []int32
	InsBoss          []bool
	DelGIDs, DelUIDs []int32
}

// BeginDryRun creates the dry run's tables in tx, before anything is
// applied: the closure's change (cc), the active users, and the records
// whose OWD changes under org, snapshotted.
func BeginDryRun(ctx context.Context, tx pgx.Tx, org *sharing.Org, cc ClosureChange) error {
	var objects []string
	var internalLv, externalLv []int16
	for _, o := range org.Index().Config.Objects {
		objects = append(objects, o.Name)
		internalLv, externalLv = append(internalLv, int16(o.InternalOWD.Level())), append(externalLv, int16(o.ExternalOWD.Level()))
	}
	for _, st := range []struct {
		sql  string
		args []any
	}{
		// The comparison hashes and sorts millions of pairs on a large
		// org: up to 128 MB a sort and 512 MB a hash, rather than spill
		// them to disk. The settings end with tx (or its savepoint).
		{`SET LOCAL work_mem = '128MB'`, nil},
		{`SET LOCAL hash_mem_multiplier = 4`, nil},
		{`CREATE TEMP TABLE dry_owd ON COMMIT DROP AS
		  SELECT * FROM unnest($1::text[], $2::smallint[], $3::smallint[]) AS o (name, internal_level, external_level)`,
			[]any{objects, internalLv, externalLv}},
		{`CREATE TEMP TABLE dry_member_ins ON COMMIT DROP AS
		  SELECT * FROM unnest($1::int[], $2::int[], $3::boolean[]) AS m (gid, uid, boss)`, []any{cc.InsGIDs, cc.InsUIDs, cc.InsBoss}},
		{`CREATE TEMP TABLE dry_member_del ON COMMIT DROP AS
		  SELECT m.gid, m.uid, m.boss FROM recalc.acl_member m JOIN unnest($1::int[], $2::int[]) AS d (gid, uid) ON d.gid = m.gid AND d.uid = m.uid`,
			[]any{cc.DelGIDs, cc.DelUIDs}},
		{`CREATE TEMP TABLE dry_user_before ON COMMIT DROP AS SELECT uid, internal FROM recalc.acl_user`, nil},
		{`CREATE TEMP TABLE dry_grant (rid bigint NOT NULL, gid integer NOT NULL) ON COMMIT DROP`, nil},
		{`CREATE TEMP TABLE dry_share_before ON COMMIT DROP AS SELECT rid, gid, level, boss_ok FROM recalc.acl_share LIMIT 0`, nil},
		{`CREATE TEMP TABLE dry_record (rid bigint NOT NULL) ON COMMIT DROP`, nil},
		{`CREATE TEMP TABLE dry_record_all (rid bigint NOT NULL) ON COMMIT DROP`, nil},
		{`CREATE TEMP TABLE dry_before (object text NOT NULL, record text NOT NULL, uid integer NOT NULL, level smallint NOT NULL) ON COMMIT DROP`, nil},
		{`CREATE TEMP TABLE dry_diff (object text NOT NULL, record text NOT NULL, user_id text NOT NULL,
		  before smallint NOT NULL, after smallint NOT NULL, deleted boolean NOT NULL) ON COMMIT DROP`, nil},
		{scopeOWDSQL, nil},
	} {
		if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("scope the dry run: %w", err)
		}
	}
	return endBatch(ctx, tx)
}

// scopeOWDSQL: every record whose access root's object has new OWD levels.
const scopeOWDSQL = `
INSERT INTO dry_record (rid)
SELECT r.rid FROM recalc.acl_record r JOIN recalc.acl_record root ON root.rid = r.access_root
JOIN (SELECT coalesce(o.name, n.name) AS name FROM recalc.acl_object o FULL JOIN dry_owd n ON n.name = o.name
      WHERE (o.internal_level, o.external_level) IS DISTINCT FROM (n.internal_level, n.external_level)) objs
  ON objs.name = root.object`

// ScopeFamilies scopes the next batch, a chunk of families about to be
// applied: it keeps the share rows of the grants its difference changes
// (grantRIDs[i] to grantGIDs[i], listed once), and snapshots the records
// listed in whole, those whose record row changes.
func ScopeFamilies(ctx context.Context, tx pgx.Tx, grantRIDs []int64, grantGIDs []int32, whole []int64) error {
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO dry_grant (rid, gid) SELECT * FROM unnest($1::bigint[], $2::int[])`, []any{grantRIDs, grantGIDs}},
		{`INSERT INTO dry_share_before (rid, gid, level, boss_ok)
		  SELECT s.rid, s.gid, s.level, s.boss_ok FROM unnest($1::bigint[], $2::int[]) AS g (rid, gid)
		  JOIN recalc.acl_share s ON s.rid = g.rid AND s.gid = g.gid`, []any{grantRIDs, grantGIDs}},
		{`INSERT INTO dry_record (rid) SELECT unnest($1::bigint[])`, []any{whole}},
	} {
		if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("scope the dry run: %w", err)
		}
	}
	return endBatch(ctx, tx)
}

// endBatch snapshots the batch's records, before they change, into
// dry_before, and moves them to dry_record_all.
func endBatch(ctx context.Context, tx pgx.Tx) error {
	for _, sql := range []string{
		`INSERT INTO dry_before (object, record, uid, level) ` + wholeLevelsSQL,
		`INSERT INTO dry_record_all SELECT * FROM dry_record`,
		`TRUNCATE dry_record`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("snapshot access before: %w", err)
		}
	}
	return nil
}

// wholeLevelsSQL is streamSQL for the records of dry_record: object,
// record, uid, level.
const wholeLevelsSQL = `
WITH levels AS (
    SELECT d.rid, m.uid, s.level
    FROM dry_record d
    JOIN recalc.acl_share s ON s.rid = d.rid
    JOIN recalc.acl_member m ON m.gid = s.gid AND (s.boss_ok OR NOT m.boss)
    UNION ALL
    SELECT d.rid, m.uid, s.level
    FROM dry_record d
    JOIN recalc.acl_record r ON r.rid = d.rid AND r.access_root <> r.rid
    JOIN recalc.acl_share s ON s.rid = r.access_root
    JOIN recalc.acl_member m ON m.gid = s.gid AND (s.boss_ok OR NOT m.boss)
    UNION ALL
    SELECT d.rid, u.uid, CASE WHEN u.internal THEN o.internal_level ELSE o.external_level END
    FROM dry_record d
    JOIN recalc.acl_record r ON r.rid = d.rid
    JOIN recalc.acl_record root ON root.rid = r.access_root
    JOIN recalc.acl_object o ON o.name = root.object
    CROSS JOIN recalc.acl_user u
    WHERE CASE WHEN u.internal THEN o.internal_level ELSE o.external_level END > 0
)
SELECT r.object, r.id, l.uid, l.level
FROM (SELECT rid, uid, max(level) AS level FROM levels GROUP BY rid, uid) l
JOIN recalc.acl_record r ON r.rid = l.rid
JOIN recalc.acl_user u ON u.uid = l.uid`

// CompareSnapshots, once the plan is applied, puts in dry_diff the pairs
// whose level differs, for LevelChanges and PairChanges, and returns how
// many of the pairs it compared had access before.
func CompareSnapshots(ctx context.Context, tx pgx.Tx) (pairsBefore int64, err error) {
	for _, sql := range []string{
		`DROP TABLE dry_record`,
		`ALTER TABLE dry_record_all RENAME TO dry_record`,
		// The records whose share rows (or their access root's) change,
		// but those compared whole.
		`CREATE TEMP TABLE dry_recs ON COMMIT DROP AS
		 SELECT r.rid, r.access_root FROM recalc.acl_record r WHERE r.rid IN (SELECT rid FROM dry_grant)
		 UNION SELECT r.rid, r.access_root FROM recalc.acl_record r WHERE r.access_root IN (SELECT rid FROM dry_grant)
		 EXCEPT SELECT rid, access_root FROM recalc.acl_record WHERE rid IN (SELECT rid FROM dry_record)`,
		// The users activated, deactivated or changing type.
		`CREATE TEMP TABLE dry_typed ON COMMIT DROP AS
		 SELECT uid FROM (SELECT uid, internal FROM recalc.acl_user EXCEPT SELECT uid, internal FROM dry_user_before) n
		 UNION SELECT uid FROM (SELECT uid, internal FROM dry_user_before EXCEPT SELECT uid, internal FROM recalc.acl_user) o`,
		// They and the users whose closure entries change.
		`CREATE TEMP TABLE dry_users ON COMMIT DROP AS
		 SELECT uid FROM dry_member_ins UNION SELECT uid FROM dry_member_del UNION SELECT uid FROM dry_typed`,
		// Temporary tables have no statistics until analyzed: the joins
		// would be planned blind.
		`ANALYZE dry_record, dry_before, dry_grant, dry_share_before, dry_member_ins, dry_member_del, dry_user_before,
		 dry_recs, dry_typed, dry_users`,
		`INSERT INTO dry_diff (object, record, user_id, before, after, deleted)
		 WITH after (object, record, uid, level) AS (` + wholeLevelsSQL + `),
		 -- a record snapshotted in two batches has the same rows in both
		 before AS (SELECT DISTINCT object, record, uid, level FROM dry_before)
		 SELECT coalesce(a.object, b.object), coalesce(a.record, b.record), u.id,
		        coalesce(b.level, 0), coalesce(a.level, 0), r.id IS NULL
		 FROM before b FULL JOIN after a ON a.record = b.record AND a.uid = b.uid
		 JOIN recalc.principal u ON u.uid = coalesce(a.uid, b.uid)
		 LEFT JOIN recalc.record r ON r.id = coalesce(a.record, b.record)
		 WHERE coalesce(b.level, 0) <> coalesce(a.level, 0)`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return 0, fmt.Errorf("compare access: %w", err)
		}
	}
	var whole, pairs int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT DISTINCT record, uid FROM dry_before) b`).Scan(&whole); err != nil {
		return 0, fmt.Errorf("compare access: %w", err)
	}
	for _, sql := range []string{`DROP TABLE IF EXISTS dry_pairs`, recPairsSQL, `ANALYZE dry_pairs`} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return 0, fmt.Errorf("compare access: %w", err)
		}
	}
	if err := tx.QueryRow(ctx, comparePairsSQL).Scan(&pairs); err != nil {
		return 0, fmt.Errorf("compare access: %w", err)
	}
	return whole + pairs, nil
}

// pairCTEs are the closure (members) and the share rows of dry_recs
// (rec_shares), each row flagged with whether it counts before (b) and
// after (a).
const pairCTEs = `
WITH members AS (
    SELECT m.gid, m.uid, m.boss, i.gid IS NULL AS b, true AS a
    FROM recalc.acl_member m LEFT JOIN dry_member_ins i ON i.gid = m.gid AND i.uid = m.uid
    UNION ALL
    SELECT gid, uid, boss, true, false FROM dry_member_del
), rec_shares AS (
    SELECT x.rid, s.gid, s.level, s.boss_ok, g.rid IS NULL AS b, true AS a
    FROM dry_recs x JOIN recalc.acl_share s ON s.rid = x.rid LEFT JOIN dry_grant g ON g.rid = s.rid AND g.gid = s.gid
    UNION ALL
    SELECT x.rid, s.gid, s.level, s.boss_ok, g.rid IS NULL, true
    FROM dry_recs x JOIN recalc.acl_share s ON s.rid = x.access_root AND x.access_root <> x.rid
    LEFT JOIN dry_grant g ON g.rid = s.rid AND g.gid = s.gid
    UNION ALL
    SELECT x.rid, p.gid, p.level, p.boss_ok, true, false FROM dry_recs x JOIN dry_share_before p ON p.rid = x.rid
    UNION ALL
    SELECT x.rid, p.gid, p.level, p.boss_ok, true, false
    FROM dry_recs x JOIN dry_share_before p ON p.rid = x.access_root AND x.access_root <> x.rid
)`

// recPairsSQL keeps in dry_pairs the (record, user) pairs of dry_recs whose
// level may change (see comparePairsSQL), to be analyzed before the
// comparison: planned from an estimate, it joined every share row of
// dry_recs with every user its grantee reaches (6.7M rows for 41k pairs at
// 100k records).
const recPairsSQL = `CREATE TEMP TABLE dry_pairs ON COMMIT DROP AS
` + pairCTEs + `
    SELECT x.rid, m.uid FROM dry_recs x JOIN dry_grant c ON c.rid = x.rid JOIN members m ON m.gid = c.gid
    UNION
    SELECT x.rid, m.uid FROM dry_recs x JOIN dry_grant c ON c.rid = x.access_root JOIN members m ON m.gid = c.gid
    UNION
    SELECT rs.rid, m.uid FROM rec_shares rs JOIN members m ON m.gid = rs.gid JOIN dry_users u ON u.uid = m.uid
`

// comparePairsSQL compares the pairs of the records not compared whole
// whose access can change: it computes each pair's level before and after
// from the tables now, reading as before the share rows of dry_grant from
// dry_share_before, the closure with dry_member_ins out and dry_member_del
// in, and the users of dry_user_before. It puts the pairs whose level
// differs in dry_diff and returns how many had access before.
//
// Its rows carry b and a: whether they count before and after. Pairs come
// from the records whose share rows change, for the users that the
// grantees of the changed share rows reach, before or after (dry_pairs,
// from recPairsSQL): any other user reaches the record through unchanged share rows and
// unchanged closure entries only, so keeps its level; and from the users
// whose closure entries, activation or type change (every record they
// reach). A pair of both comes from the user when the user's activation or
// type changes (the OWD then differs for records without share rows),
// else from the record.
const comparePairsSQL = pairCTEs + `, rec_levels AS (
    SELECT rs.rid, m.uid,
           max(rs.level) FILTER (WHERE rs.b AND m.b AND (rs.boss_ok OR NOT m.boss)) AS before,
           max(rs.level) FILTER (WHERE rs.a AND m.a AND (rs.boss_ok OR NOT m.boss)) AS after
    FROM dry_pairs p JOIN members m ON m.uid = p.uid JOIN rec_shares rs ON rs.rid = p.rid AND rs.gid = m.gid
    WHERE m.uid NOT IN (SELECT uid FROM dry_typed)
    GROUP BY rs.rid, m.uid
), user_members AS (
    SELECT m.gid, m.uid, m.boss, i.gid IS NULL AS b, true AS a
    FROM dry_users c JOIN recalc.acl_member m ON m.uid = c.uid LEFT JOIN dry_member_ins i ON i.gid = m.gid AND i.uid = m.uid
    UNION ALL
    SELECT gid, uid, boss, true, false FROM dry_member_del
), user_rows AS (
    SELECT s.rid, um.uid, s.level, um.b AND g.rid IS NULL AND (s.boss_ok OR NOT um.boss) AS b, um.a AND (s.boss_ok OR NOT um.boss) AS a
    FROM user_members um JOIN recalc.acl_share s ON s.gid = um.gid LEFT JOIN dry_grant g ON g.rid = s.rid AND g.gid = s.gid
    UNION ALL
    SELECT p.rid, um.uid, p.level, um.b AND (p.boss_ok OR NOT um.boss), false
    FROM user_members um JOIN dry_share_before p ON p.gid = um.gid
), user_levels AS (
    SELECT rid, uid, max(level) FILTER (WHERE b) AS before, max(level) FILTER (WHERE a) AS after
    FROM (
        SELECT rid, uid, level, b, a FROM user_rows
        UNION ALL
        SELECT r.rid, x.uid, x.level, x.b, x.a FROM user_rows x JOIN recalc.acl_record r ON r.access_root = x.rid AND r.rid <> x.rid
        UNION ALL -- the OWD may differ on any record for a user whose activation or type changes
        SELECT r.rid, t.uid, NULL, true, true FROM dry_typed t CROSS JOIN recalc.acl_record r
        JOIN recalc.acl_record root ON root.rid = r.access_root JOIN recalc.acl_object o ON o.name = root.object
        WHERE greatest(o.internal_level, o.external_level) > 0
    ) y
    WHERE (uid IN (SELECT uid FROM dry_typed) OR rid NOT IN (SELECT rid FROM dry_recs)) AND rid NOT IN (SELECT rid FROM dry_record)
    GROUP BY rid, uid
), final AS (
    SELECT r.object, r.id AS record, e.uid,
           CASE WHEN ub.uid IS NULL THEN 0 ELSE coalesce(greatest(e.before, CASE WHEN ub.internal THEN o.internal_level ELSE o.external_level END), 0) END AS before,
           CASE WHEN ua.uid IS NULL THEN 0 ELSE coalesce(greatest(e.after, CASE WHEN ua.internal THEN o.internal_level ELSE o.external_level END), 0) END AS after
    FROM (SELECT * FROM rec_levels UNION ALL SELECT * FROM user_levels) e
    JOIN recalc.acl_record r ON r.rid = e.rid
    LEFT JOIN recalc.acl_record root ON root.rid = r.access_root
    LEFT JOIN recalc.acl_object o ON o.name = root.object
    LEFT JOIN dry_user_before ub ON ub.uid = e.uid
    LEFT JOIN recalc.acl_user ua ON ua.uid = e.uid
), diff AS (
    INSERT INTO dry_diff (object, record, user_id, before, after, deleted)
    SELECT f.object, f.record, p.id, f.before, f.after, false
    FROM final f JOIN recalc.principal p ON p.uid = f.uid
    WHERE f.before <> f.after
)
SELECT count(*) FROM final WHERE before > 0`

// LevelChange counts the (user, record) pairs of an object whose access
// goes from one level to another; Deleted pairs go with their record.
type LevelChange struct {
	Object        string
	Before, After model.Level
	Deleted       bool
	Pairs         int64
}

// LevelChanges returns the compared pairs counted by object, levels and
// deletion, ordered by object and levels.
func LevelChanges(ctx context.Context, tx pgx.Tx) ([]LevelChange, error) {
	rows, err := tx.Query(ctx, `SELECT object, before, after, deleted, count(*) FROM dry_diff GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("compare access: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (LevelChange, error) {
		var c LevelChange
		var before, after int16
		err := row.Scan(&c.Object, &before, &after, &c.Deleted, &c.Pairs)
		c.Before, c.After = model.Level(before), model.Level(after)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("compare access: %w", err)
	}
	return out, nil
}

// PairChange is one (user, record) pair whose access changes.
type PairChange struct {
	Record string      `json:"record"`
	User   string      `json:"user"`
	Before model.Level `json:"before"`
	After  model.Level `json:"after"`
}

// PairChanges returns the first limit pairs of object's records, not
// deleted, that gain access (or, with gain false, lose it), by record and user.
func PairChanges(ctx context.Context, tx pgx.Tx, object string, gain bool, limit int) ([]PairChange, error) {
	rows, err := tx.Query(ctx, `SELECT record, user_id, before, after FROM dry_diff
		WHERE object = $1 AND NOT deleted AND (after > before) = $2 ORDER BY record, user_id LIMIT $3`, object, gain, limit)
	if err != nil {
		return nil, fmt.Errorf("sample changes: %w", err)
	}
	// nil when there is none: a report's samples are then null, not [].
	out, err := pgx.AppendRows([]PairChange(nil), rows, func(row pgx.CollectableRow) (PairChange, error) {
		var pc PairChange
		var before, after int16
		err := row.Scan(&pc.Record, &pc.User, &before, &after)
		pc.Before, pc.After = model.Level(before), model.Level(after)
		return pc, err
	})
	if err != nil {
		return nil, fmt.Errorf("sample changes: %w", err)
	}
	return out, nil
}
