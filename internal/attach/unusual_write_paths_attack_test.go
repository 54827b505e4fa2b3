package attach_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// absorbBy brings the attached tables' writes into the records: a run, or
// (fast) one step of `recalc watch`, its fast path when the writes allow it.
func absorbBy(t *testing.T, b *bundle, fast bool) {
	t.Helper()
	if !fast {
		b.run(t)
		return
	}
	if _, err := engine.NewLive(engine.Options{Trigger: "watch"}, 1000).Step(context.Background(), b.engine, zerolog.Nop()); err != nil {
		t.Fatalf("watch step: %v", err)
	}
}

// sameAsFull fails unless the access materialized so far equals what a
// full run then computes from the records.
func sameAsFull(t *testing.T, b *bundle, after string) {
	t.Helper()
	got := testkit.AccessCSV(t, context.Background(), b.engine)
	b.full(t)
	if want := testkit.AccessCSV(t, context.Background(), b.engine); got != want {
		t.Fatalf("%s: incremental access differs from a full run's\n%s", after, oracle.Diff(want, got))
	}
}

// TestUnusualWritePathsAreCaptured (regression, passes): the application's
// role writes its attached tables through paths other than a plain
// statement on the table: its own deferred constraint trigger re-owning a
// row at commit, a rule on another table, a rule and an INSTEAD OF trigger
// on views of its own, a cursor's WHERE CURRENT OF, writable CTEs, its
// triggers rewriting NEW or writing another attached table (an AFTER
// STATEMENT trigger named to fire before the capture's and one after),
// TRUNCATE ... RESTART IDENTITY CASCADE from the parent and a refill,
// foreign-key cascades and SET NULL, parents rekeyed or deleted under
// children with no foreign key, a procedure committing and rolling back
// halfway, and COPY. Once absorbed, by a run or by `recalc watch`'s step
// (alternately), recalc.record mirrors the rows and the access equals a
// full run's.
func TestUnusualWritePathsAreCaptured(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps [][]string // each a transaction of the application's; an absorb after each
	}{
		{"deferred constraint trigger re-owns at commit", [][]string{{
			`CREATE FUNCTION crm.uw_reown() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE crm.account SET owner_id = 'alice' WHERE id = NEW.id; RETURN NULL; END $$`,
			`CREATE CONSTRAINT TRIGGER uw_reown AFTER INSERT ON crm.account DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION crm.uw_reown()`,
			`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (60, 'D', 'bob', 'tech')`,
			`UPDATE support."case" SET owner_id = 'frank' WHERE id = 1`}}},
		{"rule on another table", [][]string{{
			`CREATE TABLE crm.uw_log (id bigint, o text)`,
			`CREATE RULE uw_r AS ON INSERT TO crm.uw_log DO ALSO UPDATE crm.account SET owner_id = NEW.o WHERE id = NEW.id`,
			`INSERT INTO crm.uw_log VALUES (1, 'frank'), (2, 'carol')`}}},
		{"INSTEAD rule on the application's view", [][]string{{
			`CREATE VIEW crm.uw_v AS SELECT id, owner_id FROM support."case"`,
			`CREATE RULE uw_r2 AS ON UPDATE TO crm.uw_v DO INSTEAD UPDATE support."case" SET owner_id = NEW.owner_id WHERE id = OLD.id`,
			`UPDATE crm.uw_v SET owner_id = 'frank'`}}},
		{"INSTEAD OF trigger on the application's view", [][]string{{
			`CREATE VIEW crm.uw_v3 AS SELECT c.id, ca.account_id FROM crm.contact c JOIN crm.contact_account ca ON ca.contact_id = c.id`,
			`CREATE FUNCTION crm.uw_io() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
				UPDATE crm.contact_account SET account_id = NEW.account_id WHERE contact_id = OLD.id;
				UPDATE crm.contact SET owner_id = 'frank' WHERE id = OLD.id; RETURN NEW; END $$`,
			`CREATE TRIGGER uw_io INSTEAD OF UPDATE ON crm.uw_v3 FOR EACH ROW EXECUTE FUNCTION crm.uw_io()`,
			`INSERT INTO crm.contact VALUES ('00000000-0000-0000-0000-0000000000c1', 'bob', 'CTO', NULL)`,
			`INSERT INTO crm.contact_account VALUES ('00000000-0000-0000-0000-0000000000c1', 1)`,
			`UPDATE crm.uw_v3 SET account_id = 2`}}},
		{"cursor WHERE CURRENT OF", [][]string{{
			`DECLARE uw_c CURSOR FOR SELECT * FROM support."case" WHERE id = 1 FOR UPDATE`, `FETCH uw_c`,
			`UPDATE support."case" SET owner_id = 'frank', priority = 1 WHERE CURRENT OF uw_c`}}},
		{"writable CTE deletes and inserts one id", [][]string{{
			`WITH d AS (DELETE FROM support."case" WHERE id = 1 RETURNING *) INSERT INTO support."case" SELECT id, 2, 'frank', 5, 'X' FROM d`}}},
		{"writable CTE updates one table twice", [][]string{{
			`WITH a AS (UPDATE support."case" SET owner_id = 'frank' WHERE id = 1 RETURNING id) UPDATE support."case" SET priority = 9 WHERE id = 2`}}},
		{"writable CTE over a view's base tables", [][]string{{
			`INSERT INTO crm.contact VALUES ('00000000-0000-0000-0000-0000000000c2', 'bob', 'CTO', NULL)`,
			`INSERT INTO crm.contact_account VALUES ('00000000-0000-0000-0000-0000000000c2', 1)`,
			`WITH a AS (UPDATE crm.contact_account SET account_id = 2 RETURNING contact_id)
				UPDATE crm.contact SET owner_id = 'dave' WHERE id IN (SELECT contact_id FROM a)`}}},
		{"AFTER ROW trigger writes another attached table", [][]string{{
			`CREATE FUNCTION crm.uw_x() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE crm.account SET vip = true, owner_id = NEW.owner_id WHERE id = NEW.account_id; RETURN NULL; END $$`,
			`CREATE TRIGGER uw_x AFTER UPDATE ON support."case" FOR EACH ROW EXECUTE FUNCTION crm.uw_x()`,
			`UPDATE support."case" SET owner_id = 'frank' WHERE id = 2`}}},
		{"BEFORE ROW trigger rewrites the owner on another column's update", [][]string{{
			`CREATE FUNCTION crm.uw_b() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.owner_id := 'frank'; NEW.industry := 'tech'; RETURN NEW; END $$`,
			`CREATE TRIGGER uw_b BEFORE UPDATE ON crm.account FOR EACH ROW EXECUTE FUNCTION crm.uw_b()`,
			`UPDATE crm.account SET name = name || '!' WHERE id = 3`}}},
		{"AFTER STATEMENT triggers around the capture's write again", [][]string{{
			`CREATE FUNCTION crm.uw_s() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
				IF pg_trigger_depth() = 1 THEN UPDATE support."case" SET owner_id = 'carol' WHERE id = 2; END IF; RETURN NULL; END $$`,
			`CREATE TRIGGER "0uw_s" AFTER UPDATE ON support."case" FOR EACH STATEMENT EXECUTE FUNCTION crm.uw_s()`,
			`CREATE TRIGGER "zuw_s" AFTER UPDATE ON support."case" FOR EACH STATEMENT EXECUTE FUNCTION crm.uw_s()`,
			`UPDATE support."case" SET priority = 2 WHERE id = 1`}}},
		{"TRUNCATE RESTART IDENTITY CASCADE and refill", [][]string{{
			`TRUNCATE crm.account RESTART IDENTITY CASCADE`,
			`INSERT INTO crm.account (name, owner_id, industry) VALUES ('N1', 'frank', 'tech'), ('N2', 'dave', NULL)`,
			`INSERT INTO support."case" VALUES (1, 1, 'carol', 5, 'New')`}}},
		{"foreign keys cascade and set null", [][]string{{
			`ALTER TABLE crm.opportunity ALTER COLUMN account_id DROP NOT NULL`,
			`ALTER TABLE crm.opportunity DROP CONSTRAINT opportunity_account_id_fkey,
				ADD FOREIGN KEY (account_id) REFERENCES crm.account ON DELETE SET NULL ON UPDATE CASCADE`,
			`INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-0000000000a1', 2, 'bob', 'open', 5000, NULL)`,
			`DELETE FROM crm.account WHERE id = 1`,
			`ALTER TABLE support."case" DROP CONSTRAINT case_account_id_fkey,
				ADD FOREIGN KEY (account_id) REFERENCES crm.account ON DELETE CASCADE ON UPDATE CASCADE`,
			`UPDATE crm.account SET id = 20 WHERE id = 2`}}},
		{"parents rekeyed, deleted and arriving late without foreign keys", [][]string{
			{`ALTER TABLE support."case" DROP CONSTRAINT case_account_id_fkey`,
				`ALTER TABLE crm.opportunity DROP CONSTRAINT opportunity_account_id_fkey`,
				`INSERT INTO crm.opportunity VALUES ('00000000-0000-0000-0000-0000000000a2', 2, 'frank', 'open', 5000, NULL)`,
				`UPDATE crm.account SET id = 10 WHERE id = 1`, `DELETE FROM crm.account WHERE id = 2`,
				`INSERT INTO support."case" VALUES (5, 77, 'bob', 5, 'New')`},
			{`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (77, 'L', 'dave', 'tech')`},
			{`UPDATE crm.account SET id = 78 WHERE id = 77`},
			{`UPDATE crm.account SET id = 77 WHERE id = 78`, `UPDATE crm.account SET owner_id = 'frank' WHERE id = 77`}}},
		{"procedure commits and rolls back halfway", [][]string{
			{`CREATE PROCEDURE crm.uw_p() LANGUAGE plpgsql AS $$ BEGIN
				UPDATE support."case" SET owner_id = 'frank' WHERE id = 1; COMMIT;
				UPDATE support."case" SET owner_id = 'dave' WHERE id = 2; ROLLBACK;
				UPDATE crm.account SET vip = true WHERE id = 3; COMMIT; END $$`},
			{`CALL crm.uw_p()`}}},
	}
	for i, tc := range tests {
		fast := i%2 == 1
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t)
			for _, stmts := range tc.steps {
				if len(stmts) == 1 && stmts[0] == `CALL crm.uw_p()` {
					b.exec(t, b.app, stmts...) // transaction control: not in a transaction block
				} else {
					appTx(t, b, stmts...)
				}
				absorbBy(t, b, fast)
			}
			b.run(t) // what a watch step handed to a job
			b.checkMirror(t, tc.name)
			sameAsFull(t, b, tc.name)
		})
	}
	t.Run("COPY", func(t *testing.T) {
		t.Parallel()
		b := setupAttached(t)
		rows := [][]any{{int64(11), int64(1), "frank", int32(5), "N"}, {int64(12), int64(2), "dave", int32(1), "N"}, {int64(13), int64(3), "bob", int32(0), "N"}}
		if _, err := b.app.CopyFrom(context.Background(), pgx.Identifier{"support", "case"},
			[]string{"id", "account_id", "owner_id", "priority", "status"}, pgx.CopyFromRows(rows)); err != nil {
			t.Fatal(err)
		}
		absorbBy(t, b, true)
		b.checkMirror(t, "COPY")
		sameAsFull(t, b, "COPY")
	})
}

