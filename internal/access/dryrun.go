package access

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// A dry run compares the access of every active user to the records whose
// access can change, before and after it applies a plan in a transaction
// that is rolled back. Its tables are temporary and dropped at commit:
//   - dry_scope (rid): the records compared;
//   - dry_owd: each object's OWD levels after the change;
//   - dry_before and dry_after: the access of the scope, as accessSQL gives it;
//   - dry_diff: the (user, record) pairs whose level differs.

// ScopeDryRun creates the dry run's scope inside tx: the records of the
// families listed in roots (recomputed), the records with share rows for the
// grantees listed (whose members change), and the records whose OWD changes
// for anyone under org: the object's levels change, or users change
// activation or type and the object's OWD gives anyone anything.
func ScopeDryRun(ctx context.Context, tx pgx.Tx, org *sharing.Org, roots []string, grantees []int32) error {
	var users, internal, objects []string
	for _, u := range org.Index().Config.Users {
		if u.Active {
			users = append(users, u.ID)
			if !u.External {
				internal = append(internal, u.ID)
			}
		}
	}
	var internalLv, externalLv []int16
	for _, o := range org.Index().Config.Objects {
		objects = append(objects, o.Name)
		internalLv, externalLv = append(internalLv, int16(o.InternalOWD.Level())), append(externalLv, int16(o.ExternalOWD.Level()))
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE dry_scope (rid bigint PRIMARY KEY) ON COMMIT DROP`); err != nil {
		return fmt.Errorf("scope the dry run: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE dry_owd ON COMMIT DROP AS
		SELECT * FROM unnest($1::text[], $2::smallint[], $3::smallint[]) AS o (name, internal_level, external_level)`,
		objects, internalLv, externalLv); err != nil {
		return fmt.Errorf("scope the dry run: %w", err)
	}
	scope := []struct {
		sql  string
		args []any
	}{
		{`SELECT rid FROM recalc.record WHERE root_id = ANY($1) UNION SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1)`, []any{roots}},
		{`SELECT r.rid FROM recalc.acl_record r JOIN recalc.acl_share s ON s.rid = r.rid WHERE s.gid = ANY($1)
		  UNION SELECT r.rid FROM recalc.acl_record r JOIN recalc.acl_share s ON s.rid = r.access_root WHERE s.gid = ANY($1)`, []any{grantees}},
		{`WITH users_change AS (
		      SELECT EXISTS (SELECT id FROM recalc.acl_user EXCEPT SELECT unnest($1::text[]))
		          OR EXISTS (SELECT unnest($1::text[]) EXCEPT SELECT id FROM recalc.acl_user)
		          OR EXISTS (SELECT id FROM recalc.acl_user WHERE internal EXCEPT SELECT unnest($2::text[]))
		          OR EXISTS (SELECT unnest($2::text[]) EXCEPT SELECT id FROM recalc.acl_user WHERE internal) AS yes
		  ), objs AS (
		      SELECT coalesce(o.name, n.name) AS name FROM recalc.acl_object o FULL JOIN dry_owd n ON n.name = o.name, users_change
		      WHERE (o.internal_level, o.external_level) IS DISTINCT FROM (n.internal_level, n.external_level)
		         OR (users_change.yes AND greatest(o.internal_level, o.external_level, n.internal_level, n.external_level) > 0)
		  )
		  SELECT r.rid FROM recalc.acl_record r JOIN recalc.acl_record root ON root.rid = r.access_root JOIN objs ON objs.name = root.object`,
			[]any{users, internal}},
	}
	for _, sc := range scope {
		if _, err := tx.Exec(ctx, `INSERT INTO dry_scope `+sc.sql+` ON CONFLICT DO NOTHING`, sc.args...); err != nil {
			return fmt.Errorf("scope the dry run: %w", err)
		}
	}
	return nil
}

// WidenScope adds to the dry run's scope the records of the families listed
// that have materialized rows now: the new records, once the plan is applied.
func WidenScope(ctx context.Context, tx pgx.Tx, roots []string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO dry_scope SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1) ON CONFLICT DO NOTHING`, roots); err != nil {
		return fmt.Errorf("widen the dry run's scope: %w", err)
	}
	return nil
}

// SnapshotBefore and SnapshotAfter store the access of every active user to
// the records of the dry run's scope, before and after the plan is applied.
func SnapshotBefore(ctx context.Context, tx pgx.Tx) error { return snapshot(ctx, tx, "dry_before") }
func SnapshotAfter(ctx context.Context, tx pgx.Tx) error  { return snapshot(ctx, tx, "dry_after") }

// snapshot stores, in temporary table name, the access of every active user
// to the records listed in dry_scope (rid): object, record, user_id, level.
func snapshot(ctx context.Context, tx pgx.Tx, name string) error {
	scoped := strings.ReplaceAll(accessSQL, "FROM recalc.acl_record r\n", "FROM recalc.acl_record r JOIN dry_scope sc ON sc.rid = r.rid\n")
	if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `CREATE TEMP TABLE `+pgx.Identifier{name}.Sanitize()+` ON COMMIT DROP AS
		SELECT * FROM (`+scoped+`) s (object, record, user_id, level)`)
	if err != nil {
		return fmt.Errorf("snapshot access: %w", err)
	}
	return nil
}

// CompareSnapshots materializes the pairs whose access level differs
// between the two snapshots, for LevelChanges and PairChanges, and returns
// how many pairs had access before.
func CompareSnapshots(ctx context.Context, tx pgx.Tx) (pairsBefore int64, err error) {
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM dry_before`).Scan(&pairsBefore); err != nil {
		return 0, fmt.Errorf("count pairs: %w", err)
	}
	// The two snapshots are temporary tables: analyze them, or the join
	// plans blind. Then materialize the difference once.
	for _, sql := range []string{
		`ANALYZE dry_before`, `ANALYZE dry_after`,
		`CREATE TEMP TABLE dry_diff ON COMMIT DROP AS
		 SELECT coalesce(a.object, b.object) AS object, coalesce(a.record, b.record) AS record, coalesce(a.user_id, b.user_id) AS user_id,
		        coalesce(b.level, 0) AS before, coalesce(a.level, 0) AS after, r.id IS NULL AS deleted
		 FROM dry_before b FULL JOIN dry_after a ON a.record = b.record AND a.user_id = b.user_id
		 LEFT JOIN recalc.record r ON r.id = coalesce(a.record, b.record)
		 WHERE coalesce(b.level, 0) <> coalesce(a.level, 0)`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return 0, fmt.Errorf("compare access: %w", err)
		}
	}
	return pairsBefore, nil
}

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
