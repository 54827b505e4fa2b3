package sharetable

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"

	"github.com/recalc-dev/recalc/internal/sharing"
)

// The lookups below return the root ids of the families that hold some
// records, in no particular order, without repeats; the planner's selectors
// name the records, and internal/engine picks the lookup. A lookup by record
// id or by object takes both the family a record is in now and the one it
// was last computed in, so a record that moved or disappeared leaves its old
// family correct too.

// RootsOfRecords returns the roots of the families of the records with the
// given ids, stored or materialized.
func RootsOfRecords(ctx context.Context, q pg.Querier, ids []string) ([]string, error) {
	return readColumn[string](ctx, q, "families of records", `SELECT root_id FROM recalc.record WHERE id = ANY($1) AND root_id IS NOT NULL
		UNION SELECT root_id FROM recalc.acl_record WHERE id = ANY($1)`, ids)
}

// Member is a record of a family: its id, and the family's root.
type Member struct{ Root, ID string }

// FamilyMembers returns the records of the families of roots, as stored
// and as last materialized (a record in both, or moved between two of
// them, is listed under each).
func FamilyMembers(ctx context.Context, q pg.Querier, roots []string) ([]Member, error) {
	return readMembers(ctx, q, `SELECT root_id, id FROM recalc.record WHERE root_id = ANY($1)
		UNION SELECT root_id, id FROM recalc.acl_record WHERE root_id = ANY($1)`, roots)
}

// MaterializedMembers returns the records last materialized in the
// families whose root id lies in [lo, hi].
func MaterializedMembers(ctx context.Context, q pg.Querier, lo, hi string) ([]Member, error) {
	return readMembers(ctx, q, `SELECT root_id, id FROM recalc.acl_record WHERE root_id BETWEEN $1 AND $2`, lo, hi)
}

func readMembers(ctx context.Context, q pg.Querier, sql string, args ...any) ([]Member, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read families' records: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Member])
	if err != nil {
		return nil, fmt.Errorf("read families' records: %w", err)
	}
	return out, nil
}

// MovedFamilies returns, for the records that moved to another family
// since they were materialized, with the family of either side among
// roots (nil: every family), the root of the family each was materialized
// in and the root of the one it is in now, each pair once. An id that
// passed from one record to another since (ids swapped or changed in
// place, a record deleted and another inserted under its id) counts as a
// move too: from the family that materialized it under the first to the
// family of the second. Until one chunk writes both, acl_record would
// hold the id twice, once in each family: a record listed twice by
// visible_records, rls_records and rls_keys, and the access of one
// object's record read as another's by access_level(user, object, id).
func MovedFamilies(ctx context.Context, q pg.Querier, roots []string) ([][2]string, error) {
	// The families' records on each side, joined whole (a hash join: an
	// index probe per record took twice as long), then the other side of
	// the few that moved in or out of them, or changed id, probed by rid
	// one by one, and the record or materialized row holding the id each
	// had or has, probed by id. The planner counts nearly every joined
	// record as moved: with joins for the other side, a custom plan (pgx's
	// first five executions of it on a connection) hashed both tables
	// whole, 0.77 s for 20,000 families of 2,000,000 records, where the
	// probes take 0.09 s. OFFSET 0 keeps the probes in the select list, run
	// only for a side that is missing.
	query := `
		WITH d AS MATERIALIZED (
			SELECT rid, coalesce(d.was, (SELECT x.root_id FROM recalc.acl_record x WHERE x.rid = d.rid)) AS was,
			       coalesce(d.now, (SELECT y.root_id FROM recalc.record y WHERE y.rid = d.rid)) AS now,
			       CASE WHEN d.was IS NOT NULL THEN d.was_id ELSE (SELECT x.id FROM recalc.acl_record x WHERE x.rid = d.rid) END AS was_id,
			       CASE WHEN d.now IS NOT NULL THEN d.now_id ELSE (SELECT y.id FROM recalc.record y WHERE y.rid = d.rid) END AS now_id
			FROM (SELECT rid, a.root_id AS was, r.root_id AS now, a.id AS was_id, r.id AS now_id
				FROM (SELECT rid, root_id, id FROM recalc.acl_record WHERE root_id = ANY($1)) a
				FULL JOIN (SELECT rid, root_id, id FROM recalc.record WHERE root_id = ANY($1)) r USING (rid)
				WHERE a.root_id IS DISTINCT FROM r.root_id OR a.id IS DISTINCT FROM r.id) d
			OFFSET 0
		)
		SELECT was, now FROM d WHERE was <> now
		UNION
		SELECT d.was, y.root FROM d CROSS JOIN LATERAL (
			SELECT y.root_id AS root FROM recalc.record y WHERE y.id = d.was_id AND y.rid <> d.rid OFFSET 0) y
		WHERE d.was <> y.root
		UNION
		SELECT x.root, d.now FROM d CROSS JOIN LATERAL (
			SELECT x.root_id AS root FROM recalc.acl_record x WHERE x.id = d.now_id AND x.rid <> d.rid OFFSET 0) x
		WHERE x.root <> d.now`
	args := []any{roots}
	if roots == nil {
		query, args = `SELECT a.root_id, r.root_id FROM recalc.acl_record a JOIN recalc.record r USING (rid)
			WHERE a.root_id <> r.root_id
			UNION
			SELECT a.root_id, r.root_id FROM recalc.acl_record a JOIN recalc.record r ON r.id = a.id AND r.rid <> a.rid
			WHERE a.root_id <> r.root_id`, nil
	}
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("find records moved between families: %w", err)
	}
	var out [][2]string
	var p [2]string
	if _, err := pgx.ForEachRow(rows, []any{&p[0], &p[1]}, func() error { out = append(out, p); return nil }); err != nil {
		return nil, fmt.Errorf("find records moved between families: %w", err)
	}
	return out, nil
}

