package sharetable

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/sharing"
)

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

func (c *ClosureDiff) Extra() int64 { return int64(len(c.delG)) }

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

// ApplyRemovals deletes only the stored entries org's closure lacks (or
// holds with another boss flag), and returns how many. An incremental job
// commits them with its creation, before any chunk writes a share row, and
// the rest of the difference (Additions, by Apply) when it finishes: a share row a chunk
// added, meeting a membership the job removes, would otherwise give a user
// access that neither the old configuration nor the new one gives, until
// the job finished.
func (c *ClosureDiff) ApplyRemovals(ctx context.Context, tx pgx.Tx) (int64, error) {
	if len(c.delG) == 0 {
		return 0, nil
	}
	if err := feed.Grantees(ctx, tx, c.delG); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM recalc.acl_member m USING unnest($1::int[], $2::int[]) AS d (gid, uid)
		WHERE m.gid = d.gid AND m.uid = d.uid`, c.delG, c.delU)
	if err != nil {
		return 0, fmt.Errorf("delete closure entries: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Additions returns the entries the difference adds: the stored closure
// lacks them, or holds them with another boss flag.
func (c *ClosureDiff) Additions() (gids, uids []int32, boss []bool) {
	return c.insG, c.insU, c.insB
}

// ClosureAdditions is the difference that adds the entries (gids, uids,
// boss), as Additions returned them, and removes none.
func ClosureAdditions(gids, uids []int32, boss []bool) *ClosureDiff {
	return &ClosureDiff{insG: gids, insU: uids, insB: boss}
}

// Apply writes the closure difference.
func (c *ClosureDiff) Apply(ctx context.Context, tx pgx.Tx) (*ClosureStats, error) {
	removed, err := c.ApplyRemovals(ctx, tx)
	if err != nil {
		return nil, err
	}
	if len(c.insG) == 0 {
		return &ClosureStats{Removed: removed}, nil
	}
	if err := feed.Grantees(ctx, tx, c.insG); err != nil {
		return nil, err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO recalc.acl_member (gid, uid, boss) SELECT * FROM unnest($1::int[], $2::int[], $3::boolean[])`, c.insG, c.insU, c.insB)
	if err != nil {
		return nil, fmt.Errorf("insert closure entries: %w", err)
	}
	return &ClosureStats{Added: tag.RowsAffected(), Removed: removed}, nil
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

// WriteUsers makes acl_user the active users and whether each is internal.
func WriteUsers(ctx context.Context, tx pgx.Tx, org *sharing.Org, d *Dict) error {
	var uids []int32
	var ids []string
	var internal []bool
	for _, u := range org.Index().Config.Users {
		if u.Active {
			uids, ids, internal = append(uids, d.UID[u.ID]), append(ids, u.ID), append(internal, !u.External)
		}
	}
	return writeUsers(ctx, tx, uids, ids, internal)
}

// writeUsers makes acl_user the rows (uids, ids, internal), recording
// the feed's entries of the users whose row changes.
func writeUsers(ctx context.Context, tx pgx.Tx, uids []int32, ids []string, internal []bool) error {
	if err := feed.Users(ctx, tx, ids, internal); err != nil {
		return err
	}
	return mergeRows(ctx, tx, "acl_user", `SELECT * FROM unnest($1::integer[], $2::text[], $3::boolean[]) AS n (uid, id, internal)`,
		[]string{"uid", "id", "internal"}, uids, ids, internal)
}

