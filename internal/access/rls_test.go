package access_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestMain runs four tests at a time by default (testkit.Main): they wait on
// PostgreSQL, some of them for its timeouts, and drops their databases
// (testdb.Main).
func TestMain(m *testing.M) { os.Exit(testkit.Main(m, 4)) }

// bundle is a test's database and a non-superuser role, with reader
// access, that reads application tables through recalc's policies under
// SET LOCAL ROLE.
type bundle struct {
	ctx  context.Context
	pool *pgxpool.Pool // superuser: owns the application tables
	role string        // quoted
}

// outdated lists the tables OutdatedPolicies names (those `recalc init`
// tells to run `rls enable` again).
func (b *bundle) outdated(t *testing.T) []string {
	t.Helper()
	got, err := access.OutdatedPolicies(b.ctx, b.pool)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{ctx: context.Background(), pool: testdb.Migrated(t)}
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	name := "rls_app_" + hex.EncodeToString(tok[:])
	b.role = pgx.Identifier{name}.Sanitize()
	if _, err := b.pool.Exec(b.ctx, `CREATE ROLE `+b.role+` NOLOGIN NOSUPERUSER NOBYPASSRLS`); err != nil {
		t.Fatal(err)
	}
	testdb.DropRoles(t, b.pool.Config().ConnString(), name)
	b.tx(t, func(tx pgx.Tx) error { return access.Grant(b.ctx, tx, access.Reader, name) })
	return b
}

// tx runs fn in a transaction as the superuser.
func (b *bundle) tx(t *testing.T, fn func(pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(b.ctx, b.pool, fn); err != nil {
		t.Fatal(err)
	}
}

// asUser runs sql as the role with app.user_id = user in a transaction
// that is rolled back, and returns the first column of its rows, sorted.
func (b *bundle) asUser(t *testing.T, user, sql string, args ...any) []string {
	t.Helper()
	return b.asUserWith(t, "", user, sql, args...)
}

// asUserWith is asUser with the settings (SET LOCAL ...) first. Without
// settings or a query mode among args, the transaction's five statements go
// in one round trip (a pipeline): the oracle tests run tens of thousands.
func (b *bundle) asUserWith(t *testing.T, settings, user, sql string, args ...any) []string {
	t.Helper()
	if settings == "" && !slices.ContainsFunc(args, func(a any) bool { _, mode := a.(pgx.QueryExecMode); return mode }) {
		return b.asUserPipelined(t, user, sql, args...)
	}
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role+`; `+settings); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(b.ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(b.ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s as %s: %v", sql, user, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s as %s: %v", sql, user, err)
	}
	slices.Sort(got)
	return got
}

// asUserPipelined is asUser's transaction sent as one batch.
func (b *bundle) asUserPipelined(t *testing.T, user, sql string, args ...any) []string {
	t.Helper()
	batch := &pgx.Batch{}
	batch.Queue(`BEGIN`)
	batch.Queue(`SET LOCAL ROLE ` + b.role)
	batch.Queue(`SELECT set_config('app.user_id', $1, true)`, user)
	batch.Queue(sql, args...)
	batch.Queue(`ROLLBACK`)
	br := b.pool.SendBatch(b.ctx, batch)
	defer br.Close()
	for range 3 {
		if _, err := br.Exec(); err != nil {
			t.Fatalf("as %s: %v", user, err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		t.Fatalf("%s as %s: %v", sql, user, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s as %s: %v", sql, user, err)
	}
	if _, err := br.Exec(); err != nil {
		t.Fatalf("roll back as %s: %v", user, err)
	}
	slices.Sort(got)
	return got
}

// idScheme maps the i-th record of a model to its id, for an id column type.
type idScheme struct {
	sqlType string
	id      func(i int) string
}

var schemes = map[string]idScheme{
	"text":   {"text", func(i int) string { return "r" + strconv.Itoa(i) }},
	"bigint": {"bigint", func(i int) string { return strconv.Itoa(1000 + i) }},
	"uuid":   {"uuid", func(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }},
	// the per-user policy converts ids to the column's type and collation
	"integer": {"integer", func(i int) string { return strconv.Itoa(-500 + i) }},
	"varchar": {`varchar(12) COLLATE "C"`, func(i int) string { return "v" + strconv.Itoa(i) }},
	"char":    {`char(12) COLLATE "C"`, func(i int) string { return "c" + strconv.Itoa(i) }},
}

// renumber gives m's records the scheme's ids, and every reference to them.
func renumber(m *model.Model, s idScheme) {
	ids := map[string]string{}
	for i := range m.Records {
		ids[m.Records[i].ID] = s.id(i + 1)
	}
	for i := range m.Records {
		m.Records[i].ID = ids[m.Records[i].ID]
		if m.Records[i].Parent != "" {
			m.Records[i].Parent = ids[m.Records[i].Parent]
		}
	}
	for i := range m.Shares {
		m.Shares[i].Record = ids[m.Shares[i].Record]
	}
	for i := range m.Teams {
		m.Teams[i].Record = ids[m.Teams[i].Record]
	}
}

// TestPolicyMatchesOracle installs recalc's read and write policies, the
// adaptive ones and the per-user ones, on one application table per object
// of random models, with text, bigint and uuid id columns, and reads and
// writes them as a non-superuser role: for every user (inactive and unknown
// ones too) SELECT returns exactly the rows the oracle says the user can
// read (per-user policies also with sequential scans off, so the planner
// takes the index arms), UPDATE and DELETE reach exactly the rows it can
// edit, and visible_records walked page by page lists each readable record
// exactly once. Both policies' tables are made in one database per id
// type, from the same imports and full runs.
func TestPolicyMatchesOracle(t *testing.T) {
	t.Parallel()
	for name, s := range schemes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			var filtered [2]int // adaptive, per-user
			var stored *model.Model
			for seed := 1; seed <= 3; seed++ {
				m := oracle.RandomModel(mrand.New(mrand.NewPCG(uint64(seed), 0x415)), 30+seed*10)
				renumber(m, s)
				testkit.ImportModel(t, b.ctx, b.pool, m, nil)
				if _, err := engine.Full(b.ctx, b.pool, engine.Options{Workers: 2}, zerolog.Nop()); err != nil {
					t.Fatalf("seed %d: full run: %v", seed, err)
				}
				// What the import stored: a record whose owner changed
				// since the last model loses the manual shares it had.
				stored = oracle.Merge(stored, m, testkit.EverySection())
				f := b.checkModel(t, seed, stored, s)
				filtered[0], filtered[1] = filtered[0]+f[0], filtered[1]+f[1]
			}
			for i, n := range filtered {
				if n == 0 {
					t.Fatalf("per-user=%v: no user saw a strict subset of a table: the models do not exercise the policies", i == 1)
				}
			}
		})
	}
}