// RootsOfObject returns the roots of the families of every record of
// object, stored or materialized.
func RootsOfObject(ctx context.Context, q pg.Querier, object string) ([]string, error) {
	return readColumn[string](ctx, q, "families of an object", `SELECT root_id FROM recalc.record WHERE object = $1 AND root_id IS NOT NULL
		UNION SELECT root_id FROM recalc.acl_record WHERE object = $1`, object)
}

// RootsOfOwners returns the roots of the families of the stored records of
// object (any object when it is empty) that the given users or queues own.
func RootsOfOwners(ctx context.Context, q pg.Querier, object string, owners []string) ([]string, error) {
	return readColumn[string](ctx, q, "families of owners", `SELECT DISTINCT root_id FROM recalc.record
		WHERE ($1 = '' OR object = $1) AND owner = ANY($2) AND root_id IS NOT NULL`, object, owners)
}

// RootsOfTerritories returns the roots of the families of the stored
// records of object assigned to any of the given territories.
func RootsOfTerritories(ctx context.Context, q pg.Querier, object string, territories []string) ([]string, error) {
	return readColumn[string](ctx, q, "families of territories",
		`SELECT DISTINCT root_id FROM recalc.record WHERE object = $1 AND territories && $2 AND root_id IS NOT NULL`, object, territories)
}

// RootsMatching returns the roots of the families of object's stored
// records that crit matches, and of those whose fields cannot be read (they
// become invalid). It decides with the very code recalculation uses, in Go,
// on the records a SQL filter lets through (criteriaFilter).
func RootsMatching(ctx context.Context, q pg.Querier, object string, crit *model.Criteria) ([]string, error) {
	filter, args := criteriaFilter(crit, []any{object})
	rows, err := q.Query(ctx, `SELECT root_id, left(fields::text, `+fmt.Sprint(maxFieldsText+1)+`) FROM recalc.record r
		WHERE object = $1 AND root_id IS NOT NULL AND `+filter, args...)
	if err != nil {
		return nil, fmt.Errorf("match criteria: %w", err)
	}
	set := map[string]bool{}
	var roots []string
	var root string
	var text []byte
	_, err = pgx.ForEachRow(rows, []any{&root, &text}, func() error {
		// An unreadable record is recomputed too: it becomes invalid.
		if f, unreadable := readFields(text); (unreadable || crit.Match(f)) && !set[root] {
			set[root] = true
			roots = append(roots, root)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("match criteria: %w", err)
	}
	return roots, nil
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

// FamilyRoots returns the root id of every record family, stored or
// materialized (a family whose records were all deleted is still to
// clear), but those listed in except: in byte order, or, when sample is
// positive, that many of them at random.
func FamilyRoots(ctx context.Context, q pg.Querier, except []string, sample int) ([]string, error) {
	var limit *int64 // NULL: no limit
	if sample > 0 {
		n := int64(sample)
		limit = &n
	}
	if except == nil {
		except = []string{}
	}
	return readColumn[string](ctx, q, "record families", `
		SELECT root_id FROM (SELECT root_id FROM recalc.record UNION SELECT root_id FROM recalc.acl_record) r
		WHERE root_id IS NOT NULL AND root_id <> ALL($1)
		ORDER BY CASE WHEN $2 THEN random() END, root_id LIMIT $3`, except, sample > 0, limit)
}

// EachFamily calls fn with the root id and the number of records of every
// stored record family, in root id byte order.
func EachFamily(ctx context.Context, q pg.Querier, fn func(root string, records int64)) error {
	rows, err := q.Query(ctx, `SELECT root_id, count(*) FROM recalc.record WHERE root_id IS NOT NULL GROUP BY root_id ORDER BY root_id`)
	if err != nil {
		return fmt.Errorf("list record families: %w", err)
	}
	var root string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&root, &n}, func() error { fn(root, n); return nil }); err != nil {
		return fmt.Errorf("list record families: %w", err)
	}
	return nil
}

// FindRecord returns where the stored record id is, or nil when there is
// no such record.
func FindRecord(ctx context.Context, q pg.Querier, id string) (*RecordRef, error) {
	r := &RecordRef{}
	err := q.QueryRow(ctx, `SELECT coalesce(root_id, id), rid, object FROM recalc.record WHERE id = $1`, id).Scan(&r.Root, &r.RID, &r.Object)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find record %q: %w", id, err)
	}
	return r, nil
}

