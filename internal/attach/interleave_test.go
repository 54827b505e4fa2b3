package attach_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/locks"
)

// usersAndRecords are application transactions that write the users table
// and an object's table together: the records they write name users the
// same transaction adds, deactivates, moves to another role or deletes.
var usersAndRecords = []struct {
	name  string
	stmts []string
}{
	{"a new user gets an account", []string{
		`INSERT INTO crm.app_user (id, name, role_id, kind, active) VALUES ('zoe', 'Zoe', 'west', 'internal', true)`,
		`UPDATE crm.account SET owner_id = 'zoe' WHERE id = 1`}},
	{"a user is deactivated and gets an account", []string{
		`UPDATE crm.app_user SET active = false WHERE id = 'carol'`,
		`UPDATE crm.account SET owner_id = 'carol' WHERE id = 2`}},
	{"a user changes role and gets a case", []string{
		`UPDATE crm.app_user SET role_id = 'west' WHERE id = 'bob'`,
		`UPDATE support."case" SET owner_id = 'bob' WHERE id = 2`}},
	{"a user's account goes to another and the user is deleted", []string{
		`UPDATE crm.account SET owner_id = 'alice' WHERE owner_id = 'carol'`,
		`DELETE FROM crm.app_user WHERE id = 'carol'`}},
	{"a user without a role gets one and an account", []string{
		`UPDATE crm.app_user SET role_id = 'east', kind = 'internal' WHERE id = 'zed'`,
		`UPDATE crm.account SET owner_id = 'zed' WHERE id = 2`}},
}

// TestInterleavedUsersAndRecords: the users table and the object tables
// are attached; B commits a write of each (account 2's industry, dave's
// role) so that a run has work; then application transaction A, begun
// before the run, writes the users table and an account or case
// (usersAndRecords) and commits at each point of the run: while planning
// waits for the model lock, while the absorb waits for the account's
// object, for the users', while the plan waits to build the users section
// from what was absorbed, while a chunk waits, while the job's finish
// waits, or after the job. Whatever the point, the runs that follow leave
// nothing logged, recalc.record mirrors the rows, and access is the
// oracle's for the model with the users the table gives.
//
// Every write at every point with RECALC_COMMIT_POINTS=all (35 histories,
// each a database of its own: 99 s of test time under -race); by default 7,
// a fixed subset (matrixCases) in which every write and every point is
// met at least once (TestMatrixCasesMeetEveryRowAndColumn).
func TestInterleavedUsersAndRecords(t *testing.T) {
	t.Parallel()
	all := os.Getenv("RECALC_COMMIT_POINTS") == "all"
	for _, c := range matrixCases(len(usersAndRecords), len(usersAndRecordsPoints), func(int, int) bool { return true }, all) {
		w, p := usersAndRecords[c[0]], usersAndRecordsPoints[c[1]]
		t.Run(w.name+"/"+p.name, func(t *testing.T) {
			t.Parallel()
			interleavedUsersAndRecords(t, w.stmts, p.holder)
		})
	}
}

// usersAndRecordsPoints are the points of a run TestInterleavedUsersAndRecords
// commits A at: what holds the run there.
var usersAndRecordsPoints = []struct{ name, holder string }{
	{"planning waits for the model lock", "model"},
	{"the absorb waits for the account", `SELECT 1 FROM recalc.attachment WHERE object = 'account' FOR UPDATE`},
	{"the absorb waits for the users", `SELECT 1 FROM recalc.attachment WHERE object = 'users' FOR UPDATE`},
	{"the plan waits to build the users section", `SELECT 1 FROM recalc.attached_users_state FOR UPDATE`},
	{"a chunk waits", `SELECT FROM recalc.acl_record WHERE id = 'case:1' FOR UPDATE`},
	{"the finish waits", "finish"},
	{"after the job", "after"},
}