// checkModel checks every object's tables, one with the adaptive policies
// and one with the per-user ones, and every user of m, and returns how many
// (user, table) pairs saw a strict subset of the table's records, for each
// policy. What reads no application table (can_access, the pages) is
// checked once.
func (b *bundle) checkModel(t *testing.T, seed int, m *model.Model, s idScheme) [2]int {
	t.Helper()
	// The planner's statistics, as a live database has them: with them it
	// may plan a visible_records batch otherwise.
	if _, err := b.pool.Exec(b.ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	read, edit, levels := map[[2]string][]string{}, map[[2]string][]string{}, map[[2]string][]string{}
	for _, r := range oracle.Access(m) {
		k := [2]string{r.Object, r.User}
		read[k] = append(read[k], r.Record)
		levels[k] = append(levels[k], r.Record+" "+r.Level.String())
		if r.Level >= model.Edit {
			edit[k] = append(edit[k], r.Record)
		}
	}
	var all []string
	for _, r := range m.Records {
		all = append(all, r.ID)
	}
	users := []string{"nobody"}
	for _, u := range m.Users {
		users = append(users, u.ID)
	}
	var filtered [2]int
	for _, o := range m.Objects {
		var tables [2]string
		var records int
		for i, perUser := range []bool{false, true} {
			tables[i], records = b.appTable(t, seed, o.Name, m, s, perUser)
		}
		for _, u := range users {
			k := [2]string{o.Name, u}
			want, wantEdit := sorted(read[k]), sorted(edit[k])
			for i, table := range tables {
				b.checkTable(t, fmt.Sprintf("seed %d: per-user=%v: %s", seed, i == 1, u), table, u, want, wantEdit, i == 1)
				if len(want) > 0 && len(want) < records { // what the table showed u
					filtered[i]++
				}
			}
			// can_access alone, per record (the policies call it for broad
			// users and public objects only): every record of the model is
			// asked, so records of other objects must be refused.
			for _, lv := range []struct {
				name string
				want []string
			}{{"read", want}, {"edit", wantEdit}} {
				got := b.asUser(t, u, `SELECT r FROM unnest($1::text[]) r WHERE recalc.can_access($2, $3, r, $4)`, all, u, o.Name, lv.name)
				if !slices.Equal(got, lv.want) {
					t.Fatalf("seed %d: can_access(%s, %s, _, %s) holds for %v, oracle says %v", seed, u, o.Name, lv.name, got, lv.want)
				}
			}
			if got, want := b.walk(t, u, o.Name, 3), sorted(levels[k]); !slices.Equal(got, want) {
				t.Fatalf("seed %d: visible_records pages of %s for %s list %v, oracle says %v", seed, o.Name, u, got, want)
			}
		}
	}
	return filtered
}

// checkTable reads, updates and deletes table's rows as user through its
// policies (the per-user ones also with sequential scans off) and fails
// unless they are the oracle's want and wantEdit; what starts the messages.
func (b *bundle) checkTable(t *testing.T, what, table, u string, want, wantEdit []string, perUser bool) {
	t.Helper()
	if got := b.asUser(t, u, `SELECT id::text FROM `+table); !slices.Equal(got, want) {
		t.Fatalf("%s sees %v of %s through RLS, oracle says %v", what, got, table, want)
	}
	if perUser {
		if got := b.asUserWith(t, `SET LOCAL enable_seqscan = off`, u, `SELECT id::text FROM `+table); !slices.Equal(got, want) {
			t.Fatalf("%s sees %v of %s through RLS without seq scans, oracle says %v", what, got, table, want)
		}
	}
	if got := b.asUser(t, u, `UPDATE `+table+` SET owner = owner RETURNING id::text`); !slices.Equal(got, wantEdit) {
		t.Fatalf("%s updates %v of %s through RLS, oracle says it may edit %v", what, got, table, wantEdit)
	}
	if got := b.asUser(t, u, `DELETE FROM `+table+` RETURNING id::text`); !slices.Equal(got, wantEdit) {
		t.Fatalf("%s deletes %v of %s through RLS, oracle says it may edit %v", what, got, table, wantEdit)
	}
}

// appTable creates the application table of object's records in m (and a
// row that is no record), owned by the superuser, with recalc's policies,
// and returns its quoted name and how many records it holds.
func (b *bundle) appTable(t *testing.T, seed int, object string, m *model.Model, s idScheme, perUser bool) (string, int) {
	t.Helper()
	name := fmt.Sprintf("app_%s_%d", object, seed)
	if perUser {
		name += "_pu"
	}
	table := pgx.Identifier{name}.Sanitize()
	var ids []string
	for _, r := range m.Records {
		if r.Object == object {
			ids = append(ids, r.ID)
		}
	}
	records := len(ids)
	ids = append(ids, s.id(99999)) // no record: nobody sees it
	b.tx(t, func(tx pgx.Tx) error {
		for _, sql := range []string{
			`CREATE TABLE ` + table + ` (id ` + s.sqlType + ` PRIMARY KEY, owner text)`,
			`INSERT INTO ` + table + ` (id) SELECT unnest($1::text[])::` + s.sqlType,
			`GRANT SELECT, UPDATE, DELETE ON ` + table + ` TO ` + b.role,
		} {
			args := []any{}
			if strings.Contains(sql, "$1") {
				args = append(args, ids)
			}
			if _, err := tx.Exec(b.ctx, sql, args...); err != nil {
				return fmt.Errorf("%s: %w", sql, err)
			}
		}
		return access.EnableRLS(b.ctx, tx, &access.RLS{Table: name, Object: object, IDColumn: "id", UserSetting: "app.user_id", Write: true, PerUserPlans: perUser})
	})
	return table, records
}

// walk lists the records of object that user can read, each with its
// level ("a1 edit"), page by page of limit, as the role; a record listed
// twice fails the test.
func (b *bundle) walk(t *testing.T, user, object string, limit int) []string {
	t.Helper()
	var all []string
	seen := map[string]bool{}
	after := ""
	for pages := 0; ; pages++ {
		page := b.asUser(t, user, `SELECT record || ' ' || level FROM recalc.visible_records($1, $2, 'read', $3, $4)`, user, object, after, limit)
		for _, r := range page {
			rec, _, _ := strings.Cut(r, " ")
			if seen[rec] {
				t.Fatalf("visible_records lists %s twice for %s", rec, user)
			}
			seen[rec] = true
			after = max(after, rec)
		}
		all = append(all, page...)
		if len(page) < limit {
			slices.Sort(all)
			return all
		}
		if pages > 10000 {
			t.Fatal("visible_records pages never end")
		}
	}
}

func sorted(xs []string) []string {
	out := slices.Clone(xs)
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// TestEnableRLSRejects holds EnableRLS to one clear error for each bad
// argument, with nothing installed.
func TestEnableRLSRejects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	testkit.ImportModel(t, b.ctx, b.pool, oracle.RandomModel(mrand.New(mrand.NewPCG(7, 7)), 20), nil)
	b.tx(t, func(tx pgx.Tx) error {
		_, err := tx.Exec(b.ctx, `CREATE TABLE app (id text PRIMARY KEY, num numeric, owner text);
			CREATE SCHEMA "Ws"; CREATE TABLE "Ws"."Company" (id uuid PRIMARY KEY, "recordId" uuid, "accountOwnerId" uuid);
			CREATE TABLE "my.table" (id text PRIMARY KEY); CREATE SCHEMA "a.b"; CREATE TABLE "a.b".t (id text PRIMARY KEY)`)
		return err
	})
	// Names are taken as the catalog spells them, unquoted and
	// case-sensitive: a quoted or case-folded one (as typed for Twenty's
	// quoted camelCase schema) is told the name it would be.
	near := func(name string) string {
		return fmt.Sprintf(`: did you mean %q? (names as the catalog spells them, unquoted and case-sensitive)`, name)
	}
	for _, tc := range []struct {
		name   string
		r      access.RLS
		want   string
		asRole bool // as the test's role, which does not own the table
	}{
		{"not the owner", access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id"}, "only the owner of app (", true},
		{"misspelled object", access.RLS{Table: "app", Object: "acount", IDColumn: "id", UserSetting: "app.user_id"}, `object "acount" is not in the stored model: give one of account`, false},
		{"no table", access.RLS{Table: "nope", Object: "account", IDColumn: "id", UserSetting: "app.user_id"}, `table "nope" does not exist`, false},
		{"no column", access.RLS{Table: "app", Object: "account", IDColumn: "key", UserSetting: "app.user_id"}, `has no column "key"`, false},
		{"bad id type", access.RLS{Table: "app", Object: "account", IDColumn: "num", UserSetting: "app.user_id"}, "is of type numeric: it must be text", false},
		{"no owner column", access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id", OwnerColumn: "boss"}, `has no column "boss"`, false},
		{"no insert role", access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id", InsertRole: "no_such_role_x"}, `insert role "no_such_role_x" does not exist`, false},
		{"bad setting", access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "user"}, "must look like prefix.name", false},
		{"quoted table", access.RLS{Table: `"Ws"."Company"`, Object: "account", IDColumn: "id", UserSetting: "app.user_id"}, `does not exist: create it first, or give SCHEMA.TABLE` + near("Ws.Company"), false},
		{"folded table", access.RLS{Table: "ws.company", Object: "account", IDColumn: "id", UserSetting: "app.user_id"}, `table "ws.company" does not exist: create it first, or give SCHEMA.TABLE` + near("Ws.Company"), false},
		{"table off the path", access.RLS{Table: "Company", Object: "account", IDColumn: "id", UserSetting: "app.user_id"}, `table "Company" does not exist: create it first, or give SCHEMA.TABLE` + near("Ws.Company"), false},
		{"folded id column", access.RLS{Table: "Ws.Company", Object: "account", IDColumn: "recordid", UserSetting: "app.user_id"}, `has no column "recordid": give the id column with --id-column` + near("recordId"), false},
		{"quoted owner column", access.RLS{Table: "Ws.Company", Object: "account", IDColumn: "id", UserSetting: "app.user_id", OwnerColumn: `"accountOwnerId"`}, `give the owner column with --owner-column` + near("accountOwnerId"), false},
		// A name holding a dot cannot be given (names are unquoted): the
		// error says so, and to rename it, not to give SCHEMA.TABLE.
		{"dotted schema", access.RLS{Table: "a.b.t", Object: "account", IDColumn: "id", UserSetting: "app.user_id"},
			`table "a.b.t" holds more than one dot: --table is TABLE or SCHEMA.TABLE, split at the dot, so a schema or table whose name holds a dot cannot be named; rename it to a name without one`, false},
		{"dotted table", access.RLS{Table: "my.table", Object: "account", IDColumn: "id", UserSetting: "app.user_id"},
			`table "my.table" does not exist as SCHEMA.TABLE, but table public."my.table" does, whose name holds the dot: --table is split at it, so that table cannot be named; rename it to a name without one`, false},
	} {
		err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
			if tc.asRole {
				if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role); err != nil {
					return err
				}
			}
			return access.EnableRLS(b.ctx, tx, &tc.r)
		})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: EnableRLS error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	var policies int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM pg_policy WHERE polrelid IN ('app'::regclass, '"Ws"."Company"'::regclass, '"my.table"'::regclass, '"a.b".t'::regclass)`).Scan(&policies); err != nil || policies != 0 {
		t.Errorf("rejected calls left %d policies (err %v)", policies, err)
	}
}

// TestInsertAndOwnerPolicies: without --insert-role an INSERT under the
// policy fails; the insert role may insert any row; with an owner column a
// user reads and updates its own rows before any run gives them a record.
func TestInsertAndOwnerPolicies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := testkit.ImportString(b.ctx, b.pool, `{"objects": [{"name": "account", "internal_owd": "private"}], "users": [{"id": "u1"}, {"id": "u2"}]}`); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Full(b.ctx, b.pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	b.tx(t, func(tx pgx.Tx) error {
		_, err := tx.Exec(b.ctx, `CREATE TABLE app (id bigint PRIMARY KEY, owner text); GRANT SELECT, INSERT, UPDATE ON app TO `+b.role)
		return err
	})
	next := 100
	insert := func(owner string) error {
		next++
		return pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role+`; SELECT set_config('app.user_id', 'u1', true)`)
			if err == nil {
				_, err = tx.Exec(b.ctx, `INSERT INTO app VALUES ($1, $2)`, next, owner)
			}
			return errors.Join(err, errors.New("rollback"))
		})
	}
	enable := func(r access.RLS) {
		r.Table, r.Object, r.IDColumn, r.UserSetting = "app", "account", "id", "app.user_id"
		b.tx(t, func(tx pgx.Tx) error { return access.EnableRLS(b.ctx, tx, &r) })
	}
	enable(access.RLS{})
	if err := insert("u1"); !strings.Contains(err.Error(), "row-level security") {
		t.Errorf("insert under the read policy alone: %v, want a row-level security violation", err)
	}
	enable(access.RLS{InsertRole: strings.Trim(b.role, `"`)})
	if err := insert("u2"); strings.Contains(err.Error(), "row-level security") {
		t.Errorf("insert by the insert role: %v", err)
	}
	enable(access.RLS{OwnerColumn: "owner"})
	b.tx(t, func(tx pgx.Tx) error {
		_, err := tx.Exec(b.ctx, `INSERT INTO app VALUES (1, 'u1'), (2, 'u2')`)
		return err
	})
	if got := b.asUser(t, "u1", `SELECT id::text FROM app`); !slices.Equal(got, []string{"1"}) {
		t.Errorf("u1 sees %v with the owner policy, want its own row 1", got)
	}
	if got := b.asUser(t, "u1", `UPDATE app SET owner = owner RETURNING id::text`); !slices.Equal(got, []string{"1"}) {
		t.Errorf("u1 updates %v with the owner policy, want its own row 1", got)
	}
	if err := insert("u1"); strings.Contains(err.Error(), "row-level security") {
		t.Errorf("an owner inserting its own row: %v", err)
	}
	if err := insert("u2"); !strings.Contains(err.Error(), "row-level security") {
		t.Errorf("u1 inserting a row owned by u2: %v, want a row-level security violation", err)
	}
}

// model imports doc and runs a full recalculation.
func (b *bundle) model(t *testing.T, doc string) {
	t.Helper()
	if _, err := testkit.ImportString(b.ctx, b.pool, doc); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Full(b.ctx, b.pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
}

// exec runs statements as the superuser.
func (b *bundle) exec(t *testing.T, sqls ...string) {
	t.Helper()
	for _, sql := range sqls {
		if _, err := b.pool.Exec(b.ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

const privateAccounts = `{"objects": [{"name": "account", "internal_owd": "private"}],
	"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3", "active": false}],
	"records": [{"object": "account", "id": "abc", "owner": "u1"}]}`

// TestRLSKeyIgnoresNondeterministicCollation: an id column with a
// case-insensitive collation does not make 'ABC' match u1's record 'abc'
// (the key is compared COLLATE "C").
func TestRLSKeyIgnoresNondeterministicCollation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, privateAccounts)
	b.exec(t, `CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`,
		`CREATE TABLE app (id text COLLATE ci, v varchar(10) COLLATE ci)`,
		`INSERT INTO app VALUES ('abc', 'abc'), ('ABC', 'ABC'), ('Abc', 'Abc')`,
		`GRANT SELECT ON app TO `+b.role)
	for _, col := range []string{"id", "v"} {
		b.tx(t, func(tx pgx.Tx) error {
			return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: col, UserSetting: "app.user_id"})
		})
		if got := b.asUser(t, "u1", `SELECT id FROM app`); !slices.Equal(got, []string{"abc"}) {
			t.Errorf("id column %s with a case-insensitive collation: u1 sees %v, want only abc", col, got)
		}
		// Per-user plans compare the column itself, in its collation: refused.
		err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
			return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: col, UserSetting: "app.user_id", PerUserPlans: true})
		})
		if err == nil || !strings.Contains(err.Error(), "nondeterministic collation") {
			t.Errorf("per-user plans on id column %s with a case-insensitive collation: error %v, want a refusal", col, err)
		}
	}
}

