package access

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/store"
)

// RLS names an application table to protect with row-level security
// policies that show a session only the rows its user may read, and
// optionally let it change only the rows it may edit (docs/rls.md).
type RLS struct {
	Table       string // table, optionally schema-qualified
	Object      string // the recalc object its rows are records of
	IDColumn    string // the column holding the record id: text, varchar, char, smallint, integer, bigint or uuid
	UserSetting string // the setting that holds the current user's id, e.g. app.user_id
	// UserFromRole takes the user id from current_user instead of a
	// setting: for applications that log each end user in as (or SET ROLE
	// to) a database role named like the user. No session can then claim
	// another user's id, which any session can do with a setting.
	UserFromRole bool
	// Write adds UPDATE and DELETE policies: a session changes only the
	// rows its user may edit (and may not update a row into one it may not).
	Write bool
	// InsertRole, when set, may INSERT any row (the application's role):
	// a new row has no record in recalc until the next run.
	InsertRole string
	// OwnerColumn, when set, holds the row owner's user id: the owner may
	// read, insert, update and delete its own rows, recalculated or not.
	OwnerColumn string
	// Force makes the policies apply to the table's owner too (FORCE ROW
	// LEVEL SECURITY); without it, reads as the owner see every row.
	Force bool
	// PerUserPlans installs the policy the planner plans per user: a
	// selective user's rows are fetched by id from its grants. Safe when no
	// plan is shared between users (docs/rls.md): with UserFromRole, or
	// when the application does not reuse prepared list queries across
	// users.
	PerUserPlans bool
}

// Policy names recalc installs; EnableRLS and DisableRLS drop them all.
const (
	PolicyName   = "recalc_read"
	policyUpdate = "recalc_update"
	policyDelete = "recalc_delete"
	policyInsert = "recalc_insert"
	policyOwner  = "recalc_owner"
	// policyOwnerChange was migration 033's restrictive policy, which the
	// write guard replaced: only dropped.
	policyOwnerChange = "recalc_owner_change"
	// writeGuard is the row trigger that sees a write's old and new rows
	// (migration 034): on an attached table under a write policy, changing
	// a row's id or owner, or giving a row the id of a record recalc still
	// holds, needs all access, and a new or changed parent must be
	// readable.
	writeGuard = "recalc_write_guard"
)

var policyNames = []string{PolicyName, policyUpdate, policyDelete, policyInsert, policyOwner, policyOwnerChange}

// PolicyVersion is the schema version whose policies rls enable installs:
// policies enabled by an earlier one lack what later versions added, and
// `recalc init` names their tables (OutdatedPolicies).
const PolicyVersion = 34

