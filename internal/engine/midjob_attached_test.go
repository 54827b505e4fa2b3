package engine_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/attach"
	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/schema"
)

// attachedBase is midJobBase's objects and users, with u3 (a role below
// u1's) and no records: the records are app tables' rows (attachedApp).
const attachedBase = `{
  "version": 1,
  "roles": [{"id": "boss"}, {"id": "rep", "parent": "boss"}],
  "objects": [
    {"name": "account", "internal_owd": "public_read_only", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"},
    {"name": "proj__c", "internal_owd": "private"},
    {"name": "task__c", "parent": "proj__c", "internal_owd": "private"},
    {"name": "step__c", "parent": "task__c", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}
  ],
  "users": [{"id": "u1", "role": "boss"}, {"id": "u2"}, {"id": "u3", "role": "rep"}]
}`

// attachedApp is the application's tables and rows: task k1 and its step
// s1 in project p9's family, with task k9; contact c1 of account a1, and
// contact c2 of none.
var attachedApp = []string{
	`CREATE SCHEMA app`,
	`CREATE TABLE app.usr (id text PRIMARY KEY, role text, kind text, active boolean)`,
	`CREATE TABLE app.account (id text PRIMARY KEY, owner_id text NOT NULL, other_owner text)`,
	`CREATE TABLE app.contact (id text PRIMARY KEY, owner_id text NOT NULL, account_id text)`,
	`CREATE TABLE app.proj (id text PRIMARY KEY, owner_id text NOT NULL, other_owner text)`,
	`CREATE TABLE app.task (id text PRIMARY KEY, owner_id text NOT NULL, proj_id text, other_owner text)`,
	`CREATE TABLE app.step (id text PRIMARY KEY, owner_id text NOT NULL, task_id text)`,
	`INSERT INTO app.usr VALUES ('u1', 'boss', 'internal', true), ('u2', NULL, 'internal', true), ('u3', 'rep', 'internal', true)`,
	`INSERT INTO app.account VALUES ('a1', 'u1', 'u2')`,
	`INSERT INTO app.contact VALUES ('c1', 'u1', 'a1'), ('c2', 'u1', NULL)`,
	`INSERT INTO app.proj VALUES ('p1', 'u1', 'u2'), ('p9', 'u1', 'u2')`,
	`INSERT INTO app.task VALUES ('k1', 'u1', 'p9', 'u2'), ('k9', 'u1', 'p9', 'u1')`,
	`INSERT INTO app.step VALUES ('s1', 'u1', 'k1')`,
}

// attachedSpec attaches every object of attachedBase, and the users;
// owner names app.task's owner column.
func attachedSpec(taskOwner string, objects ...string) string {
	all := map[string]string{
		"account": `{"object": "account", "table": "app.account", "id": "id", "owner": "owner_id", "parent": null}`,
		"contact": `{"object": "contact", "table": "app.contact", "id": "id", "owner": "owner_id", "parent": "account_id"}`,
		"proj__c": `{"object": "proj__c", "table": "app.proj", "id": "id", "owner": "owner_id", "parent": null}`,
		"task__c": `{"object": "task__c", "table": "app.task", "id": "id", "owner": "` + taskOwner + `", "parent": "proj_id"}`,
		"step__c": `{"object": "step__c", "table": "app.step", "id": "id", "owner": "owner_id", "parent": "task_id"}`,
	}
	var list []string
	for _, o := range objects {
		list = append(list, all[o])
	}
	return `{"objects": [` + strings.Join(list, ", ") + `],
	  "users": {"table": "app.usr", "id": "id", "role": "role", "type": "kind", "active": "active"}}`
}

var attachedObjects = []string{"account", "contact", "proj__c", "task__c", "step__c"}