// TestRLSCharKeysHaveNoTrailingBlanks: a char(n) column's value is the
// key of the record named by its text, without its padding, so the record
// "abc " (u2's) names no row of the table, whose 'abc' is u1's record.
// Both policies admit only u1 to it; the per-user one compared bpchar
// values, whose = ignores trailing blanks, and admitted u2 too (found by an
// attack helper).
func TestRLSCharKeysHaveNoTrailingBlanks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, strings.Replace(privateAccounts, `"owner": "u1"}]`, `"owner": "u1"}, {"object": "account", "id": "abc ", "owner": "u2"}]`, 1))
	b.exec(t, `CREATE TABLE app (id char(8) PRIMARY KEY)`, `INSERT INTO app VALUES ('abc')`, `GRANT SELECT ON app TO `+b.role)
	for _, perUser := range []bool{false, true} {
		b.tx(t, func(tx pgx.Tx) error {
			return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id", PerUserPlans: perUser})
		})
		for _, settings := range []string{"", `SET LOCAL enable_seqscan = off`} {
			for user, want := range map[string][]string{"u1": {"abc"}, "u2": nil} {
				if got := b.asUserWith(t, settings, user, `SELECT id::text FROM app`); !slices.Equal(got, want) {
					t.Errorf("per-user %v, %q: %s sees %q, want %q", perUser, settings, user, got, want)
				}
			}
		}
	}
}

