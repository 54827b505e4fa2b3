package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/access"
)

// RLSResult is the read path through recalc's row-level security policy
// (docs/rls.md) on an application table of the org's accounts, for three
// users: one who sees few accounts, one who sees about 1%, one who sees
// nearly all. Each query is timed with the policy (as a role under it) and
// without (as the table's owner, who bypasses it).
type RLSResult struct {
	Accounts int64     `json:"accounts"`
	Users    []RLSUser `json:"users"`
}

// RLSUser is one user's measures.
type RLSUser struct {
	Kind     string       `json:"kind"` // few, 1%, nearly all
	User     string       `json:"user"`
	Visible  int64        `json:"visible_accounts"`
	Measures []RLSMeasure `json:"measures"`
}

// RLSMeasure is one query with the policy and without. PerUser is the
// same query on a copy of the table under the per-user policy (rls enable
// --per-user-plans --user-from-role), read as a role named like the user.
type RLSMeasure struct {
	Name    string   `json:"name"`
	On      Latency  `json:"rls_on"`
	Off     Latency  `json:"rls_off"`
	PerUser *Latency `json:"per_user_plans,omitempty"`
}

// rlsRole is the role the bench reads as under the policy.
const rlsRole = "recalc_bench_app"

// perUserTable is the copy of the application table under the per-user
// policy, which takes the user from current_user.
const perUserTable = "public.bench_account_by_role"

// measureRLS builds the application table bench_account (id, name indexed,
// owner) from the account records, installs the policy, picks the three
// users and times each query, with samples round trips for lookups and
// fewer for the heavier queries.
func measureRLS(ctx context.Context, pool *pgxpool.Pool, samples int) (*RLSResult, error) {
	res := &RLSResult{}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, sql := range []string{
			`DROP TABLE IF EXISTS public.bench_account`,
			`CREATE TABLE public.bench_account AS
			 SELECT id, coalesce(fields->>'name', md5(id)) AS name, owner FROM recalc.record WHERE object = 'account'`,
			`ALTER TABLE public.bench_account ADD PRIMARY KEY (id)`,
			`CREATE INDEX ON public.bench_account (name, id)`,
			`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '` + rlsRole + `') THEN CREATE ROLE ` + rlsRole + ` NOLOGIN; END IF; END $$`,
			`GRANT SELECT ON public.bench_account TO ` + rlsRole,
		} {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("build the application table: %w", err)
			}
		}
		if err := access.Grant(ctx, tx, access.Reader, rlsRole); err != nil {
			return err
		}
		return access.EnableRLS(ctx, tx, &access.RLS{Table: "public.bench_account", Object: "account", IDColumn: "id", UserSetting: "app.user_id"})
	})
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `ANALYZE public.bench_account`); err != nil {
		return nil, fmt.Errorf("analyze the application table: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM public.bench_account`).Scan(&res.Accounts); err != nil {
		return nil, fmt.Errorf("count accounts: %w", err)
	}
	users, err := rlsUsers(ctx, pool, res.Accounts)
	if err != nil {
		return nil, err
	}
	created, err := perUserCopy(ctx, pool, users)
	defer func() {
		for _, role := range created {
			_, _ = pool.Exec(context.WithoutCancel(ctx), `DROP ROLE IF EXISTS `+pgx.Identifier{role}.Sanitize())
		}
	}()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	var ids []string
	if err := conn.QueryRow(ctx, `SELECT array_agg(id) FROM (SELECT id FROM public.bench_account TABLESAMPLE BERNOULLI (5) REPEATABLE (3) LIMIT 5000) s`).Scan(&ids); err != nil {
		return nil, fmt.Errorf("sample accounts: %w", err)
	}
	for _, u := range users {
		if err := u.measure(ctx, conn.Conn(), ids, samples); err != nil {
			return nil, fmt.Errorf("time the read path for %s: %w", u.User, err)
		}
		res.Users = append(res.Users, *u)
	}
	return res, nil
}

