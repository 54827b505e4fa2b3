package attach_test

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/schema"
)

// upgradeFrom is the commit that added migration 040: its parent is the
// last binary at schema version 39, before the broad-user note (040) and the
// reparent guard (041).
const upgradeFrom = "5616a27"

// upgradeModel is a small CRM whose contacts are controlled by their parent
// and attached to a table of their own (so the write guard covers them):
// frank edits the tech accounts, and so their contacts, through a rule.
const upgradeModel = `{"version": 1,
  "objects": [
    {"name": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"},
    {"name": "opportunity", "parent": "account", "internal_owd": "private"}],
  "roles": [{"id": "ceo"}, {"id": "east", "parent": "ceo", "opportunity_access": "read"}, {"id": "west", "parent": "ceo"}],
  "users": [{"id": "alice", "role": "ceo"}, {"id": "bob", "role": "east"}, {"id": "carol", "role": "east"},
            {"id": "dave", "role": "west"}, {"id": "erin", "role": "west"}, {"id": "frank"}],
  "groups": [{"id": "tech_team", "members": ["user:frank", "role:west"]}],
  "rules": [
    {"id": "tech", "object": "account", "type": "criteria", "target": "group:tech_team", "access": "edit",
     "criteria": {"conditions": [{"field": "industry", "op": "equals", "value": "tech"}]}},
    {"id": "big_opp", "object": "opportunity", "type": "criteria", "target": "user:frank", "access": "edit",
     "criteria": {"conditions": [{"field": "amount", "op": "ge", "value": 1000}]}}]}`

const upgradeSpec = `{"objects": [
  {"object": "account", "table": "crm.account", "id": "id", "owner": "owner_id", "parent": null, "fields": ["industry", "amount"]},
  {"object": "contact", "table": "crm.contact", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["title"]},
  {"object": "opportunity", "table": "crm.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id", "fields": ["stage", "amount"]}]}`

// upgradeSchema is the application's tables, created by its role: every
// third account is tech, so frank edits its contacts without owning them.
const upgradeSchema = `
CREATE TABLE crm.account (id bigint PRIMARY KEY, name text NOT NULL, owner_id text NOT NULL, industry text, amount numeric, n int NOT NULL DEFAULT 0);
CREATE TABLE crm.contact (id bigint PRIMARY KEY, owner_id text NOT NULL, account_id bigint REFERENCES crm.account, title text, n int NOT NULL DEFAULT 0);
CREATE TABLE crm.opportunity (id uuid PRIMARY KEY, account_id bigint NOT NULL REFERENCES crm.account, owner_id text NOT NULL,
    stage text, amount numeric, n int NOT NULL DEFAULT 0);
INSERT INTO crm.account SELECT i, 'acc' || i, (ARRAY['alice','bob','carol','dave','erin','frank'])[1 + i % 6],
    CASE WHEN i % 3 = 0 THEN 'tech' END, i * 10 FROM generate_series(1, 60) i;
INSERT INTO crm.contact SELECT i, (ARRAY['alice','bob','carol','dave','erin','frank'])[1 + (i * 7) % 6], 1 + i % 60, 't' || i
    FROM generate_series(1, 120) i;
INSERT INTO crm.opportunity SELECT md5(i::text)::uuid, 1 + i % 60, (ARRAY['alice','bob','carol','dave','erin','frank'])[1 + (i * 5) % 6],
    'open', i * 40 FROM generate_series(1, 80) i;`

// upgradeEnv is a database set up by the old binary: the bundle, the old
// binary's path, and the LOGIN roles granted reader before the upgrade.
type upgradeEnv struct {
	*bundle
	old            string
	reader, writer string
}