// TestRLSOwnerIgnoresNondeterministicCollation: the owner policy compares
// the owner column COLLATE "C", as the key column: an owner column with a
// case-insensitive collation does not make user U1 the owner of u1's rows.
func TestRLSOwnerIgnoresNondeterministicCollation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, `{"objects": [{"name": "account", "internal_owd": "private"}],
		"users": [{"id": "u1"}, {"id": "U1"}],
		"records": [{"object": "account", "id": "1", "owner": "u1"}]}`)
	b.exec(t, `CREATE COLLATION ci_owner (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`,
		`CREATE TABLE app (id bigint PRIMARY KEY, owner text COLLATE ci_owner, secret text)`,
		`INSERT INTO app VALUES (1, 'u1', 'u1 only'), (2, 'u1', 'u1 only, not yet recalculated')`,
		`GRANT SELECT, UPDATE, DELETE ON app TO `+b.role)
	b.tx(t, func(tx pgx.Tx) error {
		return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id",
			UserSetting: "app.user_id", OwnerColumn: "owner"})
	})
	if got := b.asUser(t, "u1", `SELECT id::text FROM app`); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("u1 sees %v, want its rows 1 and 2 (the setup is wrong)", got)
	}
	if got := b.asUser(t, "U1", `SELECT secret FROM app`); len(got) != 0 {
		t.Errorf("user U1 (who owns nothing and has no share) reads %v through the owner policy", got)
	}
	if got := b.asUser(t, "U1", `UPDATE app SET secret = 'overwritten by U1' RETURNING id::text`); len(got) != 0 {
		t.Errorf("user U1 updates u1's rows %v through the owner policy", got)
	}
}

