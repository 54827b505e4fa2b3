package cli_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// pageFamilyModel: contacts c001 and c120 take their access from account
// a1, which group g (u2) reads; the 118 contacts between them are a0's,
// which u2 cannot read. A page of 2 then takes two calls of
// recalc.visible_ids: the first reads c001 and stops after 100 records
// scanned (50 x its limit), the second reads on from c100 to c120.
func pageFamilyModel() string {
	var recs []string
	for i := 1; i <= 120; i++ {
		parent := "a0"
		if i == 1 || i == 120 {
			parent = "a1"
		}
		recs = append(recs, fmt.Sprintf(`{"id": "c%03d", "object": "contact", "owner": "u1", "parent": %q}`, i, parent))
	}
	return `{"version": 1,
  "objects": [{"name": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}],
  "users": [{"id": "u1"}, {"id": "u2"}],
  "groups": [{"id": "g", "members": ["user:u2"]}],
  "records": [{"id": "a0", "object": "account", "owner": "u1"}, {"id": "a1", "object": "account", "owner": "u1"}, ` + strings.Join(recs, ", ") + `],
  "shares": [{"object": "account", "record": "a1", "grantee": "group:g", "access": "read", "cause": "manual"}]}`
}

// TestAccessReadsOneSnapshot: `recalc access --user U --object O` read a
// page in as many snapshots as it called recalc.visible_ids (it calls it
// again after a continuation row), so a chunk that committed between two
// calls printed one family half before and half after it: c001 at read
// and c120, of the same family (a1's), at edit. A family's share rows
// commit together (a chunk, or the watch's fast path): here the test's
// transaction raises a1's share row while it holds recalc.attachment,
// which visible_ids reads first, so the page's first call waits for it
// with its snapshot taken, and the second starts after the commit. Both
// records must be printed as of one moment.
func TestAccessReadsOneSnapshot(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, pageFamilyModel()); err != nil {
		t.Fatal(err)
	}
	if out, code := recalc(ctx, url, "run"); code != 0 {
		t.Fatalf("run: exit %d: %s", code, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"access", "--user", "u2", "--object", "contact", "--limit", "2", "--format", "csv"}, "record,level\nc001,read\nc120,read\n"},
	} {
		hold, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, sql := range []string{`LOCK TABLE recalc.attachment IN ACCESS EXCLUSIVE MODE`,
			`UPDATE recalc.acl_share SET level = 2 WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a1') AND level = 1`} {
			if _, err := hold.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		var out, errOut lockedBuffer
		done := make(chan error, 1)
		go func() {
			app := cli.App(&out, &errOut)
			app.ExitErrHandler = func(*ucli.Context, error) {}
			done <- testkit.RunApp(ctx, app, append([]string{"recalc", "--database-url", url}, tc.args...))
		}()
		waitAttachmentWaiter(t, ctx, pool)
		if err := hold.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("recalc %s: %v: %s", tc.args, err, errOut.String())
		}
		if out.String() != tc.want {
			t.Errorf("recalc %s, a1's family raised to edit between its reads:\n%s\nwant, as of one moment:\n%s", tc.args, out.String(), tc.want)
		}
		if _, err := pool.Exec(ctx, `UPDATE recalc.acl_share SET level = 1 WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a1') AND level = 2`); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAccessPageBesideSwap: a page read in one snapshot (REPEATABLE
// READ) must take the share tables before its snapshot. Otherwise a full
// job's swap, which drops and renames them, commits between the snapshot
// and the page's first read of them, and the page reads the swapped-in
// tables, whose rows committed after its snapshot, as empty: it printed
// no record. Here the test holds the staging lock until the reader has
// taken its snapshot and waits on recalc.attachment (which visible_ids
// reads first), then lets the job stage and finish. Taken first, the
// tables make the swap wait, and after its SwapWait copy its rows in
// place: 200 ms here, as whether the swap waits, not for how long, is
// what tells the page's order (the 10 s default is
// TestDefinerAttackReaderCannotStallTheEngine's).
func TestAccessPageBesideSwap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, pageFamilyModel()); err != nil {
		t.Fatal(err)
	}
	if out, code := recalc(ctx, url, "run"); code != 0 {
		t.Fatalf("run: exit %d: %s", code, out)
	}
	releaseStaging, err := locks.Hold(ctx, pool, locks.Staging)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseStaging()
	ran := make(chan error, 1)
	go func() {
		_, err := engine.Full(ctx, pool, engine.Options{InPlace: false, SwapWait: 200 * time.Millisecond}, zerolog.Nop())
		ran <- err
	}()
	waitForLockWaiter(ctx, pool) // the job's chunks are done; it waits to stage
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `LOCK TABLE recalc.attachment IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var out, errOut lockedBuffer
	done := make(chan error, 1)
	go func() {
		app := cli.App(&out, &errOut)
		app.ExitErrHandler = func(*ucli.Context, error) {}
		done <- testkit.RunApp(ctx, app, []string{"recalc", "--database-url", url, "access", "--user", "u2", "--object", "contact", "--format", "csv"})
	}()
	waitAttachmentWaiter(t, ctx, pool)
	releaseStaging()
	if err := <-ran; err != nil {
		t.Fatalf("full run: %v", err)
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("recalc access: %v: %s", err, errOut.String())
	}
	if want := "record,level\nc001,read\nc120,read\n"; out.String() != want {
		t.Errorf("recalc access --user u2 --object contact beside a swap printed\n%s\nwant\n%s", out.String(), want)
	}
}

// TestAccessCSVSaysItIsMidJob: an incremental job takes away what it
// takes away (here u2's membership of g) with its creation and gives what
// it gives (u2's of g2) with its finish, so until then u2 reads a1 and its
// contacts at none, below the read both models give (docs/semantics.md).
// The dump read in one snapshot still prints that: it is what readers see
// at that moment, and no snapshot shows either model then. It must say it
// printed the middle of a job, read from the same snapshot, and not once
// the job is done. The test holds a1's materialized row, so the job's
// chunk waits to lock its family.
func TestAccessCSVSaysItIsMidJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	doc := pageFamilyModel()
	if _, err := testkit.ImportString(ctx, pool, doc); err != nil {
		t.Fatal(err)
	}
	if out, code := recalc(ctx, url, "run"); code != 0 {
		t.Fatalf("run: exit %d: %s", code, out)
	}
	moved := strings.Replace(strings.Replace(doc, `"groups": [{"id": "g", "members": ["user:u2"]}]`,
		`"groups": [{"id": "g", "members": ["user:u1"]}, {"id": "g2", "members": ["user:u2"]}]`, 1),
		`"cause": "manual"}]`, `"cause": "manual"}, {"object": "account", "record": "a1", "grantee": "group:g2", "access": "read", "cause": "manual"}]`, 1)
	if _, err := testkit.ImportString(ctx, pool, moved); err != nil {
		t.Fatal(err)
	}
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT FROM recalc.acl_record WHERE id = 'a1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() {
		_, err := engine.Run(ctx, pool, engine.Options{LockTimeout: time.Minute}, zerolog.Nop())
		ran <- err
	}()
	waitForLockWaiter(ctx, pool)
	const warning = "a recalculation job is unfinished: the access printed is mid-job"
	for _, step := range []struct {
		name  string
		reads bool // u2 reads a1, c001 and c120
	}{{"mid-job", false}, {"done", true}} {
		if step.reads {
			if err := hold.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-ran; err != nil {
				t.Fatalf("run: %v", err)
			}
		}
		var out, errOut lockedBuffer
		app := cli.App(&out, &errOut)
		app.ExitErrHandler = func(*ucli.Context, error) {}
		if err := testkit.RunApp(ctx, app, []string{"recalc", "--database-url", url, "--log-format", "json", "access", "--format", "csv"}); err != nil {
			t.Fatalf("%s: recalc access: %v", step.name, err)
		}
		for _, row := range []string{"account,a1,u2,read\n", "contact,c001,u2,read\n", "contact,c120,u2,read\n"} {
			if got := strings.Contains(out.String(), row); got != step.reads {
				t.Errorf("%s: printed %q: %v, want %v", step.name, row, got, step.reads)
			}
		}
		if got := strings.Contains(errOut.String(), warning); got == step.reads {
			t.Errorf("%s: logged %q; want the mid-job warning: %v", step.name, errOut.String(), !step.reads)
		}
	}
}

// waitAttachmentWaiter waits, up to 20 s, until a session waits for a lock
// on recalc.attachment.
func waitAttachmentWaiter(t *testing.T, ctx context.Context, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var waiting bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted AND relation = 'recalc.attachment'::regclass)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for a read of recalc.attachment to wait for the lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