// TestUpgradeFrom39UnderWrites proves that `recalc init` with this binary,
// run while two application sessions commit writes to attached tables, on a
// database that a schema-39 recalc attached, protected with `rls enable
// --write` (three user modes) and granted a reader and a writer role: leaves
// each policy returning, as those real roles, exactly what `recalc access`
// says for every user at read and at edit; puts the tables guarded before
// the upgrade under version 41's rule (moving a contact, controlled by its
// parent, needs all: the same move succeeded before the upgrade); lets the
// roles granted before it run the guard's new lookup, and read through the
// policies (which now call the broad-user note's functions); absorbs the changes pending, with no drift against a full run; makes
// the old binary refuse the schema as docs/operations.md says; and that a
// second `recalc init` applies nothing.
func TestUpgradeFrom39UnderWrites(t *testing.T) {
	u := setupOldSchema(t, upgradeFrom)
	ctx := context.Background()
	contact, account := u.editOnlyContact(t)
	if err := u.moveContact(t, contact, account); err != nil {
		t.Fatalf("premise: at schema 39 frank may move contact %d (edit only) under account %d: %v", contact, account, err)
	}
	u.upgradeUnderWrites(t)
	if err := u.moveContact(t, contact, account); pg.Code(err) != "42501" || !strings.Contains(err.Error(), "may move it under another parent") {
		t.Fatalf("after the upgrade, frank moved contact %d (edit only) under account %d: %v, want 42501 from the reparent guard", contact, account, err)
	}
	for _, role := range []string{u.reader, u.writer, u.appRole} {
		var ok bool
		if err := u.admin.QueryRow(ctx, `SELECT has_function_privilege($1, 'recalc.rls_may_reparent(text, text, text)', 'EXECUTE')`,
			role).Scan(&ok); err != nil || !ok {
			t.Errorf("role %s granted reader before the upgrade may not run rls_may_reparent: %v %v", role, ok, err)
		}
	}
	u.run(t)
	if out, err := u.recalc("verify"); err != nil {
		t.Fatalf("verify after the upgrade: %v\n%s", err, out)
	}
	incremental := testdb.Materialized(t, u.engine)
	u.checkPolicies(t)
	u.full(t)
	if got := testdb.Materialized(t, u.engine); got != incremental {
		t.Fatalf("the upgrade's incremental run differs from a full run")
	}
	if out, err := u.oldRecalc("status"); err == nil || !strings.Contains(out, "newer than this recalc") || !strings.Contains(out, "run that one") {
		t.Fatalf("the schema-39 binary after the upgrade: %v\n%s", err, out)
	}
	if n, err := schema.Migrate(ctx, u.engine); err != nil || n != 0 {
		t.Fatalf("a second init applied %d migrations: %v", n, err)
	}
}

// setupOldSchema builds the binary before commit, and with it sets up the
// database as an operator of that version would have.
func setupOldSchema(t *testing.T, commit string) *upgradeEnv {
	t.Helper()
	if os.Getenv("RECALC_UPGRADE_TEST") != "1" {
		t.Skip("builds an older recalc from git history: set RECALC_UPGRADE_TEST=1 to run it")
	}
	u := &upgradeEnv{old: buildOld(t, commit)}
	u.bundle = newBundle(t, nil, []string{"crm"})
	tok := u.appRole[len("attach_app_"):]
	u.reader, u.writer = "h91_reader_"+tok, "h91_writer_"+tok
	testdb.DropRoles(t, u.url, u.reader, u.writer)
	db := ident(dbName(t, u.url))
	u.exec(t, u.admin, `CREATE ROLE `+ident(u.reader)+` LOGIN NOSUPERUSER`, `CREATE ROLE `+ident(u.writer)+` LOGIN NOSUPERUSER`,
		`GRANT CONNECT ON DATABASE `+db+` TO `+ident(u.reader)+`, `+ident(u.writer),
		`ALTER ROLE `+ident(u.engineRole)+` BYPASSRLS`)
	eng := ident(u.engineRole)
	u.exec(t, u.app, upgradeSchema, `GRANT USAGE ON SCHEMA crm TO `+eng+`, `+ident(u.reader)+`, `+ident(u.writer),
		`GRANT SELECT, TRIGGER ON ALL TABLES IN SCHEMA crm TO `+eng,
		`GRANT SELECT ON ALL TABLES IN SCHEMA crm TO `+ident(u.reader),
		`GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA crm TO `+ident(u.writer))
	dir := t.TempDir()
	for name, body := range map[string]string{"model.json": upgradeModel, "spec.json": upgradeSpec} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init"}, {"import", filepath.Join(dir, "model.json")}, {"attach", filepath.Join(dir, "spec.json")},
		{"run", "--full"}, {"grant", "reader", u.reader}, {"grant", "reader", u.writer}, {"grant", "reader", u.appRole}} {
		if out, err := u.oldRecalc(args...); err != nil {
			t.Fatalf("old recalc %v: %v\n%s", args, err, out)
		}
	}
	for _, args := range [][]string{
		{"--table", "crm.account", "--object", "account", "--user-setting", "app.user_id", "--write"},
		{"--table", "crm.contact", "--object", "contact", "--user-setting", "app.user_id", "--write", "--insert-role", u.appRole},
		{"--table", "crm.opportunity", "--object", "opportunity", "--user-setting", "app.user_id", "--write", "--owner-column", "owner_id"},
	} {
		cmd := exec.Command(u.old, append([]string{"--database-url", u.url, "--log-format", "json", "rls", "enable"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("old recalc rls enable %v: %v\n%s", args, err, out)
		}
	}
	return u
}

// buildOld builds recalc as it was before commit, from a clone of this
// repository's history; it skips when the history lacks the commit.
func buildOld(t *testing.T, commit string) string {
	t.Helper()
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("no git repository to build the old recalc from: %v", err)
	}
	src, bin := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "recalc-old")
	if out, err := exec.Command("git", "clone", "-q", strings.TrimSpace(string(root)), src).CombinedOutput(); err != nil {
		t.Skipf("clone the repository: %v\n%s", err, out)
	}
	if err := exec.Command("git", "-C", src, "rev-parse", "-q", "--verify", commit+"^{commit}").Run(); err != nil {
		t.Skipf("the history lacks commit %s: %v", commit, err)
	}
	if out, err := exec.Command("git", "-C", src, "checkout", "-q", commit+"^").CombinedOutput(); err != nil {
		t.Fatalf("checkout %s^: %v\n%s", commit, err, out)
	}
	build := exec.Command("go", "build", "-o", bin, "./cmd/recalc")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build recalc at %s^: %v\n%s", commit, err, out)
	}
	return bin
}