// TestPerUserPlans: under the per-user policy the planner fetches a
// selective user's rows by id (a BitmapOr on the id index) and scans in
// list order for a broad user, each seeing exactly its rows; whatever a
// session writes into the recalc.rls_plan note, no user sees a row more.
func TestPerUserPlans(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var recs []string
	for i := range 1001 { // u1 reaches 1,001 share rows: broad
		recs = append(recs, fmt.Sprintf(`{"object": "account", "id": "b%04d", "owner": "u1"}`, i))
	}
	for i := range 3000 { // nobody's
		recs = append(recs, fmt.Sprintf(`{"object": "account", "id": "z%04d", "owner": "u9"}`, i))
	}
	b.model(t, `{"objects": [{"name": "account", "internal_owd": "private"}],
		"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u9"}],
		"records": [`+strings.Join(recs, ",")+`, {"object": "account", "id": "c0", "owner": "u2"}, {"object": "account", "id": "c1", "owner": "u2"}]}`)
	b.exec(t, `CREATE TABLE app (id text PRIMARY KEY, name text NOT NULL)`,
		`INSERT INTO app SELECT id, md5(id) FROM recalc.record`,
		`CREATE INDEX ON app (name)`, `ANALYZE app`, `GRANT SELECT ON app TO `+b.role)
	b.tx(t, func(tx pgx.Tx) error {
		return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id", PerUserPlans: true})
	})
	const list = `SELECT id FROM app ORDER BY name LIMIT 5`
	for _, tc := range []struct {
		user, plan string
		bitmap     bool
		want       int
	}{
		{"u2", "fetched by id", true, 2},
		{"u1", "filtered in list order", false, 5},
	} {
		plan := strings.Join(b.asUser(t, tc.user, `EXPLAIN `+list, pgx.QueryExecModeSimpleProtocol), "\n")
		if strings.Contains(plan, "BitmapOr") != tc.bitmap {
			t.Errorf("%s's list is not %s:\n%s", tc.user, tc.plan, plan)
		}
		if got := b.asUser(t, tc.user, list, pgx.QueryExecModeSimpleProtocol); len(got) != tc.want {
			t.Errorf("%s's list: %v, want %d rows", tc.user, got, tc.want)
		}
	}
	want := map[string][]string{"u2": {"c0", "c1"}, "u1": b.asUser(t, "u1", `SELECT id FROM app`)}
	if len(want["u1"]) != 1001 {
		t.Fatalf("u1 sees %d rows, want its 1,001", len(want["u1"]))
	}
	// The functions write the note: a parallel plan would run them in
	// parallel mode, where no setting can be written. They are parallel
	// unsafe, so the planner makes none, however cheap parallelism is.
	parallel := `SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0; SET LOCAL min_parallel_table_scan_size = 0;
		SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', true)`
	for user, rows := range want {
		if got := b.asUserWith(t, parallel, user, `SELECT id FROM app`); len(got) != len(rows) {
			t.Errorf("%s sees %d rows with parallelism forced, want %d", user, len(got), len(rows))
		}
	}
	// The note forged for the statement itself (its InitPlan may run before
	// or after the policy's) or set before it, saying broad and narrow.
	for _, forge := range []string{
		`(SELECT set_config('recalc.rls_plan.read.account', 't' || $1::text, false)) IS NOT NULL`,
		`(SELECT set_config('recalc.rls_plan.read.account', 'f' || $1::text, false)) IS NOT NULL`,
	} {
		for user, rows := range want {
			for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
				got := b.asUser(t, user, `SELECT id FROM app WHERE `+forge, mode, user)
				for _, id := range got {
					if !slices.Contains(rows, id) {
						t.Fatalf("%s sees %s with a forged note (%s)", user, id, forge)
					}
				}
				if strings.Contains(forge, "'t'") && len(got) != len(rows) {
					t.Errorf("%s sees %d rows with a note saying broad, want %d", user, len(got), len(rows))
				}
			}
		}
	}
}

