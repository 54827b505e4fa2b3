package sharetable

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/grants"
	"github.com/recalc-dev/recalc/internal/model"
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
		if _, err := tx.Exec(ctx, `INSERT INTO `+tbl+` (`+key+`) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, t.keys); err != nil {
			return nil, fmt.Errorf("update %s dictionary: %w", t.table, err)
		}
		rows, err := tx.Query(ctx, `SELECT `+key+`, `+id+` FROM `+tbl+` WHERE `+key+` = ANY($1)`, t.keys)
		if err != nil {
			return nil, fmt.Errorf("read %s dictionary: %w", t.table, err)
		}
		for rows.Next() {
			var k string
			var v int32
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read %s dictionary: %w", t.table, err)
			}
			t.dst[k] = v
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read %s dictionary: %w", t.table, err)
		}
	}
	return d, nil
}

// WriteConfig replaces the small materialized tables (acl_object, acl_user,
// acl_member) for org and records its configuration as applied.
func WriteConfig(ctx context.Context, tx pgx.Tx, org *grants.Org, d *Dict) error {
	ix := org.Index()
	if _, err := tx.Exec(ctx, `TRUNCATE recalc.acl_object, recalc.acl_user, recalc.acl_member`); err != nil {
		return fmt.Errorf("clear configuration tables: %w", err)
	}
	objs := make([][]any, 0, len(ix.Config.Objects))
	for _, o := range ix.Config.Objects {
		objs = append(objs, []any{o.Name, int16(o.InternalOWD.Level()), int16(o.ExternalOWD.Level()), o.CBP()})
	}
	users := [][]any{}
	for _, u := range ix.Config.Users {
		if u.Active {
			users = append(users, []any{d.UID[u.ID], u.ID, !u.External})
		}
	}
	var members [][]any
	for _, g := range org.Grantees() {
		gid := d.GID[g.String()]
		for _, m := range org.Closure(g) {
			members = append(members, []any{gid, d.UID[m.User], m.Boss})
		}
	}
	for _, c := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"acl_object", []string{"name", "internal_level", "external_level", "cbp"}, objs},
		{"acl_user", []string{"uid", "id", "internal"}, users},
		{"acl_member", []string{"gid", "uid", "boss"}, members},
	} {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"recalc", c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
			return fmt.Errorf("copy %s: %w", c.table, err)
		}
	}
	if _, err := tx.Exec(ctx, `TRUNCATE recalc.applied_section;
		INSERT INTO recalc.applied_section SELECT * FROM recalc.model_section`); err != nil {
		return fmt.Errorf("record applied configuration: %w", err)
	}
	return nil
}

// RootRanges splits the record families into chunks of about size records,
// returned as inclusive ranges of root record ids in byte order.
func RootRanges(ctx context.Context, q Querier, size int) ([][2]string, error) {
	rows, err := q.Query(ctx, `SELECT root_id, count(*) FROM recalc.record GROUP BY root_id ORDER BY root_id`)
	if err != nil {
		return nil, fmt.Errorf("list record families: %w", err)
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
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list record families: %w", err)
	}
	return out, nil
}

// LoadFamilies reads the records, shares and team entries of the families
// whose root id lies in [lo, hi]. Fields are read only for objects that
// have criteria rules.
func LoadFamilies(ctx context.Context, q Querier, org *grants.Org, lo, hi string) (*grants.Input, error) {
	var withFields []string
	for _, o := range org.Index().Config.Objects {
		if org.HasCriteria(o.Name) {
			withFields = append(withFields, o.Name)
		}
	}
	in := &grants.Input{Shares: map[int64][]model.Share{}, Teams: map[int64][]model.Team{}}
	rows, err := q.Query(ctx, `
		SELECT rid, id, object, owner, coalesce(parent, ''), territories,
		       CASE WHEN object = ANY($3) THEN fields END
		FROM recalc.record WHERE root_id BETWEEN $1 AND $2`, lo, hi, withFields)
	if err != nil {
		return nil, fmt.Errorf("read records %q..%q: %w", lo, hi, err)
	}
	var r grants.Record
	_, err = pgx.ForEachRow(rows, []any{&r.RID, &r.ID, &r.Object, &r.Owner, &r.Parent, &r.Territories, &r.Fields}, func() error {
		in.Records = append(in.Records, r)
		r = grants.Record{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read records %q..%q: %w", lo, hi, err)
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
		FROM recalc.share_input s JOIN recalc.record r ON r.id = s.record
		WHERE r.root_id BETWEEN $1 AND $2`, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("read shares %q..%q: %w", lo, hi, err)
	}
	for rows.Next() {
		var rid int64
		var s model.Share
		var g string
		if err := rows.Scan(&rid, &s.Object, &g, &s.Access, &s.Cause); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read shares %q..%q: %w", lo, hi, err)
		}
		if s.Grantee, err = model.ParseGrantee(g, false); err != nil {
			rows.Close()
			return nil, fmt.Errorf("stored share on rid %d: %w", rid, err)
		}
		in.Shares[rid] = append(in.Shares[rid], s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read shares %q..%q: %w", lo, hi, err)
	}
	rows, err = q.Query(ctx, `
		SELECT r.rid, t.user_id, t.access, t.contact_access, t.opportunity_access, t.case_access
		FROM recalc.team t JOIN recalc.record r ON r.id = t.record
		WHERE r.root_id BETWEEN $1 AND $2`, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("read teams %q..%q: %w", lo, hi, err)
	}
	for rows.Next() {
		var rid int64
		var t model.Team
		if err := rows.Scan(&rid, &t.User, &t.Access, &t.Child.Contact, &t.Child.Opportunity, &t.Child.Case); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read teams %q..%q: %w", lo, hi, err)
		}
		in.Teams[rid] = append(in.Teams[rid], t)
	}
	return in, rows.Err()
}

