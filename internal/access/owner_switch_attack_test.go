package access_test

import (
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/access"
)

// TestOwnerPolicyUserSwitchedMidStatement: the owner policy admits only an
// active user, and only that user's rows, for the whole statement. A
// session that starts a statement (or a cursor) as active user u1 and
// changes app.user_id while it runs, to the inactive user u3 or to a name
// no user has, reads no row of theirs: the policy decided that u1 is
// active once (an InitPlan) and compared every later row's owner with the
// setting as it was then changed, admitting rows that no active user owns
// (found by an attack helper). Both read policies; recalc init names a
// table whose owner policy predates the fix.
func TestOwnerPolicyUserSwitchedMidStatement(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.model(t, privateAccounts)
	b.exec(t, `CREATE TABLE app (n int PRIMARY KEY, id text UNIQUE, owner text, secret text)`,
		// In this order: a scan meets a row u1 does not own first.
		`INSERT INTO app VALUES (1, 'x1', 'u3', 'inactive u3''s'), (2, 'abc', 'u1', 'u1''s'), (3, 'x3', 'ghost', 'nobody''s'), (4, 'x4', 'u3', 'inactive u3''s')`,
		`GRANT SELECT, INSERT, UPDATE ON app TO `+b.role)
	const switched = `SELECT id FROM app WHERE set_config('app.user_id', $1 || left(id, 0), true) IS NOT NULL`
	for _, perUser := range []bool{false, true} {
		b.tx(t, func(tx pgx.Tx) error {
			return access.EnableRLS(b.ctx, tx, &access.RLS{Table: "app", Object: "account", IDColumn: "id",
				UserSetting: "app.user_id", OwnerColumn: "owner", Write: true, PerUserPlans: perUser})
		})
		if got := b.asUser(t, "u1", `SELECT id FROM app`); !slices.Equal(got, []string{"abc"}) {
			t.Fatalf("per-user %v: u1 sees %v, want its row abc (the setup is wrong)", perUser, got)
		}
		for _, to := range []string{"u3", "ghost"} {
			for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
				// The first row (u1's, admitted) switches the user; the
				// scan goes on to the others.
				got := b.asUserWith(t, `SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off`,
					"u1", switched, mode, to)
				if !slices.Equal(got, []string{"abc"}) {
					t.Errorf("per-user %v, %v: u1 switching to %s within the statement reads %v, want [abc]", perUser, mode, to, got)
				}
			}
			if got := b.cursorSwitch(t, "u1", to); !slices.Equal(got, []string{"abc"}) {
				t.Errorf("per-user %v: a cursor opened as u1 and fetched as %s reads %v, want [abc]", perUser, to, got)
			}
		}
	}
	// An owner policy as rls enable installed it before: recalc init names
	// its table.
	if got := b.outdated(t); slices.Contains(got, "app") {
		t.Errorf("just enabled: outdated %v, want app up to date", got)
	}
	b.exec(t, `COMMENT ON POLICY recalc_owner ON app IS NULL`)
	if got := b.outdated(t); !slices.Contains(got, "app") {
		t.Errorf("an unlabelled owner policy: outdated %v, want app named", got)
	}
}

// cursorSwitch opens a cursor over app as user from, fetches one row,
// switches the setting to user to, fetches the rest, and returns every
// id fetched.
func (b *bundle) cursorSwitch(t *testing.T, from, to string) []string {
	t.Helper()
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	if _, err := tx.Exec(b.ctx, `SET LOCAL ROLE `+b.role+`; SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(b.ctx, `SELECT set_config('app.user_id', $1, true)`, from); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(b.ctx, `DECLARE c NO SCROLL CURSOR FOR SELECT id FROM app`); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, fetch := range []string{`FETCH 1 FROM c`, `FETCH ALL FROM c`} {
		if i == 1 {
			if _, err := tx.Exec(b.ctx, `SELECT set_config('app.user_id', $1, true)`, to); err != nil {
				t.Fatal(err)
			}
		}
		rows, err := tx.Query(b.ctx, fetch)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids...)
	}
	slices.Sort(got)
	return got
}
