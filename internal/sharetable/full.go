package sharetable

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// Dict maps user ids and grantee keys to their stable integer ids.
type Dict struct {
	UID map[string]int32
	GID map[string]int32
}

// EnsureDict adds any new users and grantees to the append-only dictionaries
// and returns the mapping of the given ones.
func EnsureDict(ctx context.Context, tx pgx.Tx, users, grantees []string) (*Dict, error) {
	d := &Dict{UID: map[string]int32{}, GID: map[string]int32{}}
	for _, t := range []struct {
		table, key, id string
		keys           []string
		dst            map[string]int32
	}{
		{"principal", "id", "uid", users, d.UID},
		{"grantee", "key", "gid", grantees, d.GID},
	} {
		tbl, key, id := pgx.Identifier{"recalc", t.table}.Sanitize(), pgx.Identifier{t.key}.Sanitize(), pgx.Identifier{t.id}.Sanitize()
		read := func(keys []string) error {
			rows, err := tx.Query(ctx, `SELECT `+key+`, `+id+` FROM `+tbl+` WHERE `+key+` = ANY($1)`, keys)
			if err != nil {
				return fmt.Errorf("read %s dictionary: %w", t.table, err)
			}
			var k string
			var v int32
			if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { t.dst[k] = v; return nil }); err != nil {
				return fmt.Errorf("read %s dictionary: %w", t.table, err)
			}
			return nil
		}
		// Usually every key is there already: insert only the new ones.
		if err := read(t.keys); err != nil {
			return nil, err
		}
		var missing []string
		for _, k := range t.keys {
			if _, ok := t.dst[k]; !ok {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+tbl+` (`+key+`) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, missing); err != nil {
			return nil, fmt.Errorf("update %s dictionary: %w", t.table, err)
		}
		if err := read(missing); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// copyClosure writes org's closure into table, streaming grantee by
// grantee: only one grantee's closure is in memory.
func copyClosure(ctx context.Context, tx pgx.Tx, org *sharing.Org, d *Dict, table string) error {
	grantees := org.Grantees()
	var gid int32
	var members []sharing.Member
	src := pgx.CopyFromFunc(func() ([]any, error) {
		for len(members) == 0 {
			if len(grantees) == 0 {
				return nil, nil
			}
			gid, members, grantees = d.GID[grantees[0].String()], org.Closure(grantees[0]), grantees[1:]
		}
		m := members[0]
		members = members[1:]
		return []any{gid, d.UID[m.User], m.Boss}, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"recalc", table}, []string{"gid", "uid", "boss"}, src); err != nil {
		return fmt.Errorf("copy closure: %w", err)
	}
	return nil
}

// WriteUsers replaces acl_user: the active users and whether each is internal.
func WriteUsers(ctx context.Context, tx pgx.Tx, org *sharing.Org, d *Dict) error {
	users := [][]any{}
	for _, u := range org.Index().Config.Users {
		if u.Active {
			users = append(users, []any{d.UID[u.ID], u.ID, !u.External})
		}
	}
	if _, err := tx.Exec(ctx, `TRUNCATE recalc.acl_user`); err != nil {
		return fmt.Errorf("clear acl_user: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"recalc", "acl_user"}, []string{"uid", "id", "internal"}, pgx.CopyFromRows(users)); err != nil {
		return fmt.Errorf("copy acl_user: %w", err)
	}
	return nil
}

// WriteObjects replaces acl_object: each object's OWD levels, read at access time.
func WriteObjects(ctx context.Context, tx pgx.Tx, org *sharing.Org) error {
	var objs [][]any
	for _, o := range org.Index().Config.Objects {
		objs = append(objs, []any{o.Name, int16(o.InternalOWD.Level()), int16(o.ExternalOWD.Level()), o.CBP()})
	}
	if _, err := tx.Exec(ctx, `TRUNCATE recalc.acl_object`); err != nil {
		return fmt.Errorf("clear acl_object: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"recalc", "acl_object"}, []string{"name", "internal_level", "external_level", "cbp"}, pgx.CopyFromRows(objs)); err != nil {
		return fmt.Errorf("copy acl_object: %w", err)
	}
	return nil
}

// RootRanges splits the record families into chunks of about size records,
// returned as inclusive ranges of root record ids in byte order, and counts
// the families.
func RootRanges(ctx context.Context, q pg.Querier, size int) (ranges [][2]string, families int, err error) {
	rows, err := q.Query(ctx, `SELECT root_id, count(*) FROM recalc.record WHERE root_id IS NOT NULL GROUP BY root_id ORDER BY root_id`)
	if err != nil {
		return nil, 0, fmt.Errorf("list record families: %w", err)
	}
	var out [][2]string
	var n int64
	var root string
	var cnt int64
	_, err = pgx.ForEachRow(rows, []any{&root, &cnt}, func() error {
		if len(out) == 0 || n >= int64(size) {
			out = append(out, [2]string{root, root})
			n = 0
		}
		out[len(out)-1][1] = root
		n += cnt
		families++
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list record families: %w", err)
	}
	return out, families, nil
}

// LoadFamilies reads the records, shares and team entries of the families
// whose root id lies in [lo, hi].
func LoadFamilies(ctx context.Context, q pg.Querier, org *sharing.Org, lo, hi string) (*sharing.Input, error) {
	return loadFamilies(ctx, q, org, "root_id BETWEEN $1 AND $2", lo, hi)
}

// LoadFamiliesOf reads the families whose root ids are listed.
func LoadFamiliesOf(ctx context.Context, q pg.Querier, org *sharing.Org, roots []string) (*sharing.Input, error) {
	return loadFamilies(ctx, q, org, "root_id = ANY($1)", roots)
}

// loadFamilies reads the families of the records matching where, a constant
// condition on root_id over the parameters args. Fields are read only for
// objects that have criteria rules.
func loadFamilies(ctx context.Context, q pg.Querier, org *sharing.Org, where string, args ...any) (*sharing.Input, error) {
	var withFields []string
	for _, o := range org.Index().Config.Objects {
		if org.HasCriteria(o.Name) {
			withFields = append(withFields, o.Name)
		}
	}
	in := &sharing.Input{Shares: map[int64][]model.Share{}, Teams: map[int64][]model.Team{}}
	rows, err := q.Query(ctx, fmt.Sprintf(`
		SELECT rid, id, object, owner, coalesce(parent, ''), root_id, territories,
		       CASE WHEN object = ANY($%d) THEN left(fields::text, $%d) END
		FROM recalc.record WHERE %s`, len(args)+1, len(args)+2, where), append(args, withFields, maxFieldsText+1)...)
	if err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	var r sharing.Record
	var fields []byte
	_, err = pgx.ForEachRow(rows, []any{&r.RID, &r.ID, &r.Object, &r.Owner, &r.Parent, &r.RootID, &r.Territories, &fields}, func() error {
		if fields != nil {
			r.Fields, r.Unreadable = readFields(fields)
		}
		in.Records = append(in.Records, r)
		r = sharing.Record{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	rids := make(map[string]int64, len(in.Records))
	for _, r := range in.Records {
		rids[r.ID] = r.RID
	}
	for i := range in.Records {
		in.Records[i].ParentRID = rids[in.Records[i].Parent]
	}
	rows, err = q.Query(ctx, `
		SELECT r.rid, s.object, s.grantee, s.access, s.cause
		FROM recalc.share_input s JOIN recalc.record r ON r.id = s.record AND r.object = s.object WHERE r.`+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read shares: %w", err)
	}
	var rid int64
	var sh model.Share
	var g string
	_, err = pgx.ForEachRow(rows, []any{&rid, &sh.Object, &g, &sh.Access, &sh.Cause}, func() error {
		var err error
		if sh.Grantee, err = model.ParseGrantee(g, false); err != nil {
			return fmt.Errorf("stored share on record %d: %w", rid, err)
		}
		in.Shares[rid] = append(in.Shares[rid], sh)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read shares: %w", err)
	}
	rows, err = q.Query(ctx, `
		SELECT r.rid, t.user_id, t.access, t.contact_access, t.opportunity_access, t.case_access
		FROM recalc.team t JOIN recalc.record r ON r.id = t.record WHERE r.`+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read teams: %w", err)
	}
	var t model.Team
	_, err = pgx.ForEachRow(rows, []any{&rid, &t.User, &t.Access, &t.Child.Contact, &t.Child.Opportunity, &t.Child.Case}, func() error {
		in.Teams[rid] = append(in.Teams[rid], t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read teams: %w", err)
	}
	return in, nil
}

// maxFieldsText is the longest record fields, as JSON text, that a run reads:
// the record_fields_scalar constraint's bound. Longer fields, stored before
// the constraint, make their record invalid instead of costing memory.
const maxFieldsText = 1 << 20

// readFields parses a record's fields as read by loadFamilies, at most
// maxFieldsText+1 bytes of them; unreadable is true when they are too long or
// not a JSON object of scalars. The error is dropped on purpose: it may quote
// the fields, and a record's values never reach a log or a job's error.
func readFields(text []byte) (f model.Fields, unreadable bool) {
	if len(text) > maxFieldsText {
		return nil, true
	}
	f, err := model.ParseFields(text)
	if err != nil {
		return nil, true
	}
	return f, false
}

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
	`CREATE INDEX IF NOT EXISTS acl_record_next_object_idx ON recalc.acl_record_next (object)`,
	`CREATE INDEX IF NOT EXISTS acl_record_next_access_root_idx ON recalc.acl_record_next (access_root)`,
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
// (when closure) written and indexed, and the drift count (when drift),
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
	if drift {
		tasks = append(tasks, func(ctx context.Context) error {
			_, err := pool.Exec(ctx, `UPDATE recalc.job SET drift_fixed = (
				SELECT count(*) FROM recalc.acl_share a FULL JOIN recalc.acl_share_next b USING (rid, gid, cause)
				WHERE a.rid IS NULL OR b.rid IS NULL OR a.level <> b.level OR a.boss_ok <> b.boss_ok)
				WHERE id = $1`, job)
			if err != nil {
				return fmt.Errorf("count drift: %w", err)
			}
			return nil
		})
	}
	return tasks
}

// SwapFull swaps the staging tables (with closure, acl_member's too) in for
// the live ones. Call it only once StagingTasks have all run: it builds no
// index. Readers see the old tables until tx commits, then the new ones.
func SwapFull(ctx context.Context, tx pgx.Tx, closure bool) error {
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
		ALTER INDEX recalc.acl_record_next_access_root_idx RENAME TO acl_record_access_root_idx`
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
		return fmt.Errorf("swap in recalculated tables: %w", err)
	}
	return nil
}
