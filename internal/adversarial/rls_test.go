package adversarial

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestReadPathAsRoles installs recalc's policies with `recalc rls enable`
// as the engine on a table the engine owns, and reads and writes it as the
// reader, a LOGIN role with `recalc grant reader` and SELECT, UPDATE and
// DELETE on the table only: each user of baseModel sees exactly the rows it
// may read and changes exactly the rows it may edit, under the adaptive and
// the per-user policies. The outsider may call none of the read path's
// functions.
func TestReadPathAsRoles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, sql := range []string{`CREATE SCHEMA app AUTHORIZATION ` + ident(b.engineRole)} {
		if _, err := b.admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	for _, sql := range []string{
		`CREATE TABLE app.account (id text PRIMARY KEY, name text NOT NULL)`,
		`INSERT INTO app.account SELECT id, 'Account ' || id FROM recalc.record WHERE object = 'account'`,
		`INSERT INTO app.account VALUES ('stray', 'no record')`,
		`GRANT USAGE ON SCHEMA app TO ` + ident(b.readerRole),
		`GRANT SELECT, UPDATE, DELETE ON app.account TO ` + ident(b.readerRole),
	} {
		if _, err := b.engine.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for _, policy := range [][]string{nil, {"--per-user-plans"}} {
		b.recalc(t, append([]string{"rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id", "--write"}, policy...)...)
		for _, tc := range []struct {
			user       string
			read, edit string
		}{
			{"u1", "a1 a2 a3 a4 hot1", "a1 a2 a3 a4 hot1"}, // owner
			{"u2", "a1 a2", "a1 a2"},                       // manual edit shares
			{"u3", "a1 a2", ""},                            // read teams
			{"u4", "hot1", ""},                             // criteria rule, read
			{"nobody", "", ""},
		} {
			if got := b.asReader(t, tc.user, `SELECT id FROM app.account`); got != tc.read {
				t.Errorf("%v: %s reads %q through the policy, want %q", policy, tc.user, got, tc.read)
			}
			if got := b.asReader(t, tc.user, `UPDATE app.account SET name = name RETURNING id`); got != tc.edit {
				t.Errorf("%v: %s updates %q through the policy, want %q", policy, tc.user, got, tc.edit)
			}
			if got := b.asReader(t, tc.user, `DELETE FROM app.account RETURNING id`); got != tc.edit {
				t.Errorf("%v: %s deletes %q through the policy, want %q", policy, tc.user, got, tc.edit)
			}
		}
	}
	for _, sql := range []string{
		`SELECT recalc.can_access('u1', 'account', 'a1')`,
		`SELECT recalc.rls_mode('u1', 'account')`,
		`SELECT * FROM recalc.rls_records('u1', 'account')`,
		`SELECT * FROM recalc.visible_records('u1', 'account', 'read', NULL, 10)`,
		`SELECT recalc.rls_keys('u1', 'account', 'read')`,
		`SELECT recalc.rls_broad('u1', 'account', 'read')`,
	} {
		wantState(t, "outsider: "+sql, rolledBack(b.outsider, sql), insufficientPrivilege)
		if err := rolledBack(b.reader, sql); err != nil {
			t.Errorf("reader: %s: %v", sql, err)
		}
	}
	wantState(t, "a page of 10,001", rolledBack(b.reader, `SELECT * FROM recalc.visible_records('u1', 'account', 'read', NULL, 10001)`), "22023")
}

// asReader runs sql as the reader with app.user_id = user, rolled back,
// and returns the first column of its rows sorted, joined by spaces.
func (b *bundle) asReader(t *testing.T, user, sql string) string {
	t.Helper()
	ctx := context.Background()
	tx, err := b.reader.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
		t.Fatal(err)
	}
	// A CTE, not a subquery: UPDATE and DELETE ... RETURNING may be one.
	rows, err := tx.Query(ctx, `WITH s (x) AS (`+sql+`) SELECT string_agg(x, ' ' ORDER BY x COLLATE "C") FROM s`)
	if err != nil {
		t.Fatalf("%s as %s: %v", sql, user, err)
	}
	got, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[*string])
	if err != nil {
		t.Fatalf("%s as %s: %v", sql, user, err)
	}
	if got == nil {
		return ""
	}
	return *got
}

// TestAccessCommand drives `recalc access` for one user: a level, a clear
// error for an unknown user or record, and the pages of what it can see.
func TestAccessCommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if got := strings.TrimSpace(b.recalc(t, "access", "--user", "u2", "--record", "a1")); got != "edit" {
		t.Errorf("access u2 a1 = %q, want edit", got)
	}
	for _, tc := range []struct{ args, want string }{
		{"--user ghost --record a1", `user "ghost" does not exist`},
		{"--user u2 --record nope", `record "nope" does not exist`},
		{"--user u2 --object acount", `object "acount" is not in the stored model: give one of account`},
		{"--user ghost --object account", `user "ghost" does not exist`},
	} {
		_, err := b.recalcErr(append([]string{"access"}, strings.Fields(tc.args)...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("access %s: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	var pages []string
	after := ""
	for range 5 {
		out := b.recalc(t, "access", "--user", "u1", "--object", "account", "--limit", "2", "--after", after, "--format", "json")
		var page struct {
			Records []struct{ Record, Level string }
			Next    *string `json:"next_after"`
		}
		if err := json.Unmarshal([]byte(out), &page); err != nil {
			t.Fatalf("access --format json: %v: %s", err, out)
		}
		for _, r := range page.Records {
			pages = append(pages, r.Record+"="+r.Level)
		}
		if page.Next == nil {
			break
		}
		after = *page.Next
	}
	if got := strings.Join(pages, " "); got != "a1=all a2=all a3=all a4=all hot1=all" {
		t.Errorf("u1's pages of accounts = %s, want a1 to hot1, each once, at all", got)
	}
}