var (
	settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$`)
	objectName  = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// idTypes are the id column types a policy supports, by pg_type name.
var idTypes = map[string]bool{"text": true, "varchar": true, "bpchar": true, "int2": true, "int4": true, "int8": true, "uuid": true}

func (r *RLS) table() (pgx.Identifier, error) {
	parts := strings.Split(r.Table, ".")
	switch {
	case slices.Contains(parts, ""):
		return nil, fmt.Errorf("table %.100q: give TABLE or SCHEMA.TABLE", r.Table)
	case len(parts) > 2:
		return nil, fmt.Errorf("table %.100q holds more than one dot: --table is TABLE or SCHEMA.TABLE, split at the dot, so a schema or table "+
			"whose name holds a dot cannot be named; %s", r.Table, renameDotted)
	}
	for _, p := range parts {
		if err := pg.CheckName("table "+r.shortTable(), p); err != nil {
			return nil, err
		}
	}
	return pgx.Identifier(parts), nil
}

// renameDotted is what to do about a schema or table whose name holds a
// dot, which --table cannot name.
const renameDotted = "rename it to a name without one (ALTER SCHEMA ... RENAME TO, ALTER TABLE ... RENAME TO), then run the command again"

// CheckTable checks a table name as given (TABLE or SCHEMA.TABLE), without
// the database.
func CheckTable(table string) error {
	_, err := (&RLS{Table: table}).table()
	return err
}

// shortTable is the table as given, quoted and cut for a message.
func (r *RLS) shortTable() string { return fmt.Sprintf("%.100q", r.Table) }

// Validate checks the arguments that need no database.
func (r *RLS) Validate() error {
	if _, err := r.table(); err != nil {
		return err
	}
	switch {
	case r.UserFromRole && r.UserSetting != "":
		return errors.New("give --user-setting or --user-from-role, not both")
	case !r.UserFromRole && !settingName.MatchString(r.UserSetting):
		return fmt.Errorf("user setting %.100q must look like prefix.name (a custom setting)", r.UserSetting)
	case !objectName.MatchString(r.Object):
		return fmt.Errorf("object %q is not an object name", r.Object)
	case r.IDColumn == "":
		return errors.New("give the id column (--id-column)")
	}
	for _, n := range [][2]string{{"id column", r.IDColumn}, {"owner column", r.OwnerColumn}, {"insert role", r.InsertRole}} {
		if err := pg.CheckName(n[0], n[1]); n[1] != "" && err != nil {
			return err
		}
	}
	return nil
}

// EnableRLS enables row-level security on the table and installs (or
// replaces) recalc's policies. It checks first that the object is in the
// stored model and that the id column (and owner column) exist with a
// supported type. Every name is quoted as an identifier and every value
// passed as a literal, by the server's pg_catalog.format(), with the
// transaction's search_path pinned to pg_catalog, pg_temp (and restored
// after): no function of the caller's search_path is used.
func EnableRLS(ctx context.Context, tx pgx.Tx, r *RLS) error {
	if err := r.Validate(); err != nil {
		return err
	}
	tbl, err := resolveTable(ctx, tx, r.Table)
	if err != nil {
		return err
	}
	var path string
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.current_setting('search_path'), pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)`).Scan(&path, new(string)); err != nil {
		return fmt.Errorf("pin search_path: %w", err)
	}
	if err := enableRLS(ctx, tx, tbl, r); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, true)`, path); err != nil {
		return fmt.Errorf("restore search_path: %w", err)
	}
	return nil
}

// resolveTable returns the schema-qualified name of table, looked up on the
// caller's search_path, or fails saying the table does not exist. The
// session's own search_path may be pinned (pg.PinSession): the name is
// looked up on its default, which only that lookup runs under.
func resolveTable(ctx context.Context, tx pgx.Tx, table string) (pgx.Identifier, error) {
	var path string
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.current_setting('search_path'), pg_catalog.set_config('search_path', s.reset_val, true)
		FROM pg_catalog.pg_settings s WHERE s.name = 'search_path'`).Scan(&path, new(string)); err != nil {
		return nil, fmt.Errorf("look up table %.100q: %w", table, err)
	}
	var oid *uint32
	err := tx.QueryRow(ctx, `SELECT pg_catalog.to_regclass($1)::oid`, pgx.Identifier(strings.Split(table, ".")).Sanitize()).Scan(&oid)
	if err == nil {
		_, err = tx.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, true)`, path)
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %.100q: %w", table, err)
	}
	var nsp, rel *string
	err = tx.QueryRow(ctx, `SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`, oid).Scan(&nsp, &rel)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if dotted := dottedTable(ctx, tx, table); dotted != "" {
			return nil, fmt.Errorf("table %.100q does not exist as SCHEMA.TABLE, but table %s does, whose name holds the dot: --table is split at it, "+
				"so that table cannot be named; %s", table, dotted, renameDotted)
		}
		return nil, fmt.Errorf("table %.100q does not exist: create it first, or give SCHEMA.TABLE%s", table, pg.NearTable(ctx, tx, table))
	case err != nil:
		return nil, fmt.Errorf("look up table %.100q: %w", table, err)
	}
	return pgx.Identifier{*nsp, *rel}, nil
}

// dottedTable names (SCHEMA.TABLE, quoted) a table or partitioned table
// whose own name is table, dot included, when one exists and table holds a
// dot; "" otherwise, or when the lookup fails (the caller's error stands).
func dottedTable(ctx context.Context, tx pgx.Tx, table string) string {
	if !strings.Contains(table, ".") {
		return ""
	}
	var name string
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1 LIMIT 1`, table).Scan(&name); err != nil {
		return ""
	}
	return name
}

// CheckRLSOwner fails, naming the table's owner, unless this role may
// enable row-level security on table (it is, or is a member of, its owner,
// or a superuser). It reads only the catalog, so `rls enable` runs it
// before reading recalc's tables: a role that owns neither would otherwise
// be told to take recalc's engine role, which would not let it either.
func CheckRLSOwner(ctx context.Context, tx pgx.Tx, table string) error {
	if err := CheckTable(table); err != nil {
		return err
	}
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return err
	}
	return checkOwner(ctx, tx, tbl, table)
}

// checkOwner is CheckRLSOwner on the resolved table.
func checkOwner(ctx context.Context, tx pgx.Tx, tbl pgx.Identifier, table string) error {
	var owner string
	var owns bool
	if err := tx.QueryRow(ctx, `SELECT c.relowner::regrole::text, pg_catalog.pg_has_role(c.relowner, 'USAGE')
		FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)`, tbl.Sanitize()).Scan(&owner, &owns); err != nil {
		return fmt.Errorf("look up the owner of %q: %w", table, err)
	}
	if !owns {
		return fmt.Errorf("only the owner of %s (%s) may enable row-level security on it: run `recalc rls enable` as a superuser, or as that owner with recalc's engine role granted to it (docs/rls.md, \"Who runs it\")", table, owner)
	}
	return nil
}

// enableRLS is EnableRLS on the resolved table, search_path pinned.
func enableRLS(ctx context.Context, tx pgx.Tx, tbl pgx.Identifier, r *RLS) error {
	// recalc's own tables are no application's: row-level security there
	// would filter the writer's reads of recalc.record (and, under --force,
	// the engine's own reads), by answers that do not describe their rows.
	if tbl[0] == "recalc" {
		return fmt.Errorf("table %q is one of recalc's own: give an application table", r.Table)
	}
	if err := checkOwner(ctx, tx, tbl, r.Table); err != nil {
		return err
	}
	if err := checkObject(ctx, tx, r.Object); err != nil {
		return err
	}
	col, err := idColumnOf(ctx, tx, tbl, r)
	if err != nil {
		return err
	}
	policies, err := r.policies(ctx, tx, tbl, col)
	if err != nil {
		return err
	}
	sqls := append([]string{`ALTER TABLE ` + tbl.Sanitize() + ` ENABLE ROW LEVEL SECURITY`}, dropPolicies(tbl)...)
	if r.Force {
		sqls = append(sqls, `ALTER TABLE `+tbl.Sanitize()+` FORCE ROW LEVEL SECURITY`)
	}
	if err := lockTable(ctx, tx, tbl); err != nil {
		return fmt.Errorf("enable row-level security on %q: %w", r.Table, err)
	}
	for _, sql := range append(sqls, policies...) {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("enable row-level security on %q: %w", r.Table, err)
		}
	}
	return nil
}

