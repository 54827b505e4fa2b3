package attach_test

// Attacks by a hostile application role on the sandboxed reads of
// migration 021, third round. Each test asserts the secure outcome: a
// failing test is an attack that works.

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/changes"
)

// inRead makes the application's function crm.payload() (VOLATILE, which
// the caller creates) run inside the sandboxed read of an absorb that the
// engine's code (changes.Absorb, as jobs and live runs call it) runs on
// conn: the absorb is held between its check of account's indexes and its
// read (an administrator's transaction locks the change row the absorb
// deletes after its check) while the table's owner adds a partial index
// whose predicate calls crm.spy_f, which the planner of the read folds.
// The write the absorb takes is an insert (account 60, owner erin), not an
// update: an updated row's old version, while another transaction may
// still see it, makes CREATE INDEX mark the index unusable by older
// transactions (indcheckxmin), and the planner would skip it. It fails the test unless crm.payload() ran,
// as the sandbox role. The index is dropped again.
func (b *bundle) inRead(t *testing.T, conn *pgxpool.Conn) (done []changes.Absorbed, took time.Duration, absorbErr error) {
	t.Helper()
	ctx := context.Background()
	app := strings.ReplaceAll(b.appRole, `'`, `''`)
	b.exec(t, b.app, `CREATE SEQUENCE crm.spy`,
		`GRANT USAGE ON SCHEMA crm TO PUBLIC`, `GRANT SELECT, UPDATE ON crm.spy TO PUBLIC`,
		`CREATE FUNCTION crm.spy_f(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
		 BEGIN
		     IF current_user <> '`+app+`' AND NOT EXISTS (SELECT FROM crm.spy WHERE is_called) THEN
		         PERFORM setval('crm.spy', (SELECT oid::bigint FROM pg_roles WHERE rolname = current_user));
		         PERFORM crm.payload();
		     END IF;
		     RETURN 0;
		 END $$`,
		`INSERT INTO crm.account (id, name, owner_id) VALUES (60, 'Spy', 'erin')`)
	var pid int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	admin, err := b.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Rollback(ctx) //nolint:errcheck
	if _, err := admin.Exec(ctx, `SELECT 1 FROM recalc.change WHERE kind = 'attached' AND object = 'account' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		done []changes.Absorbed
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		r.err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) (err error) {
			r.done, _, err = changes.Absorb(ctx, tx, 1<<30)
			return err
		})
		ch <- r
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var waiting bool
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')`, pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the absorb never waited for the change row")
		}
	}
	b.exec(t, b.app, `CREATE INDEX account_spy ON crm.account (name) WHERE id > crm.spy_f(0)`)
	start := time.Now()
	if err := admin.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	took = time.Since(start)
	var ranAs *string
	if err := b.admin.QueryRow(ctx, `SELECT (SELECT rolname FROM pg_roles WHERE oid = s.last_value) FROM crm.spy s WHERE s.is_called`).Scan(&ranAs); err != nil && err != pgx.ErrNoRows {
		t.Fatal(err)
	}
	if ranAs == nil {
		t.Fatalf("the planner never ran the index's function: the race was not exercised (absorb: %v %v)", r.done, r.err)
	}
	if *ranAs != sandboxRole(b.engineRole) {
		t.Fatalf("the index's function ran as %s, want the sandbox role %s", *ranAs, sandboxRole(b.engineRole))
	}
	b.exec(t, b.app, `DROP INDEX crm.account_spy`)
	return r.done, took, r.err
}

// attackedRead sets up the attack on the sandboxed read that inRead runs:
// the CRM attached and recalculated, the application's evil functions
// (evilFuncs), then stmts as the application, which create crm.payload();
// and it returns a connection of the engine's, released at the test's end.
func attackedRead(t *testing.T, stmts ...string) (*bundle, *pgxpool.Conn) {
	t.Helper()
	b := setupAttached(t)
	b.evilFuncs(t, "crm")
	b.exec(t, b.app, stmts...)
	conn, err := b.engine.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	return b, conn
}

