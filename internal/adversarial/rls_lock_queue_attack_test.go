package adversarial

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRLSCommandsQueueNoReadsBehindThem: the reader role keeps a
// transaction open that read app.account, and the table's owner runs
// `recalc rls enable` or `disable` on it: ALTER TABLE, CREATE and DROP
// POLICY and the write guard's trigger take ACCESS EXCLUSIVE. The command
// waited for that lock as long as the reader's transaction stayed open,
// and PostgreSQL queues every later read and write of the table behind
// the waiting statement: every other read of the application's waited too.
// Now each try waits 100 ms at most, another reader's read goes through
// between the tries, and the command fails, naming the reader's session
// and changing nothing; once the transaction ends it goes through.
func TestRLSCommandsQueueNoReadsBehindThem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, err := b.admin.Exec(ctx, `CREATE SCHEMA app AUTHORIZATION `+ident(b.engineRole)); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`CREATE TABLE app.account (id text PRIMARY KEY, name text NOT NULL)`,
		`INSERT INTO app.account SELECT id, 'Account ' || id FROM recalc.record WHERE object = 'account'`,
		`GRANT USAGE ON SCHEMA app TO ` + ident(b.readerRole),
		`GRANT SELECT, UPDATE ON app.account TO ` + ident(b.readerRole),
	} {
		if _, err := b.engine.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	enable := []string{"rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id", "--write"}
	disable := []string{"rls", "disable", "--table", "app.account"}
	for _, tc := range []struct {
		name    string
		args    []string
		enabled bool // row-level security on app.account before the command, and after it is refused
	}{
		{"enable", enable, false},
		{"disable", disable, true},
	} {
		hostile, err := b.reader.Begin(ctx)
		if err != nil {
			t.Fatalf("%s: begin as the reader: %v", tc.name, err)
		}
		if _, err := hostile.Exec(ctx, `SELECT set_config('app.user_id', 'u1', true); SELECT count(*) FROM app.account`); err != nil {
			t.Fatalf("%s: read app.account as the reader: %v", tc.name, err)
		}
		done := make(chan error, 1)
		go func() { _, err := b.recalcErr(tc.args...); done <- err }()

		// Hold point: the command waits for its lock on app.account.
		for waiting := false; !waiting; {
			if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = 'app.account'::regclass
				AND mode = 'AccessExclusiveLock' AND NOT granted)`).Scan(&waiting); err != nil {
				t.Fatalf("%s: look for the command's lock wait: %v", tc.name, err)
			}
			select {
			case err := <-done:
				t.Fatalf("%s: the command ended before it waited for the reader's transaction: %v", tc.name, err)
			default:
			}
		}
		// Another read of the application's, in another session, while the
		// command tries.
		other, err := b.reader.Begin(ctx)
		if err != nil {
			t.Fatalf("%s: begin as the reader: %v", tc.name, err)
		}
		_, err = other.Exec(ctx, `SET LOCAL statement_timeout = '3s'; SELECT set_config('app.user_id', 'u1', true);
			SELECT count(*) FROM app.account`)
		_ = other.Rollback(ctx)
		if err != nil {
			t.Errorf("%s: a read of app.account while the command waits for the reader's open transaction: %v, want it through", tc.name, err)
		}

		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "(role "+b.readerRole+")") {
				t.Errorf("%s while the reader's transaction stays open: %v, want a refusal naming the reader's session", tc.name, err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("%s: the command still waits for the reader's open transaction after a minute", tc.name)
			_ = hostile.Rollback(ctx)
			<-done
		}
		var enabled bool
		if err := b.admin.QueryRow(ctx, `SELECT relrowsecurity FROM pg_class WHERE oid = 'app.account'::regclass`).Scan(&enabled); err != nil || enabled != tc.enabled {
			t.Errorf("%s: row-level security on app.account after the refused command: %v (err %v), want %v", tc.name, enabled, err, tc.enabled)
		}
		_ = hostile.Rollback(ctx)
		if _, err := b.recalcErr(tc.args...); err != nil {
			t.Fatalf("%s once the reader's transaction ended: %v", tc.name, err)
		}
	}
}