// policies returns the CREATE POLICY statements for r on the id column col.
func (r *RLS) policies(ctx context.Context, tx pgx.Tx, tbl pgx.Identifier, col *idColumn) ([]string, error) {
	user := "current_user::text"
	if !r.UserFromRole {
		var err error
		// nullif: after a SET LOCAL in an earlier transaction of a pooled
		// session, current_setting returns '' rather than NULL.
		if user, err = format(ctx, tx, `nullif(current_setting(%L, true), '')`, r.UserSetting); err != nil {
			return nil, err
		}
	}
	pred := col.adaptive
	if r.PerUserPlans {
		pred = col.perUser
	}
	read, err := pred(ctx, tx, user, r.Object, "read")
	if err != nil {
		return nil, err
	}
	on := tbl.Sanitize()
	out := []string{`CREATE POLICY ` + PolicyName + ` ON ` + on + ` FOR SELECT USING (` + read + `)`}
	if r.Write {
		edit, err := pred(ctx, tx, user, r.Object, "edit")
		if err != nil {
			return nil, err
		}
		out = append(out,
			`CREATE POLICY `+policyUpdate+` ON `+on+` FOR UPDATE USING (`+edit+`) WITH CHECK (`+edit+`)`,
			`CREATE POLICY `+policyDelete+` ON `+on+` FOR DELETE USING (`+edit+`)`)
	}
	if r.InsertRole != "" {
		out = append(out, `CREATE POLICY `+policyInsert+` ON `+on+` FOR INSERT TO `+pgx.Identifier{r.InsertRole}.Sanitize()+` WITH CHECK (true)`)
	}
	if r.OwnerColumn != "" {
		// Only an active user owns rows: rls_mode is 0 for an unknown or
		// inactive user. The user is read once, in the InitPlan that asks
		// rls_mode: compared with the setting per row, a session that
		// changed it while the statement ran (a function in its WHERE, a
		// cursor's later FETCH) read the rows of any user it named, an
		// inactive or unknown one too. COLLATE "C", as for the id column: a
		// nondeterministic collation of the owner column must not make
		// user U1 the owner of u1's rows.
		own, err := format(ctx, tx, `(%3$I::text COLLATE "C") = (SELECT s.u FROM (SELECT %1$s AS u) s WHERE recalc.rls_mode(s.u, %2$L, 'read') <> 0)`,
			user, r.Object, r.OwnerColumn)
		if err != nil {
			return nil, err
		}
		label, err := format(ctx, tx, `COMMENT ON POLICY %I ON %s IS %L`, policyOwner, on, ownerComment)
		if err != nil {
			return nil, err
		}
		out = append(out, `CREATE POLICY `+policyOwner+` ON `+on+` FOR ALL USING (`+own+`) WITH CHECK (`+own+`)`, label)
	}
	if r.Write || r.InsertRole != "" || r.OwnerColumn != "" {
		// It reads the table's attachment as it runs: it guards once an
		// object is attached to the table, and follows a new attach. The
		// owner policy's column, when it is not the attached owner's, is
		// guarded as an owner (migration 082).
		guard, err := format(ctx, tx, `CREATE TRIGGER %I AFTER INSERT OR UPDATE ON %s FOR EACH ROW
			EXECUTE FUNCTION recalc.rls_write_guard(%L, %L)`, writeGuard, on, r.UserSetting, r.OwnerColumn)
		if err != nil {
			return nil, err
		}
		out = append(out, guard)
	}
	version, err := format(ctx, tx, `COMMENT ON POLICY %I ON %s IS %L`, PolicyName, on, policyComment())
	if err != nil {
		return nil, err
	}
	return append(out, version), nil
}

// policyComment labels the read policy with the schema version of its set.
func policyComment() string { return fmt.Sprintf("recalc policies, schema version %d", PolicyVersion) }

// ownerComment labels an owner policy that reads its user once per
// statement: one installed before has no label, and OutdatedPolicies
// names its table.
const ownerComment = "recalc owner policy, its user read once per statement"

