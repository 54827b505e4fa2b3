package sharetable

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/grants"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/planner"
)

// ResolveRoots turns a plan's selectors into the sorted root ids of the
// families to recompute. For changed records it takes both the family they
// are in now and the one they were computed in, so a record that moved or
// disappeared leaves its old family correct too.
func ResolveRoots(ctx context.Context, q Querier, p *planner.Plan) ([]string, error) {
	set := map[string]bool{}
	collect := func(sql string, args ...any) error {
		rows, err := q.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		var root string
		_, err = pgx.ForEachRow(rows, []any{&root}, func() error { set[root] = true; return nil })
		return err
	}
	for _, c := range p.Changes {
		for _, s := range c.Selectors {
			var err error
			switch s.Kind {
			case planner.ByRecords:
				err = collect(`SELECT root_id FROM recalc.record WHERE id = ANY($1)
					UNION SELECT root_id FROM recalc.acl_record WHERE id = ANY($1)`, s.IDs)
			case planner.ByObject:
				err = collect(`SELECT root_id FROM recalc.record WHERE object = $1
					UNION SELECT root_id FROM recalc.acl_record WHERE object = $1`, s.Object)
			case planner.ByOwners:
				err = collect(`SELECT DISTINCT root_id FROM recalc.record
					WHERE ($1 = '' OR object = $1) AND owner = ANY($2)`, s.Object, s.IDs)
			case planner.ByTerritories:
				err = collect(`SELECT DISTINCT root_id FROM recalc.record WHERE object = $1 AND territories && $2`, s.Object, s.IDs)
			case planner.ByCriteria:
				err = matchCriteria(ctx, q, s.Object, s.Criteria, set)
			default:
				err = fmt.Errorf("unknown selector %q", s.Kind)
			}
			if err != nil {
				return nil, fmt.Errorf("resolve %q: %w", c.What, err)
			}
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

// matchCriteria adds the roots of object's records that crit matches. It
// evaluates in Go, with the very code recalculation uses.
func matchCriteria(ctx context.Context, q Querier, object string, crit *model.Criteria, set map[string]bool) error {
	rows, err := q.Query(ctx, `SELECT root_id, fields FROM recalc.record WHERE object = $1`, object)
	if err != nil {
		return err
	}
	var root string
	var f model.Fields
	_, err = pgx.ForEachRow(rows, []any{&root, &f}, func() error {
		if crit.Match(f) {
			set[root] = true
		}
		f = nil
		return nil
	})
	return err
}

// FamilySizes returns the number of stored records of each listed root (zero
// for a family that no longer has any).
func FamilySizes(ctx context.Context, q Querier, roots []string) ([]int64, error) {
	rows, err := q.Query(ctx, `SELECT root_id, count(*) FROM recalc.record WHERE root_id = ANY($1) GROUP BY root_id`, roots)
	if err != nil {
		return nil, fmt.Errorf("count family sizes: %w", err)
	}
	size := map[string]int64{}
	var root string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&root, &n}, func() error { size[root] = n; return nil }); err != nil {
		return nil, fmt.Errorf("count family sizes: %w", err)
	}
	out := make([]int64, len(roots))
	for i, r := range roots {
		out[i] = size[r]
	}
	return out, nil
}

// CountFamilies returns the number of record families stored.
func CountFamilies(ctx context.Context, q Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `SELECT count(DISTINCT root_id) FROM recalc.record`).Scan(&n)
	return n, err
}

// ChunkStats counts what applying one chunk did.
type ChunkStats struct {
	Records                 int64
	Added, Removed, Updated int64
	Invalid                 []string // records given no access: see grants.Rows.Invalid
}

type shareKey struct {
	rid   int64
	gid   int32
	cause string
}

type shareVal struct {
	level  int16
	bossOK bool
}

