package sharetable

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/planner"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// ResolveRoots turns a plan's selectors into the sorted root ids of the
// families to recompute. For changed records it takes both the family they
// are in now and the one they were computed in, so a record that moved or
// disappeared leaves its old family correct too.
func ResolveRoots(ctx context.Context, q pg.Querier, p *planner.Plan) ([]string, error) {
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
				err = collect(`SELECT root_id FROM recalc.record WHERE id = ANY($1) AND root_id IS NOT NULL
					UNION SELECT root_id FROM recalc.acl_record WHERE id = ANY($1)`, s.IDs)
			case planner.ByObject:
				err = collect(`SELECT root_id FROM recalc.record WHERE object = $1 AND root_id IS NOT NULL
					UNION SELECT root_id FROM recalc.acl_record WHERE object = $1`, s.Object)
			case planner.ByOwners:
				err = collect(`SELECT DISTINCT root_id FROM recalc.record
					WHERE ($1 = '' OR object = $1) AND owner = ANY($2) AND root_id IS NOT NULL`, s.Object, s.IDs)
			case planner.ByTerritories:
				err = collect(`SELECT DISTINCT root_id FROM recalc.record WHERE object = $1 AND territories && $2 AND root_id IS NOT NULL`, s.Object, s.IDs)
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
// decides with the very code recalculation uses, in Go, on the records a
// SQL filter lets through (criteriaFilter).
func matchCriteria(ctx context.Context, q pg.Querier, object string, crit *model.Criteria, set map[string]bool) error {
	filter, args := criteriaFilter(crit, []any{object})
	rows, err := q.Query(ctx, `SELECT root_id, left(fields::text, `+fmt.Sprint(maxFieldsText+1)+`) FROM recalc.record r
		WHERE object = $1 AND root_id IS NOT NULL AND `+filter, args...)
	if err != nil {
		return err
	}
	var root string
	var text []byte
	_, err = pgx.ForEachRow(rows, []any{&root, &text}, func() error {
		// An unreadable record is recomputed too: it becomes invalid.
		if f, unreadable := readFields(text); unreadable || crit.Match(f) {
			set[root] = true
		}
		return nil
	})
	return err
}

// FamilySizes returns the number of stored records of each listed root (zero
// for a family that no longer has any), and of each object in them all.
func FamilySizes(ctx context.Context, q pg.Querier, roots []string) (sizes []int64, byObject map[string]int64, err error) {
	rows, err := q.Query(ctx, `SELECT root_id, object, count(*) FROM recalc.record WHERE root_id = ANY($1) GROUP BY 1, 2`, roots)
	if err != nil {
		return nil, nil, fmt.Errorf("count family sizes: %w", err)
	}
	size, byObject := map[string]int64{}, map[string]int64{}
	var root, object string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&root, &object, &n}, func() error {
		size[root] += n
		byObject[object] += n
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("count family sizes: %w", err)
	}
	sizes = make([]int64, len(roots))
	for i, r := range roots {
		sizes[i] = size[r]
	}
	return sizes, byObject, nil
}

// AllRoots returns the root id of every record family, stored or
// materialized (a family whose records were all deleted is still to clear),
// in byte order.
func AllRoots(ctx context.Context, q pg.Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT root_id FROM recalc.record WHERE root_id IS NOT NULL
		UNION SELECT root_id FROM recalc.acl_record ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list record families: %w", err)
	}
	roots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list record families: %w", err)
	}
	return roots, nil
}

// CountFamilies returns the number of record families stored. Counting
// reads every record; EstimateFamilies is free.
func CountFamilies(ctx context.Context, q pg.Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `SELECT count(DISTINCT root_id) FROM recalc.record`).Scan(&n)
	return n, err
}

// EstimateFamilies returns the planner's estimate of the number of record
// families, from the table statistics (0 when there are none yet). Skewed
// families make it low, by half at a million records.
func EstimateFamilies(ctx context.Context, q pg.Querier) (float64, error) {
	var n *float64
	err := q.QueryRow(ctx, `
		SELECT CASE WHEN s.n_distinct < 0 THEN -s.n_distinct * greatest(c.reltuples, 0) ELSE s.n_distinct END
		FROM pg_class c JOIN pg_stats s ON s.schemaname = 'recalc' AND s.tablename = c.relname AND s.attname = 'root_id'
		WHERE c.oid = 'recalc.record'::regclass`).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) || n == nil {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("estimate record families: %w", err)
	}
	return *n, nil
}