// TestMidJobAttachedAccessBounded: the bound of
// TestMidJobNoAccessNeitherModelGives, for changes that come from the
// application's attached tables: captured writes (absorbed before the
// run, as `recalc watch` or an import would), a re-attach with another
// owner column, a detach, and the users' table. The job that follows is
// stopped at each commit point (one worker, one family a chunk), and no
// user may have access above both what the rows before and the rows after
// give.
func TestMidJobAttachedAccessBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		writes []string // to the app tables, in one transaction
		spec   string   // applied after the writes, when not ""
		detach []string // objects detached after the writes
		verify bool     // the writes bypass capture; verify --repair reads them, traced too
		full   int      // the writes bypass capture; a run --full reads them: 1 in place, 2 by staging tables
		watch  bool     // a watch step absorbs and recalculates, on its fast path when it may (two records a batch)
	}{
		{name: "task moved to another project and given away, its step to a sibling", writes: []string{
			`UPDATE app.task SET proj_id = 'p1', owner_id = 'u2' WHERE id = 'k1'`,
			`UPDATE app.step SET task_id = 'k9' WHERE id = 's1'`}},
		{name: "tasks truncated and refilled, moved and given away", writes: []string{
			`TRUNCATE app.task`,
			`INSERT INTO app.task VALUES ('k1', 'u2', 'p1', 'u2'), ('k9', 'u1', 'p9', 'u1')`,
			`UPDATE app.step SET task_id = 'k9' WHERE id = 's1'`}},
		{name: "task deleted, its step moved to a sibling given away", writes: []string{
			`DELETE FROM app.task WHERE id = 'k1'`,
			`UPDATE app.task SET owner_id = 'u2' WHERE id = 'k9'`,
			`UPDATE app.step SET task_id = 'k9' WHERE id = 's1'`}},
		{name: "account given away as its contact moves out", writes: []string{
			`UPDATE app.account SET owner_id = 'u2' WHERE id = 'a1'`,
			`UPDATE app.contact SET account_id = NULL WHERE id = 'c1'`}},
		{name: "the same under the watch", watch: true, writes: []string{
			`UPDATE app.task SET proj_id = 'p1', owner_id = 'u2' WHERE id = 'k1'`,
			`UPDATE app.step SET task_id = 'k9' WHERE id = 's1'`}},
		{name: "user made external under the watch, as a task is given away", watch: true, writes: []string{
			`UPDATE app.usr SET kind = 'external' WHERE id = 'u2'`,
			`UPDATE app.task SET owner_id = 'u2' WHERE id = 'k9'`}},
		{name: "user deactivated as a task is given to them", writes: []string{
			`UPDATE app.usr SET active = false WHERE id = 'u3'`,
			`UPDATE app.task SET owner_id = 'u3' WHERE id = 'k1'`}},
		{name: "user made external as a contact moves under a public account", writes: []string{
			`UPDATE app.usr SET kind = 'external' WHERE id = 'u2'`,
			`UPDATE app.contact SET account_id = 'a1' WHERE id = 'c2'`}},
		{name: "user made external and inactive", writes: []string{
			`UPDATE app.usr SET kind = 'external' WHERE id = 'u2'`,
			`UPDATE app.usr SET active = false WHERE id = 'u3'`}},
		{name: "user given a role as a task is given away", writes: []string{
			`UPDATE app.usr SET role = NULL WHERE id = 'u3'`,
			`UPDATE app.usr SET role = 'rep' WHERE id = 'u2'`,
			`UPDATE app.task SET owner_id = 'u3' WHERE id = 'k1'`}},
		{name: "tasks attached again by another owner column, a step moved",
			writes: []string{`UPDATE app.step SET task_id = 'k9' WHERE id = 's1'`},
			spec:   attachedSpec("other_owner", attachedObjects...)},
		{name: "steps detached as their task is given away",
			writes: []string{`UPDATE app.task SET owner_id = 'u2' WHERE id = 'k9'`},
			detach: []string{"step__c"}},
		{name: "writes no capture saw, and drift, repaired by verify", writes: []string{
			`SET LOCAL session_replication_role = replica`,
			`UPDATE app.task SET proj_id = 'p1', owner_id = 'u2' WHERE id = 'k1'`,
			`UPDATE app.step SET task_id = 'k9' WHERE id = 's1'`,
			`DELETE FROM recalc.acl_share WHERE rid IN (SELECT rid FROM recalc.acl_record WHERE id IN ('proj__c:p1', 'task__c:k9'))`,
			`DELETE FROM recalc.acl_member WHERE uid = (SELECT uid FROM recalc.principal WHERE id = 'u1') AND boss`},
			verify: true},
		{name: "writes no capture saw, read again by a full run in place", writes: []string{
			`SET LOCAL session_replication_role = replica`,
			`UPDATE app.task SET proj_id = 'p1', owner_id = 'u2' WHERE id = 'k1'`,
			`UPDATE app.step SET task_id = 'k9' WHERE id = 's1'`,
			`UPDATE app.usr SET kind = 'external' WHERE id = 'u3'`},
			full: 1},
		{name: "writes no capture saw, read again by a full run by staging tables", writes: []string{
			`SET LOCAL session_replication_role = replica`,
			`UPDATE app.task SET proj_id = 'p1', owner_id = 'u2' WHERE id = 'k1'`,
			`UPDATE app.step SET task_id = 'k9' WHERE id = 's1'`,
			`UPDATE app.account SET owner_id = 'u2' WHERE id = 'a1'`},
			full: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, attachedBase, engine.Options{})
			b.exec(t, attachedApp...)
			applySpec(t, b, attachedSpec("owner_id", attachedObjects...))
			b.run(t, engine.Options{})
			old := appModel(t, b, "owner_id", attachedObjects...)
			b.cur = old
			b.checkOracle(t, "attached")
			b.exec(t, `BEGIN; `+strings.Join(tc.writes, "; ")+`; COMMIT`)
			if tc.spec != "" {
				applySpec(t, b, tc.spec)
			}
			if tc.detach != nil {
				if _, err := attach.Detach(b.ctx, b.pool, tc.detach); err != nil {
					t.Fatal(err)
				}
			}
			chk := &boundCheck{t: t, ctx: b.ctx, pool: b.pool}
			pool := tracedPool(t, b.pool, &midJobTracer{check: chk.check})
			if tc.verify {
				chk.arm(tc.name+", verify", old)
				rep, err := engine.Verify(b.ctx, pool, engine.VerifyOptions{Repair: true, Sources: true}, zerolog.Nop())
				switch {
				case err != nil:
					t.Fatalf("verify: %v", err)
				case rep.SourceDrift() == 0 || !rep.Drift() || chk.checks < 2:
					t.Fatalf("verify found source drift %d, drift %v, and stopped at %d points; want some of each, and 2", rep.SourceDrift(), rep.Drift(), chk.checks)
				}
			} else if tc.full == 0 && !tc.watch {
				absorb(t, b)
			}
			owner, objects := "owner_id", slices.DeleteFunc(slices.Clone(attachedObjects), func(o string) bool { return slices.Contains(tc.detach, o) })
			if tc.spec != "" {
				owner = "other_owner"
			}
			b.cur = appModel(t, b, owner, objects...)
			chk.arm(tc.name, old, b.cur)
			opt := engine.Options{Workers: 1, ChunkSize: 1, Full: tc.full > 0, InPlace: tc.full == 1}
			var err error
			if tc.watch {
				_, err = engine.NewLive(opt, 2).Step(b.ctx, pool, zerolog.Nop())
			} else {
				_, err = engine.Run(b.ctx, pool, opt, zerolog.Nop())
			}
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			chk.disarm()
			if chk.checks < 2 {
				t.Fatalf("the run stopped at %d points, want at least 2", chk.checks)
			}
			b.checkOracle(t, "after the run")
		})
	}
}