// OutdatedPolicies lists the tables with recalc write policies that an
// earlier schema version installed (the read policy alone has not changed
// since), and those with an owner policy whose write guard has one
// argument (enabled before version 82: it does not guard the policy's own
// column) or whose owner policy compares each row with the setting as it
// is then (unlabelled: see ownerComment): `recalc rls enable` on each
// brings them up to date.
func OutdatedPolicies(ctx context.Context, q pg.Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT p.polrelid::regclass::text FROM pg_catalog.pg_policy p
		WHERE p.polname = $1 AND (coalesce(pg_catalog.obj_description(p.oid, 'pg_policy'), '') <> $2
		    AND EXISTS (SELECT 1 FROM pg_catalog.pg_policy w WHERE w.polrelid = p.polrelid AND w.polname = ANY ($3))
		  OR EXISTS (SELECT 1 FROM pg_catalog.pg_policy w JOIN pg_catalog.pg_trigger g ON g.tgrelid = w.polrelid AND g.tgname = $5
		             WHERE w.polrelid = p.polrelid AND w.polname = $4 AND g.tgnargs < 2)
		  OR EXISTS (SELECT 1 FROM pg_catalog.pg_policy w WHERE w.polrelid = p.polrelid AND w.polname = $4
		             AND coalesce(pg_catalog.obj_description(w.oid, 'pg_policy'), '') <> $6))
		ORDER BY 1`, PolicyName, policyComment(), []string{policyUpdate, policyInsert, policyOwner}, policyOwner, writeGuard, ownerComment)
	if err != nil {
		return nil, fmt.Errorf("list row-level security policies: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list row-level security policies: %w", err)
	}
	return tables, nil
}

// adaptive is the policy expression "user has level on the row" that
// decides how to filter once per query (rls_mode, an InitPlan): by a hash
// of a selective user's visible records (rls_records), else by can_access
// per row. One plan serves every user.
func (c *idColumn) adaptive(ctx context.Context, tx pgx.Tx, user, object, level string) (string, error) {
	return format(ctx, tx, `CASE (SELECT recalc.rls_mode(%1$s, %2$L, %3$L))
		WHEN 1 THEN %4$s IN (SELECT recalc.rls_records(%1$s, %2$L, %3$L))
		WHEN 2 THEN recalc.can_access(%1$s, %2$L, %4$s, %3$L)
		ELSE false END`, user, object, level, c.key)
}

// perUser is the policy expression "user has level on the row" that the
// planner plans for the user (migration 018): the id column among a
// selective user's visible ids (an InitPlan, one index probe per id), or
// can_access per row for anyone else. Both arms are index conditions on
// the column; the planner sees which is empty when it estimates.
func (c *idColumn) perUser(ctx context.Context, tx pgx.Tx, user, object, level string) (string, error) {
	// Arguments of format: 1 the column, 2 the user expression, 3 object,
	// 4 level, 5 the record id expression, 6 the attachment prefix, 7 and 8
	// the column's collation.
	const keys = `recalc.rls_keys(%2$s, %3$L, %4$L)`
	// The ids in a scalar subquery (an InitPlan, run once) cast to an array
	// type: without the cast, = ANY would compare with the subquery's rows.
	var ids, floor string
	switch c.typ {
	case "text", "varchar", "bpchar":
		list := keys
		if c.prefix != "" {
			list = `recalc.rls_text_ids(` + keys + `, %6$L)`
		}
		arr := "text"
		if c.typ == "bpchar" {
			// A char column compares as bpchar: its index answers
			// bpchar[]. bpchar's = ignores trailing blanks, and a char
			// value's key has none: a key with one names no row.
			arr = "bpchar"
			list = `ARRAY(SELECT k FROM unnest(` + list + `) k WHERE k NOT LIKE '%% ')`
		}
		ids = `(SELECT ` + list + `)::` + arr + `[] COLLATE %7$I.%8$I`
		floor = `''::` + arr + ` COLLATE %7$I.%8$I`
	case "uuid":
		ids, floor = `(SELECT recalc.rls_uuid_ids(`+keys+`, %6$L))::uuid[]`, `'00000000-0000-0000-0000-000000000000'::uuid`
	default: // int2, int4, int8
		lo, hi := intRange(c.typ)
		bounds := strconv.FormatInt(lo, 10) + `, ` + strconv.FormatInt(hi, 10)
		ids = `(SELECT recalc.rls_int_ids(` + keys + `, %6$L, ` + bounds + `))::` + c.typ + `[]`
		floor = `(` + strconv.FormatInt(lo, 10) + `)::` + c.typ
	}
	// rls_broad twice: as the range's bound, for the planner, and first,
	// so that for anyone else the arm is false before can_access (the
	// range alone is NULL then, and AND would go on).
	return format(ctx, tx, `%1$I = ANY (`+ids+`)
		OR (recalc.rls_broad(%2$s, %3$L, %4$L)
		    AND %1$I >= CASE WHEN recalc.rls_broad(%2$s, %3$L, %4$L) THEN `+floor+` END
		    AND recalc.can_access(%2$s, %3$L, %5$s, %4$L))`, c.name, user, object, level, c.key, c.prefix, c.collSchema, c.collName)
}

// intRange is the range of an integer id column type.
func intRange(typ string) (int64, int64) {
	switch typ {
	case "int2":
		return math.MinInt16, math.MaxInt16
	case "int4":
		return math.MinInt32, math.MaxInt32
	}
	return math.MinInt64, math.MaxInt64
}

// format quotes args into tmpl with the server's pg_catalog.format(): %I for names,
// %L for values.
func format(ctx context.Context, tx pgx.Tx, tmpl string, args ...string) (string, error) {
	var s string
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.format($1::text, VARIADIC $2::text[])`, tmpl, args).Scan(&s); err != nil {
		return "", fmt.Errorf("build policy: %w", err)
	}
	return s, nil
}

// checkObject fails unless object is in the stored model, naming the
// objects that are.
func checkObject(ctx context.Context, tx pgx.Tx, object string) error {
	cfg, err := store.LoadConfig(ctx, tx)
	if err != nil {
		return err
	}
	var names []string
	for _, o := range cfg.Objects {
		if o.Name == object {
			return nil
		}
		names = append(names, o.Name)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return fmt.Errorf("object %q is not in the stored model, which has no object: import a model first", object)
	}
	return fmt.Errorf("object %q is not in the stored model: give one of %s", object, strings.Join(names, ", "))
}