// TestKeysNoteUserCrossingBound: rls_keys reads a user's share rows once
// (migration 83) and decides from them alone whether the user is broad. A
// session's user who crosses 1,000 share rows between its queries gets
// every row from can_access from then on, noted for the session as
// rls_many_shares notes it (a garbage note starts again); back at 1,000 the
// stale note costs speed, never a row. The per-user policy sees exactly the
// user's records at each step.
func TestKeysNoteUserCrossingBound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	org := func(owned int) string {
		recs := []string{`{"object": "account", "id": "z0", "owner": "u1"}`}
		for i := range owned {
			recs = append(recs, fmt.Sprintf(`{"object": "account", "id": "k%04d", "owner": "u2"}`, i))
		}
		return `{"objects": [{"name": "account", "internal_owd": "private"}], "users": [{"id": "u1"}, {"id": "u2"}],
			"records": [` + strings.Join(recs, ",") + `]}`
	}
	b.model(t, org(1000))
	b.exec(t, `CREATE TABLE app (id text PRIMARY KEY)`, `INSERT INTO app SELECT 'k' || lpad(i::text, 4, '0') FROM generate_series(0, 1000) i`,
		`INSERT INTO app VALUES ('z0')`, `GRANT SELECT ON app TO `+b.role)
	b.tx(t, func(tx pgx.Tx) error {
		return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id", PerUserPlans: true})
	})
	var uid string
	if err := b.pool.QueryRow(b.ctx, `SELECT uid::text FROM recalc.acl_user WHERE id = 'u2'`).Scan(&uid); err != nil {
		t.Fatal(err)
	}
	conn, err := b.pool.Acquire(b.ctx) // one session through every step
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	defer func() { _, _ = conn.Exec(context.WithoutCancel(b.ctx), `RESET ROLE; RESET ALL`) }()
	if _, err := conn.Exec(b.ctx, `SET ROLE `+b.role+`; SELECT set_config('app.user_id', 'u2', false)`); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name       string
		owned      int    // u2's records (one share row each)
		note       string // written before the step; "-": left as it is
		keys       int    // rls_keys' ids; -1: NULL (broad)
		wantNote   string // the note after the step
		wantRows   int
		reimported bool
	}{
		{"selective at 1,000", 1000, "", 1000, "", 1000, false},
		{"crosses to 1,001", 1001, "-", -1, "," + uid + ",", 1001, true},
		{"back at 1,000, noted", 1000, "-", -1, "," + uid + ",", 1000, true},
		{"garbage note, over", 1001, "x,x,", -1, "," + uid + ",", 1001, true},
	} {
		if step.reimported {
			b.model(t, org(step.owned))
		}
		if step.note != "-" {
			if _, err := conn.Exec(b.ctx, `SELECT set_config('recalc.rls_broad_uids', $1, false)`, step.note); err != nil {
				t.Fatal(err)
			}
		}
		var keys *int
		if err := conn.QueryRow(b.ctx, `SELECT cardinality(recalc.rls_keys('u2', 'account', 'read'))`).Scan(&keys); err != nil {
			t.Fatalf("%s: rls_keys: %v", step.name, err)
		}
		if got := -1; keys != nil && *keys != step.keys || keys == nil && step.keys != got {
			t.Errorf("%s: rls_keys gives %v ids, want %d (-1: NULL)", step.name, keys, step.keys)
		}
		var note string
		var rows int
		if err := conn.QueryRow(b.ctx, `SELECT current_setting('recalc.rls_broad_uids', true), (SELECT count(*) FROM app WHERE id LIKE 'k%')`).Scan(&note, &rows); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if note != step.wantNote || rows != step.wantRows {
			t.Errorf("%s: note %q and %d rows seen, want %q and %d", step.name, note, rows, step.wantNote, step.wantRows)
		}
	}
}

// TestRLSIDs: the ids a per-user policy compares with the id column are the
// keys that are the column's text form, prefix removed, as its type.
func TestRLSIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	keys := []string{"0", "05", "-0", "12", "-7", "40000", "9223372036854775807", "9223372036854775808", "1e3", " 1", "abc",
		"x:5", "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000A", "x:00000000-0000-4000-8000-00000000000b"}
	for _, tc := range []struct{ sql, want string }{
		{`recalc.rls_int_ids($1, '', -9223372036854775808, 9223372036854775807)::text`, "{0,12,-7,40000,9223372036854775807}"},
		{`recalc.rls_int_ids($1, '', -32768, 32767)::text`, "{0,12,-7}"},
		{`recalc.rls_int_ids($1, 'x:', -32768, 32767)::text`, "{5}"},
		{`recalc.rls_uuid_ids($1, '')::text`, "{00000000-0000-4000-8000-00000000000a}"},
		{`recalc.rls_uuid_ids($1, 'x:')::text`, "{00000000-0000-4000-8000-00000000000b}"},
		{`recalc.rls_text_ids($1, 'x:')::text`, "{5,00000000-0000-4000-8000-00000000000b}"},
		{`coalesce(recalc.rls_int_ids(CASE WHEN $1::text[] IS NULL THEN $1 END, '', 0, 9)::text, 'null')`, "null"},
	} {
		if got := b.asUser(t, "u1", `SELECT `+tc.sql, keys); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("%s: %v, want %s", tc.sql, got, tc.want)
		}
	}
}

// TestOwnerPolicyNeedsActiveUser: the owner policy admits no row to a
// session whose user setting is empty (left by SET LOCAL in an earlier
// transaction of the same pooled connection), nor to an inactive owner.
func TestOwnerPolicyNeedsActiveUser(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, privateAccounts)
	b.exec(t, `CREATE TABLE app (id bigint PRIMARY KEY, owner text)`,
		`INSERT INTO app VALUES (1, 'u1'), (2, ''), (3, 'u3')`,
		`GRANT SELECT ON app TO `+b.role)
	b.tx(t, func(tx pgx.Tx) error {
		return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id", OwnerColumn: "owner"})
	})
	if got := b.asUser(t, "u1", `SELECT id::text FROM app`); !slices.Equal(got, []string{"1"}) {
		t.Errorf("u1 sees %v, want its own row 1", got)
	}
	if got := b.asUser(t, "u3", `SELECT id::text FROM app`); len(got) != 0 {
		t.Errorf("inactive u3 sees %v, want nothing", got)
	}
	conn, err := b.pool.Acquire(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(b.ctx, `BEGIN; SET LOCAL ROLE `+b.role+`; SELECT set_config('app.user_id', 'u1', true); COMMIT`); err != nil {
		t.Fatal(err)
	}
	var setting string
	var ids []string
	err = pgx.BeginFunc(b.ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role); err != nil {
			return err
		}
		if err := tx.QueryRow(b.ctx, `SELECT current_setting('app.user_id', true)`).Scan(&setting); err != nil {
			return err
		}
		rows, err := tx.Query(b.ctx, `SELECT id::text FROM app`)
		if err == nil {
			ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if setting != "" {
		t.Fatalf("the pooled session's setting is %q, want '' (the case under test)", setting)
	}
	if len(ids) != 0 {
		t.Errorf("a pooled session with no user set sees %v, want nothing", ids)
	}
}

// TestForceAppliesToOwner: without Force a read as the table's owner sees
// every row and OwnerBypass says so; with Force the owner's reads are
// filtered too.
func TestForceAppliesToOwner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, privateAccounts)
	b.exec(t, `CREATE TABLE app (id text PRIMARY KEY)`, `INSERT INTO app VALUES ('abc'), ('other')`,
		`ALTER TABLE app OWNER TO `+b.role)
	for _, force := range []bool{false, true} {
		var owner string
		var bypass bool
		b.tx(t, func(tx pgx.Tx) error {
			err := access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id", Force: force})
			if err == nil {
				owner, bypass, err = access.OwnerBypass(b.ctx, tx, "app")
			}
			return err
		})
		got := b.asUser(t, "u1", `SELECT id FROM app`)
		want := []string{"abc"}
		if !force {
			want = []string{"abc", "other"}
		}
		if !slices.Equal(got, want) || bypass == force || (pgx.Identifier{owner}).Sanitize() != b.role {
			t.Errorf("force %v: the owner reads %v, OwnerBypass %q %v; want %v, bypass %v", force, got, owner, bypass, want, !force)
		}
	}
}