// oldRecalc runs the old binary as the engine; the output has both streams.
func (u *upgradeEnv) oldRecalc(args ...string) (string, error) {
	argv := append([]string{"--database-url", dburl.WithUser(u.url, u.engineRole), "--log-format", "json"}, args...)
	out, err := exec.Command(u.old, argv...).CombinedOutput()
	return string(out), err
}

// upgradeUnderWrites runs this binary's `recalc init` while two sessions of
// the writer role commit, as alice, updates that change access (an
// account's industry, an opportunity's amount). No write may fail.
func (u *upgradeEnv) upgradeUnderWrites(t *testing.T) {
	t.Helper()
	pool := openPool(t, dburl.WithUser(u.url, u.writer))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var commits atomic.Int64
	errs := make(chan error, 2)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 2 {
				select {
				case <-stop:
					return
				default:
				}
				if err := u.writeAs(pool, "alice", i); err != nil {
					errs <- err
					return
				}
				commits.Add(1)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	out, err := u.recalc("init")
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	if err != nil {
		t.Fatalf("init under writes: %v\n%s", err, out)
	}
	for err := range errs {
		t.Fatalf("an application write failed during the upgrade: %v", err)
	}
	if commits.Load() < 4 {
		t.Fatalf("only %d writes committed around the upgrade", commits.Load())
	}
}

// writeAs commits, as user, one update of an account and one of an
// opportunity, chosen by i, that change who may read them.
func (u *upgradeEnv) writeAs(pool *pgxpool.Pool, user string, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
			return err
		}
		// Records frank owns are out of alice's reach: frank has no role.
		account, opp := 1+i%60, 1+i%80
		if account%6 == 5 {
			account++
		}
		if opp%6 == 1 {
			opp++
		}
		tag, err := tx.Exec(ctx, `UPDATE crm.account SET n = n + 1, industry = CASE WHEN industry IS NULL THEN 'tech' END WHERE id = $1`, account)
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("account %d: %d rows updated", account, tag.RowsAffected())
		}
		if err != nil {
			return err
		}
		tag, err = tx.Exec(ctx, `UPDATE crm.opportunity SET amount = amount + 600, n = n + 1 WHERE id = md5($1)::uuid`, fmt.Sprint(opp))
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("opportunity %d: %d rows updated", opp, tag.RowsAffected())
		}
		return err
	})
}

// editOnlyContact finds a contact that frank may edit but does not own
// (edit on its tech account), and an account of frank's to move it under.
func (u *upgradeEnv) editOnlyContact(t *testing.T) (contact, account int64) {
	t.Helper()
	err := u.admin.QueryRow(context.Background(), `
		SELECT c.id, a.id FROM crm.contact c, crm.account a
		WHERE c.owner_id <> 'frank' AND recalc.access_level('frank', 'contact:' || c.id) = 'edit'
		  AND a.owner_id = 'frank' AND a.id <> c.account_id ORDER BY c.id, a.id LIMIT 1`).Scan(&contact, &account)
	if err != nil {
		t.Fatalf("premise: a contact frank edits only: %v", err)
	}
	return contact, account
}