// Written counts what writing the rows of some families did. It has the
// fields of queue.ChunkStats, which a chunk reports.
type Written struct {
	Records                 int64
	Added, Removed, Updated int64
	Invalid                 []string // records given no access: see sharing.Rows.Invalid
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
// only the difference to the materialized tables, inside tx: it locks the
// families' rows (LockFamilies), diffs (DiffFamilies) and applies.
func ApplyFamilies(ctx context.Context, tx pgx.Tx, org *sharing.Org, d *Dict, roots []string) (*Written, error) {
	rids, err := LockFamilies(ctx, tx, roots)
	if err != nil {
		return nil, err
	}
	diff, err := DiffFamilies(ctx, tx, org, d, roots, rids)
	if err != nil {
		return nil, err
	}
	return diff.Apply(ctx, tx)
}

// LockFamilies locks the families' record rows, and the materialized rows
// of records last computed in them: the application's concurrent writes to
// those records wait, and two chunks never interleave on one record. It
// returns the ids (rid) of both, sorted: the records whose rows
// DiffFamilies compares.
//
// It never waits for a lock while it holds one, so neither an application
// transaction nor another chunk can deadlock with it, whatever order they
// lock records in. It takes every lock it can without waiting (SKIP LOCKED),
// inside a savepoint; if one was held, it gives them all back, waits for that
// one alone (up to the transaction's lock_timeout), and tries again.
//
// Every later read of the chunk looks rows up by these ids, in the
// tables' primary keys. Looking them up by root id instead joins on
// root_id, whose statistics big families skew: the planner then scans
// whole share tables for a few thousand records.
func LockFamilies(ctx context.Context, tx pgx.Tx, roots []string) ([]int64, error) {
	for attempt := 0; attempt < maxLockRounds; attempt++ {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("lock families: %w", err)
		}
		rids, busy, err := tryLockFamilies(ctx, sp, roots)
		if err == nil && busy == nil {
			if err := sp.Commit(ctx); err != nil { // releases the savepoint, keeps the locks
				return nil, fmt.Errorf("lock families: %w", err)
			}
			return rids, nil
		}
		if rerr := sp.Rollback(ctx); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			return nil, fmt.Errorf("lock families: %w", err)
		}
		if err := waitForRow(ctx, tx, busy); err != nil {
			return nil, err
		}
	}
	return nil, &pgconn.PgError{Code: pg.LockNotAvailable, Message: fmt.Sprintf("could not lock the families' rows in %d rounds", maxLockRounds)}
}

// maxLockRounds bounds LockFamilies' rounds of trying and waiting; past it
// the chunk is retried like on a lock timeout.
const maxLockRounds = 50

// busyRow is a row LockFamilies found locked by another transaction.
type busyRow struct {
	table string // "record" or "acl_record"
	rid   int64
}

// tryLockFamilies is one round of LockFamilies: it locks, without waiting,
// the rows the families hold now, and returns them, or the first row that
// another transaction holds.
func tryLockFamilies(ctx context.Context, tx pgx.Tx, roots []string) ([]int64, *busyRow, error) {
	current, err := readRIDs(ctx, tx, "family records", `SELECT rid FROM recalc.record WHERE root_id = ANY($1) ORDER BY rid`, roots)
	if err != nil {
		return nil, nil, err
	}
	locked, err := readRIDs(ctx, tx, "family records", `SELECT rid FROM recalc.record WHERE rid = ANY($1) AND root_id = ANY($2)
		ORDER BY rid FOR UPDATE SKIP LOCKED`, current, roots)
	if err != nil {
		return nil, nil, err
	}
	if rid, ok := firstMissing(current, locked); ok {
		return nil, &busyRow{"record", rid}, nil
	}
	before, err := readRIDs(ctx, tx, "materialized family records", `SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1)`, roots)
	if err != nil {
		return nil, nil, err
	}
	// A record another chunk moved to a family of its own meanwhile drops
	// out: the condition is checked again on the locked row.
	const computedSQL = `SELECT rid FROM recalc.acl_record WHERE rid = ANY($1) AND (root_id = ANY($2) OR rid = ANY($3)) ORDER BY rid`
	candidates := sortedUnion(locked, before)
	computed, err := readRIDs(ctx, tx, "materialized family records", computedSQL, candidates, roots, locked)
	if err != nil {
		return nil, nil, err
	}
	lockedComputed, err := readRIDs(ctx, tx, "materialized family records", computedSQL+` FOR UPDATE SKIP LOCKED`, computed, roots, locked)
	if err != nil {
		return nil, nil, err
	}
	if rid, ok := firstMissing(computed, lockedComputed); ok {
		return nil, &busyRow{"acl_record", rid}, nil
	}
	return sortedUnion(locked, lockedComputed), nil, nil
}