// Staging tables of a full recalculation, swapped in when complete.
const (
	nextShare  = "acl_share_next"
	nextRecord = "acl_record_next"
)

// PrepareFull creates empty, index-free staging tables for a full
// recalculation, dropping any left by an interrupted one.
func PrepareFull(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `
		DROP TABLE IF EXISTS recalc.acl_share_next, recalc.acl_record_next;
		CREATE TABLE recalc.acl_share_next (LIKE recalc.acl_share INCLUDING DEFAULTS);
		CREATE TABLE recalc.acl_record_next (LIKE recalc.acl_record INCLUDING DEFAULTS)`)
	if err != nil {
		return fmt.Errorf("create staging tables: %w", err)
	}
	return nil
}

// CopyRows writes computed rows into the staging tables and returns the
// number of share rows written.
func CopyRows(ctx context.Context, pool *pgxpool.Pool, rows *grants.Rows, d *Dict) (int64, error) {
	i := 0
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"recalc", nextShare}, []string{"rid", "gid", "level", "cause", "boss_ok"},
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
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"recalc", nextRecord}, []string{"rid", "id", "object", "access_root"},
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
			return []any{r.RID, r.ID, r.Object, root}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("copy record rows: %w", err)
	}
	return n, nil
}

// SwapFull indexes the staging tables and swaps them in for the live ones.
// Readers see the old tables until tx commits, then the new ones.
func SwapFull(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `
		ALTER TABLE recalc.acl_share_next ADD CONSTRAINT acl_share_next_pkey PRIMARY KEY (rid, gid, cause);
		CREATE INDEX acl_share_next_gid_idx ON recalc.acl_share_next (gid, rid);
		ALTER TABLE recalc.acl_record_next ADD CONSTRAINT acl_record_next_pkey PRIMARY KEY (rid);
		ALTER TABLE recalc.acl_record_next ADD CONSTRAINT acl_record_next_id_key UNIQUE (id);
		DROP TABLE recalc.acl_share, recalc.acl_record;
		ALTER TABLE recalc.acl_share_next RENAME TO acl_share;
		ALTER TABLE recalc.acl_share RENAME CONSTRAINT acl_share_next_pkey TO acl_share_pkey;
		ALTER INDEX recalc.acl_share_next_gid_idx RENAME TO acl_share_gid_idx;
		ALTER TABLE recalc.acl_record_next RENAME TO acl_record;
		ALTER TABLE recalc.acl_record RENAME CONSTRAINT acl_record_next_pkey TO acl_record_pkey;
		ALTER TABLE recalc.acl_record RENAME CONSTRAINT acl_record_next_id_key TO acl_record_id_key;
		ANALYZE recalc.acl_share, recalc.acl_record, recalc.acl_member`)
	if err != nil {
		return fmt.Errorf("swap in recalculated tables: %w", err)
	}
	return nil
}
