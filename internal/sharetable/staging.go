package sharetable

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// Staging tables of a full recalculation, swapped in when complete.
const (
	nextShare  = "acl_share_next"
	nextRecord = "acl_record_next"
)

// PrepareFull creates empty, index-free staging tables for a full
// recalculation (with closure, acl_member's too), dropping any left by an
// interrupted one.
func PrepareFull(ctx context.Context, tx pgx.Tx, closure bool) error {
	sql := `
		DROP TABLE IF EXISTS recalc.acl_share_next, recalc.acl_record_next, recalc.acl_member_next;
		CREATE TABLE recalc.acl_share_next (LIKE recalc.acl_share INCLUDING DEFAULTS);
		CREATE TABLE recalc.acl_record_next (LIKE recalc.acl_record INCLUDING DEFAULTS)`
	if closure {
		sql += `;
		CREATE TABLE recalc.acl_member_next (LIKE recalc.acl_member INCLUDING DEFAULTS)`
	}
	if _, err := tx.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create staging tables: %w", err)
	}
	return giveToEngine(ctx, tx, closure)
}

// giveToEngine gives the staging tables to recalc's engine role, the owner
// of its objects (of recalc.schema_version, as recalc init holds it), when
// another role (a superuser, a member of the engine role) runs the job: the
// swapped-in tables would otherwise be that role's, and the engine's
// SECURITY DEFINER functions, every read through them, would be refused.
// Tables an older recalc's swap left to another role go back to the engine
// with this one.
func giveToEngine(ctx context.Context, tx pgx.Tx, closure bool) error {
	var owner string
	var mine bool
	if err := tx.QueryRow(ctx, `SELECT pg_get_userbyid(relowner), relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
		FROM pg_class WHERE oid = 'recalc.schema_version'::regclass`).Scan(&owner, &mine); err != nil {
		return fmt.Errorf("read the engine role (the owner of recalc's objects): %w", err)
	}
	if mine {
		return nil
	}
	tables := []string{"recalc.acl_share_next", "recalc.acl_record_next"}
	if closure {
		tables = append(tables, "recalc.acl_member_next")
	}
	for _, t := range tables {
		if _, err := tx.Exec(ctx, `ALTER TABLE `+t+` OWNER TO `+pgx.Identifier{owner}.Sanitize()); err != nil {
			return fmt.Errorf("give the staging tables to %s, the engine role that owns recalc's objects "+
				"(run the job as that role, a member of it or a superuser): %w", owner, err)
		}
	}
	return nil
}

// CopyRows writes computed rows into the staging tables and returns the
// number of share rows written.
func CopyRows(ctx context.Context, tx pgx.Tx, rows *sharing.Rows, d *Dict) (int64, error) {
	i := 0
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"recalc", nextShare}, []string{"rid", "gid", "level", "cause", "boss_ok"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == len(rows.Shares) {
				return nil, nil
			}
			s := &rows.Shares[i]
			i++
			gid, ok := d.GID[s.Grantee]
			if !ok {
				return nil, fmt.Errorf("grantee %s is not in the dictionary", s.Grantee)
			}
			return []any{s.RID, gid, int16(s.Level), s.Cause, s.BossOK}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("copy share rows: %w", err)
	}
	j := 0
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"recalc", nextRecord}, []string{"rid", "id", "object", "access_root", "root_id", "invalid"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if j == len(rows.Records) {
				return nil, nil
			}
			r := &rows.Records[j]
			j++
			var root *int64
			if r.AccessRoot != 0 {
				root = &r.AccessRoot
			}
			return []any{r.RID, r.ID, r.Object, root, r.RootID, nullable(r.Invalid)}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("copy record rows: %w", err)
	}
	return n, nil
}

// stagingIndexes builds the staging tables' indexes, the live tables' own
// under staging names; the biggest first.
var stagingIndexes = []string{
	`CREATE UNIQUE INDEX IF NOT EXISTS acl_share_next_pkey ON recalc.acl_share_next (rid, gid, cause)`,
	`CREATE INDEX IF NOT EXISTS acl_share_next_gid_idx ON recalc.acl_share_next (gid, rid)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS acl_record_next_pkey ON recalc.acl_record_next (rid)`,
	`CREATE INDEX IF NOT EXISTS acl_record_next_id_idx ON recalc.acl_record_next (id)`,
	`CREATE INDEX IF NOT EXISTS acl_record_next_root_idx ON recalc.acl_record_next (root_id)`,
	`CREATE INDEX IF NOT EXISTS acl_record_next_object_idx ON recalc.acl_record_next (object, id)`,
	`CREATE INDEX IF NOT EXISTS acl_record_next_access_root_idx ON recalc.acl_record_next (access_root)`,
	`CREATE INDEX IF NOT EXISTS acl_record_next_rid_hash_idx ON recalc.acl_record_next USING hash (rid) WITH (fillfactor = 50)`,
}

