package sharetable

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/sharing"
)

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

// RepairFamilies is ApplyFamilies for families that are expected not to
// have changed, as a full job in place finds nearly all: it diffs them
// first without locking them and, when nothing differs, writes and locks
// nothing (a row lock writes too: a WAL record for every row, and a dirtied
// page, which the application's commits would then wait to flush). When
// something differs, or a record moved between the reads, it locks and
// diffs again, as ApplyFamilies does; families with no row stored yet (a
// first computation in place) go there at once. Skipping is safe: it
// writes nothing over another writer, and a write committed since the job
// was planned has a change row of its own, which a later run materializes.
func RepairFamilies(ctx context.Context, tx pgx.Tx, org *sharing.Org, d *Dict, roots []string) (*Written, error) {
	var stored bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.acl_record WHERE root_id = ANY($1))`, roots).Scan(&stored); err != nil {
		return nil, fmt.Errorf("look up materialized families: %w", err)
	}
	if !stored {
		return ApplyFamilies(ctx, tx, org, d, roots)
	}
	rids, err := FamilyRIDs(ctx, tx, roots)
	if err != nil {
		return nil, err
	}
	diff, err := DiffFamilies(ctx, tx, org, d, roots, rids)
	switch {
	case err == nil && diff.Empty():
		return diff.Apply(ctx, tx) // counts the records, writes nothing
	case err != nil && !errors.Is(err, errFamiliesMoved):
		return nil, err // a server's error aborted the transaction: the chunk is retried whole
	}
	return ApplyFamilies(ctx, tx, org, d, roots)
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
	stored   []sharing.RecordRow // the stored record rows, for the feed
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
	for _, r := range in.Records {
		if _, found := slices.BinarySearch(rids, r.RID); !found {
			return nil, errMoved(fmt.Sprintf("record %d", r.RID))
		}
	}
	want := org.Compute(in)
	f := &FamilyDiff{roots: roots, records: want, objectOf: map[int64]string{}}
	for _, r := range want.Records {
		f.objectOf[r.RID] = r.Object
	}
	for _, r := range in.Records {
		f.objectOf[r.RID] = r.Object
	}
	if err := f.diffRecords(ctx, tx, rids); err != nil {
		return nil, err
	}
	if err := f.diffShares(ctx, tx, d, rids); err != nil {
		return nil, err
	}
	return f, nil
}

// diffRecords counts the stored record rows of rids that differ from the
// computed ones, or are missing on either side.
func (f *FamilyDiff) diffRecords(ctx context.Context, tx pgx.Tx, rids []int64) error {
	want := make(map[int64]sharing.RecordRow, len(f.records.Records))
	for _, r := range f.records.Records {
		want[r.RID] = r
	}
	rows, err := tx.Query(ctx, `SELECT rid, id, object, coalesce(access_root, 0), coalesce(root_id, ''), coalesce(invalid, '')
		FROM recalc.acl_record WHERE rid = ANY($1)`, rids)
	if err != nil {
		return fmt.Errorf("read stored record rows: %w", err)
	}
	var rr sharing.RecordRow
	seen := map[int64]bool{}
	_, err = pgx.ForEachRow(rows, []any{&rr.RID, &rr.ID, &rr.Object, &rr.AccessRoot, &rr.RootID, &rr.Invalid}, func() error {
		if _, ok := f.objectOf[rr.RID]; !ok {
			f.objectOf[rr.RID] = rr.Object
		}
		seen[rr.RID] = true
		f.stored = append(f.stored, rr)
		if w, ok := want[rr.RID]; !ok || w != rr {
			f.RecordRowsDiffer++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read stored record rows: %w", err)
	}
	for rid := range want {
		if !seen[rid] {
			f.RecordRowsDiffer++
		}
	}
	return nil
}

// diffShares sorts the share rows of rids into those to delete, update and
// insert so that the stored rows become the computed ones.
func (f *FamilyDiff) diffShares(ctx context.Context, tx pgx.Tx, d *Dict, rids []int64) error {
	desired := make(map[shareKey]shareVal, len(f.records.Shares))
	for _, s := range f.records.Shares {
		gid, ok := d.GID[s.Grantee]
		if !ok {
			return fmt.Errorf("grantee %s is not in the dictionary", s.Grantee)
		}
		desired[shareKey{s.RID, gid, s.Cause}] = shareVal{int16(s.Level), s.BossOK}
	}
	rows, err := tx.Query(ctx, `
		SELECT rid, gid, cause, level, boss_ok FROM recalc.acl_share WHERE rid = ANY($1)`, rids)
	if err != nil {
		return fmt.Errorf("read stored share rows: %w", err)
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
		return fmt.Errorf("read stored share rows: %w", err)
	}
	for key, val := range desired {
		if !seen[key] {
			f.ins = append(f.ins, key)
			f.insVals = append(f.insVals, val)
		}
	}
	return nil
}

// Apply writes the difference with unnest arrays. The caller holds the
// families' locks (LockFamilies).
func (f *FamilyDiff) Apply(ctx context.Context, tx pgx.Tx) (*Written, error) {
	st := &Written{Records: int64(len(f.records.Records)), Invalid: f.records.Invalid}
	if err := f.recordFeed(ctx, tx); err != nil {
		return nil, err
	}
	var err error
	if st.Removed, err = writeShares(ctx, tx, "delete", `DELETE FROM recalc.acl_share s
		USING unnest($1::bigint[], $2::int[], $3::text[]) AS d (rid, gid, cause)
		WHERE s.rid = d.rid AND s.gid = d.gid AND s.cause = d.cause`, f.del, nil); err != nil {
		return nil, err
	}
	if st.Added, err = writeShares(ctx, tx, "insert", `INSERT INTO recalc.acl_share (rid, gid, cause, level, boss_ok)
		SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::smallint[], $5::boolean[])
		ON CONFLICT (rid, gid, cause) DO NOTHING`, f.ins, f.insVals); err != nil {
		return nil, err
	}
	if st.Added < int64(len(f.ins)) { // rows of a record it holds no lock on: see LockFamilies
		return nil, errMoved("share rows written by another writer")
	}
	if st.Updated, err = writeShares(ctx, tx, "update", `UPDATE recalc.acl_share s SET level = u.level, boss_ok = u.boss_ok
		FROM unnest($1::bigint[], $2::int[], $3::text[], $4::smallint[], $5::boolean[]) AS u (rid, gid, cause, level, boss_ok)
		WHERE s.rid = u.rid AND s.gid = u.gid AND s.cause = u.cause`, f.upd, f.updVals); err != nil {
		return nil, err
	}
	if f.RecordRowsDiffer == 0 { // as computed, usually after a rule change
		return st, nil
	}
	return st, f.writeRecordRows(ctx, tx)
}

// writeShares runs sql, a statement over share rows as unnest arrays of
// their keys and, when vals is not nil, their values, unless there is no
// row. It returns the number of rows written; verb names the write in
// errors.
func writeShares(ctx context.Context, tx pgx.Tx, verb, sql string, keys []shareKey, vals []shareVal) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	rids, gids, causes := splitKeys(keys)
	args := []any{rids, gids, causes}
	if vals != nil {
		levels, boss := splitVals(vals)
		args = append(args, levels, boss)
	}
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return 0, fmt.Errorf("%s share rows: %w", verb, err)
	}
	return tag.RowsAffected(), nil
}

// writeRecordRows deletes the record rows gone from the families, inserts
// those of records new to them and updates the rest.
func (f *FamilyDiff) writeRecordRows(ctx context.Context, tx pgx.Tx) error {
	stored := make(map[int64]bool, len(f.stored))
	for _, r := range f.stored {
		stored[r.RID] = true
	}
	want := make(map[int64]bool, len(f.records.Records))
	var old, added []sharing.RecordRow
	for _, r := range f.records.Records {
		want[r.RID] = true
		if stored[r.RID] {
			old = append(old, r)
		} else {
			added = append(added, r)
		}
	}
	// The rows gone are the stored ones (every materialized row of the
	// families, locked: LockFamilies) no computed row keeps, told apart
	// here and deleted by primary key, in the families still. In SQL,
	// `rid NOT IN (SELECT unnest(kept))` checked every row of the families
	// against the whole list once the list outgrew work_mem (a custom
	// plan), and a set difference joined back on root_id, whose
	// statistics a family just grown leaves at one row, was rescanned per
	// row: quadratic in the family (TestCostBigFamilyWriteLinear).
	var gone []int64
	for _, r := range f.stored {
		if !want[r.RID] {
			gone = append(gone, r.RID)
		}
	}
	if len(gone) > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM recalc.acl_record WHERE rid = ANY($1::bigint[]) AND root_id = ANY($2)`,
			gone, f.roots); err != nil {
			return fmt.Errorf("delete record rows: %w", err)
		}
	}
	// A record new to the families has no row LockFamilies could lock: one
	// that another writer inserted meanwhile is a conflict, not an update.
	n, err := upsertRecordRows(ctx, tx, added, `DO NOTHING`)
	if err != nil {
		return err
	}
	if n < int64(len(added)) {
		return errMoved("record rows written by another writer")
	}
	_, err = upsertRecordRows(ctx, tx, old, `DO UPDATE SET id = excluded.id, object = excluded.object,
			access_root = excluded.access_root, root_id = excluded.root_id, invalid = excluded.invalid
		WHERE (acl_record.id, acl_record.object, acl_record.access_root, acl_record.root_id, acl_record.invalid)
		      IS DISTINCT FROM (excluded.id, excluded.object, excluded.access_root, excluded.root_id, excluded.invalid)`)
	return err
}