// idColumn is the application table's id column, as a policy uses it.
type idColumn struct {
	name   string // the column
	typ    string // its type's name: one of idTypes
	prefix string // "object:" when the object is attached, else ""
	key    string // quoted expression of a row's record id in recalc
	// collSchema and collName are the column's collation (text and
	// varchar): the ids a policy compares it with take it, or the
	// comparison would not use the column's index (a user from
	// current_user, of type name, would give them collation "C").
	collSchema, collName string
}

// idColumnOf looks up r's id column: the record id is the column as text,
// prefixed with "object:" when the object is attached (recalc.attachment,
// when that table exists). It fails unless the table and columns exist and
// the id column has a supported type (and, for per-user plans, a
// deterministic collation).
func idColumnOf(ctx context.Context, tx pgx.Tx, tbl pgx.Identifier, r *RLS) (*idColumn, error) {
	var exists bool
	var idType, ownerType *string
	var deterministic bool
	var collSchema, collName *string
	// The type's name counts only in pg_catalog: a domain or type named
	// int4 elsewhere is not supported.
	err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL,
		CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN t.typname::text ELSE t.oid::regtype::text END,
		coalesce(c.collisdeterministic, true), n.nspname::text, c.collname::text,
		(SELECT o.attname::text FROM pg_attribute o
		 WHERE o.attrelid = to_regclass($1) AND o.attname = $3 AND o.attnum > 0 AND NOT o.attisdropped)
		FROM (SELECT) one
		LEFT JOIN pg_attribute a ON a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
		LEFT JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_collation c ON c.oid = a.attcollation
		LEFT JOIN pg_namespace n ON n.oid = c.collnamespace`,
		tbl.Sanitize(), r.IDColumn, r.OwnerColumn).Scan(&exists, &idType, &deterministic, &collSchema, &collName, &ownerType)
	switch {
	case err != nil:
		return nil, fmt.Errorf("look up table %q: %w", r.Table, err)
	case !exists:
		return nil, fmt.Errorf("table %q does not exist: create it first, or give SCHEMA.TABLE", r.Table)
	case idType == nil:
		return nil, fmt.Errorf("table %q has no column %q: give the id column with --id-column%s", r.Table, r.IDColumn, pg.NearColumn(ctx, tx, tbl.Sanitize(), r.IDColumn))
	case !idTypes[*idType]:
		return nil, fmt.Errorf("id column %q of %q is of type %s: it must be text, varchar, char, smallint, integer, bigint or uuid", r.IDColumn, r.Table, *idType)
	case r.PerUserPlans && !deterministic:
		return nil, fmt.Errorf("id column %q of %q has a nondeterministic collation, under which the ids of per-user plans match rows of other ids: give the column a deterministic collation, or leave out --per-user-plans", r.IDColumn, r.Table)
	case r.OwnerColumn != "" && ownerType == nil:
		return nil, fmt.Errorf("table %q has no column %q: give the owner column with --owner-column%s", r.Table, r.OwnerColumn, pg.NearColumn(ctx, tx, tbl.Sanitize(), r.OwnerColumn))
	}
	if r.InsertRole != "" {
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, r.InsertRole).Scan(&exists); err != nil {
			return nil, fmt.Errorf("look up role: %w", err)
		}
		if !exists {
			return nil, fmt.Errorf("insert role %q does not exist: create it first, or give the application's role", r.InsertRole)
		}
	}
	attached, err := isAttached(ctx, tx, r.Object)
	if err != nil {
		return nil, err
	}
	if err := attachedAsObject(ctx, tx, tbl, r); err != nil {
		return nil, err
	}
	c := &idColumn{name: r.IDColumn, typ: *idType}
	if collSchema != nil && collName != nil {
		c.collSchema, c.collName = *collSchema, *collName
	}
	// COLLATE "C": a nondeterministic collation of the id column must not
	// make ids that differ only in case (or accents) match.
	if attached {
		c.prefix = r.Object + ":"
		c.key, err = format(ctx, tx, `((%L || %I::text) COLLATE "C")`, c.prefix, r.IDColumn)
	} else {
		c.key, err = format(ctx, tx, `(%I::text COLLATE "C")`, r.IDColumn)
	}
	return c, err
}

// isAttached says whether object is attached (recalc attach): its records'
// ids are then "object:" and the application's id. recalc.attachment may
// not exist in this schema version.
func isAttached(ctx context.Context, tx pgx.Tx, object string) (bool, error) {
	var has bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('recalc.attachment') IS NOT NULL`).Scan(&has); err != nil {
		return false, fmt.Errorf("look up attachments: %w", err)
	}
	if !has {
		return false, nil
	}
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM recalc.attachment WHERE object = $1)`, object).Scan(&has); err != nil {
		return false, fmt.Errorf("look up attachments: %w", err)
	}
	return has, nil
}

// attachedAsObject refuses policies for r.Object on a table attached as
// another object: its rows' ids are that object's records, none of
// r.Object's, so the policies would hide every row. recalc.attachment may
// not exist in this schema version.
func attachedAsObject(ctx context.Context, tx pgx.Tx, tbl pgx.Identifier, r *RLS) error {
	var other *string
	if err := tx.QueryRow(ctx, `SELECT CASE WHEN to_regclass('recalc.attachment') IS NOT NULL THEN
		(SELECT a.object FROM recalc.attachment a WHERE a.relid = to_regclass($1) ORDER BY a.object LIMIT 1) END`,
		tbl.Sanitize()).Scan(&other); err != nil {
		return fmt.Errorf("look up attachments: %w", err)
	}
	if other != nil && *other != r.Object {
		return fmt.Errorf("table %q is attached as object %.100q (recalc attach --list), so its rows are that object's records: give --object %.100q",
			r.Table, *other, *other)
	}
	return nil
}

// dropPolicies returns the statements dropping recalc's policies from tbl.
func dropPolicies(tbl pgx.Identifier) []string {
	var out []string
	for _, p := range policyNames {
		out = append(out, `DROP POLICY IF EXISTS `+pgx.Identifier{p}.Sanitize()+` ON `+tbl.Sanitize())
	}
	return append(out, `DROP TRIGGER IF EXISTS `+pgx.Identifier{writeGuard}.Sanitize()+` ON `+tbl.Sanitize())
}

// DisableRLS drops recalc's policies and write guard from table, and
// disables row-level security unless other policies remain: those are the
// application's, and stay in force. It returns their names.
func DisableRLS(ctx context.Context, tx pgx.Tx, table string) (remaining []string, err error) {
	if err := CheckTable(table); err != nil {
		return nil, err
	}
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return nil, err
	}
	if err := lockTable(ctx, tx, tbl); err != nil {
		return nil, fmt.Errorf("drop recalc's policies from %.100q: %w", table, err)
	}
	for _, sql := range dropPolicies(tbl) {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("drop recalc's policies from %.100q: %w", table, err)
		}
	}
	if remaining, err = OtherPolicies(ctx, tx, table, false); err != nil || len(remaining) > 0 {
		return remaining, err
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+tbl.Sanitize()+` DISABLE ROW LEVEL SECURITY`); err != nil {
		return nil, fmt.Errorf("disable row-level security on %.100q: %w", table, err)
	}
	return nil, nil
}

// OtherPolicies returns the names of table's policies that recalc did not
// install; with reads, only the permissive ones that admit rows to SELECT,
// which widen what recalc_read shows (permissive policies add up).
func OtherPolicies(ctx context.Context, tx pgx.Tx, table string, reads bool) ([]string, error) {
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT polname::text FROM pg_catalog.pg_policy
		WHERE polrelid = pg_catalog.to_regclass($1) AND polname::text <> ALL ($2)
		  AND (NOT $3 OR (polpermissive AND polcmd IN ('r', '*')))
		ORDER BY polname`, tbl.Sanitize(), policyNames, reads)
	if err != nil {
		return nil, fmt.Errorf("list the policies of %.100q: %w", table, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the policies of %.100q: %w", table, err)
	}
	return names, nil
}

