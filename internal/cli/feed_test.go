package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

const feedModel = `{
  "version": 1,
  "objects": [{"name": "account", "internal_owd": "private", "external_owd": "private"}],
  "users": [{"id": "u1"}, {"id": "u2"}],
  "groups": [{"id": "g", "members": ["user:u2"]}],
  "records": [{"id": "a1", "object": "account", "owner": "u1"}, {"id": "a2", "object": "account", "owner": "u1"}],
  "shares": [{"object": "account", "record": "a1", "grantee": "group:g", "access": "read", "cause": "manual"}]
}`

// recalc runs the command line on url with ctx and returns its standard
// output and its exit status (0 when it succeeded).
func recalc(ctx context.Context, url string, args ...string) (string, int) {
	var out bytes.Buffer
	code := recalcTo(ctx, &out, url, args...)
	return out.String(), code
}

// recalcTo is recalc writing its standard output to out as it goes.
func recalcTo(ctx context.Context, out io.Writer, url string, args ...string) int {
	var errOut bytes.Buffer
	app := cli.App(out, &errOut)
	app.ExitErrHandler = func(*ucli.Context, error) {}
	err := testkit.RunApp(ctx, app, append([]string{"recalc", "--database-url", url, "--log-format", "json"}, args...))
	var coder ucli.ExitCoder
	switch {
	case err == nil:
		return 0
	case errors.As(err, &coder):
		return coder.ExitCode()
	}
	return -1
}

// entries parses JSON lines of `recalc changes`.
func entries(t *testing.T, out string) []feed.Entry {
	t.Helper()
	var es []feed.Entry
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e feed.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		es = append(es, e)
	}
	return es
}

// TestChangesRoundTrip runs a job, then reads its entries with `recalc
// changes` a page at a time from cursor 0, then follows the feed while a
// second job publishes.
func TestChangesRoundTrip(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, feedModel); err != nil {
		t.Fatal(err)
	}
	if _, code := recalc(ctx, url, "run"); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	var all []feed.Entry
	var since int64
	for {
		out, code := recalc(ctx, url, "changes", "--since", strconv.FormatInt(since, 10), "--limit", "2")
		es := entries(t, out)
		if code != 0 || len(es) > 2 {
			t.Fatalf("changes --since %d --limit 2: exit %d, %d entries", since, code, len(es))
		}
		if len(es) == 0 {
			break
		}
		all = append(all, es...)
		since = es[len(es)-1].Cursor
	}
	got := map[string]bool{}
	for _, e := range all {
		got[e.Kind+":"+e.Key] = true
	}
	for _, want := range []string{"record:a1", "record:a2", "grantee:group:g", "user:u1", "user:u2", "owd:account"} {
		if !got[want] {
			t.Errorf("the first run's feed lacks %s: %v", want, all)
		}
	}

	// Follow: a2's new owner changes a2's rows only.
	fctx, cancel := context.WithCancel(ctx)
	var followed lockedBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		recalcTo(fctx, &followed, url, "changes", "--since", strconv.FormatInt(since, 10), "--follow", "--poll", "20ms")
	}()
	if _, err := pool.Exec(ctx, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'a2'`); err != nil {
		t.Fatal(err)
	}
	// The run goes through the engine, not a second App: urfave/cli's
	// help flag is a package variable that two Apps running at once race on.
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("second run: %v", err)
	}
	// The follower's first entry, waited for, then 300 ms (15 polls) more
	// for any other: a fixed 300 ms after the run held the follower's
	// start too (its connection, its first read), which a loaded machine
	// stretched past it.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(followed.String(), "\n"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	es := entries(t, followed.String())
	if len(es) != 1 || es[0].Key != "a2" || es[0].Cursor <= since {
		t.Fatalf("followed %+v, want the one entry of a2 after cursor %d", es, since)
	}
}

func TestChangesUsageErrors(t *testing.T) {
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	for _, args := range [][]string{
		{"changes", "--since", "-1"},
		{"changes", "--limit", "0"},
		{"changes", "--limit", "10001"},
		{"changes", "7"},
		{"changes", "--retention", "5s"},
		{"changes", "--retention", "99999999999999d"},
	} {
		if _, code := recalc(context.Background(), url, args...); code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, cli.ExitUsage)
		}
	}
	if _, code := recalc(context.Background(), url, "changes", "--retention", "3d"); code != 0 {
		t.Errorf("changes --retention 3d: exit %d", code)
	}
	if d, err := feed.Retention(context.Background(), pool); err != nil || d != 72*time.Hour {
		t.Errorf("retention = %s, %v; want 72h", d, err)
	}
}
