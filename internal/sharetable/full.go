package sharetable

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

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

// WriteClosure replaces the whole closure (acl_member) and acl_user for org.
func WriteClosure(ctx context.Context, tx pgx.Tx, org *grants.Org, d *Dict) error {
	if _, err := tx.Exec(ctx, `TRUNCATE recalc.acl_member`); err != nil {
		return fmt.Errorf("clear closure: %w", err)
	}
	// Stream grantee by grantee: only one grantee's closure is in memory.
	grantees := org.Grantees()
	var gid int32
	var members []grants.Member
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
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"recalc", "acl_member"}, []string{"gid", "uid", "boss"}, src); err != nil {
		return fmt.Errorf("copy closure: %w", err)
	}
	return WriteUsers(ctx, tx, org, d)
}

// WriteUsers replaces acl_user: the active users and whether each is internal.
func WriteUsers(ctx context.Context, tx pgx.Tx, org *grants.Org, d *Dict) error {
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
func WriteObjects(ctx context.Context, tx pgx.Tx, org *grants.Org) error {
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

// Calculation sides, deferred and applied separately.
const (
	SideRules   = "rules"   // share rows, and the OWDs read with them
	SideClosure = "closure" // group membership: the closure and the user table
)

// SetApplied records config (a JSON object of configuration sections) as
// what side is computed from.
func SetApplied(ctx context.Context, tx pgx.Tx, side string, config []byte) error {
	if _, err := tx.Exec(ctx, `DELETE FROM recalc.applied_section WHERE side = $1`, side); err != nil {
		return fmt.Errorf("record applied configuration: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.applied_section (side, name, doc) SELECT $1, key, value FROM jsonb_each($2::jsonb)`,
		side, string(config)); err != nil {
		return fmt.Errorf("record applied configuration: %w", err)
	}
	return nil
}

// StoredConfig returns the stored configuration sections as one JSON object.
func StoredConfig(ctx context.Context, q Querier) ([]byte, error) {
	return configJSON(ctx, q, `SELECT coalesce(jsonb_object_agg(name, doc), '{}')::text FROM recalc.model_section`)
}

// AppliedConfig returns the configuration side was last computed from, as
// one JSON object ("{}" when never).
func AppliedConfig(ctx context.Context, q Querier, side string) ([]byte, error) {
	return configJSON(ctx, q, `SELECT coalesce(jsonb_object_agg(name, doc), '{}')::text FROM recalc.applied_section WHERE side = $1`, side)
}

func configJSON(ctx context.Context, q Querier, sql string, args ...any) ([]byte, error) {
	var doc []byte
	if err := q.QueryRow(ctx, sql, args...).Scan(&doc); err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return doc, nil
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
// whose root id lies in [lo, hi].
func LoadFamilies(ctx context.Context, q Querier, org *grants.Org, lo, hi string) (*grants.Input, error) {
	return loadFamilies(ctx, q, org, "root_id BETWEEN $1 AND $2", lo, hi)
}

// LoadFamiliesOf reads the families whose root ids are listed.
func LoadFamiliesOf(ctx context.Context, q Querier, org *grants.Org, roots []string) (*grants.Input, error) {
	return loadFamilies(ctx, q, org, "root_id = ANY($1)", roots)
}

// loadFamilies reads the families of the records matching where, a constant
// condition on root_id over the parameters args. Fields are read only for
// objects that have criteria rules.
func loadFamilies(ctx context.Context, q Querier, org *grants.Org, where string, args ...any) (*grants.Input, error) {
	var withFields []string
	for _, o := range org.Index().Config.Objects {
		if org.HasCriteria(o.Name) {
			withFields = append(withFields, o.Name)
		}
	}
	in := &grants.Input{Shares: map[int64][]model.Share{}, Teams: map[int64][]model.Team{}}
	rows, err := q.Query(ctx, fmt.Sprintf(`
		SELECT rid, id, object, owner, coalesce(parent, ''), root_id, territories,
		       CASE WHEN object = ANY($%d) THEN fields END
		FROM recalc.record WHERE %s`, len(args)+1, where), append(args, withFields)...)
	if err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	var r grants.Record
	_, err = pgx.ForEachRow(rows, []any{&r.RID, &r.ID, &r.Object, &r.Owner, &r.Parent, &r.RootID, &r.Territories, &r.Fields}, func() error {
		in.Records = append(in.Records, r)
		r = grants.Record{}
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
		FROM recalc.share_input s JOIN recalc.record r ON r.id = s.record WHERE r.`+where, args...)
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

// Staging tables of a full recalculation, swapped in when complete.
const (
	nextShare  = "acl_share_next"
	nextRecord = "acl_record_next"
)

// PrepareFull creates empty, index-free staging tables for a full
// recalculation, dropping any left by an interrupted one.
func PrepareFull(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `
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
func CopyRows(ctx context.Context, tx pgx.Tx, rows *grants.Rows, d *Dict) (int64, error) {
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
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"recalc", nextRecord}, []string{"rid", "id", "object", "access_root", "root_id"},
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
			return []any{r.RID, r.ID, r.Object, root, r.RootID}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("copy record rows: %w", err)
	}
	return n, nil
}

// SwapFull indexes the staging tables and swaps them in for the live ones.
// Readers see the old tables until tx commits, then the new ones. With
// countDrift it returns how many share rows the swap changes: the drift a
// full run repairs, plus changes not yet recalculated.
func SwapFull(ctx context.Context, tx pgx.Tx, countDrift bool) (drift int64, err error) {
	// The index builds sort every row; more memory means fewer sort runs.
	_, err = tx.Exec(ctx, `
		SET LOCAL maintenance_work_mem = '256MB';
		ALTER TABLE recalc.acl_share_next ADD CONSTRAINT acl_share_next_pkey PRIMARY KEY (rid, gid, cause);
		CREATE INDEX acl_share_next_gid_idx ON recalc.acl_share_next (gid, rid);
		ALTER TABLE recalc.acl_record_next ADD CONSTRAINT acl_record_next_pkey PRIMARY KEY (rid);
		CREATE INDEX acl_record_next_id_idx ON recalc.acl_record_next (id);
		CREATE INDEX acl_record_next_root_idx ON recalc.acl_record_next (root_id);
		CREATE INDEX acl_record_next_object_idx ON recalc.acl_record_next (object);
		CREATE INDEX acl_record_next_access_root_idx ON recalc.acl_record_next (access_root)`)
	if err != nil {
		return 0, fmt.Errorf("index recalculated tables: %w", err)
	}
	if countDrift {
		err = tx.QueryRow(ctx, `SELECT count(*) FROM recalc.acl_share a FULL JOIN recalc.acl_share_next b USING (rid, gid, cause)
			WHERE a.rid IS NULL OR b.rid IS NULL OR a.level <> b.level OR a.boss_ok <> b.boss_ok`).Scan(&drift)
		if err != nil {
			return 0, fmt.Errorf("count drift: %w", err)
		}
	}
	_, err = tx.Exec(ctx, `
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
		ANALYZE recalc.acl_share, recalc.acl_record, recalc.acl_member`)
	if err != nil {
		return 0, fmt.Errorf("swap in recalculated tables: %w", err)
	}
	return drift, nil
}
