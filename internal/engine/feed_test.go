package engine_test

import (
	"context"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// feedReach is what the materialized tables say a feed entry can touch:
// the records shared with each grantee, directly or through their access
// root, and the records of each object (an owd entry names the objects
// controlled by their parent too, so a record's own object suffices).
type feedReach struct {
	grantee map[string][]string
	object  map[string][]string
}

// reach reads feedReach from the materialized tables.
func (b *bundle) reach(t *testing.T) feedReach {
	t.Helper()
	r := feedReach{grantee: map[string][]string{}, object: map[string][]string{}}
	for _, q := range []struct {
		sql string
		dst map[string][]string
	}{
		{`SELECT DISTINCT g.key, r.id FROM recalc.acl_share s JOIN recalc.grantee g USING (gid)
			JOIN recalc.acl_record r ON r.rid = s.rid OR r.access_root = s.rid`, r.grantee},
		{`SELECT r.object, r.id FROM recalc.acl_record r`, r.object},
	} {
		rows, err := b.pool.Query(b.ctx, q.sql)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k, id string
			if err := rows.Scan(&k, &id); err != nil {
				t.Fatal(err)
			}
			q.dst[k] = append(q.dst[k], id)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// levels indexes oracle rows by (user, record).
func levels(rows []oracle.Row) map[[2]string]model.Level {
	out := make(map[[2]string]model.Level, len(rows))
	for _, r := range rows {
		out[[2]string{r.User, r.Record}] = r.Level
	}
	return out
}

// feedTally counts record entries, and those that changed nobody's access.
type feedTally struct{ records, idle, other int }

// checkFeed holds the entries one step published to the oracle: every
// (user, record) whose level changed from before to after must be told by
// an entry (its record, a grantee it is shared with before or after, the
// user, or its object's OWD). It tallies the record entries that changed no
// level.
func checkFeed(t *testing.T, es []feed.Entry, before, after map[[2]string]model.Level, reach []feedReach, tally *feedTally) {
	t.Helper()
	told, users := map[string]bool{}, map[string]bool{}
	changedRec := map[string]bool{}
	for _, e := range es {
		switch e.Kind {
		case feed.KindRecord:
			told[e.Key] = true
			tally.records++
		case feed.KindUser:
			users[e.Key] = true
			tally.other++
		case feed.KindGrantee, feed.KindOWD:
			for _, r := range reach {
				src := r.grantee
				if e.Kind == feed.KindOWD {
					src = r.object
				}
				for _, id := range src[e.Key] {
					told[id] = true
				}
			}
			tally.other++
		}
	}
	check := func(k [2]string) {
		if before[k] == after[k] {
			return
		}
		changedRec[k[1]] = true
		if !told[k[1]] && !users[k[0]] {
			t.Fatalf("access of %s to %s changed from %s to %s, and the feed does not tell it (entries: %+v)",
				k[0], k[1], before[k], after[k], es)
		}
	}
	for k := range before {
		check(k)
	}
	for k := range after {
		check(k)
	}
	for _, e := range es {
		if e.Kind == feed.KindRecord && !changedRec[e.Key] {
			tally.idle++
		}
	}
}

// TestFeedTellsEveryAccessChange replays random multi-step change
// sequences (the property test's), recalculating each step with an
// incremental run or, every other step, a full one (whose swap the feed
// diffs), and reads the feed from the last cursor after each: it must tell
// every (user, record) pair whose oracle level changed. A full run right
// after, which changes nothing, must publish its swap alone. It logs the share of
// record entries that changed no level (false positives).
func TestFeedTellsEveryAccessChange(t *testing.T) {
	t.Parallel()
	first, n := testkit.Seeds("RECALC", 12, 3)
	opt := engine.Options{Workers: 2, ChunkSize: 7}
	b := setup(t)
	var cursor int64
	tally := &feedTally{}
	read := func() []feed.Entry {
		var out []feed.Entry
		for {
			es, err := feed.Read(b.ctx, b.pool, cursor, feed.MaxLimit)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) == 0 {
				return out
			}
			for _, e := range es {
				if e.Cursor <= cursor || e.Job == nil {
					t.Fatalf("entry %+v after cursor %d: cursors must increase and name their job", e, cursor)
				}
				cursor = e.Cursor
			}
			out = append(out, es...)
		}
	}
	var before map[[2]string]model.Level
	for seed := first; seed < first+n; seed++ {
		for i, s := range propertySteps(seed, b.cur) {
			prev := b.reach(t)
			b.importModel(t, s.file, s.present)
			b.cur = s.cur
			run := engine.Run
			if i%2 == 1 {
				run = engine.Full
			}
			if _, err := run(b.ctx, b.pool, opt, zerolog.Nop()); err != nil {
				t.Fatalf("seed %d step %d: run: %v", seed, i, err)
			}
			after := levels(oracle.Access(b.cur))
			checkFeed(t, read(), before, after, []feedReach{prev, b.reach(t)}, tally)
			before = after
			if _, err := engine.Full(b.ctx, b.pool, opt, zerolog.Nop()); err != nil {
				t.Fatalf("seed %d step %d: full run: %v", seed, i, err)
			}
			if es := read(); len(es) != 1 || es[0].Kind != feed.KindSwap {
				t.Fatalf("seed %d step %d: a full run that changed nothing published %+v, want its swap alone", seed, i, es)
			}
		}
	}
	if tally.records == 0 {
		t.Fatal("no record entry was published")
	}
	t.Logf("record entries: %d, of which changed no level: %d (%.1f%%); other entries: %d",
		tally.records, tally.idle, 100*float64(tally.idle)/float64(tally.records), tally.other)
}

// feedConsumer reads the feed from its last cursor, as a consumer that
// stores only that does.
type feedConsumer struct {
	last     int64
	consumed int
	records  map[string]bool // record entries seen
}

// consume reads the next entries, failing t if a cursor does not increase.
func (c *feedConsumer) consume(t *testing.T, b *bundle) {
	t.Helper()
	es, err := feed.Read(b.ctx, b.pool, c.last, 50)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	for _, e := range es {
		if e.Cursor <= c.last {
			t.Fatalf("cursor %d after %d", e.Cursor, c.last)
		}
		c.last, c.consumed = e.Cursor, c.consumed+1
		if e.Kind == feed.KindRecord {
			c.records[e.Key] = true
		}
	}
}

// ownerWrites changes the owners of random records of m to random active
// users, in 3 application transactions at a time, 30 each, and records
// which records changed owner.
func ownerWrites(ctx context.Context, b *bundle, m *model.Model, moved map[string]bool) error {
	var users []string
	for _, u := range m.Users {
		if u.Active {
			users = append(users, u.ID)
		}
	}
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(ctx)
	for w := range 3 {
		g.Go(func() error {
			r := mrand.New(mrand.NewPCG(uint64(w), 1))
			for range 30 {
				rec, owner := m.Records[r.IntN(len(m.Records))].ID, users[r.IntN(len(users))]
				var old string
				err := b.pool.QueryRow(ctx, `WITH old AS (SELECT owner FROM recalc.record WHERE id = $1 FOR UPDATE)
					UPDATE recalc.record r SET owner = $2 FROM old WHERE r.id = $1 RETURNING old.owner`, rec, owner).Scan(&old)
				if err != nil {
					return err
				}
				mu.Lock()
				moved[rec] = moved[rec] || old != owner
				mu.Unlock()
				time.Sleep(time.Duration(r.IntN(5)) * time.Millisecond)
			}
			return nil
		})
	}
	return g.Wait()
}

// TestFeedUnderConcurrentJobsAndWrites runs jobs back to back while
// application transactions change record owners on real connections and a
// consumer reads the feed from its last cursor: the consumer must see
// cursors only increase, miss nothing the feed holds at the end, and find
// every record whose owner a committed write changed.
func TestFeedUnderConcurrentJobsAndWrites(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := oracle.RandomModel(mrand.New(mrand.NewPCG(42, 0xfeed)), 60)
	b.importModel(t, m, nil)
	b.run(t, engine.Options{})
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	jobs := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if _, err := engine.Run(ctx, b.pool, engine.Options{Workers: 2, ChunkSize: 5}, zerolog.Nop()); err != nil && ctx.Err() == nil {
				jobs <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		jobs <- nil
	}()
	moved := map[string]bool{}
	writers := make(chan error, 1)
	go func() { writers <- ownerWrites(ctx, b, m, moved) }()
	c := &feedConsumer{records: map[string]bool{}}
	for done := false; !done; {
		select {
		case err := <-writers:
			if err != nil {
				t.Fatalf("writer: %v", err)
			}
			done = true
		default:
			c.consume(t, b)
		}
	}
	cancel()
	if err := <-jobs; err != nil {
		t.Fatalf("run: %v", err)
	}
	b.run(t, engine.Options{})
	for before := int64(-1); c.last != before; c.consume(t, b) {
		before = c.last
	}
	if all := len(b.readFeed(t)); all != c.consumed || len(c.records) == 0 {
		t.Fatalf("the consumer read %d entries (%d records), the feed holds %d", c.consumed, len(c.records), all)
	}
	for rec, changed := range moved {
		if changed && !c.records[rec] {
			t.Errorf("record %s changed owner, and the consumer never saw it in the feed", rec)
		}
	}
}

// readFeed reads the whole feed from cursor 0.
func (b *bundle) readFeed(t *testing.T) []feed.Entry {
	t.Helper()
	var out []feed.Entry
	var since int64
	for {
		es, err := feed.Read(b.ctx, b.pool, since, feed.MaxLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return out
		}
		out = append(out, es...)
		since = es[len(es)-1].Cursor
	}
}

// TestSwapDiffsAJobStagedBeforeVersion14: a full job staged by a binary
// older than schema version 14 left no share diff for the swap (its staging
// did not write acl_share_diff). The swap then makes the diff itself, and
// the feed tells the record whose share rows alone changed. The run is
// stopped after staging, before its finish, by a lock on the job row, and
// the diff is emptied as the old binary would have left it.
func TestSwapDiffsAJobStagedBeforeVersion14(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	obs, stager, finisher := connect(t, b.pool), connect(t, b.pool), connect(t, b.pool)
	b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`) // share rows only: the record row keeps its values
	before := len(b.readFeed(t))

	staging := begin(t, stager)
	mustExec(t, staging, `SELECT FROM recalc.engine_lock WHERE name = 'staging' FOR UPDATE`)
	run := startRun(t, b.pool, engine.Options{Full: true})
	waitBlockedBy(t, obs, stager.PgConn().PID(), run.done, "the full job's staging")
	job := begin(t, finisher)
	mustExec(t, job, `SELECT FROM recalc.job WHERE status = 'running' FOR KEY SHARE`) // MarkStaged may update it, the finish may not lock it
	rollback(t, staging, "the staging lock")
	waitBlockedBy(t, obs, finisher.PgConn().PID(), run.done, "the job's finish")
	mustExec(t, b.pool, `TRUNCATE recalc.acl_share_diff`)
	rollback(t, job, "the job row lock")
	run.wait(t)

	var told bool
	for _, e := range b.readFeed(t)[before:] {
		told = told || e.Kind == "record" && strings.HasSuffix(e.Key, "a001")
	}
	if !told {
		t.Error("the swap of a job staged without a share diff did not tell a001, whose owner changed")
	}
}