// indexMemory is maintenance_work_mem for the index builds: each sorts
// every row, and more memory means fewer sort runs.
const indexMemory = `SET LOCAL maintenance_work_mem = '256MB'`

// memberIndexes index acl_member_next like acl_member.
var memberIndexes = []string{
	`CREATE UNIQUE INDEX IF NOT EXISTS acl_member_next_pkey ON recalc.acl_member_next (gid, uid)`,
	`CREATE INDEX IF NOT EXISTS acl_member_next_uid_idx ON recalc.acl_member_next (uid, gid)`,
}

// StagingTasks returns the independent steps that finish a full job's
// staging tables once every chunk is in: an index build each, the closure
// (when closure) written and indexed, and the share rows' diff with the
// live table, kept for the feed (feed.Diff) and, when drift, its count
// stored on job. Each runs in a transaction of its own on its own
// connection, so run side by side they use every core. Each is idempotent;
// callers serialize whole runs of them (two builds of one index clash).
func StagingTasks(pool *pgxpool.Pool, org *sharing.Org, d *Dict, job int64, closure, drift bool) []func(context.Context) error {
	var tasks []func(context.Context) error
	for _, sql := range stagingIndexes {
		tasks = append(tasks, func(ctx context.Context) error {
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, indexMemory+`; `+sql)
				return err
			})
			if err != nil {
				return fmt.Errorf("index recalculated tables: %w", err)
			}
			return nil
		})
	}
	if closure {
		tasks = append(tasks, func(ctx context.Context) error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `TRUNCATE recalc.acl_member_next`); err != nil {
					return fmt.Errorf("clear staged closure: %w", err)
				}
				if err := copyClosure(ctx, tx, org, d, "acl_member_next"); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, indexMemory+`; `+strings.Join(memberIndexes, "; ")); err != nil {
					return fmt.Errorf("index the closure: %w", err)
				}
				return nil
			})
		})
	}
	return append(tasks, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			n, err := feed.Diff(ctx, tx, drift)
			if err != nil || !drift {
				return err
			}
			return queue.SetDriftFixed(ctx, tx, job, n)
		})
	})
}

// SwapFull swaps the staging tables (with closure, acl_member's too) in for
// the live ones. Call it only once StagingTasks have all run: it builds no
// index. Readers see the old tables until tx commits, then the new ones.
// It records the records and grantees the swap changes for the feed, or
// reports every (feed.Swap): the caller publishes every record.
//
// When readers hold the live tables for longer than wait (SwapWait when 0:
// a reader's transaction left open holds them: it needs no privilege on
// them, only a call of recalc's functions), it copies the staged rows into
// the live tables in place instead, under the row locks readers do not take.
func SwapFull(ctx context.Context, tx pgx.Tx, closure bool, wait time.Duration) (every bool, err error) {
	if wait <= 0 {
		wait = SwapWait
	}
	locked, err := lockForSwap(ctx, tx, closure, wait)
	if err == nil && !locked {
		// No writer may come between the feed's diff and the copy's
		// commit; readers may. Nothing but the engine writes these tables,
		// and a plain wait has autovacuum give way.
		_, err = tx.Exec(ctx, `LOCK TABLE recalc.acl_record, recalc.acl_share, recalc.acl_member IN EXCLUSIVE MODE`)
	}
	if err != nil {
		return false, err
	}
	if every, err = feed.Swap(ctx, tx, closure); err != nil {
		return false, err
	}
	if !locked {
		return every, copyIntoLive(ctx, tx, closure)
	}
	sql := `
		ALTER TABLE recalc.acl_share_next ADD CONSTRAINT acl_share_next_pkey PRIMARY KEY USING INDEX acl_share_next_pkey;
		ALTER TABLE recalc.acl_record_next ADD CONSTRAINT acl_record_next_pkey PRIMARY KEY USING INDEX acl_record_next_pkey;
		DROP TABLE recalc.acl_share, recalc.acl_record;
		ALTER TABLE recalc.acl_share_next RENAME TO acl_share;
		ALTER TABLE recalc.acl_share RENAME CONSTRAINT acl_share_next_pkey TO acl_share_pkey;
		ALTER INDEX recalc.acl_share_next_gid_idx RENAME TO acl_share_gid_idx;
		ALTER TABLE recalc.acl_record_next RENAME TO acl_record;
		ALTER TABLE recalc.acl_record RENAME CONSTRAINT acl_record_next_pkey TO acl_record_pkey;
		ALTER INDEX recalc.acl_record_next_id_idx RENAME TO acl_record_id_idx;
		ALTER INDEX recalc.acl_record_next_root_idx RENAME TO acl_record_root_idx;
		ALTER INDEX recalc.acl_record_next_object_idx RENAME TO acl_record_object_idx;
		ALTER INDEX recalc.acl_record_next_access_root_idx RENAME TO acl_record_access_root_idx;
		ALTER INDEX recalc.acl_record_next_rid_hash_idx RENAME TO acl_record_rid_hash_idx`
	if closure {
		sql += `;
		ALTER TABLE recalc.acl_member_next ADD CONSTRAINT acl_member_next_pkey PRIMARY KEY USING INDEX acl_member_next_pkey;
		DROP TABLE recalc.acl_member;
		ALTER TABLE recalc.acl_member_next RENAME TO acl_member;
		ALTER TABLE recalc.acl_member RENAME CONSTRAINT acl_member_next_pkey TO acl_member_pkey;
		ALTER INDEX recalc.acl_member_next_uid_idx RENAME TO acl_member_uid_idx`
	}
	if _, err := tx.Exec(ctx, sql+`;
		ANALYZE recalc.acl_share, recalc.acl_record, recalc.acl_member`); err != nil {
		return false, fmt.Errorf("swap in recalculated tables: %w", err)
	}
	return every, nil
}