func applySpec(t *testing.T, b *bundle, spec string) {
	t.Helper()
	s, err := attach.Parse(strings.NewReader(spec))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attach.Apply(b.ctx, b.pool, s); err != nil {
		t.Fatal(err)
	}
}

// absorb mirrors the writes captured so far into recalc.record, as a
// watch step's absorb does, and commits.
func absorb(t *testing.T, b *bundle) {
	t.Helper()
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		if err := schema.LockModel(b.ctx, tx); err != nil {
			return err
		}
		_, _, err := changes.Absorb(b.ctx, tx, 0)
		return err
	})
	if err != nil {
		t.Fatalf("absorb: %v", err)
	}
}

// appModel is attachedBase with the users of app.usr and the records of
// the app tables of the objects attached, task__c's owner read from
// taskOwner: what the model is once recalc has absorbed every write.
func appModel(t *testing.T, b *bundle, taskOwner string, objects ...string) *model.Model {
	t.Helper()
	m, _, err := model.Parse(strings.NewReader(attachedBase))
	if err != nil {
		t.Fatal(err)
	}
	m.Users = nil
	rows, _ := b.pool.Query(b.ctx, `SELECT id, coalesce(role, ''), kind = 'external', coalesce(active, false) FROM app.usr ORDER BY id`)
	var u model.User
	if _, err := pgx.ForEachRow(rows, []any{&u.ID, &u.Role, &u.External, &u.Active}, func() error { m.Users = append(m.Users, u); return nil }); err != nil {
		t.Fatal(err)
	}
	tables := map[string]string{
		"account": `SELECT 'account:' || id, owner_id, NULL FROM app.account`,
		"contact": `SELECT 'contact:' || id, owner_id, 'account:' || account_id FROM app.contact`,
		"proj__c": `SELECT 'proj__c:' || id, owner_id, NULL FROM app.proj`,
		"task__c": `SELECT 'task__c:' || id, ` + pgx.Identifier{taskOwner}.Sanitize() + `, 'proj__c:' || proj_id FROM app.task`,
		"step__c": `SELECT 'step__c:' || id, owner_id, 'task__c:' || task_id FROM app.step`,
	}
	for _, o := range objects {
		rows, _ := b.pool.Query(b.ctx, tables[o])
		r := model.Record{Object: o}
		var parent *string
		if _, err := pgx.ForEachRow(rows, []any{&r.ID, &r.Owner, &parent}, func() error {
			r.Parent = ""
			if parent != nil {
				r.Parent = *parent
			}
			m.Records = append(m.Records, r)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return m
}