func interleavedUsersAndRecords(t *testing.T, stmts []string, point string) {
	ctx := context.Background()
	b := setupUsersRun(t)
	a, _ := hold(t, b.app, "")
	for _, s := range stmts {
		if _, err := a.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	b.exec(t, b.app, `UPDATE support."case" SET priority = 5 WHERE id = 1`,
		`INSERT INTO crm.account (id, name, owner_id) VALUES (4, 'Hooli', 'erin')`, `UPDATE crm.app_user SET role_id = 'east' WHERE id = 'dave'`) // B
	var holder pgx.Tx
	var pid uint32
	switch point {
	case "after":
	case "model":
		holder, pid = hold(t, b.engine, "")
		if err := locks.XactLock(ctx, holder, locks.Model); err != nil {
			t.Fatal(err)
		}
	case "finish": // a chunk waits first, then the job row is held
		holder, pid = hold(t, b.admin, `SELECT FROM recalc.acl_record WHERE id = 'case:1' FOR UPDATE`)
	default:
		holder, pid = hold(t, b.admin, point)
	}
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		_, runErr = engine.Run(ctx, b.engine, engine.Options{Workers: 2, ChunkSize: 1, LockTimeout: 20 * time.Second}, zerolog.Nop())
	}()
	commitA := func() {
		if err := a.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	switch point {
	case "after":
	case "finish":
		waitBlocked(t, b.admin, pid, done, "a chunk to wait")
		jobLock, jobPid := hold(t, b.admin, `SELECT FROM recalc.job WHERE status = 'running' FOR NO KEY UPDATE`)
		if err := holder.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		waitBlocked(t, b.admin, jobPid, done, "the finish to wait")
		commitA()
		if err := jobLock.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	default:
		waitBlocked(t, b.admin, pid, done, "the run to wait")
		commitA()
		if err := holder.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	if point == "after" {
		commitA()
	}
	b.run(t)
	for _, o := range []string{"account", "case", "users"} {
		if b.waiting(t, o) {
			t.Errorf("writes to %s still logged after two runs", o)
		}
	}
	b.checkMirror(t, "after the runs")
	b.checkUsers(t, "after the runs")
}

// TestInterleavedLongWritersAttached: the application writes its users
// table and its object tables from four connections in transactions that
// stay open across the engine's work (READ COMMITTED and REPEATABLE READ,
// a pause before each write and before the commit, some rolled back), and
// each transaction mixes the tables: a user added, deactivated, moved to
// another role or deleted beside accounts, cases and contact links
// written. Meanwhile `recalc watch` steps (engine.Live) and runs
// (incremental, now and then full, which reads every source again) take
// turns. Once the writers stop, one more run leaves nothing logged,
// recalc.record mirrors the rows and access is the oracle's for the users
// the table gives.
func TestInterleavedLongWritersAttached(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsersRun(t)
	live := engine.NewLive(engine.Options{ChunkSize: 3, Retries: 5}, 3)
	n := 0
	steps := b.writeWhile(t, 144, func() error {
		n++
		var err error
		switch {
		case n%7 == 0:
			_, err = engine.Run(ctx, b.engine, engine.Options{Full: true, InPlace: n%14 == 0, ChunkSize: 3, Retries: 5}, zerolog.Nop())
		case n%3 == 0:
			_, err = engine.Run(ctx, b.engine, engine.Options{ChunkSize: 3, Retries: 5}, zerolog.Nop())
		default:
			_, err = live.Step(ctx, b.engine, zerolog.Nop())
		}
		return err
	}, longAppWriter, longAppWriter, longAppWriter, longAppWriter)
	t.Logf("%d steps and runs beside the writes", steps)
	b.run(t)
	for _, o := range []string{"account", "case", "contact", "users"} {
		if b.waiting(t, o) {
			t.Errorf("writes to %s still logged after the last run", o)
		}
	}
	b.checkMirror(t, "after the writes and a run")
	b.checkUsers(t, "after the writes and a run")
}

// longAppWriter is one connection of TestInterleavedLongWritersAttached:
// 25 transactions of one to three writes each. A write the database
// refuses (a foreign key, a serialization failure, a deadlock) rolls its
// transaction back, as the application would.
func longAppWriter(ctx context.Context, app *pgxpool.Pool, r *rand.Rand) error {
	pick := func(vs ...string) string { return vs[r.IntN(len(vs))] }
	user := func() string { return pick("alice", "bob", "carol", "dave", "erin", "frank", "zed", "n1", "n2") }
	contact := func() string { return fmt.Sprintf("'00000000-0000-0000-0000-%012d'", 1+r.IntN(6)) }
	writes := []func() string{
		func() string {
			return fmt.Sprintf(`UPDATE crm.app_user SET role_id = %s WHERE id = '%s'`, pick("'ceo'", "'east'", "'west'", "NULL"), user())
		},
		func() string {
			return fmt.Sprintf(`UPDATE crm.app_user SET active = %s WHERE id = '%s'`, pick("true", "false"), user())
		},
		func() string {
			return fmt.Sprintf(`INSERT INTO crm.app_user (id, name, role_id) VALUES ('%s', 'N', %s) ON CONFLICT (id) DO UPDATE SET role_id = excluded.role_id`,
				pick("n1", "n2"), pick("'east'", "'west'"))
		},
		func() string { return fmt.Sprintf(`DELETE FROM crm.app_user WHERE id = '%s'`, pick("n1", "n2")) },
		func() string {
			return fmt.Sprintf(`UPDATE crm.account SET owner_id = '%s' WHERE id = %d`, user(), 1+r.IntN(4))
		},
		func() string {
			return fmt.Sprintf(`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (%d, 'A', '%s', '%s') ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id, industry = excluded.industry`,
				4+r.IntN(3), user(), pick("tech", "retail"))
		},
		func() string { return fmt.Sprintf(`DELETE FROM crm.account WHERE id = %d`, 4+r.IntN(3)) },
		func() string {
			return fmt.Sprintf(`INSERT INTO support."case" VALUES (%d, %d, '%s', %d, 'New') ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, owner_id = excluded.owner_id`,
				1+r.IntN(5), 1+r.IntN(3), user(), r.IntN(5))
		},
		func() string { return fmt.Sprintf(`DELETE FROM support."case" WHERE id = %d`, 1+r.IntN(5)) },
		func() string {
			return fmt.Sprintf(`INSERT INTO crm.contact VALUES (%s, '%s', 'T') ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id`, contact(), user())
		},
		func() string {
			return fmt.Sprintf(`INSERT INTO crm.contact_account SELECT c.id, %d FROM crm.contact c WHERE c.id = %s
				ON CONFLICT (contact_id) DO UPDATE SET account_id = excluded.account_id`, 1+r.IntN(3), contact())
		},
		func() string { return fmt.Sprintf(`DELETE FROM crm.contact_account WHERE contact_id = %s`, contact()) },
	}
	for range 25 {
		opts := pgx.TxOptions{IsoLevel: pgx.ReadCommitted}
		if r.IntN(2) == 0 {
			opts.IsoLevel = pgx.RepeatableRead
		}
		err := pgx.BeginTxFunc(ctx, app, opts, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT count(*) FROM crm.account`); err != nil { // the snapshot
				return err
			}
			for k := 1 + r.IntN(3); k > 0; k-- {
				time.Sleep(time.Duration(r.IntN(40)) * time.Millisecond)
				if _, err := tx.Exec(ctx, writes[r.IntN(len(writes))]()); err != nil {
					return err
				}
			}
			time.Sleep(time.Duration(r.IntN(40)) * time.Millisecond)
			if r.IntN(10) == 0 {
				return errRolledBack
			}
			return nil
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, errRolledBack) && sqlState(err) == "" {
			return err
		}
	}
	return nil
}