// OwnerBypass returns the owner of table and whether reads as that owner
// bypass recalc's policies: row-level security is not forced on the table,
// or the owner is a superuser or has BYPASSRLS.
func OwnerBypass(ctx context.Context, tx pgx.Tx, table string) (string, bool, error) {
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return "", false, err
	}
	var owner string
	var bypass bool
	err = tx.QueryRow(ctx, `SELECT o.rolname::text, NOT c.relforcerowsecurity OR o.rolsuper OR o.rolbypassrls
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
		WHERE c.oid = pg_catalog.to_regclass($1)`, tbl.Sanitize()).Scan(&owner, &bypass)
	if err != nil {
		return "", false, fmt.Errorf("look up owner of %q: %w", table, err)
	}
	return owner, bypass, nil
}

// EngineBlocked returns the role owning schema recalc, which absorbs the
// writes to attached tables (migration 019), and whether row-level security
// on table keeps it from reading the table: table is captured for an
// attached object, and that role neither owns it nor is a superuser nor has
// BYPASSRLS. The absorb reads with row_security off, so PostgreSQL refuses
// the read rather than run a policy, and the table's writes wait.
func EngineBlocked(ctx context.Context, tx pgx.Tx, table string) (string, bool, error) {
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return "", false, err
	}
	var engine string
	var blocked bool
	err = tx.QueryRow(ctx, `SELECT e.rolname::text, c.relowner <> e.oid AND NOT e.rolsuper AND NOT e.rolbypassrls
		  AND EXISTS (SELECT 1 FROM recalc.attach_capture a WHERE a.relid = c.oid)
		FROM pg_catalog.pg_class c, pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles e ON e.oid = n.nspowner
		WHERE c.oid = pg_catalog.to_regclass($1) AND n.nspname = 'recalc'`, tbl.Sanitize()).Scan(&engine, &blocked)
	if err != nil {
		return "", false, fmt.Errorf("look up the engine's rights on %s: %w", table, err)
	}
	return engine, blocked, nil
}

