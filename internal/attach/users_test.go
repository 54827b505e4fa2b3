package attach_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// usersSpec attaches crmSpec's objects and the CRM's users table.
var usersSpec = strings.TrimSuffix(strings.TrimSpace(crmSpec), "}") +
	`, "users": {"table": "crm.app_user", "id": "id", "role": "role_id", "type": "kind", "active": "active"}}`

// setupUsers is setup with crm.app_user given a role, a type and an active
// column holding crmModel's users (and zed, whom the model does not name),
// attached with usersSpec.
func setupUsers(t *testing.T) *bundle {
	t.Helper()
	return setupPrepared(t, "users", attachUsers)
}

// setupUsersRun is setupUsers, then an incremental run (the first absorb
// of the attached tables): a copy of a template made once, where some 60
// cases of the commit-point tests each ran it.
func setupUsersRun(t *testing.T) *bundle {
	t.Helper()
	return setupPrepared(t, "users run", func(t *testing.T, b *bundle) {
		attachUsers(t, b)
		b.run(t)
	})
}

// attachUsers gives crm.app_user the columns of setupUsers and attaches
// usersSpec.
func attachUsers(t *testing.T, b *bundle) {
	t.Helper()
	b.exec(t, b.app,
		`ALTER TABLE crm.app_user ADD COLUMN role_id text, ADD COLUMN kind text, ADD COLUMN active boolean DEFAULT true`,
		`UPDATE crm.app_user SET role_id = CASE id WHEN 'alice' THEN 'ceo' WHEN 'bob' THEN 'east' WHEN 'carol' THEN 'east'
		     WHEN 'dave' THEN 'west' WHEN 'erin' THEN 'west' END`,
		`GRANT SELECT, TRIGGER ON crm.app_user TO `+ident(b.engineRole))
	b.mustAttach(t, usersSpec)
}