// SwapWait bounds how long a swap waits, by default, for readers to let go
// of the live tables before it copies the rows in place instead.
const SwapWait = 10 * time.Second

// lockForSwap takes the live tables SwapFull drops and renames, ACCESS
// EXCLUSIVE, all at once, before it reads them, and reports whether it took
// them within wait (locks.Retry). Each try waits at most 100 ms: readers take these tables one
// statement at a time, in their own order, so a swap that waited longer
// while it held one of them could deadlock with a reader, and every new
// reader queues behind a waiting swap. A try that times out lets go of what
// it took, and the next one comes after a pause, until no one holds the
// tables or wait passes.
func lockForSwap(ctx context.Context, tx pgx.Tx, closure bool, wait time.Duration) (bool, error) {
	tables := "recalc.acl_record, recalc.acl_share" // in the order a reader's statement locks them
	if closure {
		tables += ", recalc.acl_member"
	}
	took, err := locks.Retry(ctx, tx, wait, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, `LOCK TABLE `+tables+` IN ACCESS EXCLUSIVE MODE`)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("lock the live tables for the swap: %w", err)
	}
	return took, nil
}

// copyIntoLive replaces the live tables' rows with the staged ones, in
// place (readers see the old rows until tx commits), and drops the staging
// tables: SwapFull's way when it could not lock the live tables.
func copyIntoLive(ctx context.Context, tx pgx.Tx, closure bool) error {
	tables := []string{"acl_share", "acl_record"}
	if closure {
		tables = append(tables, "acl_member")
	}
	var sql []string
	for _, t := range tables {
		sql = append(sql, `DELETE FROM recalc.`+t, `INSERT INTO recalc.`+t+` TABLE recalc.`+t+`_next`)
	}
	sql = append(sql, `DROP TABLE IF EXISTS recalc.acl_share_next, recalc.acl_record_next, recalc.acl_member_next`,
		`ANALYZE recalc.acl_share, recalc.acl_record, recalc.acl_member`)
	if _, err := tx.Exec(ctx, strings.Join(sql, "; ")); err != nil {
		return fmt.Errorf("copy recalculated rows into the live tables: %w", err)
	}
	return nil
}

// KeepRows copies the materialized rows of the records rids, as they are,
// into a full job's staging tables: what its chunk keeps of the families
// it leaves out. It returns the share rows copied.
func KeepRows(ctx context.Context, tx pgx.Tx, rids []int64) (int64, error) {
	if len(rids) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, `INSERT INTO recalc.`+nextShare+` (rid, gid, level, cause, boss_ok)
		SELECT rid, gid, level, cause, boss_ok FROM recalc.acl_share WHERE rid = ANY($1)`, rids)
	if err != nil {
		return 0, fmt.Errorf("keep share rows: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.`+nextRecord+` (rid, id, object, access_root, root_id, invalid)
		SELECT rid, id, object, access_root, root_id, invalid FROM recalc.acl_record WHERE rid = ANY($1)`, rids); err != nil {
		return 0, fmt.Errorf("keep record rows: %w", err)
	}
	return tag.RowsAffected(), nil
}
