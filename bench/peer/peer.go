package peer

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/model"
)

//go:embed peer.sql.tmpl
var schemaSQL string

var schemaTmpl = template.Must(template.New("peer.sql").Parse(schemaSQL))

// views lists the materialized views in refresh order: each after those it reads.
var views = []string{
	"objects", "roles", "users", "groups", "queues", "group_members", "territories", "territory_users", "rules",
	"role_up", "territory_up", "group_flat",
	"members_all", "member",
	"rule_match", "cbp_chain",
	"share", "record",
}

// Create drops and recreates schema peer with its materialized views, empty
// (WITH NO DATA) and indexed like recalc's tables. The criteria rules stored
// now are compiled into the views' SQL, so Create must run again after the
// rules section changes; Refresh refuses until it has.
func Create(ctx context.Context, pool *pgxpool.Pool) error {
	var doc []byte
	err := pool.QueryRow(ctx, `SELECT doc::text FROM recalc.model_section WHERE name = 'rules'`).Scan(&doc)
	switch {
	case err == pgx.ErrNoRows:
		doc = []byte("[]")
	case err != nil:
		return fmt.Errorf("read stored rules: %w", err)
	}
	f, err := model.Decode(bytes.NewReader(append(append([]byte(`{"rules":`), doc...), '}')), model.Sink{})
	if err != nil {
		return fmt.Errorf("decode stored rules: %w", err)
	}
	crit, err := criteriaSQL(f.Rules)
	if err != nil {
		return fmt.Errorf("compile criteria rules: %w", err)
	}
	var sql strings.Builder
	if err := schemaTmpl.Execute(&sql, struct{ Criteria []objectCriteria }{crit}); err != nil {
		return fmt.Errorf("render peer schema: %w", err)
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sql.String()); err != nil {
			return fmt.Errorf("create peer schema: %w", err)
		}
		return nil
	})
}

// Refresh refreshes every materialized view of the peer in dependency order,
// and analyzes each (as recalc's full run analyzes its tables), in one
// transaction, and returns how long it took. It fails when the stored rules
// differ from those Create compiled.
func Refresh(ctx context.Context, pool *pgxpool.Pool) (time.Duration, error) {
	start := time.Now()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var same bool
		if err := tx.QueryRow(ctx, `SELECT (SELECT doc FROM recalc.model_section WHERE name = 'rules')
			IS NOT DISTINCT FROM (SELECT rules FROM peer.compiled)`).Scan(&same); err != nil {
			return fmt.Errorf("compare stored rules: %w", err)
		}
		if !same {
			return fmt.Errorf("the stored rules changed since peer.Create compiled them: create the peer again")
		}
		for _, v := range views {
			name := pgx.Identifier{"peer", v}.Sanitize()
			if _, err := tx.Exec(ctx, `REFRESH MATERIALIZED VIEW `+name); err != nil {
				return fmt.Errorf("refresh %s: %w", name, err)
			}
			if _, err := tx.Exec(ctx, `ANALYZE `+name); err != nil {
				return fmt.Errorf("analyze %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// DiffError says how the peer's rows differ from recalc's materialized
// tables: a count per table and a few sample rows.
type DiffError struct {
	Shares, Members, Records int64
	Samples                  []string
}

func (e *DiffError) Error() string {
	return fmt.Sprintf("peer differs from recalc: %d share rows, %d closure rows, %d record rows; for example: %s",
		e.Shares, e.Members, e.Records, strings.Join(e.Samples, "; "))
}

// samplesPerTable is how many differing rows a DiffError shows per table.
const samplesPerTable = 3

// diffs are the comparisons Check makes: EXCEPT both ways on every column,
// each row rendered with natural keys.
var diffs = []struct {
	table, engine, peer, render string
}{
	{"share",
		`SELECT rid, gid, cause COLLATE "C", level, boss_ok FROM recalc.acl_share`,
		`SELECT rid, gid, cause COLLATE "C", level, boss_ok FROM peer.share`,
		`'share ' || coalesce(r.id, 'rid ' || d.rid) || ' ' || coalesce(g.key, 'gid ' || d.gid) || ' ' || d.cause ||
		 ' level ' || d.level || ' boss_ok ' || d.boss_ok
		 FROM d LEFT JOIN recalc.record r ON r.rid = d.rid LEFT JOIN recalc.grantee g ON g.gid = d.gid`},
	{"member",
		`SELECT gid, uid, boss FROM recalc.acl_member`,
		`SELECT gid, uid, boss FROM peer.member`,
		`'member ' || coalesce(g.key, 'gid ' || d.gid) || ' ' || coalesce(p.id, 'uid ' || d.uid) || ' boss ' || d.boss
		 FROM d LEFT JOIN recalc.grantee g ON g.gid = d.gid LEFT JOIN recalc.principal p ON p.uid = d.uid`},
	{"record",
		`SELECT rid, id COLLATE "C", object COLLATE "C", access_root FROM recalc.acl_record`,
		`SELECT rid, id COLLATE "C", object COLLATE "C", access_root FROM peer.record`,
		`'record ' || d.id || ' ' || d.object || ' access_root ' || coalesce(a.id, d.access_root::text, '-')
		 FROM d LEFT JOIN recalc.record a ON a.rid = d.access_root`},
}

// Check compares the peer's rows with recalc.acl_share, recalc.acl_member
// and recalc.acl_record, every column, both ways. It returns a *DiffError
// when they differ.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	e := &DiffError{}
	counts := []*int64{&e.Shares, &e.Members, &e.Records}
	for i, d := range diffs {
		for _, side := range []struct{ name, a, b string }{{"recalc only", d.engine, d.peer}, {"peer only", d.peer, d.engine}} {
			rows, err := pool.Query(ctx, `WITH d AS (`+side.a+` EXCEPT `+side.b+`)
				SELECT n, line FROM (SELECT count(*) OVER () AS n, `+d.render+`) x (n, line)
				ORDER BY line COLLATE "C" LIMIT $1`, samplesPerTable)
			if err != nil {
				return fmt.Errorf("compare %s rows: %w", d.table, err)
			}
			var n int64
			var s string
			_, err = pgx.ForEachRow(rows, []any{&n, &s}, func() error {
				e.Samples = append(e.Samples, side.name+": "+s)
				return nil
			})
			if err != nil {
				return fmt.Errorf("compare %s rows: %w", d.table, err)
			}
			*counts[i] += n
		}
	}
	if e.Shares+e.Members+e.Records > 0 {
		return e
	}
	return nil
}

// Drop removes the peer's schema and everything in it.
func Drop(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS peer CASCADE`); err != nil {
		return fmt.Errorf("drop the peer: %w", err)
	}
	return nil
}