// upsertRecordRows inserts recs into recalc.acl_record, doing onConflict
// for the rids already there, and returns the number of rows written.
func upsertRecordRows(ctx context.Context, tx pgx.Tx, recs []sharing.RecordRow, onConflict string) (int64, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	rids := make([]int64, len(recs))
	ids, objects, rootIDs := make([]string, len(recs)), make([]string, len(recs)), make([]string, len(recs))
	accessRoots, invalid := make([]*int64, len(recs)), make([]*string, len(recs))
	for i, r := range recs {
		rids[i], ids[i], objects[i], rootIDs[i], invalid[i] = r.RID, r.ID, r.Object, r.RootID, nullable(r.Invalid)
		if r.AccessRoot != 0 {
			ar := r.AccessRoot
			accessRoots[i] = &ar
		}
	}
	tag, err := tx.Exec(ctx, `
		INSERT INTO recalc.acl_record (rid, id, object, access_root, root_id, invalid)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
		ON CONFLICT (rid) `+onConflict, rids, ids, objects, accessRoots, rootIDs, invalid)
	if err != nil {
		return 0, fmt.Errorf("write record rows: %w", err)
	}
	return tag.RowsAffected(), nil
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

// Naming returns the roots, among the families f computed, of those that
// hold a record named (by id), as stored now or as last materialized.
func (f *FamilyDiff) Naming(named func(id string) bool) []string {
	hit := map[string]bool{}
	for _, r := range f.records.Records {
		hit[r.RootID] = hit[r.RootID] || named(r.ID)
	}
	for _, s := range f.stored {
		hit[s.RootID] = hit[s.RootID] || named(s.ID)
	}
	var out []string
	for _, r := range f.roots {
		if hit[r] {
			out = append(out, r)
		}
	}
	return out
}