// perUserCopy builds the per-user policy's copy of the application table
// and a role for each user, member of rlsRole, and returns the roles it
// created (the caller drops them).
func perUserCopy(ctx context.Context, pool *pgxpool.Pool, users []*RLSUser) (created []string, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		sqls := []string{
			`DROP TABLE IF EXISTS ` + perUserTable,
			`CREATE TABLE ` + perUserTable + ` AS TABLE public.bench_account`,
			`ALTER TABLE ` + perUserTable + ` ADD PRIMARY KEY (id)`,
			`CREATE INDEX ON ` + perUserTable + ` (name, id)`,
			`ANALYZE ` + perUserTable,
			`GRANT SELECT ON ` + perUserTable + ` TO ` + rlsRole,
		}
		for _, sql := range sqls {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("build the per-user table: %w", err)
			}
		}
		for _, u := range users {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, u.User).Scan(&exists); err != nil {
				return fmt.Errorf("look up role %s: %w", u.User, err)
			}
			role := pgx.Identifier{u.User}.Sanitize()
			if !exists {
				if _, err := tx.Exec(ctx, `CREATE ROLE `+role+` NOLOGIN`); err != nil {
					return fmt.Errorf("create role %s: %w", u.User, err)
				}
				created = append(created, u.User)
			}
			if _, err := tx.Exec(ctx, `GRANT `+rlsRole+` TO `+role); err != nil {
				return fmt.Errorf("grant %s to %s: %w", rlsRole, u.User, err)
			}
		}
		return access.EnableRLS(ctx, tx, &access.RLS{Table: perUserTable, Object: "account", IDColumn: "id", UserFromRole: true, PerUserPlans: true})
	})
	if err != nil {
		created = nil // rolled back
	}
	return created, err
}

// rlsUsers picks the users whose share rows on accounts (summed over their
// groups, an estimate) come nearest to 50 and to 1% of the accounts, and
// the user with the most, three distinct users where the org has them
// (the "1%" user is the nearest to 1% among the others). Internal users see
// every account when the OWD grants it: then the few are looked for among
// external users.
func rlsUsers(ctx context.Context, pool *pgxpool.Pool, accounts int64) ([]*RLSUser, error) {
	var few, pct, all string
	err := pool.QueryRow(ctx, `
		WITH g AS (
		    SELECT s.gid, count(*) AS n FROM recalc.acl_share s JOIN recalc.acl_record r ON r.rid = s.rid
		    WHERE r.object = 'account' GROUP BY s.gid
		), u AS (
		    SELECT u.id, CASE WHEN (CASE WHEN u.internal THEN o.internal_level ELSE o.external_level END) > 0 THEN $1
		                      ELSE least($1, coalesce(sum(g.n), 0)) END AS n
		    FROM recalc.acl_user u CROSS JOIN recalc.acl_object o
		    LEFT JOIN recalc.acl_member m ON m.uid = u.uid LEFT JOIN g ON g.gid = m.gid
		    WHERE o.name = 'account' GROUP BY u.id, u.internal, o.internal_level, o.external_level
		), few AS (
		    SELECT id FROM u WHERE n > 0 ORDER BY abs(n - 50), id LIMIT 1
		), alls AS (
		    SELECT id FROM u ORDER BY n DESC, id LIMIT 1
		)
		SELECT (SELECT id FROM few),
		       coalesce((SELECT id FROM u WHERE n > 0 AND id NOT IN (SELECT id FROM few UNION ALL SELECT id FROM alls)
		                 ORDER BY abs(n - $1 / 100), id LIMIT 1), (SELECT id FROM few)),
		       (SELECT id FROM alls)`, accounts).Scan(&few, &pct, &all)
	if err != nil {
		return nil, fmt.Errorf("pick users: %w", err)
	}
	return []*RLSUser{{Kind: "few", User: few}, {Kind: "1%", User: pct}, {Kind: "nearly all", User: all}}, nil
}

// measure times each query for u, under the policy and without it.
func (u *RLSUser) measure(ctx context.Context, conn *pgx.Conn, ids []string, samples int) error {
	rng := rand.New(rand.NewPCG(uint64(len(u.User)), 13))
	pk := func() []any { return []any{ids[rng.IntN(len(ids))]} }
	fixed := func(args ...any) func() []any { return func() []any { return args } }
	lists := max(5, samples/10)
	queries := []struct {
		name, sql string
		n         int
		args      func(on bool) (func() []any, error)
	}{
		{"primary-key lookup", `SELECT * FROM public.bench_account WHERE id = $1`, samples,
			func(bool) (func() []any, error) { return pk, nil }},
		{"ORDER BY name LIMIT 50, first page", `SELECT * FROM public.bench_account ORDER BY name, id LIMIT 50`, lists,
			func(bool) (func() []any, error) { return fixed(), nil }},
		{"ORDER BY name LIMIT 50, 20th page (keyset)", `SELECT * FROM public.bench_account WHERE (name, id) > ($1, $2) ORDER BY name, id LIMIT 50`, lists,
			func(on bool) (func() []any, error) {
				name, id, err := keyset(ctx, conn, on, u.User, 19*50)
				return fixed(name, id), err
			}},
		{"count(*)", `SELECT count(*) FROM public.bench_account`, 3,
			func(bool) (func() []any, error) { return fixed(), nil }},
	}
	for _, q := range queries {
		m := RLSMeasure{Name: q.name}
		onArgs, err := q.args(true) // the per-user policy reads the same rows: the same keyset
		if err != nil {
			return err
		}
		for _, role := range []string{rlsRole, "", u.User} {
			args := onArgs
			if role == "" {
				if args, err = q.args(false); err != nil {
					return err
				}
			}
			sql := q.sql
			if role == u.User {
				sql = strings.ReplaceAll(sql, "public.bench_account", perUserTable)
			}
			lat, rows, err := timeAs(ctx, conn, role, u.User, sql, q.n, args)
			if err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			switch role {
			case rlsRole:
				m.On = lat
				if q.name == "count(*)" {
					u.Visible = rows
				}
			case "":
				m.Off = lat
			default:
				// Lookups draw random ids; every other query reads the same rows.
				if q.name != "primary-key lookup" && rows != m.On.Rows {
					return fmt.Errorf("%s: %d rows under the per-user policy, %d under the adaptive one", q.name, rows, m.On.Rows)
				}
				m.PerUser = &lat
			}
		}
		u.Measures = append(u.Measures, m)
	}
	return u.visiblePages(ctx, conn, lists)
}

