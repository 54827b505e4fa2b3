package adversarial

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestLeakyFunctionNeverSeesAConflictingHiddenRow: an upsert's `ON
// CONFLICT DO UPDATE ... WHERE` is evaluated on the existing row the insert
// collided with, which the user need not read. A reader whose owner policy
// admits the proposed row (its owner is the user) collides with a hidden
// row on purpose and puts a function of its own, not LEAKPROOF, in the
// WHERE: PostgreSQL checks the existing row against the update policies
// first and fails with 42501, so the function, which raises a NOTICE of
// its argument, never sees the hidden row's secret; on the user's own row
// it does (the channel works). Both policies.
func TestLeakyFunctionNeverSeesAConflictingHiddenRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.hiddenTable(t)
	for _, sql := range []string{
		`ALTER TABLE app.account ADD COLUMN owner text`,
		`INSERT INTO app.account VALUES ('own1', 'mine', 's-own1', 'u4')`,
		`CREATE FUNCTION app.shout(text) RETURNS boolean LANGUAGE plpgsql VOLATILE COST 0.0001 AS $$
		 BEGIN RAISE NOTICE 'shout %', $1; RETURN false; END $$`,
		`GRANT EXECUTE ON FUNCTION app.shout(text) TO ` + ident(b.readerRole),
		`GRANT INSERT ON app.account TO ` + ident(b.readerRole),
	} {
		if _, err := b.engine.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	cfg := b.reader.Config().ConnConfig.Copy()
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, policy := range [][]string{nil, {"--per-user-plans"}} {
		b.recalc(t, append([]string{"rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id",
			"--write", "--owner-column", "owner"}, policy...)...)
		for _, tc := range []struct {
			id      string
			refused bool   // 42501: the existing row fails the update policies
			seen    string // what the function may see, and must
		}{
			{"a1", true, ""},   // u4 reads nothing of a1
			{"hot1", true, ""}, // u4 reads hot1, edits nothing: refused before the WHERE too
			{"own1", false, "shout s-own1"},
		} {
			notices = nil
			_, err := conn.Exec(ctx, `BEGIN; SELECT set_config('app.user_id', 'u4', true);
				INSERT INTO app.account AS t VALUES ('`+tc.id+`', 'x', 'y', 'u4')
				ON CONFLICT (id) DO UPDATE SET name = excluded.name WHERE app.shout(t.secret)`)
			if _, rerr := conn.Exec(ctx, `ROLLBACK`); rerr != nil {
				t.Fatal(rerr)
			}
			var pgErr *pgconn.PgError
			if refused := errors.As(err, &pgErr) && pgErr.Code == insufficientPrivilege; refused != tc.refused || !refused && err != nil {
				t.Errorf("%v: u4's upsert colliding with %s: %v, want refused %v", policy, tc.id, err, tc.refused)
			}
			if got := strings.Join(notices, " "); got != tc.seen {
				t.Errorf("%v: u4's upsert colliding with %s gave its function %q, want %q", policy, tc.id, got, tc.seen)
			}
		}
	}
}