// TestEnableRLSIgnoresHostileFormat: a format(text, VARIADIC text[]) in a
// schema on the caller's search_path, a better match than pg_catalog's, is
// not used to build the policies; the caller's search_path is restored.
func TestEnableRLSIgnoresHostileFormat(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, privateAccounts)
	b.exec(t, `CREATE SCHEMA evil`,
		`CREATE FUNCTION evil.format(text, VARIADIC text[]) RETURNS text LANGUAGE sql AS $$ SELECT 'true' $$`,
		`CREATE TABLE app (id text PRIMARY KEY)`, `INSERT INTO app VALUES ('abc'), ('other')`,
		`GRANT SELECT ON app TO `+b.role)
	var path string
	b.tx(t, func(tx pgx.Tx) error {
		if _, err := tx.Exec(b.ctx, `SET LOCAL search_path = evil, public`); err != nil {
			return err
		}
		if err := access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id"}); err != nil {
			return err
		}
		return tx.QueryRow(b.ctx, `SHOW search_path`).Scan(&path)
	})
	if got := b.asUser(t, "u2", `SELECT id FROM app`); len(got) != 0 {
		t.Errorf("u2 sees %v through policies built under a hostile search_path, want nothing", got)
	}
	if got := b.asUser(t, "u1", `SELECT id FROM app`); !slices.Equal(got, []string{"abc"}) {
		t.Errorf("u1 sees %v, want abc", got)
	}
	if path != "evil, public" {
		t.Errorf("search_path after EnableRLS is %q, want the caller's evil, public", path)
	}
	var config []string
	if err := b.pool.QueryRow(b.ctx, `SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE oid = 'recalc.job_payload(bigint)'::regprocedure`).Scan(&config); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(config, "search_path=pg_catalog, pg_temp") {
		t.Errorf("recalc.job_payload runs with %v, want search_path pinned to pg_catalog, pg_temp", config)
	}
}

// TestReadFunctionsBounded: rls_records refuses a user with more than 1,000
// share rows instead of aggregating them all; a visible_records call reads
// at most 50 x limit records and then says where to continue; VisiblePage
// follows the continuation so a short page is still the last.
func TestReadFunctionsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var recs []string
	for i := range 120 {
		recs = append(recs, fmt.Sprintf(`{"object": "account", "id": "a%04d", "owner": "u2"}`, i))
	}
	for i := range 1001 {
		recs = append(recs, fmt.Sprintf(`{"object": "account", "id": "b%04d", "owner": "u1"}`, i))
	}
	b.model(t, `{"objects": [{"name": "account", "internal_owd": "private"}], "users": [{"id": "u1"}, {"id": "u2"}],
		"records": [`+strings.Join(recs, ",")+`]}`)
	var state string
	if err := b.rolledBack(t, `SELECT count(*)::text FROM recalc.rls_records('u1', 'account')`); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			state = pgErr.Code
		}
	}
	if state != "54000" {
		t.Errorf("rls_records for a user with 1,001 share rows: state %q, want 54000", state)
	}
	if got := b.asUser(t, "u1", `SELECT coalesce(record, '-') || '/' || coalesce(next_after, '-') FROM recalc.visible_records('u1', 'account', 'read', NULL, 1)`); !slices.Equal(got, []string{"-/a0049"}) {
		t.Errorf("visible_records page of 1 over 120 hidden records: %v, want only a continuation after a0049", got)
	}
	if got := b.asUser(t, "u1", `SELECT record FROM recalc.visible_records('u1', 'account', 'read', 'a0100', 1)`); !slices.Equal(got, []string{"b0000"}) {
		t.Errorf("visible_records within the bound: %v, want b0000", got)
	}
	var page []access.Visible
	b.tx(t, func(tx pgx.Tx) error {
		var err error
		page, err = access.VisiblePage(b.ctx, tx, "u1", "account", "read", nil, 2)
		return err
	})
	if len(page) != 2 || page[0].Record != "b0000" || page[1].Record != "b0001" {
		t.Errorf("VisiblePage of 2 across continuations: %v, want b0000 and b0001", page)
	}
}

// rolledBack runs sql as the role in a transaction that is rolled back.
func (b *bundle) rolledBack(t *testing.T, sql string) error {
	t.Helper()
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(b.ctx, sql)
	return err
}

// TestOutdatedPolicies: rls enable labels its policies with the schema
// version of their set; recalc init names the tables whose write policies
// an earlier version installed (unlabelled, or labelled for another
// version), not those with the read policy alone, and rls enable again
// brings them up to date.
func TestOutdatedPolicies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, privateAccounts)
	b.exec(t, `CREATE TABLE app (id text)`, `CREATE TABLE other (id text)`, `CREATE TABLE readonly (id text)`)
	enable := func(table string) {
		b.tx(t, func(tx pgx.Tx) error {
			return access.EnableRLS(b.ctx, tx, &access.RLS{Table: table, Object: "account", IDColumn: "id", UserSetting: "app.user_id",
				Write: table != "readonly"})
		})
	}
	enable("app")
	enable("other")
	enable("readonly")
	if got := b.outdated(t); len(got) != 0 {
		t.Fatalf("just enabled: outdated %v, want none", got)
	}
	b.exec(t, `COMMENT ON POLICY recalc_read ON app IS NULL`, `COMMENT ON POLICY recalc_read ON other IS 'recalc policies, schema version 1'`,
		`COMMENT ON POLICY recalc_read ON readonly IS NULL`)
	if got := b.outdated(t); !slices.Equal(got, []string{"app", "other"}) {
		t.Errorf("policies of earlier versions: outdated %v, want app and other", got)
	}
	enable("app")
	if got := b.outdated(t); !slices.Equal(got, []string{"other"}) {
		t.Errorf("app enabled again: outdated %v, want other", got)
	}
}