// preparedStatements lists the prepared statements of conn's session.
func preparedStatements(t *testing.T, conn *pgxpool.Conn) map[string]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT name, statement FROM pg_prepared_statements`)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	var name, stmt string
	if _, err := pgx.ForEachRow(rows, []any{&name, &stmt}, func() error { m[name] = stmt; return nil }); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAttack3PreparedStatementsOutliveTheRead: prepared statements are not
// transactional: neither PREPARE nor DEALLOCATE is undone when the read's
// subtransaction rolls back, and both are allowed inside a SECURITY
// DEFINER function. Code running in the sandboxed read sees, in
// pg_prepared_statements, the statements pgx prepared in the engine's
// session (named stmtcache_<hash>, with their SQL) and replaces each
// SELECT with one of the same name, parameters and result columns that
// also calls the application's function. pgx executes cached statements by
// name, without parsing them again: the next time the engine runs one of
// them, the application's function runs as the engine (current_user is the
// engine outside the SECURITY DEFINER reader), and grants the application
// CREATE on schema recalc.
func TestAttack3PreparedStatementsOutliveTheRead(t *testing.T) {
	t.Parallel()
	b, conn := attackedRead(t, `CREATE FUNCTION crm.payload() RETURNS void LANGUAGE plpgsql AS $$
		DECLARE
		    r record;
		    v_params text;
		BEGIN
		    FOR r IN SELECT name, statement, parameter_types FROM pg_prepared_statements
		             WHERE name LIKE 'stmtcache\_%' AND statement ~* '^\s*select\M' AND statement !~ 'attach_absorb|evil_v' LOOP
		        v_params := CASE WHEN cardinality(r.parameter_types) > 0
		                         THEN '(' || array_to_string(r.parameter_types::text[], ', ') || ')' ELSE '' END;
		        EXECUTE format('DEALLOCATE %I', r.name);
		        BEGIN
		            EXECUTE format('PREPARE %I%s AS SELECT * FROM (%s) q WHERE crm.evil_v() = 0', r.name, v_params, r.statement);
		        EXCEPTION WHEN OTHERS THEN
		            EXECUTE format('PREPARE %I%s AS %s', r.name, v_params, r.statement);
		        END;
		    END LOOP;
		END $$`)
	ctx := context.Background()
	// The engine's fast path on this session: nothing waits, so it only
	// counts (and pgx prepares the count).
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { _, _, err := changes.Absorb(ctx, tx, 1<<30); return err }); err != nil {
		t.Fatal(err)
	}
	before := preparedStatements(t, conn)
	b.inRead(t, conn)
	if b.pwned(t) {
		t.Fatal("the application's code got the engine's rights during the read itself")
	}
	after := preparedStatements(t, conn)
	var changed []string
	for name, stmt := range before {
		if s, ok := after[name]; ok && s != stmt {
			changed = append(changed, name)
		}
	}
	sort.Strings(changed)

	// The engine goes on: the next absorb on this session counts again.
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { _, _, err := changes.Absorb(ctx, tx, 1<<30); return err })
	if b.pwned(t) {
		t.Fatalf("after the read, the application's code replaced %d prepared statements of the engine's session (%v); "+
			"the engine's next absorb (%v) ran one of them, and the application's function with it, as the engine: "+
			"the application has CREATE on schema recalc", len(changed), changed, err)
	}
	if len(changed) > 0 {
		t.Fatalf("the read changed %d prepared statements of the engine's session: %v", len(changed), changed)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestAttack3ReadStallsTheEngine: code in the read can wait as long as it
// likes: the absorb's lock_timeout (which keeps an application that holds
// its tables locked from delaying the others,
// TestAttack2LockedTablesDelayOnlyTheirObjects) is a setting the code may
// turn off for itself; here it sleeps; it could as well wait for an
// advisory lock another session of its owner holds. Meanwhile the engine's
// transaction (in a job, holding the model lock) waits, and so do the
// writes to every other attached object, unless a statement_timeout armed
// for the object's absorb cancels it.
func TestAttack3ReadStallsTheEngine(t *testing.T) {
	t.Parallel()
	b, conn := attackedRead(t, `CREATE FUNCTION crm.payload() RETURNS void LANGUAGE plpgsql AS $$
		BEGIN
		    PERFORM set_config('lock_timeout', '0', true);
		    PERFORM pg_sleep(60);
		END $$`)
	done, took, absorbErr := b.inRead(t, conn)
	// An object's absorb of one id is bounded by a 10 s statement_timeout.
	if took > 15*time.Second || absorbErr != nil {
		t.Fatalf("the application's code held the engine's absorb (and its job's model lock) for %v (absorb: %v)", took, absorbErr)
	}
	if len(done) != 1 || done[0].Code != "57014" || !b.waiting(t, "account") {
		t.Fatalf("absorbed %+v, want account's absorb canceled (57014) and its write waiting", done)
	}
}

// TestAttack3ReadRaisesQueryCanceled: PL/pgSQL's WHEN OTHERS catches every
// error but query_canceled and assert_failure, and code in the read may
// raise either itself. Unless the per-object handler names them too, the
// whole absorb fails, and the writes to every other attached object wait.
func TestAttack3ReadRaisesQueryCanceled(t *testing.T) {
	t.Parallel()
	b, conn := attackedRead(t, `CREATE FUNCTION crm.payload() RETURNS void LANGUAGE plpgsql AS $$
		BEGIN
		    RAISE EXCEPTION 'not really canceled' USING ERRCODE = 'query_canceled';
		END $$`,
		`UPDATE support."case" SET owner_id = 'carol' WHERE id = 1`)
	done, _, absorbErr := b.inRead(t, conn)
	if absorbErr != nil || b.waiting(t, "case") {
		t.Fatalf("an error raised by the application's code in account's read failed the whole absorb (%v; done %v): case's write waits", absorbErr, done)
	}
}

// TestAttack3ReadCannotReadOtherObjects: code in one object's read runs as
// the sandbox role, which may read that object's read view during that
// read only: another object's (here case's, whose name anyone can work
// out) is denied, so it cannot copy another application's attached
// columns out through what no rollback undoes (a sequence's value).
func TestAttack3ReadCannotReadOtherObjects(t *testing.T) {
	t.Parallel()
	b, conn := attackedRead(t, `CREATE SEQUENCE crm.leak`, `GRANT USAGE ON SCHEMA crm TO PUBLIC`, `GRANT SELECT, UPDATE ON crm.leak TO PUBLIC`,
		`CREATE FUNCTION crm.payload() RETURNS void LANGUAGE plpgsql AS $$
		DECLARE
		    n bigint;
		BEGIN
		    EXECUTE format('SELECT count(*) FROM recalc.%I', 'attach_' || left(md5('case'), 16) || '_src') INTO n;
		    PERFORM setval('crm.leak', n + 1);
		EXCEPTION WHEN insufficient_privilege THEN
		    PERFORM setval('crm.leak', 1000000);
		END $$`)
	ctx := context.Background()
	b.inRead(t, conn)
	var leak int64
	var called bool
	if err := b.admin.QueryRow(ctx, `SELECT last_value, is_called FROM crm.leak`).Scan(&leak, &called); err != nil {
		t.Fatal(err)
	}
	if !called {
		t.Fatal("the payload never ran")
	}
	if leak != 1000000 {
		t.Fatalf("code in account's read counted %d rows of case's read view: one object's read may read another's", leak-1)
	}
}

// TestAttack3ReadKeepsNoAdvisoryLock: a session advisory lock is not
// undone by a rollback; code in the read that takes one (to stall every
// other session that wants it while the engine's connection lives) has it
// released when the read ends.
func TestAttack3ReadKeepsNoAdvisoryLock(t *testing.T) {
	t.Parallel()
	b, conn := attackedRead(t, `CREATE FUNCTION crm.payload() RETURNS void LANGUAGE plpgsql AS $$
		BEGIN
		    PERFORM pg_advisory_lock(424242);
		END $$`)
	ctx := context.Background()
	b.inRead(t, conn)
	var got bool
	if err := b.admin.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(424242)`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if !got {
		t.Fatal("the advisory lock taken in the read is still held by the engine's session")
	}
}