// ViewBases returns the objects attached through views that table is a base
// table of, sorted (none when it is no view's base table): the write guard
// knows no owner or parent column of such a table, and a table several
// objects' views read (vtiger's vtiger_crmentity) holds rows of each. A
// table attached as an object itself has none: its rows are that object's
// records, whatever views also read them, and its write guard checks it.
func ViewBases(ctx context.Context, tx pgx.Tx, table string) ([]string, error) {
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return nil, err
	}
	var objects []string
	err = tx.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT a.object ORDER BY a.object), '{}') FROM recalc.attach_capture c JOIN recalc.attachment a ON a.object = c.object
		WHERE c.relid = pg_catalog.to_regclass($1) AND a.is_view
		  AND NOT EXISTS (SELECT FROM recalc.attachment d WHERE d.relid = c.relid AND NOT d.is_view AND d.object <> 'users')`,
		tbl.Sanitize()).Scan(&objects)
	if err != nil {
		return nil, fmt.Errorf("look up the views attached over %s: %w", table, err)
	}
	return objects, nil
}

// UnguardedBaseTables returns the tables that carry recalc's write guard
// while no object is attached to them any more, only views over them, each
// as "table (object)", sorted: the guard reads the table's attachment as it
// runs, so there it checks nothing (an attach that moved the object from
// the table to a view over it leaves its policies and trigger in place).
func UnguardedBaseTables(ctx context.Context, tx pgx.Tx) ([]string, error) {
	var tables []string
	err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(x.entry ORDER BY x.entry), '{}') FROM (
		SELECT c.relid::regclass::text || ' (' || string_agg(DISTINCT a.object, ', ' ORDER BY a.object) || ')' AS entry
		FROM recalc.attach_capture c JOIN recalc.attachment a ON a.object = c.object
		WHERE a.is_view AND a.object <> 'users'
		  AND EXISTS (SELECT FROM pg_catalog.pg_trigger g WHERE g.tgrelid = c.relid AND g.tgname = $1)
		  AND NOT EXISTS (SELECT FROM recalc.attachment d WHERE d.relid = c.relid AND NOT d.is_view AND d.object <> 'users')
		GROUP BY c.relid) x`, writeGuard).Scan(&tables)
	if err != nil {
		return nil, fmt.Errorf("look up the write guards over views' base tables: %w", err)
	}
	return tables, nil
}

// ParentWithoutKey returns the parent object of the object attached to
// table when the table's parent column has no foreign key to the parent's
// attached table ("" otherwise): without one, a user may leave a child
// under a parent id that no longer exists, and gain read of whatever record
// later takes that id (implicit parent access).
func ParentWithoutKey(ctx context.Context, tx pgx.Tx, table string) (string, error) {
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return "", err
	}
	var parent string
	err = tx.QueryRow(ctx, `SELECT coalesce(min(a.parent_object), '')
		FROM recalc.attachment a JOIN recalc.attachment p ON p.object = a.parent_object AND NOT p.is_view
		WHERE a.relid = pg_catalog.to_regclass($1) AND NOT a.is_view AND NOT EXISTS (
		    SELECT 1 FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_attribute k ON k.attrelid = c.conrelid AND k.attnum = c.conkey[1]
		    WHERE c.conrelid = a.relid AND c.contype = 'f' AND c.confrelid = p.relid AND cardinality(c.conkey) = 1 AND k.attname = a.parent_col)`,
		tbl.Sanitize()).Scan(&parent)
	if err != nil {
		return "", fmt.Errorf("look up the foreign key of %s's parent column: %w", table, err)
	}
	return parent, nil
}

// CutRoleName is a user whose id is longer than a PostgreSQL name: no role
// is named like it, and a role created with its id is cut to the id's first
// MaxName bytes (on a character boundary). Other is the user of that cut
// name, if any: its rows are the ones such a role reads under a policy that
// takes the user from current_user.
type CutRoleName struct {
	User, Other string
}

// CutRoleNames returns the users whose ids no role can be named like, those
// whose cut name is another user's id first, at most limit of them, and how
// many there are in all. PostgreSQL cuts a role name as it cuts text to
// name, so the cut is the same.
func CutRoleNames(ctx context.Context, tx pgx.Tx, limit int) ([]CutRoleName, int, error) {
	rows, err := tx.Query(ctx, `SELECT u.id, coalesce(o.id, ''), count(*) OVER ()
		FROM recalc.acl_user u LEFT JOIN recalc.acl_user o ON o.id = u.id::name::text
		WHERE octet_length(u.id) > $1
		ORDER BY o.id IS NULL, u.id COLLATE "C" LIMIT $2`, pg.MaxName, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("look up users longer than a role name: %w", err)
	}
	var total int
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CutRoleName, error) {
		var c CutRoleName
		err := row.Scan(&c.User, &c.Other, &total)
		return c, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("look up users longer than a role name: %w", err)
	}
	return out, total, nil
}

// UnprotectedRelatives returns the partitions and inheritance children of
// table (at any depth) and its ancestors that have no row-level security,
// each schema-qualified, sorted, at most limit of each. PostgreSQL applies a
// table's policies only to reads through that table: a read of a child
// applies the child's own, and a read of a parent the parent's, which sees
// the child's rows.
func UnprotectedRelatives(ctx context.Context, tx pgx.Tx, table string, limit int) (children, parents []string, err error) {
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return nil, nil, err
	}
	err = tx.QueryRow(ctx, `WITH RECURSIVE
		down (relid) AS (SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = pg_catalog.to_regclass($1)
		                 UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN down d ON i.inhparent = d.relid),
		up (relid) AS (SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = pg_catalog.to_regclass($1)
		               UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up u ON i.inhrelid = u.relid),
		bare (dir, name) AS (
		    SELECT x.dir, pg_catalog.format('%I.%I', n.nspname, c.relname)
		    FROM (SELECT 'down' AS dir, relid FROM down UNION ALL SELECT 'up', relid FROM up) x
		    JOIN pg_catalog.pg_class c ON c.oid = x.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		    WHERE NOT c.relrowsecurity)
		SELECT coalesce((SELECT pg_catalog.array_agg(name ORDER BY name COLLATE "C") FROM (
		           SELECT name FROM bare WHERE dir = 'down' ORDER BY name COLLATE "C" LIMIT $2) d), '{}'),
		       coalesce((SELECT pg_catalog.array_agg(name ORDER BY name COLLATE "C") FROM (
		           SELECT name FROM bare WHERE dir = 'up' ORDER BY name COLLATE "C" LIMIT $2) u), '{}')`,
		tbl.Sanitize(), limit).Scan(&children, &parents)
	if err != nil {
		return nil, nil, fmt.Errorf("look up the partitions and inheritance relatives of %.100q: %w", table, err)
	}
	return children, parents, nil
}