// firstMissing returns the first of want, sorted, that got lacks.
func firstMissing(want, got []int64) (int64, bool) {
	for i, j := 0, 0; i < len(want); i++ {
		for j < len(got) && got[j] < want[i] {
			j++
		}
		if j == len(got) || got[j] != want[i] {
			return want[i], true
		}
	}
	return 0, false
}

// waitForRow waits, holding no record lock, until the busy row is free (or
// gone), then lets it go again: the next round locks it with the others.
func waitForRow(ctx context.Context, tx pgx.Tx, b *busyRow) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("lock families: %w", err)
	}
	_, err = sp.Exec(ctx, `SELECT FROM `+pgx.Identifier{"recalc", b.table}.Sanitize()+` WHERE rid = $1 FOR UPDATE`, b.rid)
	if rerr := sp.Rollback(ctx); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("wait for a locked %s row: %w", b.table, err)
	}
	return nil
}

// FamilyRIDs is what LockFamilies returns, read without locks, for readers.
func FamilyRIDs(ctx context.Context, q pg.Querier, roots []string) ([]int64, error) {
	current, err := readRIDs(ctx, q, "family records", `SELECT rid FROM recalc.record WHERE root_id = ANY($1) ORDER BY rid`, roots)
	if err != nil {
		return nil, err
	}
	before, err := readRIDs(ctx, q, "materialized family records", `SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1)`, roots)
	if err != nil {
		return nil, err
	}
	computed, err := readRIDs(ctx, q, "materialized family records", `SELECT rid FROM recalc.acl_record
		WHERE rid = ANY($1) AND (root_id = ANY($2) OR rid = ANY($3)) ORDER BY rid`, sortedUnion(current, before), roots, current)
	if err != nil {
		return nil, err
	}
	return sortedUnion(current, computed), nil
}

// readRIDs runs a query of record ids.
func readRIDs(ctx context.Context, q pg.Querier, what, sql string, args ...any) ([]int64, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return out, nil
}