// moveContact tries, as the writer role and user frank, to move contact
// under account, and rolls back.
func (u *upgradeEnv) moveContact(t *testing.T, contact, account int64) error {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dburl.WithUser(u.url, u.writer))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', 'frank', true)`); err != nil {
		t.Fatal(err)
	}
	tag, err := tx.Exec(ctx, `UPDATE crm.contact SET account_id = $1 WHERE id = $2`, account, contact)
	if err == nil && tag.RowsAffected() != 1 {
		return errors.New("the move updated no row")
	}
	return err
}

// checkPolicies compares, for every user (and one unknown) and object, the
// rows the reader role reads and the rows the writer role updates under the
// policies with `recalc access` at read and at edit.
func (u *upgradeEnv) checkPolicies(t *testing.T) {
	t.Helper()
	reader := openPool(t, dburl.WithUser(u.url, u.reader))
	writer := openPool(t, dburl.WithUser(u.url, u.writer))
	for _, object := range []string{"account", "contact", "opportunity"} {
		for _, user := range append(slices.Clone(crmUsers), "nobody") {
			read := policyIDs(t, reader, user, `SELECT id::text FROM crm.`+object)
			if want := u.accessIDs(t, user, object, "read"); !slices.Equal(read, want) {
				t.Errorf("%s reads %s: policy %v, recalc access %v", user, object, read, want)
			}
			edit := policyIDs(t, writer, user, `UPDATE crm.`+object+` SET n = n RETURNING id::text`)
			if want := u.accessIDs(t, user, object, "edit"); !slices.Equal(edit, want) {
				t.Errorf("%s edits %s: policy %v, recalc access %v", user, object, edit, want)
			}
		}
	}
}

// policyIDs runs query as user in a transaction rolled back, sorted.
func policyIDs(t *testing.T, pool *pgxpool.Pool, user, query string) []string {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, query)
	if err != nil {
		t.Fatalf("%s as %s: %v", query, user, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s as %s: %v", query, user, err)
	}
	slices.Sort(ids)
	return ids
}

// accessIDs lists the ids `recalc access` gives user on object at level or
// above, sorted.
func (u *upgradeEnv) accessIDs(t *testing.T, user, object, level string) []string {
	t.Helper()
	if user == "nobody" {
		return nil // no such user: recalc access fails, and the policies show nothing
	}
	out, err := u.recalc("access", "--user", user, "--object", object, "--min-level", level, "--format", "csv")
	if err != nil {
		t.Fatalf("recalc access --user %s --object %s: %v", user, object, err)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) == 0 {
		t.Fatalf("recalc access output %q: %v", out, err)
	}
	ids := []string{}
	for _, r := range recs[1:] {
		ids = append(ids, r[0])
	}
	slices.Sort(ids)
	return ids
}

// TestUpgradeAsSuperuserIsRefused: `recalc init` run by a superuser that
// does not own schema recalc is refused, changing nothing. Before, it
// succeeded, and the new functions belonged to the superuser: the engine's
// SECURITY DEFINER policy functions, which run as the engine, could not call
// them, so every read through the policies failed, and so did `recalc grant
// reader`. The owner's upgrade then leaves reads and grants working.
func TestUpgradeAsSuperuserIsRefused(t *testing.T) {
	u := setupOldSchema(t, upgradeFrom)
	ctx := context.Background()
	n, err := schema.Migrate(ctx, u.admin)
	var oe *schema.OwnerError
	if !errors.As(err, &oe) || oe.Owner != u.engineRole || n != 0 {
		t.Fatalf("an upgrade by a superuser not owning schema recalc: applied %d, %v; want refused with a *schema.OwnerError naming %s",
			n, err, u.engineRole)
	}
	var version int
	if err := u.admin.QueryRow(ctx, `SELECT max(version) FROM recalc.schema_version`).Scan(&version); err != nil || version != 39 {
		t.Fatalf("a refused upgrade left schema version %d: %v", version, err)
	}
	if _, err := schema.Migrate(ctx, u.engine); err != nil {
		t.Fatalf("the owner's upgrade after the refusal: %v", err)
	}
	late := "h91_late_" + u.appRole[len("attach_app_"):]
	testdb.DropRoles(t, u.url, late)
	u.exec(t, u.admin, `CREATE ROLE `+ident(late)+` NOLOGIN`)
	if out, err := u.recalc("grant", "reader", late); err != nil {
		t.Errorf("recalc grant reader after the owner's upgrade: %v\n%s", err, out)
	}
	u.checkPolicies(t)
}