// expectedUsers is the users section the application's users table gives
// crmModel, by the rules of docs/attach.md, computed by the test: a row
// with an unknown role or type, or a NULL active, is an inactive user with
// no role (an inactive row keeps its role otherwise); a
// user the model's groups, territories or rules name (dave, frank) and the
// table lacks is an inactive stub.
func (b *bundle) expectedUsers(t *testing.T) []map[string]any {
	t.Helper()
	rows, err := b.admin.Query(context.Background(), `SELECT id, role_id, kind, active FROM crm.app_user ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var users []map[string]any
	have := map[string]bool{}
	var id string
	var role, kind *string
	var active *bool
	_, err = pgx.ForEachRow(rows, []any{&id, &role, &kind, &active}, func() error {
		u := map[string]any{"id": id}
		ok := active != nil
		if ok && !*active {
			u["active"] = false
		}
		if role != nil {
			u["role"] = *role
			ok = ok && (*role == "ceo" || *role == "east" || *role == "west")
		}
		if kind != nil {
			u["type"] = *kind
			ok = ok && (*kind == "internal" || *kind == "external")
		}
		if !ok {
			u = map[string]any{"id": id, "active": false}
		}
		have[id] = true
		users = append(users, u)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, named := range []string{"dave", "frank"} { // territory north; group tech_team and rule big_opp
		if !have[named] {
			users = append(users, map[string]any{"id": named, "active": false})
		}
	}
	return users
}

// withUsers is crmModel with its users section replaced by users.
func withUsers(t *testing.T, users []map[string]any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(crmModel), &m); err != nil {
		t.Fatal(err)
	}
	m["users"] = users
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkUsers fails unless access equals the oracle's for crmModel with the
// users the users table gives it.
func (b *bundle) checkUsers(t *testing.T, after string) {
	t.Helper()
	b.checkOracleOf(t, withUsers(t, b.expectedUsers(t)), after)
}

// TestAttachUsers attaches the users table beside the CRM's objects: the
// users' roles, types and active flags come from the application's rows,
// rows the model cannot take fail closed, users the model names and the
// table lacks stay as inactive stubs, each change is materialized by the
// next run, and plain-SQL writes to the users and the records from several
// connections, while runs go on, end in the oracle's access.
func TestAttachUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsersRun(t)
	b.checkUsers(t, "after attaching the users")

	steps := []struct {
		name  string
		stmts []string
	}{
		{"bob moves to west, carol is deactivated", []string{
			`UPDATE crm.app_user SET role_id = 'west' WHERE id = 'bob'`, `UPDATE crm.app_user SET active = false WHERE id = 'carol'`}},
		{"a role and a type the model lacks, and a NULL active", []string{
			`UPDATE crm.app_user SET role_id = 'nosuch' WHERE id = 'erin'`, `UPDATE crm.app_user SET kind = 'alien' WHERE id = 'alice'`,
			`UPDATE crm.app_user SET active = NULL WHERE id = 'zed'`}},
		{"frank, whom a group and a rule name, is deleted", []string{`DELETE FROM crm.app_user WHERE id = 'frank'`}},
		{"a new user owns a new account; dave becomes external", []string{
			`INSERT INTO crm.app_user (id, name, role_id) VALUES ('yan', 'Yan', 'east')`,
			`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (50, 'Yan Co', 'yan', 'energy')`,
			`UPDATE crm.app_user SET kind = 'external' WHERE id = 'dave'`}},
		{"the table is truncated and filled again", []string{
			`TRUNCATE crm.app_user CASCADE`,
			`INSERT INTO crm.app_user (id, name, role_id) VALUES ('alice', 'Alice', 'ceo'), ('bob', 'Bob', 'east'),
			     ('carol', 'Carol', 'east'), ('dave', 'Dave', 'west'), ('erin', 'Erin', 'west'), ('frank', 'Frank', NULL)`}},
	}
	for _, s := range steps {
		b.exec(t, b.app, s.stmts...)
		b.run(t) // one run: the users are absorbed before the configuration is read
		b.checkUsers(t, "after "+s.name)
	}

	// `recalc watch`'s step: a change of the users is a job's (the fast
	// path hands it over), a record's write then takes the fast path.
	live := engine.NewLive(engine.Options{}, 1000)
	if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		stmt string
		fast bool
	}{{`UPDATE crm.app_user SET role_id = 'west' WHERE id = 'carol'`, false}, {`UPDATE crm.account SET owner_id = 'carol' WHERE id = 1`, true}} {
		b.exec(t, b.app, w.stmt)
		rep, err := live.Step(ctx, b.engine, zerolog.Nop())
		if err != nil {
			t.Fatalf("%s, the live step: %v", w.stmt, err)
		}
		if rep.Fast != w.fast || (rep.Run == nil) == !w.fast {
			t.Errorf("%s, the live step: fast %v, a job %v; want fast %v", w.stmt, rep.Fast, rep.Run != nil, w.fast)
		}
		b.checkUsers(t, "after "+w.stmt+" and a live step")
	}

	// Imports may not carry users while they are attached, and nothing changes.
	f := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(f, []byte(`{"users": [{"id": "alice", "role": "ceo"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.recalc("import", f); err == nil || !strings.Contains(err.Error(), "users are attached") {
		t.Fatalf("import of a users section while they are attached: %v, want it refused", err)
	}
	// An import of other sections is checked against the users as absorbed:
	// a rule may name a user once the table holds it.
	if err := os.WriteFile(f, []byte(`{"rules": [
	    {"id": "tech", "object": "account", "type": "criteria", "target": "user:yan2", "access": "read",
	     "criteria": {"conditions": [{"field": "industry", "op": "equals", "value": "tech"}]}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.recalc("import", f); err == nil || !strings.Contains(err.Error(), "yan2") {
		t.Fatalf("import of a rule naming a user the table lacks: %v, want it refused naming the user", err)
	}
	b.exec(t, b.app, `INSERT INTO crm.app_user (id, name, role_id) VALUES ('yan2', 'Yan', 'west')`)
	b.run(t) // an import sees the users as last absorbed
	if _, err := b.recalc("import", f); err != nil {
		t.Fatalf("import of a rule naming a user the table holds: %v", err)
	}
	b.run(t)
	var rules string
	if err := b.admin.QueryRow(ctx, `SELECT doc::text FROM recalc.model_section WHERE name = 'rules'`).Scan(&rules); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(crmModel), &m); err != nil {
		t.Fatal(err)
	}
	var rs []any
	if err := json.Unmarshal([]byte(rules), &rs); err != nil {
		t.Fatal(err)
	}
	m["rules"], m["users"] = rs, b.expectedUsers(t)
	config, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b.checkOracleOf(t, string(config), "after importing a rule naming an attached user")

	out, err := b.recalc("attach", "--list")
	if err != nil || !strings.Contains(out, "users") || !strings.Contains(out, "crm.app_user") {
		t.Fatalf("attach --list: %v\n%s", err, out)
	}

	// Detached, the users section stays as last built, and imports may
	// carry users again.
	if _, err := b.recalc("detach", "users"); err != nil {
		t.Fatalf("detach users: %v", err)
	}
	b.exec(t, b.app, `UPDATE crm.app_user SET role_id = 'west' WHERE id = 'alice'`)
	b.run(t)
	b.checkOracleOf(t, string(config), "after detaching the users")
	if err := os.WriteFile(f, []byte(`{"users": `+mustJSON(b.expectedUsers(t))+`}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.recalc("import", f); err != nil {
		t.Fatalf("import of users once detached: %v", err)
	}
}

// TestAttachUsersUnderWrites: the application writes its users (roles,
// types, active flags, new and deleted users) and its records as plain SQL
// from several connections while runs go on; then access equals the
// oracle's, after an incremental run and after a full one.
func TestAttachUsersUnderWrites(t *testing.T) {
	t.Parallel()
	b := setupUsersRun(t)
	b.writeWhileRunning(t, 11, writeUsers, writeAccounts, writeOpportunities, writeCases)
	b.run(t)
	b.checkUsers(t, "after concurrent writes and an incremental run")
	b.full(t)
	b.checkUsers(t, "after a full run")
}

// writeUsers changes the users' roles, types and active flags, adds users
// and deletes the ones it added (no record is theirs: the account writer
// picks owners among crmModel's users).
func writeUsers(ctx context.Context, app *pgxpool.Pool, r *rand.Rand) error {
	pick := func(vs ...string) string { return vs[r.IntN(len(vs))] }
	added := 0
	for i := range 40 {
		var s string
		switch r.IntN(5) {
		case 0:
			s = fmt.Sprintf(`UPDATE crm.app_user SET role_id = %s WHERE id = '%s'`, pick("'ceo'", "'east'", "'west'", "NULL", "'nosuch'"), pick(owners...))
		case 1:
			s = fmt.Sprintf(`UPDATE crm.app_user SET active = %s WHERE id = '%s'`, pick("true", "true", "false", "NULL"), pick(owners...))
		case 2:
			s = fmt.Sprintf(`UPDATE crm.app_user SET kind = %s WHERE id = '%s'`, pick("NULL", "'internal'", "'external'", "'alien'"), pick(owners...))
		case 3:
			added++
			s = fmt.Sprintf(`INSERT INTO crm.app_user (id, name, role_id) VALUES ('n%d', 'N', %s)`, added, pick("'east'", "'west'", "NULL"))
		default:
			s = fmt.Sprintf(`DELETE FROM crm.app_user WHERE id = 'n%d'`, 1+r.IntN(added+1))
		}
		if err := tx(ctx, app, s); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		pause(r)
	}
	return nil
}

// TestUserStubGoesWithItsLastTeam: a user deleted from the users table
// stays an inactive stub while a team entry names it, so the records it
// owns stay valid; once the last team entry naming it goes (its record
// deleted), the users section is built again without it, and its records
// grant nothing: at the next job, and at `recalc watch`'s next step, whose
// fast path hands the step to a job. Before version 51 the stub stayed
// until some row of the users table changed, and before version 53 under
// the watch alone. Frank reads an account through the "tech" rule.
func TestUserStubGoesWithItsLastTeam(t *testing.T) {
	t.Parallel()
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprintf("watch=%v", watch), func(t *testing.T) {
			t.Parallel()
			b := setupUsers(t)
			b.exec(t, b.app, `ALTER TABLE crm.account DROP CONSTRAINT account_owner_id_fkey`,
				`INSERT INTO crm.app_user (id, name, role_id) VALUES ('tim', 'Tim', 'east')`,
				`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (60, 'Tim''s', 'tim', 'tech')`)
			b.run(t)
			f := filepath.Join(t.TempDir(), "team.json")
			if err := os.WriteFile(f, []byte(`{"teams": [{"record": "account:2", "user": "tim", "access": "edit"}]}`), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := b.recalc("import", "--merge", f); err != nil {
				t.Fatalf("import the team entry: %v\n%s", err, out)
			}
			step := func(t *testing.T) { b.run(t) }
			if watch {
				live := engine.NewLive(engine.Options{}, 1000)
				step = func(t *testing.T) {
					t.Helper()
					if _, err := live.Step(context.Background(), b.engine, zerolog.Nop()); err != nil {
						t.Fatal(err)
					}
				}
			}
			step(t)
			level := func() string {
				t.Helper()
				var l string
				if err := b.admin.QueryRow(context.Background(), `SELECT recalc.access_level('frank', 'account:60')`).Scan(&l); err != nil {
					t.Fatal(err)
				}
				return l
			}
			b.exec(t, b.app, `DELETE FROM crm.app_user WHERE id = 'tim'`)
			step(t)
			if l := level(); l != "read" {
				t.Fatalf("tim deleted, a team entry naming him: frank reads account:60 %s, want read (tim a stub)", l)
			}
			b.exec(t, b.app, `DELETE FROM crm.account WHERE id = 2`)
			step(t)
			if l := level(); l != "none" {
				t.Fatalf("the last team entry naming tim gone with its record: frank reads account:60 %s, want none (tim no user)", l)
			}
		})
	}
}