// NarrowUsers makes acl_user give no more than both what it holds and
// what org's user table gives: it deletes the users org has not active,
// and makes a user external whom either makes external (an external OWD
// is never more open than the internal one). It writes nothing when that
// changes nothing. An incremental job commits it with its creation, and
// org's table (WriteUsers) with its finish: a record row a chunk writes,
// read with a user's OWD level, would otherwise give a user whom the job
// deactivates or makes external access that neither the old
// configuration nor the new one gives, until the job finished.
func NarrowUsers(ctx context.Context, tx pgx.Tx, org *sharing.Org) error {
	want := map[string]bool{} // org's active users: whether each is internal
	for _, u := range org.Index().Config.Users {
		if u.Active {
			want[u.ID] = !u.External
		}
	}
	rows, err := tx.Query(ctx, `SELECT uid, id, internal FROM recalc.acl_user`)
	if err != nil {
		return fmt.Errorf("read users: %w", err)
	}
	var uids []int32
	var ids []string
	var internal []bool
	changed := false
	var uid int32
	var id string
	var in bool
	if _, err := pgx.ForEachRow(rows, []any{&uid, &id, &in}, func() error {
		w, ok := want[id]
		if !ok || in && !w {
			changed = true
		}
		if ok {
			uids, ids, internal = append(uids, uid), append(ids, id), append(internal, in && w)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read users: %w", err)
	}
	if !changed {
		return nil
	}
	return writeUsers(ctx, tx, uids, ids, internal)
}

// WriteObjects makes acl_object each object's OWD levels, read at access time.
func WriteObjects(ctx context.Context, tx pgx.Tx, org *sharing.Org) error {
	var names []string
	var internal, external []int16
	var cbp []bool
	for _, o := range org.Index().Config.Objects {
		names, cbp = append(names, o.Name), append(cbp, o.CBP())
		internal, external = append(internal, int16(o.InternalOWD.Level())), append(external, int16(o.ExternalOWD.Level()))
	}
	return writeObjects(ctx, tx, names, internal, external, cbp)
}

// writeObjects makes acl_object the rows (names, internal, external, cbp),
// recording the feed's entries of the objects whose row changes.
func writeObjects(ctx context.Context, tx pgx.Tx, names []string, internal, external []int16, cbp []bool) error {
	if err := feed.Objects(ctx, tx, names, internal, external, cbp); err != nil {
		return err
	}
	return mergeRows(ctx, tx, "acl_object", `SELECT * FROM unnest($1::text[], $2::smallint[], $3::smallint[], $4::boolean[]) AS n (name, internal_level, external_level, cbp)`,
		[]string{"name", "internal_level", "external_level", "cbp"}, names, internal, external, cbp)
}

// NarrowObjects makes acl_object give no more than both what it holds and
// what org's OWDs give: each stored object's levels become the lower of
// the two, an object org lacks loses its row, and an object controlled by
// its parent in either is marked so (the policies then check each record,
// and refuse to move it but for those who may transfer it). It writes
// nothing when that changes nothing. An incremental job commits it with
// its creation, and org's OWDs (WriteObjects) with its finish: a record
// row a chunk writes (a new record, a record of another object, a record
// that takes its access from its parent now) read with the old OWDs would
// otherwise give access that neither the old configuration nor the new
// one gives, until the job finished.
func NarrowObjects(ctx context.Context, tx pgx.Tx, org *sharing.Org) error {
	type owd struct {
		internal, external int16
		cbp                bool
	}
	want := map[string]owd{}
	for _, o := range org.Index().Config.Objects {
		want[o.Name] = owd{int16(o.InternalOWD.Level()), int16(o.ExternalOWD.Level()), o.CBP()}
	}
	rows, err := tx.Query(ctx, `SELECT name, internal_level, external_level, cbp FROM recalc.acl_object`)
	if err != nil {
		return fmt.Errorf("read org-wide defaults: %w", err)
	}
	var names []string
	var internal, external []int16
	var cbp []bool
	changed := false
	var name string
	var have owd
	if _, err := pgx.ForEachRow(rows, []any{&name, &have.internal, &have.external, &have.cbp}, func() error {
		w, ok := want[name]
		if !ok {
			changed = true
			return nil
		}
		n := owd{min(have.internal, w.internal), min(have.external, w.external), have.cbp || w.cbp}
		changed = changed || n != have
		names, internal, external, cbp = append(names, name), append(internal, n.internal), append(external, n.external), append(cbp, n.cbp)
		return nil
	}); err != nil {
		return fmt.Errorf("read org-wide defaults: %w", err)
	}
	if !changed {
		return nil
	}
	return writeObjects(ctx, tx, names, internal, external, cbp)
}

// mergeRows makes table (acl_user or acl_object) hold the rows of rows, a
// query of the table's columns cols over args: it deletes the rows that
// differ from every new one, then inserts the new rows it lacks. Readers
// neither wait for it nor miss a row: a TRUNCATE took an ACCESS EXCLUSIVE
// lock that queued every reader behind it, and left a reader whose snapshot
// predated it an empty table (no user: `none` for everyone).
func mergeRows(ctx context.Context, tx pgx.Tx, table, rows string, cols []string, args ...any) error {
	name := pgx.Identifier{"recalc", table}.Sanitize()
	quoted, same := make([]string, len(cols)), make([]string, len(cols)) // the columns are NOT NULL
	for i, c := range cols {
		quoted[i] = pgx.Identifier{c}.Sanitize()
		same[i] = "n." + quoted[i] + " = t." + quoted[i]
	}
	if _, err := tx.Exec(ctx, `DELETE FROM `+name+` t WHERE NOT EXISTS (SELECT FROM (`+rows+`) n WHERE `+strings.Join(same, " AND ")+`)`, args...); err != nil {
		return fmt.Errorf("delete from %s: %w", table, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+name+` (`+strings.Join(quoted, ", ")+`)
		SELECT * FROM (`+rows+`) n WHERE NOT EXISTS (SELECT FROM `+name+` t WHERE `+strings.Join(same, " AND ")+`)`, args...); err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	return nil
}