// TestUnusualWritePathsKeepTheirEffects (regression, passes): frank's
// manual share on case:2 goes exactly when the case's owner changed at some
// point of the transaction (docs/attach.md, "What happened in between
// counts"), whatever the path: away and back through a deferred constraint
// trigger, a foreign key's ON UPDATE CASCADE from the users table, a rule,
// or the application's BEFORE trigger; a delete and insert of one id by two
// MERGEs; a TRUNCATE cascading from the accounts and a refill. An owner
// change rolled back to a savepoint or caught in an exception block, and an
// upsert that keeps the owner, leave it. By a run and by a watch's step.
func TestUnusualWritePathsKeepTheirEffects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		stmts []string
		want  string // frank's access to case:2 then
	}{
		{"deferred trigger moves the owner away and back", []string{
			`CREATE FUNCTION crm.uw_d() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
				UPDATE support."case" SET owner_id = 'dave' WHERE id = NEW.id; UPDATE support."case" SET owner_id = 'bob' WHERE id = NEW.id; RETURN NULL; END $$`,
			`CREATE CONSTRAINT TRIGGER uw_d AFTER UPDATE OF priority ON support."case" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION crm.uw_d()`,
			`UPDATE support."case" SET priority = 2 WHERE id = 2`}, "none"},
		{"ON UPDATE CASCADE renames the owner and back", []string{
			`ALTER TABLE support."case" DROP CONSTRAINT case_owner_id_fkey, ADD FOREIGN KEY (owner_id) REFERENCES crm.app_user ON UPDATE CASCADE`,
			`ALTER TABLE crm.account DROP CONSTRAINT account_owner_id_fkey`,
			`ALTER TABLE crm.opportunity DROP CONSTRAINT opportunity_owner_id_fkey`,
			`ALTER TABLE crm.contact DROP CONSTRAINT contact_owner_id_fkey`,
			`UPDATE crm.app_user SET id = 'bobby' WHERE id = 'bob'`, `UPDATE crm.app_user SET id = 'bob' WHERE id = 'bobby'`}, "none"},
		{"rule moves the owner away and back", []string{
			`CREATE TABLE crm.uw_log (id bigint, o text)`,
			`CREATE RULE uw_r AS ON INSERT TO crm.uw_log DO ALSO UPDATE support."case" SET owner_id = NEW.o WHERE id = NEW.id`,
			`INSERT INTO crm.uw_log VALUES (2, 'dave')`, `INSERT INTO crm.uw_log VALUES (2, 'bob')`}, "none"},
		{"BEFORE trigger moves the owner away and back", []string{
			`CREATE FUNCTION crm.uw_b() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
				NEW.owner_id := CASE WHEN OLD.owner_id = 'bob' THEN 'dave' ELSE 'bob' END; RETURN NEW; END $$`,
			`CREATE TRIGGER uw_b BEFORE UPDATE ON support."case" FOR EACH ROW EXECUTE FUNCTION crm.uw_b()`,
			`UPDATE support."case" SET priority = 2 WHERE id = 2`, `UPDATE support."case" SET priority = 3 WHERE id = 2`}, "none"},
		{"two MERGEs delete and insert the id", []string{
			`MERGE INTO support."case" c USING (VALUES (2::bigint)) s(id) ON c.id = s.id WHEN MATCHED THEN DELETE`,
			`MERGE INTO support."case" c USING (VALUES (2::bigint)) s(id) ON c.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (2, 2, 'bob', 1, 'Closed')`}, "none"},
		{"TRUNCATE cascading from the accounts and a refill", []string{
			`TRUNCATE crm.account CASCADE`,
			`INSERT INTO crm.account (id, name, owner_id, industry, amount, vip) VALUES (1, 'Acme', 'bob', 'tech', 1000, false),
				(2, 'Globex', 'dave', 'energy', 250.5, true), (3, 'Initech', 'carol', NULL, NULL, NULL)`,
			`INSERT INTO support."case" VALUES (1, 1, 'erin', 4, 'New'), (2, 2, 'bob', 1, 'Closed')`}, "none"},
		{"owner change rolled back to a savepoint", []string{
			`SAVEPOINT a`, `UPDATE support."case" SET owner_id = 'dave' WHERE id = 2`, `ROLLBACK TO SAVEPOINT a`,
			`UPDATE support."case" SET priority = 2 WHERE id = 2`}, "edit"},
		{"owner change caught in an exception block", []string{
			`DO $$ BEGIN UPDATE support."case" SET owner_id = 'dave' WHERE id = 2; RAISE EXCEPTION 'undo'; EXCEPTION WHEN others THEN NULL; END $$`,
			`UPDATE support."case" SET priority = 2 WHERE id = 2`}, "edit"},
		{"upsert keeps the owner", []string{
			`INSERT INTO support."case" VALUES (2, 2, 'bob', 1, 'Open') ON CONFLICT (id) DO UPDATE SET status = excluded.status, owner_id = excluded.owner_id`}, "edit"},
	}
	for _, tc := range tests {
		for _, fast := range []bool{false, true} {
			name := tc.name
			if fast {
				name += ", watch step"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := setupSharedCase(t)
				appTx(t, b, tc.stmts...)
				absorbBy(t, b, fast)
				b.run(t)
				b.checkMirror(t, name)
				if got := levelOf(t, b, "frank", "case:2"); got != tc.want {
					t.Errorf("%s: frank has %s on case:2, want %s", name, got, tc.want)
				}
				sameAsFull(t, b, name)
			})
		}
	}
}