func sortedUnion(a, b []int64) []int64 {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// FamilyDiff is how the stored rows of some families differ from the rows
// computed for them now.
type FamilyDiff struct {
	roots    []string
	records  *sharing.Rows
	del, ins []shareKey
	insVals  []shareVal
	upd      []shareKey
	updVals  []shareVal
	objectOf map[int64]string
	// RecordRowsDiffer counts acl_record rows missing, extra or different.
	RecordRowsDiffer int64
}

// DiffCount is a count of differing share rows by object and row cause.
type DiffCount struct {
	Object  string `json:"object"`
	Cause   string `json:"cause"`
	Missing int64  `json:"missing"`
	Extra   int64  `json:"extra"`
	Wrong   int64  `json:"wrong_level"`
}

// Counts groups the share-row differences by object and cause.
func (f *FamilyDiff) Counts() map[[2]string]*DiffCount {
	out := map[[2]string]*DiffCount{}
	get := func(k shareKey) *DiffCount {
		key := [2]string{f.objectOf[k.rid], k.cause}
		if out[key] == nil {
			out[key] = &DiffCount{Object: key[0], Cause: key[1]}
		}
		return out[key]
	}
	for _, k := range f.ins {
		get(k).Missing++
	}
	for _, k := range f.del {
		get(k).Extra++
	}
	for _, k := range f.upd {
		get(k).Wrong++
	}
	return out
}

// Empty reports whether the stored rows are exactly the computed ones.
func (f *FamilyDiff) Empty() bool {
	return len(f.del)+len(f.ins)+len(f.upd) == 0 && f.RecordRowsDiffer == 0
}

// DiffFamilies recomputes the listed families and compares the result with
// the stored share and record rows of rids, what LockFamilies returned for
// them. It writes nothing.
func DiffFamilies(ctx context.Context, tx pgx.Tx, org *sharing.Org, d *Dict, roots []string, rids []int64) (*FamilyDiff, error) {
	in, err := LoadFamiliesOf(ctx, tx, org, roots)
	if err != nil {
		return nil, err
	}
	want := org.Compute(in)
	f := &FamilyDiff{roots: roots, records: want, objectOf: map[int64]string{}}
	desired := make(map[shareKey]shareVal, len(want.Shares))
	for _, s := range want.Shares {
		gid, ok := d.GID[s.Grantee]
		if !ok {
			return nil, fmt.Errorf("grantee %s is not in the dictionary", s.Grantee)
		}
		desired[shareKey{s.RID, gid, s.Cause}] = shareVal{int16(s.Level), s.BossOK}
	}
	wantRec := map[int64]sharing.RecordRow{}
	for _, r := range want.Records {
		wantRec[r.RID] = r
		f.objectOf[r.RID] = r.Object
	}
	for _, r := range in.Records {
		f.objectOf[r.RID] = r.Object
	}
	rows, err := tx.Query(ctx, `SELECT rid, id, object, coalesce(access_root, 0), coalesce(root_id, ''), coalesce(invalid, '')
		FROM recalc.acl_record WHERE rid = ANY($1)`, rids)
	if err != nil {
		return nil, fmt.Errorf("read stored record rows: %w", err)
	}
	var rr sharing.RecordRow
	seenRec := map[int64]bool{}
	_, err = pgx.ForEachRow(rows, []any{&rr.RID, &rr.ID, &rr.Object, &rr.AccessRoot, &rr.RootID, &rr.Invalid}, func() error {
		if _, ok := f.objectOf[rr.RID]; !ok {
			f.objectOf[rr.RID] = rr.Object
		}
		seenRec[rr.RID] = true
		if w, ok := wantRec[rr.RID]; !ok || w != rr {
			f.RecordRowsDiffer++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read stored record rows: %w", err)
	}
	for rid := range wantRec {
		if !seenRec[rid] {
			f.RecordRowsDiffer++
		}
	}
	rows, err = tx.Query(ctx, `
		SELECT rid, gid, cause, level, boss_ok FROM recalc.acl_share WHERE rid = ANY($1)`, rids)
	if err != nil {
		return nil, fmt.Errorf("read stored share rows: %w", err)
	}
	var k shareKey
	var v shareVal
	seen := map[shareKey]bool{}
	_, err = pgx.ForEachRow(rows, []any{&k.rid, &k.gid, &k.cause, &v.level, &v.bossOK}, func() error {
		seen[k] = true
		w, ok := desired[k]
		switch {
		case !ok:
			f.del = append(f.del, k)
		case w != v:
			f.upd = append(f.upd, k)
			f.updVals = append(f.updVals, w)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read stored share rows: %w", err)
	}
	for key, val := range desired {
		if !seen[key] {
			f.ins = append(f.ins, key)
			f.insVals = append(f.insVals, val)
		}
	}
	return f, nil
}

// Apply writes the difference with unnest arrays. The caller holds the
// families' locks (LockFamilies).
func (f *FamilyDiff) Apply(ctx context.Context, tx pgx.Tx) (*Written, error) {
	st := &Written{Records: int64(len(f.records.Records)), Invalid: f.records.Invalid}
	if len(f.del) > 0 {
		rids, gids, causes := splitKeys(f.del)
		tag, err := tx.Exec(ctx, `DELETE FROM recalc.acl_share s USING unnest($1::bigint[], $2::int[], $3::text[]) AS d (rid, gid, cause)
			WHERE s.rid = d.rid AND s.gid = d.gid AND s.cause = d.cause`, rids, gids, causes)
		if err != nil {
			return nil, fmt.Errorf("delete share rows: %w", err)
		}
		st.Removed = tag.RowsAffected()
	}
	if len(f.ins) > 0 {
		rids, gids, causes := splitKeys(f.ins)
		levels, boss := splitVals(f.insVals)
		tag, err := tx.Exec(ctx, `INSERT INTO recalc.acl_share (rid, gid, cause, level, boss_ok)
			SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::smallint[], $5::boolean[])`, rids, gids, causes, levels, boss)
		if err != nil {
			return nil, fmt.Errorf("insert share rows: %w", err)
		}
		st.Added = tag.RowsAffected()
	}
	if len(f.upd) > 0 {
		rids, gids, causes := splitKeys(f.upd)
		levels, boss := splitVals(f.updVals)
		tag, err := tx.Exec(ctx, `UPDATE recalc.acl_share s SET level = u.level, boss_ok = u.boss_ok
			FROM unnest($1::bigint[], $2::int[], $3::text[], $4::smallint[], $5::boolean[]) AS u (rid, gid, cause, level, boss_ok)
			WHERE s.rid = u.rid AND s.gid = u.gid AND s.cause = u.cause`, rids, gids, causes, levels, boss)
		if err != nil {
			return nil, fmt.Errorf("update share rows: %w", err)
		}
		st.Updated = tag.RowsAffected()
	}
	// Record rows: delete the ones gone from these families, upsert the rest.
	if f.RecordRowsDiffer == 0 { // as computed, usually after a rule change
		return st, nil
	}
	recs := f.records.Records
	keep := make([]int64, len(recs))
	ids, objects, rootIDs := make([]string, len(recs)), make([]string, len(recs)), make([]string, len(recs))
	accessRoots, invalid := make([]*int64, len(recs)), make([]*string, len(recs))
	for i, r := range recs {
		keep[i], ids[i], objects[i], rootIDs[i], invalid[i] = r.RID, r.ID, r.Object, r.RootID, nullable(r.Invalid)
		if r.AccessRoot != 0 {
			ar := r.AccessRoot
			accessRoots[i] = &ar
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM recalc.acl_record WHERE root_id = ANY($1) AND rid NOT IN (SELECT unnest($2::bigint[]))`, f.roots, keep); err != nil {
		return nil, fmt.Errorf("delete record rows: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO recalc.acl_record (rid, id, object, access_root, root_id, invalid)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
		ON CONFLICT (rid) DO UPDATE SET id = excluded.id, object = excluded.object,
			access_root = excluded.access_root, root_id = excluded.root_id, invalid = excluded.invalid
		WHERE (acl_record.id, acl_record.object, acl_record.access_root, acl_record.root_id, acl_record.invalid)
		      IS DISTINCT FROM (excluded.id, excluded.object, excluded.access_root, excluded.root_id, excluded.invalid)`,
		keep, ids, objects, accessRoots, rootIDs, invalid); err != nil {
		return nil, fmt.Errorf("upsert record rows: %w", err)
	}
	return st, nil
}

// nullable is s, or NULL when s is empty.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
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
func LoadDict(ctx context.Context, q pg.Querier) (*Dict, error) {
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

// ClosureDiff is how the stored closure differs from org's.
type ClosureDiff struct {
	delG, delU, insG, insU []int32
	insB                   []bool
}

// Missing and Extra count the entries the stored closure lacks or has too
// many of (an entry with the wrong boss flag counts in both).
func (c *ClosureDiff) Missing() int64 { return int64(len(c.insG)) }
func (c *ClosureDiff) Extra() int64   { return int64(len(c.delG)) }

// DiffClosureOf compares acl_member with org's closure. It writes nothing.
// It merges the stored entries, read in key order, with the computed ones,
// grantee by grantee in the same order: no set of either is held.
func DiffClosureOf(ctx context.Context, q pg.Querier, org *sharing.Org, d *Dict) (*ClosureDiff, error) {
	type entry struct {
		gid, uid int32
		boss     bool
	}
	grantees := org.Grantees()
	gids := make([]int32, len(grantees))
	order := make([]int, len(grantees))
	for i, g := range grantees {
		gid, ok := d.GID[g.String()]
		if !ok {
			return nil, fmt.Errorf("grantee %s is not in the dictionary", g)
		}
		gids[i], order[i] = gid, i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(gids[a], gids[b]) })
	var want []entry // the computed entries of one grantee, by uid
	next := 0        // the next grantee in order
	var unknown error
	// peek returns the next computed entry, computing grantees as needed.
	peek := func() (entry, bool) {
		for len(want) == 0 && next < len(order) && unknown == nil {
			i := order[next]
			next++
			for _, m := range org.Closure(grantees[i]) {
				uid, ok := d.UID[m.User]
				if !ok {
					unknown = fmt.Errorf("user %s is not in the dictionary", m.User)
				}
				want = append(want, entry{gids[i], uid, m.Boss})
			}
			slices.SortFunc(want, func(a, b entry) int { return cmp.Compare(a.uid, b.uid) })
		}
		if len(want) == 0 {
			return entry{}, false
		}
		return want[0], true
	}
	c := &ClosureDiff{}
	insert := func(e entry) {
		c.insG, c.insU, c.insB = append(c.insG, e.gid), append(c.insU, e.uid), append(c.insB, e.boss)
	}
	remove := func(e entry) { c.delG, c.delU = append(c.delG, e.gid), append(c.delU, e.uid) }
	rows, err := q.Query(ctx, `SELECT gid, uid, boss FROM recalc.acl_member ORDER BY gid, uid`)
	if err != nil {
		return nil, fmt.Errorf("read closure: %w", err)
	}
	var have entry
	_, err = pgx.ForEachRow(rows, []any{&have.gid, &have.uid, &have.boss}, func() error {
		for {
			w, ok := peek()
			switch {
			case !ok || w.gid > have.gid || w.gid == have.gid && w.uid > have.uid:
				remove(have)
				return nil
			case w.gid == have.gid && w.uid == have.uid:
				if w.boss != have.boss { // counts as both missing and extra
					remove(have)
					insert(w)
				}
				want = want[1:]
				return nil
			}
			insert(w) // stored entries have gone past it
			want = want[1:]
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read closure: %w", err)
	}
	for w, ok := peek(); ok; w, ok = peek() {
		insert(w)
		want = want[1:]
	}
	if unknown != nil {
		return nil, unknown
	}
	return c, nil
}

// Grantees lists the grantee ids whose members change.
func (c *ClosureDiff) Grantees() []int32 {
	seen := map[int32]bool{}
	var out []int32
	for _, g := range append(append([]int32{}, c.delG...), c.insG...) {
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out
}

// Apply writes the closure difference.
func (c *ClosureDiff) Apply(ctx context.Context, tx pgx.Tx) (*ClosureStats, error) {
	st := &ClosureStats{}
	tag, err := tx.Exec(ctx, `DELETE FROM recalc.acl_member m USING unnest($1::int[], $2::int[]) AS d (gid, uid)
		WHERE m.gid = d.gid AND m.uid = d.uid`, c.delG, c.delU)
	if err != nil {
		return nil, fmt.Errorf("delete closure entries: %w", err)
	}
	st.Removed = tag.RowsAffected()
	tag, err = tx.Exec(ctx, `INSERT INTO recalc.acl_member (gid, uid, boss) SELECT * FROM unnest($1::int[], $2::int[], $3::boolean[])`, c.insG, c.insU, c.insB)
	if err != nil {
		return nil, fmt.Errorf("insert closure entries: %w", err)
	}
	st.Added = tag.RowsAffected()
	return st, nil
}

// DiffClosure brings acl_member to org's closure, writing only the entries
// that changed, and rewrites the small acl_user table.
func DiffClosure(ctx context.Context, tx pgx.Tx, org *sharing.Org, d *Dict) (*ClosureStats, error) {
	c, err := DiffClosureOf(ctx, tx, org, d)
	if err != nil {
		return nil, err
	}
	st, err := c.Apply(ctx, tx)
	if err != nil {
		return nil, err
	}
	return st, WriteUsers(ctx, tx, org, d)
}

// RecordsByObject counts every record by object.
func RecordsByObject(ctx context.Context, q pg.Querier) (map[string]int64, error) {
	rows, err := q.Query(ctx, `SELECT object, count(*) FROM recalc.record GROUP BY object`)
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