// TestBroadUserNoted: a user found to reach more than 1,000 share rows is
// noted for the session (recalc.rls_broad_uids), and the adaptive policy,
// visible_records and rls_keys then filter with can_access without counting
// again. The note can only say "broad": forged for a selective user, for an
// inactive one, or as garbage, it changes no row anyone sees. The functions
// write a setting, so no plan runs them in parallel, forced or not.
func TestBroadUserNoted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var recs []string
	for i := range 1001 { // u1 reaches 1,001 share rows: broad
		recs = append(recs, fmt.Sprintf(`{"object": "account", "id": "b%04d", "owner": "u1"}`, i))
	}
	b.model(t, `{"objects": [{"name": "account", "internal_owd": "private"}],
		"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3", "active": false}],
		"records": [`+strings.Join(recs, ",")+`, {"object": "account", "id": "c0", "owner": "u2"}, {"object": "account", "id": "c1", "owner": "u3"}]}`)
	b.exec(t, `CREATE TABLE app (id text PRIMARY KEY)`, `INSERT INTO app SELECT id FROM recalc.record`, `GRANT SELECT ON app TO `+b.role)
	b.tx(t, func(tx pgx.Tx) error {
		return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id", UserSetting: "app.user_id"})
	})
	var uids string // every user's uid, as a note would list them
	if err := b.pool.QueryRow(b.ctx, `SELECT ',' || string_agg(uid::text, ',') || ',' FROM recalc.acl_user`).Scan(&uids); err != nil {
		t.Fatal(err)
	}
	forced := `SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0; SET LOCAL min_parallel_table_scan_size = 0;
		SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', true)`
	for _, tc := range []struct {
		name, note string // the note before the queries ("": none)
		parallel   bool
		mode       map[string]string // rls_mode by user
	}{
		{"no note", "", false, map[string]string{"u1": "2", "u2": "1", "u3": "0"}},
		{"every user noted", uids, false, map[string]string{"u1": "2", "u2": "2", "u3": "0"}},
		{"garbage", strings.Repeat("x,", 3000), false, map[string]string{"u1": "2", "u2": "1", "u3": "0"}},
		{"parallelism forced", "", true, map[string]string{"u1": "2", "u2": "1", "u3": "0"}},
		{"every user noted, parallelism forced", uids, true, map[string]string{"u1": "2", "u2": "2", "u3": "0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := b.pool.Begin(b.ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(b.ctx)
			if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(b.ctx, `SELECT set_config('recalc.rls_broad_uids', $1, false)`, tc.note); err != nil {
				t.Fatal(err)
			}
			if tc.parallel {
				if _, err := tx.Exec(b.ctx, forced); err != nil {
					t.Fatal(err)
				}
			}
			query := func(sql string, args ...any) []string {
				t.Helper()
				rows, err := tx.Query(b.ctx, sql, args...)
				if err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				got, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				slices.Sort(got)
				return got
			}
			want := map[string]int{"u1": 1001, "u2": 1, "u3": 0}
			// visible_records first: u1's first call notes u1, in a parallel
			// plan if one were made.
			for _, user := range []string{"u1", "u2", "u3", "u1", "u2"} { // u1 again, noted by then
				if _, err := tx.Exec(b.ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
					t.Fatal(err)
				}
				if got := query(`SELECT record FROM recalc.visible_records($1, 'account', 'read', NULL, 2000)`, user); len(got) != want[user] {
					t.Errorf("%s's visible_records: %d records, want %d", user, len(got), want[user])
				}
				if got := query(`SELECT id FROM app`); len(got) != want[user] || user == "u2" && got[0] != "c0" {
					t.Errorf("%s sees %d rows (%.3v), want %d", user, len(got), got, want[user])
				}
				if got := query(`SELECT id FROM app WHERE id = 'b0007'`); len(got) != map[string]int{"u1": 1}[user] {
					t.Errorf("%s's lookup of b0007: %v", user, got)
				}
				if got := query(`SELECT recalc.rls_mode($1, 'account', 'read')::text`, user); got[0] != tc.mode[user] {
					t.Errorf("%s's rls_mode: %v, want %s", user, got, tc.mode[user])
				}
			}
			note := query(`SELECT current_setting('recalc.rls_broad_uids')`)[0]
			var uid1 string
			if err := b.pool.QueryRow(b.ctx, `SELECT uid::text FROM recalc.acl_user WHERE id = 'u1'`).Scan(&uid1); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(note, ","+uid1+",") || len(note) > 2100 {
				t.Errorf("the note after u1's queries: %.80q (%d bytes), want u1's uid %s in at most about 2,000 bytes", note, len(note), uid1)
			}
		})
	}
}

// TestEnableRLSRefusesRecalcTables: `rls enable` on one of recalc's own
// tables installed policies there, forced on the engine with --force. It is
// refused, changing nothing.
func TestEnableRLSRefusesRecalcTables(t *testing.T) {
	t.Parallel()
	b := setup(t)
	testkit.ImportModel(t, b.ctx, b.pool, oracle.RandomModel(mrand.New(mrand.NewPCG(7, 7)), 20), nil)
	for _, table := range []string{"recalc.acl_user", "recalc.record"} {
		err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
			return access.EnableRLS(b.ctx, tx, &access.RLS{Table: table, Object: "account", IDColumn: "id", UserFromRole: true, Force: true})
		})
		if err == nil || !strings.Contains(err.Error(), "is one of recalc's own") {
			t.Errorf("EnableRLS on %s: %v, want a refusal", table, err)
		}
	}
	// recalc.record has row-level security of its own since migration 082
	// (a writer reads no attached record), not forced, with its one policy.
	var secured, forced, policies string
	if err := b.pool.QueryRow(b.ctx, `SELECT
		coalesce((SELECT string_agg(oid::regclass::text, ',' ORDER BY oid::regclass::text) FROM pg_class
		          WHERE relnamespace = 'recalc'::regnamespace AND relrowsecurity), ''),
		coalesce((SELECT string_agg(oid::regclass::text, ',') FROM pg_class
		          WHERE relnamespace = 'recalc'::regnamespace AND relforcerowsecurity), ''),
		coalesce((SELECT string_agg(tablename || '.' || policyname, ',' ORDER BY tablename, policyname) FROM pg_policies
		          WHERE schemaname = 'recalc'), '')`).Scan(&secured, &forced, &policies); err != nil {
		t.Fatal(err)
	}
	if secured != "recalc.record" || forced != "" || policies != "record.record_not_attached" {
		t.Errorf("recalc's tables with row-level security: %q, forced: %q, policies: %q; want recalc.record's own alone, not forced",
			secured, forced, policies)
	}
}
