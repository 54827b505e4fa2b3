package attach_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRLSToggleBesideAppLocks: the application's role (no superuser)
// holds support.case, an attached table (a transaction left open after a
// write, a SELECT still running, or a stream of short writes;
// TestRLSCommandsQueueNoReadsBehindThem holds an idle reader's) while the table's administrator
// runs `recalc rls enable` or `recalc rls disable`, whose policy and ALTER
// TABLE statements lock it ACCESS EXCLUSIVE. PostgreSQL queues every
// later read and write of the table behind a waiting lock, so a command
// that waited for as long as the transaction stayed open stopped the
// application for as long (access.lockTable). Each try waits 100 ms: the
// application's other writes go through while the command tries; the
// command fails after 10 s naming the session by pid and role, changing
// nothing, or, beside short writes, goes through.
func TestRLSToggleBesideAppLocks(t *testing.T) {
	t.Parallel()
	enable := []string{"rls", "enable", "--table", "support.case", "--object", "case", "--user-setting", "app.user_id"}
	disable := []string{"rls", "disable", "--table", "support.case"}
	const write = `UPDATE support."case" SET status = status WHERE id = 1`
	for _, tc := range []struct {
		name       string
		enabled    bool     // policies on the table before the command
		args       []string // the command
		hold       string   // run by the application in a transaction left open
		query      string   // run by the application until the command ends
		stream     bool     // query again and again, from four sessions
		refused    string   // what the refusal says; "" for a command that goes through
		policiesAt int      // recalc's policies on the table after the command
	}{
		{name: "enable beside an open write", args: enable, hold: write, refused: "enable row-level security", policiesAt: 0},
		{name: "enable beside a long SELECT", args: enable, query: `SELECT pg_sleep(30) FROM support."case" LIMIT 1`, refused: "enable row-level security", policiesAt: 0},
		{name: "enable beside short writes", args: enable, query: write, stream: true, policiesAt: 1},
		{name: "disable beside a long SELECT", enabled: true, args: disable, query: `SELECT pg_sleep(30) FROM support."case" LIMIT 1`, refused: "drop recalc's policies", policiesAt: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // side by side: each command waits on its own database's locks (testkit.RunApp serializes only the parse)
			b := setup(t)
			ctx := context.Background()
			if tc.enabled {
				if out, err := b.recalcAsAdmin(enable...); err != nil {
					t.Fatalf("rls enable: %v\n%s", err, out)
				}
			}
			qctx, stop := context.WithCancel(ctx) // ends the application's queries
			var wg sync.WaitGroup
			defer func() { stop(); wg.Wait() }()
			if tc.hold != "" {
				holder, err := b.app.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer holder.Rollback(ctx)
				if _, err := holder.Exec(ctx, tc.hold); err != nil {
					t.Fatalf("hold support.case as the application: %v", err)
				}
			}
			b.appQueries(t, qctx, &wg, tc.query, tc.stream)

			probeStop, probed := b.probeWrites(ctx)
			start := time.Now()
			out, err := b.recalcAsAdmin(tc.args...)
			took := time.Since(start)
			close(probeStop)
			if perr := <-probed; perr != nil {
				t.Errorf("an application write to support.case while the command tried: %v, want it through within 1 s", perr)
			}
			if took > 15*time.Second {
				t.Errorf("the command took %s, want about 10 s at most", took)
			}
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("the command beside short writes: %v\n%s", err, out)
			case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused) || !strings.Contains(err.Error(), "(role "+b.appRole+")") ||
				!strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "run it again once they end")):
				t.Fatalf("the command beside the application's lock: %v\n%s; want a refusal naming the application's session and saying what to do", err, out)
			}
			var policies int
			if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM pg_policy WHERE polrelid = 'support.case'::regclass AND polname = 'recalc_read'`).Scan(&policies); err != nil || policies != tc.policiesAt {
				t.Errorf("recalc's read policies on support.case after the command: %d (%v), want %d", policies, err, tc.policiesAt)
			}
		})
	}
}

// recalcAsAdmin runs the command line as the superuser (the table's
// administrator) and returns its output.
func (b *bundle) recalcAsAdmin(args ...string) (string, error) {
	var admin string
	if err := b.admin.QueryRow(context.Background(), `SELECT current_user`).Scan(&admin); err != nil {
		return "", err
	}
	out, errOut, err := b.recalcAs(admin, args...)
	if err != nil {
		return out, &cliError{err: err, stderr: strings.TrimSpace(errOut)}
	}
	return out, nil
}

// appQueries runs query as the application until ctx ends: once, or, with
// stream, again and again from four sessions; a single query is running
// when it returns.
func (b *bundle) appQueries(t *testing.T, ctx context.Context, wg *sync.WaitGroup, query string, stream bool) {
	t.Helper()
	if query == "" {
		return
	}
	sessions := 1
	if stream {
		sessions = 4
	}
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, _ = b.app.Exec(ctx, query)
				if !stream {
					return
				}
			}
		}()
	}
	for running := stream; !running; time.Sleep(20 * time.Millisecond) {
		if err := b.admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()
			AND usename = $1 AND query = $2 AND state = 'active')`, b.appRole, query).Scan(&running); err != nil {
			t.Fatal(err)
		}
	}
}

// probeWrites writes support.case as the application every 50 ms, each
// write given 1 s, until stop is closed; then it sends the first failure,
// or nil.
func (b *bundle) probeWrites(ctx context.Context) (stop chan struct{}, failed chan error) {
	stop, failed = make(chan struct{}), make(chan error, 1)
	go func() {
		var first error
		for {
			select {
			case <-stop:
				failed <- first
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := b.app.Exec(ctx, `SET statement_timeout = '1s'; UPDATE support."case" SET status = status WHERE id = 2`); err != nil && first == nil {
				first = err
			}
		}
	}()
	return stop, failed
}