// visiblePages times pages of 1,000 of visible_records, from the start and
// from random points, beside the same page of the table with no filter.
func (u *RLSUser) visiblePages(ctx context.Context, conn *pgx.Conn, n int) error {
	m := RLSMeasure{Name: "visible_records page of 1,000"}
	var err error
	m.On, _, err = timeAs(ctx, conn, rlsRole, u.User, `SELECT * FROM recalc.visible_records($1, 'account', 'read', NULL, 1000)`, n,
		func() []any { return []any{u.User} })
	if err != nil {
		return fmt.Errorf("visible_records: %w", err)
	}
	m.Off, _, err = timeAs(ctx, conn, "", u.User, `SELECT id FROM public.bench_account ORDER BY id LIMIT 1000`, n, func() []any { return nil })
	if err != nil {
		return fmt.Errorf("page of ids: %w", err)
	}
	u.Measures = append(u.Measures, m)
	return nil
}

// keyset returns the (name, id) of the offset-th row user sees in name
// order, with the policy on or off: where the 20th page starts.
func keyset(ctx context.Context, conn *pgx.Conn, on bool, user string, offset int) (name, id string, err error) {
	role := ""
	if on {
		role = rlsRole
	}
	err = asRole(ctx, conn, role, user, func() error {
		err := conn.QueryRow(ctx, `SELECT name, id FROM public.bench_account ORDER BY name, id OFFSET $1 LIMIT 1`, offset).Scan(&name, &id)
		if err == pgx.ErrNoRows {
			return nil // fewer rows: the page is empty
		}
		return err
	})
	return name, id, err
}

// timeAs runs sql n times (after a warm-up call), as role with app.user_id
// = user (role "": as the table's owner), and returns the latencies and the
// rows of the last call (its first column's value for a count).
func timeAs(ctx context.Context, conn *pgx.Conn, role, user, sql string, n int, args func() []any) (Latency, int64, error) {
	lat := Latency{Query: sql, Samples: n}
	var last int64
	err := asRole(ctx, conn, role, user, func() error {
		times := make([]time.Duration, 0, n)
		for i := range n + 1 {
			start := time.Now()
			rows, err := conn.Query(ctx, sql, args()...)
			if err != nil {
				return err
			}
			count := int64(0)
			for rows.Next() {
				count++
				if v, err := rows.Values(); err == nil && len(v) == 1 {
					if c, ok := v[0].(int64); ok {
						count = c
					}
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if i > 0 {
				times = append(times, time.Since(start))
			}
			last = count
		}
		lat.P50ms, lat.P99ms = percentiles(times)
		lat.Rows = last
		return nil
	})
	return lat, last, err
}

// asRole runs fn as role (none: the table's owner) with app.user_id =
// user, and resets the session after.
func asRole(ctx context.Context, conn *pgx.Conn, role, user string, fn func() error) error {
	setup, args := `SELECT set_config('app.user_id', $1, false)`, []any{user}
	if role != "" {
		setup, args = `SELECT set_config('app.user_id', $1, false), set_config('role', $2, false)`, []any{user, role}
	}
	if _, err := conn.Exec(ctx, setup, args...); err != nil {
		return err
	}
	err := fn()
	if _, rerr := conn.Exec(ctx, `RESET ROLE`); err == nil {
		err = rerr
	}
	return err
}