// BypassingViews returns the views and materialized views that read table
// directly and show its rows without its policies, schema-qualified and
// sorted, at most limit: PostgreSQL reads a view's tables with its owner's
// rights unless the view is security_invoker, and row-level security
// treats that owner as the reader (the table's owner, or a member of it,
// without FORCE ROW LEVEL SECURITY, a superuser or a BYPASSRLS role see
// every row); a materialized view holds what its last refresh read.
// recalc's own read views (attached tables) are left out: only the sandbox
// reads them, during an absorb. So is a view an object is attached through
// (owned by recalc's role, which may not make it security_invoker) that no
// role but its owner may read, whole or a column of it (a column's grant
// shows that column of every row); one that others may read is returned in
// attached instead, since the remedy is to revoke, never security_invoker,
// which stops its absorbs. Each list holds at most limit views.
func BypassingViews(ctx context.Context, tx pgx.Tx, table string, limit int) (views, attached []string, err error) {
	tbl, err := resolveTable(ctx, tx, table)
	if err != nil {
		return nil, nil, err
	}
	err = tx.QueryRow(ctx, `SELECT coalesce(pg_catalog.array_agg(name ORDER BY name COLLATE "C") FILTER (WHERE NOT att), '{}'),
		coalesce(pg_catalog.array_agg(name ORDER BY name COLLATE "C") FILTER (WHERE att), '{}') FROM (
		SELECT name, att, pg_catalog.row_number() OVER (PARTITION BY att ORDER BY name COLLATE "C") AS k FROM (
		SELECT DISTINCT pg_catalog.format('%I.%I', n.nspname, v.relname) AS name,
		       EXISTS (SELECT FROM recalc.attachment a WHERE a.relid = v.oid) AS att,
		       EXISTS (SELECT FROM pg_catalog.aclexplode(v.relacl) p
		               WHERE p.grantee <> v.relowner AND p.privilege_type = 'SELECT')
		       OR EXISTS (SELECT FROM pg_catalog.pg_attribute c, pg_catalog.aclexplode(c.attacl) p
		                  WHERE c.attrelid = v.oid AND p.grantee <> v.relowner AND p.privilege_type = 'SELECT') AS shared
		FROM pg_catalog.pg_class t
		JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = t.oid
		     AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
		JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
		JOIN pg_catalog.pg_class v ON v.oid = w.ev_class AND v.oid <> t.oid
		JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
		JOIN pg_catalog.pg_roles o ON o.oid = v.relowner
		WHERE t.oid = pg_catalog.to_regclass($1) AND n.nspname <> 'recalc'
		  AND (v.relkind = 'm'
		       OR v.relkind = 'v'
		          AND NOT EXISTS (SELECT FROM pg_catalog.unnest(v.reloptions) x
		                          WHERE x OPERATOR(pg_catalog.~*) '^security_invoker=(t|tr|tru|true|y|ye|yes|on|1)$')
		          AND (o.rolsuper OR o.rolbypassrls
		               OR NOT t.relforcerowsecurity AND pg_catalog.pg_has_role(o.oid, t.relowner, 'USAGE')))
		) y WHERE shared OR NOT att) x WHERE k <= $2`, tbl.Sanitize(), limit).Scan(&views, &attached)
	if err != nil {
		return nil, nil, fmt.Errorf("look up the views over %.100q: %w", table, err)
	}
	return views, attached, nil
}

// tableLockWait bounds how long `recalc rls enable` and `disable` try to
// lock the application's table (lockTable) before they fail.
const tableLockWait = 10 * time.Second

// lockTable locks tbl ACCESS EXCLUSIVE until tx ends, as the policy, trigger
// and ALTER TABLE statements that follow would, tried 100 ms at a time
// (locks.Retry): PostgreSQL queues every later read and write of a table
// behind a statement waiting to lock it, so waiting for as long as the
// application kept a transaction open on the table stopped all its other
// reads and writes of it for as long. Past tableLockWait it fails, naming
// the sessions seen blocking its waits (locks.Watch; those holding locks
// on the table when none was seen); nothing has changed then.
func lockTable(ctx context.Context, tx pgx.Tx, tbl pgx.Identifier) error {
	start := time.Now()
	took, blocking, err := locks.RetrySession(ctx, tx, tableLockWait, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, `LOCK TABLE `+tbl.Sanitize()+` IN ACCESS EXCLUSIVE MODE`)
		return err
	})
	if err != nil || took {
		return err
	}
	held := locks.Blamed(blocking, "sessions holding locks on it",
		func() []string { return locks.Holders(ctx, tx, locks.AnyLock, []string{tbl.Sanitize()}) })
	return fmt.Errorf("other transactions kept the table locked for %s (%s): nothing was changed; "+
		"run it again once they end", time.Since(start).Round(100*time.Millisecond), held)
}
