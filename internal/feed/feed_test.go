package feed_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m, 4)) }

// bundle is what a feed test works on: a database of its own.
type bundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
}

func setup(t *testing.T) *bundle {
	t.Helper()
	return &bundle{ctx: context.Background(), pool: testdb.Migrated(t)}
}

// write records pending record entries for ids in a transaction of its
// own and, when publish, publishes in it.
func (b *bundle) write(t *testing.T, publish bool, ids ...string) {
	t.Helper()
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
		if err := feed.Records(b.ctx, tx, ids, make([]string, len(ids))); err != nil {
			return err
		}
		if publish {
			_, err := feed.Publish(b.ctx, tx, 0)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("write %v: %v", ids, err)
	}
}

// readAll reads the whole feed after since.
func (b *bundle) readAll(t *testing.T, since int64) []feed.Entry {
	t.Helper()
	var out []feed.Entry
	for {
		es, err := feed.Read(b.ctx, b.pool, since, 3)
		if err != nil {
			t.Fatalf("read since %d: %v", since, err)
		}
		if len(es) == 0 {
			return out
		}
		out = append(out, es...)
		since = es[len(es)-1].Cursor
	}
}

func TestPublishMovesPendingOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.write(t, false, "a1", "a2") // a chunk: pending until a publisher runs
	if got := b.readAll(t, 0); len(got) != 0 {
		t.Fatalf("unpublished entries are visible: %v", got)
	}
	b.write(t, true, "a2", "a3") // a2 twice: one entry
	got := b.readAll(t, 0)
	var keys []string
	for i, e := range got {
		keys = append(keys, e.Key)
		if e.Kind != feed.KindRecord || e.Job != nil || (i > 0 && e.Cursor <= got[i-1].Cursor) {
			t.Fatalf("entry %d = %+v", i, e)
		}
	}
	if strings.Join(keys, ",") != "a1,a2,a3" {
		t.Fatalf("published %v, want a1,a2,a3", keys)
	}
	b.write(t, true)
	if again := b.readAll(t, got[len(got)-1].Cursor); len(again) != 0 {
		t.Fatalf("published twice: %v", again)
	}
}

// TestCursorOrderIsCommitOrder has writers commit pending entries (as
// chunks do) and publish (as finishes do) on real connections, holding the
// transaction open a random while after publishing, while a consumer reads
// from its last cursor in a loop. The consumer must see every entry, in
// strictly increasing cursors: none may commit later under a lower cursor.
func TestCursorOrderIsCommitOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const writers, rounds = 4, 25
	var g errgroup.Group
	for w := range writers {
		g.Go(func() error {
			rng := mrand.New(mrand.NewPCG(uint64(w), 7))
			for r := range rounds {
				id := fmt.Sprintf("w%d-%d", w, r)
				err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
					if err := feed.Records(b.ctx, tx, []string{id}, []string{"account"}); err != nil {
						return err
					}
					if rng.IntN(3) == 0 { // a chunk: a later publisher publishes it
						return nil
					}
					if _, err := feed.Publish(b.ctx, tx, int64(w+1)); err != nil {
						return err
					}
					time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	seen := map[string]bool{}
	var last int64
	consume := func() {
		es, err := feed.Read(b.ctx, b.pool, last, 7)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		for _, e := range es {
			if e.Cursor <= last {
				t.Fatalf("cursor %d after %d", e.Cursor, last)
			}
			last = e.Cursor
			seen[e.Key] = true
		}
	}
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("writer: %v", err)
			}
			running = false
		default:
			consume()
		}
	}
	b.write(t, true) // publishes what the last chunks left pending
	for range writers * rounds {
		consume()
	}
	all := b.readAll(t, 0)
	if len(all) != writers*rounds || len(seen) != writers*rounds {
		t.Fatalf("feed has %d entries, the consumer saw %d, want %d each", len(all), len(seen), writers*rounds)
	}
}

func TestRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		d  time.Duration
		ok bool
	}{{time.Second, false}, {time.Minute, true}, {7 * 24 * time.Hour, true}, {20 * 365 * 24 * time.Hour, false}} {
		err := feed.SetRetention(b.ctx, b.pool, tc.d)
		if (err == nil) != tc.ok {
			t.Fatalf("SetRetention(%s) = %v, want ok=%v", tc.d, err, tc.ok)
		}
	}
	if err := feed.SetRetention(b.ctx, b.pool, time.Minute); err != nil {
		t.Fatal(err)
	}
	if d, err := feed.Retention(b.ctx, b.pool); err != nil || d != time.Minute {
		t.Fatalf("retention = %s, %v; want 1m", d, err)
	}
	b.write(t, true, "old1", "old2")
	b.write(t, true, "new1")
	if _, err := b.pool.Exec(b.ctx, `UPDATE recalc.feed SET at = now() - interval '1 hour' WHERE key LIKE 'old%'`); err != nil {
		t.Fatal(err)
	}
	var pruned int64
	err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) (err error) {
		pruned, err = feed.Prune(b.ctx, tx)
		return err
	})
	if err != nil || pruned != 2 {
		t.Fatalf("prune = %d, %v; want 2 entries", pruned, err)
	}
	_, err = feed.Read(b.ctx, b.pool, 1, 10)
	if err == nil || !strings.Contains(err.Error(), "older than the feed's retention") || !strings.Contains(err.Error(), "resync") {
		t.Fatalf("reading from a pruned cursor: %v, want the retention error", err)
	}
	head, err := feed.Head(b.ctx, b.pool)
	if err != nil || head != 3 {
		t.Fatalf("head = %d, %v; want 3", head, err)
	}
	if got := b.readAll(t, 2); len(got) != 1 || got[0].Key != "new1" {
		t.Fatalf("from the last pruned cursor: %v, want new1", got)
	}
	// Publishing prunes too.
	if _, err := b.pool.Exec(b.ctx, `UPDATE recalc.feed SET at = now() - interval '1 hour' WHERE key = 'new1'`); err != nil {
		t.Fatal(err)
	}
	b.write(t, true, "new2")
	if got := b.readAll(t, 3); len(got) != 1 || got[0].Key != "new2" {
		t.Fatalf("after a publication: %v, want new2 alone", got)
	}
	if _, err := feed.Read(b.ctx, b.pool, 2, 10); err == nil {
		t.Fatal("cursor 2 is still readable after its successor was pruned")
	}
}

func TestAccessChangesRefusesBadArguments(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		since int64
		lim   int
		want  string
	}{
		{-1, 10, "since must be a cursor"},
		{0, 0, "lim must be between"},
		{0, feed.MaxLimit + 1, "lim must be between"},
	} {
		if _, err := feed.Read(b.ctx, b.pool, tc.since, tc.lim); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Read(%d, %d) = %v, want %q", tc.since, tc.lim, err, tc.want)
		}
	}
}

// TestReaderRoleReadsTheFeedOnly checks, as real non-superuser roles, that
// `recalc grant reader` gives access_changes and nothing of the feed's
// tables, and that a role without it cannot call it.
func TestReaderRoleReadsTheFeedOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.write(t, true, "r1")
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	reader, outsider := "feed_reader_"+hex.EncodeToString(tok[:]), "feed_outsider_"+hex.EncodeToString(tok[:])
	for _, r := range []string{reader, outsider} {
		role := pgx.Identifier{r}.Sanitize()
		var db string
		if err := b.pool.QueryRow(b.ctx, `SELECT current_database()`).Scan(&db); err != nil {
			t.Fatal(err)
		}
		if _, err := b.pool.Exec(b.ctx, `CREATE ROLE `+role+` LOGIN NOSUPERUSER`); err != nil {
			t.Fatal(err)
		}
		if _, err := b.pool.Exec(b.ctx, `GRANT CONNECT ON DATABASE `+pgx.Identifier{db}.Sanitize()+` TO `+role); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx := context.Background()
			_, _ = b.pool.Exec(ctx, `DROP OWNED BY `+role)
			_, _ = b.pool.Exec(ctx, `DROP ROLE `+role)
		})
	}
	if err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error { return access.Grant(b.ctx, tx, access.Reader, reader) }); err != nil {
		t.Fatal(err)
	}
	url := b.pool.Config().ConnString()
	for _, tc := range []struct {
		role, sql string
		ok        bool
	}{
		{reader, `SELECT count(*) FROM recalc.access_changes(0, 10)`, true},
		{reader, `SELECT recalc.access_changes_head()`, true},
		{reader, `SELECT count(*) FROM recalc.feed`, false},
		{reader, `SELECT count(*) FROM recalc.feed_pending`, false},
		{reader, `UPDATE recalc.feed_state SET retention = '1 minute'`, false},
		{outsider, `SELECT count(*) FROM recalc.access_changes(0, 10)`, false},
	} {
		conn, err := pgx.Connect(b.ctx, dburl.WithUser(url, tc.role))
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(b.ctx, tc.sql)
		conn.Close(b.ctx)
		if (err == nil) != tc.ok {
			t.Errorf("as %s: %s: %v, want ok=%v", tc.role, tc.sql, err, tc.ok)
		}
	}
}