// RecordRef is where a stored record is: its surrogate id, its object and
// its family's root (itself while it has none yet).
type RecordRef struct {
	RID    int64
	Object string
	Root   string
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
// condition on root_id over the parameters args: their records
// (readRecords), shares and team entries.
func loadFamilies(ctx context.Context, q pg.Querier, org *sharing.Org, where string, args ...any) (*sharing.Input, error) {
	records, err := readRecords(ctx, q, org, where, args)
	if err != nil {
		return nil, err
	}
	in := &sharing.Input{Records: records, Shares: map[int64][]model.Share{}, Teams: map[int64][]model.Team{}}
	// A parent counts only within the record's family: one outside it (the
	// application wrote roots that disagree) leaves the record without a
	// parent, so invalid, whichever families a chunk holds.
	type ref struct {
		rid  int64
		root string
	}
	byID := make(map[string]ref, len(in.Records))
	for _, r := range in.Records {
		byID[r.ID] = ref{r.RID, r.RootID}
	}
	for i := range in.Records {
		if p, ok := byID[in.Records[i].Parent]; ok && p.root == in.Records[i].RootID {
			in.Records[i].ParentRID = p.rid
		}
	}
	rows, err := q.Query(ctx, `
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

// readRecords reads the records matching where (loadFamilies). Fields are
// read only for objects that have criteria rules, matched as each record is
// read and not kept; a record naming a territory longer than any of the
// model's is read without its territories, marked (it is invalid either
// way). So a chunk holds no record's fields, and no territory name longer
// than the model's.
func readRecords(ctx context.Context, q pg.Querier, org *sharing.Org, where string, args []any) ([]sharing.Record, error) {
	var withFields []string
	for _, o := range org.Index().Config.Objects {
		if org.HasCriteria(o.Name) {
			withFields = append(withFields, o.Name)
		}
	}
	longest := 0 // the longest territory id: a longer name is none
	for id := range org.Index().Territories {
		longest = max(longest, len(id))
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`
		SELECT rid, id, object, owner, coalesce(parent, ''), root_id, CASE WHEN x.long THEN '{}' ELSE %[2]s END, x.long,
		       CASE WHEN object = ANY($%[3]d) THEN left(fields::text, $%[4]d) END
		FROM recalc.record,
		     LATERAL (SELECT CASE WHEN array_ndims(territories) > 1 THEN false WHEN array_position(territories, NULL) IS NOT NULL THEN false -- read as {""}
		                          ELSE coalesce(max(octet_length(e)) > $%[1]d, false) END AS long
		              FROM unnest(territories) e) x
		WHERE %[5]s`, len(args)+1, changes.ReadTerritories("territories"), len(args)+2, len(args)+3, where),
		append(args, longest, withFields, maxFieldsText+1)...)
	if err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	var out []sharing.Record
	var r sharing.Record
	var fields []byte
	_, err = pgx.ForEachRow(rows, []any{&r.RID, &r.ID, &r.Object, &r.Owner, &r.Parent, &r.RootID, &r.Territories, &r.UnknownTerritory, &fields}, func() error {
		if fields != nil {
			r.Fields, r.Unreadable = readFields(fields)
			org.MatchCriteria(&r)
		}
		out = append(out, r)
		r = sharing.Record{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	return out, nil
}

// readFields parses a record's fields as read by readRecords, at most
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