// ApplyFamilies recomputes the families whose roots are listed and writes
// only the difference to the materialized tables, inside tx:
//   - lock the families' record rows, and the materialized rows of records
//     last computed in them, in key order (so the application's concurrent
//     writes to those records wait, and two chunks never interleave on one);
//   - compute the desired rows, read the stored ones, diff;
//   - delete, insert and update with unnest arrays.
func ApplyFamilies(ctx context.Context, tx pgx.Tx, org *grants.Org, d *Dict, roots []string) (*ChunkStats, error) {
	if _, err := tx.Exec(ctx, `SELECT 1 FROM recalc.record WHERE root_id = ANY($1) ORDER BY rid FOR UPDATE`, roots); err != nil {
		return nil, fmt.Errorf("lock records: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM recalc.acl_record
		WHERE root_id = ANY($1) OR rid IN (SELECT rid FROM recalc.record WHERE root_id = ANY($1))
		ORDER BY rid FOR UPDATE`, roots); err != nil {
		return nil, fmt.Errorf("lock materialized records: %w", err)
	}
	in, err := LoadFamiliesOf(ctx, tx, org, roots)
	if err != nil {
		return nil, err
	}
	want := org.Compute(in)
	st := &ChunkStats{Records: int64(len(in.Records)), Invalid: want.Invalid}

	// Share rows.
	desired := make(map[shareKey]shareVal, len(want.Shares))
	for _, s := range want.Shares {
		gid, ok := d.GID[s.Grantee]
		if !ok {
			return nil, fmt.Errorf("grantee %s is not in the dictionary", s.Grantee)
		}
		desired[shareKey{s.RID, gid, s.Cause}] = shareVal{int16(s.Level), s.BossOK}
	}
	rows, err := tx.Query(ctx, `
		SELECT s.rid, s.gid, s.cause, s.level, s.boss_ok FROM recalc.acl_share s
		WHERE s.rid IN (SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1)
		                UNION SELECT rid FROM recalc.record WHERE root_id = ANY($1))`, roots)
	if err != nil {
		return nil, fmt.Errorf("read stored share rows: %w", err)
	}
	var k shareKey
	var v shareVal
	var del, upd []shareKey
	var updVals []shareVal
	seen := map[shareKey]bool{}
	_, err = pgx.ForEachRow(rows, []any{&k.rid, &k.gid, &k.cause, &v.level, &v.bossOK}, func() error {
		seen[k] = true
		w, ok := desired[k]
		switch {
		case !ok:
			del = append(del, k)
		case w != v:
			upd = append(upd, k)
			updVals = append(updVals, w)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read stored share rows: %w", err)
	}
	var ins []shareKey
	var insVals []shareVal
	for key, val := range desired {
		if !seen[key] {
			ins = append(ins, key)
			insVals = append(insVals, val)
		}
	}
	if len(del) > 0 {
		rids, gids, causes := splitKeys(del)
		tag, err := tx.Exec(ctx, `DELETE FROM recalc.acl_share s USING unnest($1::bigint[], $2::int[], $3::text[]) AS d (rid, gid, cause)
			WHERE s.rid = d.rid AND s.gid = d.gid AND s.cause = d.cause`, rids, gids, causes)
		if err != nil {
			return nil, fmt.Errorf("delete share rows: %w", err)
		}
		st.Removed = tag.RowsAffected()
	}
	if len(ins) > 0 {
		rids, gids, causes := splitKeys(ins)
		levels, boss := splitVals(insVals)
		tag, err := tx.Exec(ctx, `INSERT INTO recalc.acl_share (rid, gid, cause, level, boss_ok)
			SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::smallint[], $5::boolean[])`, rids, gids, causes, levels, boss)
		if err != nil {
			return nil, fmt.Errorf("insert share rows: %w", err)
		}
		st.Added = tag.RowsAffected()
	}
	if len(upd) > 0 {
		rids, gids, causes := splitKeys(upd)
		levels, boss := splitVals(updVals)
		tag, err := tx.Exec(ctx, `UPDATE recalc.acl_share s SET level = u.level, boss_ok = u.boss_ok
			FROM unnest($1::bigint[], $2::int[], $3::text[], $4::smallint[], $5::boolean[]) AS u (rid, gid, cause, level, boss_ok)
			WHERE s.rid = u.rid AND s.gid = u.gid AND s.cause = u.cause`, rids, gids, causes, levels, boss)
		if err != nil {
			return nil, fmt.Errorf("update share rows: %w", err)
		}
		st.Updated = tag.RowsAffected()
	}

	// Record rows: delete the ones gone from these families, upsert the rest.
	keep := make([]int64, len(want.Records))
	ids, objects, rootIDs := make([]string, len(want.Records)), make([]string, len(want.Records)), make([]string, len(want.Records))
	accessRoots := make([]*int64, len(want.Records))
	for i, r := range want.Records {
		keep[i], ids[i], objects[i], rootIDs[i] = r.RID, r.ID, r.Object, r.RootID
		if r.AccessRoot != 0 {
			ar := r.AccessRoot
			accessRoots[i] = &ar
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM recalc.acl_record WHERE root_id = ANY($1) AND rid <> ALL($2)`, roots, keep); err != nil {
		return nil, fmt.Errorf("delete record rows: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO recalc.acl_record (rid, id, object, access_root, root_id)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[])
		ON CONFLICT (rid) DO UPDATE SET id = excluded.id, object = excluded.object,
			access_root = excluded.access_root, root_id = excluded.root_id
		WHERE (acl_record.id, acl_record.object, acl_record.access_root, acl_record.root_id)
		      IS DISTINCT FROM (excluded.id, excluded.object, excluded.access_root, excluded.root_id)`,
		keep, ids, objects, accessRoots, rootIDs); err != nil {
		return nil, fmt.Errorf("upsert record rows: %w", err)
	}
	return st, nil
}

func splitKeys(ks []shareKey) ([]int64, []int32, []string) {
	rids, gids, causes := make([]int64, len(ks)), make([]int32, len(ks)), make([]string, len(ks))
	for i, k := range ks {
		rids[i], gids[i], causes[i] = k.rid, k.gid, k.cause
	}
	return rids, gids, causes
}

func splitVals(vs []shareVal) ([]int16, []bool) {
	levels, boss := make([]int16, len(vs)), make([]bool, len(vs))
	for i, v := range vs {
		levels[i], boss[i] = v.level, v.bossOK
	}
	return levels, boss
}

// LoadDict reads the whole user and grantee dictionaries.
func LoadDict(ctx context.Context, q Querier) (*Dict, error) {
	d := &Dict{UID: map[string]int32{}, GID: map[string]int32{}}
	for _, t := range []struct {
		sql string
		dst map[string]int32
	}{
		{`SELECT id, uid FROM recalc.principal`, d.UID},
		{`SELECT key, gid FROM recalc.grantee`, d.GID},
	} {
		rows, err := q.Query(ctx, t.sql)
		if err != nil {
			return nil, fmt.Errorf("read dictionary: %w", err)
		}
		var k string
		var v int32
		if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { t.dst[k] = v; return nil }); err != nil {
			return nil, fmt.Errorf("read dictionary: %w", err)
		}
	}
	return d, nil
}

// ClosureStats counts closure entries added and removed.
type ClosureStats struct{ Added, Removed int64 }

// DiffClosure brings acl_member to org's closure, writing only the entries
// that changed, and rewrites the small acl_user table.
func DiffClosure(ctx context.Context, tx pgx.Tx, org *grants.Org, d *Dict) (*ClosureStats, error) {
	type entry struct{ gid, uid int32 }
	want := map[entry]bool{}
	for _, g := range org.Grantees() {
		gid := d.GID[g.String()]
		for _, m := range org.Closure(g) {
			want[entry{gid, d.UID[m.User]}] = m.Boss
		}
	}
	rows, err := tx.Query(ctx, `SELECT gid, uid, boss FROM recalc.acl_member`)
	if err != nil {
		return nil, fmt.Errorf("read closure: %w", err)
	}
	var e entry
	var boss bool
	var delG, delU []int32
	have := map[entry]bool{}
	_, err = pgx.ForEachRow(rows, []any{&e.gid, &e.uid, &boss}, func() error {
		w, ok := want[e]
		if !ok || w != boss {
			delG, delU = append(delG, e.gid), append(delU, e.uid)
		} else {
			have[e] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read closure: %w", err)
	}
	var insG, insU []int32
	var insB []bool
	for k, b := range want {
		if !have[k] {
			insG, insU, insB = append(insG, k.gid), append(insU, k.uid), append(insB, b)
		}
	}
	st := &ClosureStats{}
	tag, err := tx.Exec(ctx, `DELETE FROM recalc.acl_member m USING unnest($1::int[], $2::int[]) AS d (gid, uid)
		WHERE m.gid = d.gid AND m.uid = d.uid`, delG, delU)
	if err != nil {
		return nil, fmt.Errorf("delete closure entries: %w", err)
	}
	st.Removed = tag.RowsAffected()
	tag, err = tx.Exec(ctx, `INSERT INTO recalc.acl_member (gid, uid, boss) SELECT * FROM unnest($1::int[], $2::int[], $3::boolean[])`, insG, insU, insB)
	if err != nil {
		return nil, fmt.Errorf("insert closure entries: %w", err)
	}
	st.Added = tag.RowsAffected()
	if err := WriteUsers(ctx, tx, org, d); err != nil {
		return nil, err
	}
	return st, nil
}

// RecordsByObject counts the records of the listed families (all records
// when roots is nil) by object.
func RecordsByObject(ctx context.Context, q Querier, roots []string) (map[string]int64, error) {
	rows, err := q.Query(ctx, `SELECT object, count(*) FROM recalc.record
		WHERE $1::text[] IS NULL OR root_id = ANY($1) GROUP BY object`, roots)
	if err != nil {
		return nil, fmt.Errorf("count records by object: %w", err)
	}
	out := map[string]int64{}
	var o string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&o, &n}, func() error { out[o] = n; return nil }); err != nil {
		return nil, fmt.Errorf("count records by object: %w", err)
	}
	return out, nil
}

// FixRoots sets the family root of records that lack one (inserted with
// plain SQL) or whose parent chain changed (listed in ids, with all their
// descendants). Imports set roots themselves; this covers everyone else.
func FixRoots(ctx context.Context, tx pgx.Tx, ids []string) (int64, error) {
	tag, err := tx.Exec(ctx, `
		WITH RECURSIVE down (rid, id) AS (
		    SELECT rid, id FROM recalc.record WHERE id = ANY($1) OR root_id IS NULL
		    UNION
		    SELECT c.rid, c.id FROM recalc.record c JOIN down d ON c.parent = d.id
		), up (rid, cur, depth) AS (
		    SELECT rid, rid, 0 FROM down
		    UNION ALL
		    SELECT u.rid, p.rid, u.depth + 1
		    FROM up u JOIN recalc.record r ON r.rid = u.cur JOIN recalc.record p ON p.id = r.parent
		    WHERE u.depth < 100
		), roots AS (
		    SELECT DISTINCT ON (u.rid) u.rid, r.id AS root
		    FROM up u JOIN recalc.record r ON r.rid = u.cur ORDER BY u.rid, u.depth DESC
		)
		UPDATE recalc.record t SET root_id = roots.root FROM roots
		WHERE t.rid = roots.rid AND t.root_id IS DISTINCT FROM roots.root`, ids)
	if err != nil {
		return 0, fmt.Errorf("fix family roots: %w", err)
	}
	return tag.RowsAffected(), nil
}