// TestWriteAfterARowLockIsCaptured (regression, passes): a statement that
// waited for another transaction's row lock and then wrote the row version
// that transaction committed (PostgreSQL's re-check under READ COMMITTED)
// compares its write with that version, not the one its snapshot saw: an
// UPDATE, upsert or MERGE that sets case 1's owner back to erin after the
// other transaction gave it to frank is logged, and absorbed though a run
// absorbed frank in between, before it committed.
func TestWriteAfterARowLockIsCaptured(t *testing.T) {
	t.Parallel()
	for name, second := range map[string]string{
		"UPDATE": `UPDATE support."case" SET owner_id = 'erin' WHERE id = 1`,
		"upsert": `INSERT INTO support."case" VALUES (1, 1, 'erin', 4, 'New') ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id`,
		"MERGE":  `MERGE INTO support."case" c USING (VALUES (1::bigint)) s(id) ON c.id = s.id WHEN MATCHED THEN UPDATE SET owner_id = 'erin', priority = 4`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupAttached(t)
			ctx := context.Background()
			first, err := b.app.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = first.Rollback(ctx) }()
			var pid uint32
			if err := first.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if _, err := first.Exec(ctx, `UPDATE support."case" SET owner_id = 'frank', priority = 1 WHERE id = 1`); err != nil {
				t.Fatal(err)
			}
			tx, err := b.app.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			done := make(chan error, 1)
			go func() { _, err := tx.Exec(ctx, second); done <- err }()
			waitBlocked(t, b.admin, pid, nil, "the second write to wait for the first's row lock")
			if err := first.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			b.run(t) // absorbs frank while the second write is not committed
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			b.run(t)
			b.checkMirror(t, name)
			if got := levelOf(t, b, "erin", "case:1"); got != "all" {
				t.Errorf("erin has %s on case:1, want all (she owns it again)", got)
			}
			sameAsFull(t, b, name)
		})
	}
}
