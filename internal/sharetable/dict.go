package sharetable

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// Dict maps user ids and grantee keys to their stable integer ids.
type Dict struct {
	UID map[string]int32
	GID map[string]int32
}

// EnsureDict adds org's users and grantees that are new to the append-only
// dictionaries, and returns the mapping of org's.
func EnsureDict(ctx context.Context, tx pgx.Tx, org *sharing.Org) (*Dict, error) {
	users := make([]string, len(org.Index().Config.Users))
	for i, u := range org.Index().Config.Users {
		users[i] = u.ID
	}
	var grantees []string
	for _, g := range org.Grantees() {
		grantees = append(grantees, g.String())
	}
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
