package attach_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/internal/watch"
	"github.com/recalc-dev/recalc/schema"
)

// TestFeedConsumer holds the feed's promise (docs/feed.md) to a consumer on
// the live path. The application tables of TestLiveCampaign are attached,
// `recalc watch` runs in-process, and a consumer follows
// recalc.access_changes(since, lim) from its start cursor (0 with an empty
// cache, or the head of a REPEATABLE READ resync), keeping the access level
// of every tracked user to every record, updated only by the re-read rules
// of docs/feed.md's table:
//
//   - record: access_level(user, record) for every tracked user;
//   - grantee: every tracked user's visible_records, replacing what it held;
//   - user: that user's visible_records, replacing what it held;
//   - owd: every tracked user's visible_records of the object, replacing
//     what it held of the object;
//   - swap: nothing.
//
// Meanwhile three connections write the tables (the campaign's steps),
// imports change the configuration, and jobs run: incremental, `run --full`
// in place and with a swap, and defer then resume. At every checkpoint
// (after the phase's jobs, and recalc.wait_fresh) the consumer catches up
// with the head, and its cache must equal recalc.access_level for every
// tracked user and record, and the oracle's. Cursors must increase, and no
// entry may appear at or below a cursor the consumer has read: at the end
// the whole feed, up to its cursor, must be exactly what it read, less the
// ranges a resync skipped.
//
// Seeds 1 and 2 always run. A longer campaign:
//
//	FEED_CONSUMER_CAMPAIGN=1 FEED_CONSUMER_SEED_START=100 FEED_CONSUMER_SEEDS=200 FEED_CONSUMER_MINUTES=10
func TestFeedConsumer(t *testing.T) {
	counts := &liveCounts{n: map[string]int{}}
	if os.Getenv("FEED_CONSUMER_CAMPAIGN") == "" {
		t.Parallel()
		// One seed at a time: each holds a dozen connections.
		for _, seed := range []int{1, 2} {
			t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) { runFeedConsumerSeed(t, seed, counts) })
		}
		counts.log(t)
		return
	}
	campaignSeeds(t, "FEED_CONSUMER", 100, 3, runFeedConsumerSeed)
}

// fcJob is one job the jobs goroutine runs during a phase.
type fcJob struct {
	kind  string // run, full, full-swap, defer
	sides []string
	pause time.Duration // before it; for defer, also how long the deferral lasts
}

// fcSchedule is the jobs of each phase, and the consumer's choices.
type fcSchedule struct {
	jobs       [][]fcJob
	fromZero   bool // start at cursor 0 with an empty cache, else resync
	resyncAt   int  // the phase during which the consumer resyncs (-1: never)
	watchSwaps bool // watch's full jobs swap (--in-place=false)
	limits     []int
}

func fcPlan(seed, phases int) *fcSchedule {
	rng := rand.New(rand.NewPCG(uint64(seed), 0xfeedc0))
	s := &fcSchedule{fromZero: rng.IntN(2) == 0, resyncAt: -1, watchSwaps: rng.IntN(3) == 0, limits: []int{1, 3, 17, 1000}}
	if rng.IntN(2) == 0 {
		s.resyncAt = rng.IntN(phases)
	}
	kinds := []string{"run", "run", "full", "full-swap", "full-swap", "defer"}
	for ph := 0; ph < phases; ph++ {
		var js []fcJob
		for i, n := 0, 1+rng.IntN(3); i < n; i++ {
			j := fcJob{kind: kinds[rng.IntN(len(kinds))], pause: time.Duration(rng.IntN(25)) * time.Millisecond}
			if j.kind == "defer" {
				j.sides = [][]string{{store.SideRules}, {store.SideClosure}, {store.SideRules, store.SideClosure}}[rng.IntN(3)]
			}
			js = append(js, j)
		}
		s.jobs = append(s.jobs, js)
	}
	return s
}

// fcConsumer is the feed's consumer: a cursor and a cache of levels.
type fcConsumer struct {
	mu      sync.Mutex
	pool    *pgxpool.Pool
	users   []string
	tracked map[string]bool
	cursor  int64
	cache   map[string]map[string]string // user -> record -> level (none left out)
	objOf   map[string]string            // record -> object
	seen    map[int64]feed.Entry         // every entry read, by cursor
	skipped [][2]int64                   // cursor ranges a resync jumped over
	named   map[string][]int64           // record -> cursors of the record entries naming it
	counts  *liveCounts
	rng     *rand.Rand
	limits  []int
}

func newConsumer(pool *pgxpool.Pool, users []string, counts *liveCounts, seed int, limits []int) *fcConsumer {
	c := &fcConsumer{pool: pool, users: users, tracked: map[string]bool{}, cache: map[string]map[string]string{},
		objOf: map[string]string{}, seen: map[int64]feed.Entry{}, named: map[string][]int64{}, counts: counts,
		rng: rand.New(rand.NewPCG(uint64(seed), 0xc0)), limits: limits}
	for _, u := range users {
		c.tracked[u] = true
		c.cache[u] = map[string]string{}
	}
	return c
}

// step reads one batch after the cursor and applies it; it returns how
// many entries it read.
func (c *fcConsumer) step(ctx context.Context) (int, error) {
	lim := c.limits[c.rng.IntN(len(c.limits))]
	es, err := feed.Read(ctx, c.pool, c.cursor, lim)
	if err != nil {
		return 0, err
	}
	last := c.cursor
	for _, e := range es {
		if e.Cursor <= last {
			return 0, fmt.Errorf("entry %+v at or below cursor %d, read after it", e, last)
		}
		if old, ok := c.seen[e.Cursor]; ok {
			return 0, fmt.Errorf("entry %+v read again, after %+v", e, old)
		}
		last = e.Cursor
	}
	if len(es) > lim {
		return 0, fmt.Errorf("access_changes(%d, %d) returned %d entries", c.cursor, lim, len(es))
	}
	if err := c.apply(ctx, es); err != nil {
		return 0, err
	}
	for _, e := range es {
		c.seen[e.Cursor] = e
		if e.Kind == feed.KindRecord {
			c.named[e.Key] = append(c.named[e.Key], e.Cursor)
		}
	}
	c.cursor = last // after the effects
	return len(es), nil
}

// catchUp reads until the feed has nothing after the cursor.
func (c *fcConsumer) catchUp(ctx context.Context) error {
	for {
		n, err := c.step(ctx)
		if err != nil || n == 0 {
			return err
		}
	}
}

// apply re-reads what the entries es say may have changed, by the table of
// docs/feed.md.
func (c *fcConsumer) apply(ctx context.Context, es []feed.Entry) error {
	recs := map[string]bool{}
	users := map[string]bool{}
	objects := map[string]bool{}
	for _, e := range es {
		c.counts.add("feed entries read: "+e.Kind, 1)
		switch e.Kind {
		case feed.KindRecord:
			if e.Object == nil {
				return fmt.Errorf("record entry without object: %+v", e)
			}
			recs[e.Key] = true
			c.objOf[e.Key] = *e.Object
		case feed.KindGrantee:
			for _, u := range c.users {
				users[u] = true
			}
		case feed.KindUser:
			if c.tracked[e.Key] {
				users[e.Key] = true
			}
		case feed.KindOWD:
			objects[e.Key] = true
		case feed.KindSwap:
			// Nothing, unless resyncing.
		default:
			return fmt.Errorf("entry of unknown kind: %+v", e)
		}
	}
	for u := range users {
		if err := c.reloadUser(ctx, c.pool, u); err != nil {
			return err
		}
	}
	for o := range objects {
		for _, u := range c.users {
			if users[u] {
				continue
			}
			if err := c.reloadObject(ctx, u, o); err != nil {
				return err
			}
		}
	}
	if len(recs) == 0 {
		return nil
	}
	rows, err := c.pool.Query(ctx, `SELECT u, k, recalc.access_level(u, k) FROM unnest($1::text[]) u, unnest($2::text[]) k`,
		c.users, slices.Collect(maps.Keys(recs)))
	if err != nil {
		return err
	}
	var u, k, l string
	_, err = pgx.ForEachRow(rows, []any{&u, &k, &l}, func() error {
		c.set(u, k, l)
		return nil
	})
	return err
}

func (c *fcConsumer) set(u, rec, level string) {
	if level == "none" {
		delete(c.cache[u], rec)
	} else {
		c.cache[u][rec] = level
	}
}

// reloadUser replaces what the cache holds of user u by visible_records
// over every object, read in q.
func (c *fcConsumer) reloadUser(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, u string) error {
	rows, err := q.Query(ctx, `SELECT o.name, v.record, v.level FROM recalc.acl_object o,
		LATERAL recalc.visible_records($1, o.name) v`, u)
	if err != nil {
		return err
	}
	got := map[string]string{}
	var o, r, l string
	if _, err := pgx.ForEachRow(rows, []any{&o, &r, &l}, func() error {
		got[r] = l
		c.objOf[r] = o
		return nil
	}); err != nil {
		return fmt.Errorf("visible_records of %s: %w", u, err)
	}
	c.cache[u] = got
	return nil
}

// reloadObject replaces what the cache holds of user u to records of
// object o by visible_records(u, o).
func (c *fcConsumer) reloadObject(ctx context.Context, u, o string) error {
	rows, err := c.pool.Query(ctx, `SELECT record, level FROM recalc.visible_records($1, $2)`, u, o)
	if err != nil {
		return err
	}
	for r := range c.cache[u] {
		if c.objOf[r] == o {
			delete(c.cache[u], r)
		}
	}
	var r, l string
	_, err = pgx.ForEachRow(rows, []any{&r, &l}, func() error {
		c.cache[u][r] = l
		c.objOf[r] = o
		return nil
	})
	return err
}

// resync builds the cache from scratch as docs/feed.md says: in one
// REPEATABLE READ transaction the head and every tracked user's
// visible_records; done again when the entries after the head include a
// swap. It returns the number of tries.
func (c *fcConsumer) resync(ctx context.Context) (int, error) {
	for try := 1; ; try++ {
		var head int64
		err := pgx.BeginTxFunc(ctx, c.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			var err error
			if head, err = feed.Head(ctx, tx); err != nil {
				return err
			}
			for _, u := range c.users {
				if err := c.reloadUser(ctx, tx, u); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return try, err
		}
		swapped := false
		for since := head; ; {
			es, err := feed.Read(ctx, c.pool, since, feed.MaxLimit)
			if err != nil {
				return try, err
			}
			if len(es) == 0 {
				break
			}
			for _, e := range es {
				swapped = swapped || e.Kind == feed.KindSwap
			}
			since = es[len(es)-1].Cursor
		}
		if swapped && try < 20 {
			c.counts.add("resyncs redone after a swap", 1)
			continue
		}
		if head > c.cursor {
			c.skipped = append(c.skipped, [2]int64{c.cursor + 1, head})
		}
		if head < c.cursor {
			return try, fmt.Errorf("resync head %d below the cursor already read, %d", head, c.cursor)
		}
		c.cursor = head
		return try, nil
	}
}

// truth is access_level for every tracked user and every record (those of
// acl_record and those the cache names), none left out.
func (c *fcConsumer) truth(ctx context.Context) (map[string]map[string]string, error) {
	var known []string
	for _, m := range c.cache {
		for r := range m {
			known = append(known, r)
		}
	}
	rows, err := c.pool.Query(ctx, `SELECT u, k, recalc.access_level(u, k)
		FROM unnest($1::text[]) u, (SELECT id FROM recalc.acl_record UNION SELECT unnest($2::text[])) r (k)`, c.users, known)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for _, u := range c.users {
		out[u] = map[string]string{}
	}
	var u, k, l string
	_, err = pgx.ForEachRow(rows, []any{&u, &k, &l}, func() error {
		if l != "none" {
			out[u][k] = l
		}
		return nil
	})
	return out, err
}

// diffLevels lists the (user, record) pairs whose level differs, at most
// 30, with the record entries that named the record.
func diffLevels(name string, want, got map[string]map[string]string, named map[string][]int64) string {
	var out []string
	for _, u := range slices.Sorted(maps.Keys(want)) {
		keys := map[string]bool{}
		for r := range want[u] {
			keys[r] = true
		}
		for r := range got[u] {
			keys[r] = true
		}
		for _, r := range slices.Sorted(maps.Keys(keys)) {
			w, g := orStr(want[u][r], "none"), orStr(got[u][r], "none")
			if w != g {
				out = append(out, fmt.Sprintf("  %s to %s: %s %s, consumer %s (record entries at %v)", u, r, name, w, g, named[r]))
			}
		}
	}
	if len(out) > 30 {
		out = append(out[:30], fmt.Sprintf("  ... %d more", len(out)-30))
	}
	return strings.Join(out, "\n")
}

// oracleLevels is the oracle's access of the tracked users for config
// with the application's rows as records.
func oracleLevels(ctx context.Context, b *bundle, config *model.Model, users []string) (map[string]map[string]string, error) {
	expected, _, err := liveExpected(ctx, b, config)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for _, u := range users {
		out[u] = map[string]string{}
	}
	for _, r := range oracle.Access(expected) {
		if m, ok := out[r.User]; ok && r.Level != model.None {
			m[r.Record] = r.Level.String()
		}
	}
	return out, nil
}

// runFeedConsumerSeed runs the campaign's plan for seed with the
// consumer following the feed, and fails t on the first disagreement.
func runFeedConsumerSeed(t *testing.T, seed int, counts *liveCounts) {
	t.Helper()
	ctx := context.Background()
	p := livePlan(seed, counts)
	sched := fcPlan(seed, p.phases)
	b := setup(t)
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.admin, `GRANT CREATE ON DATABASE `+ident(strings.TrimPrefix(u.Path, "/"))+` TO `+ident(b.appRole))
	b.exec(t, b.app, liveSchema, `GRANT USAGE ON SCHEMA app TO `+ident(b.engineRole),
		`GRANT SELECT, TRIGGER ON app.account, app.opportunity, app.contact TO `+ident(b.engineRole))
	if err := liveImportModel(ctx, b, p.initial, nil); err != nil {
		t.Fatalf("seed %d: initial import: %v", seed, err)
	}
	for _, o := range p.initRows {
		b.exec(t, b.app, o.sql)
	}
	b.mustAttach(t, liveSpec)
	for _, o := range p.postRows {
		b.exec(t, b.app, o.sql)
	}
	b.run(t)

	// The tracked users: every user of every configuration of the plan,
	// and one that never exists.
	userSet := map[string]bool{"nobody": true}
	for _, m := range append([]*model.Model{p.initial, p.finalModel}, stepModels(p)...) {
		for _, us := range m.Users {
			userSet[us.ID] = true
		}
	}
	users := slices.Sorted(maps.Keys(userSet))
	c := newConsumer(openPool(t, dburl.WithUser(b.url, b.engineRole)), users, counts, seed, sched.limits)
	if !sched.fromZero {
		if _, err := c.resync(ctx); err != nil {
			t.Fatalf("seed %d: resync: %v", seed, err)
		}
		counts.add("consumers started by a resync", 1)
	} else {
		counts.add("consumers started at cursor 0", 1)
	}

	// recalc watch, in-process.
	wctx, stopWatch := context.WithCancel(ctx)
	var stepErrs atomic.Int64
	var lastErr atomic.Value
	live := engine.NewLive(engine.Options{Trigger: "watch", LockTimeout: 2 * time.Second, Retries: 5, Workers: 2, ChunkSize: 7, InPlace: !sched.watchSwaps}, p.fast)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = watch.Run(wctx, b.engine, watch.Options{Debounce: time.Millisecond, MaxWait: 10 * time.Millisecond, Poll: 100 * time.Millisecond},
			func(ctx context.Context) error {
				_, err := live.Step(ctx, b.engine, zerolog.Nop())
				if err != nil && ctx.Err() == nil {
					stepErrs.Add(1)
					lastErr.Store(err.Error())
				}
				return err
			}, zerolog.Nop())
	}()
	stopW := sync.OnceFunc(func() { stopWatch(); <-done })
	defer stopW()

	// The consumer follows the feed until stopped.
	cctx, stopConsumer := context.WithCancel(ctx)
	var consumerErr atomic.Value
	var resyncNow atomic.Bool
	cdone := make(chan struct{})
	go func() {
		defer close(cdone)
		for cctx.Err() == nil {
			c.mu.Lock()
			var n int
			var err error
			if resyncNow.CompareAndSwap(true, false) {
				var tries int
				tries, err = c.resync(cctx)
				counts.add("resyncs while writes go on", 1)
				counts.add("resync tries", tries)
			} else {
				n, err = c.step(cctx)
			}
			c.mu.Unlock()
			if err != nil {
				if cctx.Err() == nil {
					consumerErr.Store(err.Error())
				}
				return
			}
			if n == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	stopC := sync.OnceFunc(func() { stopConsumer(); <-cdone })
	defer stopC()

	appURL := dburl.WithUser(b.url, b.appRole)
	conns := make([]*pgx.Conn, lWriters)
	for i := range conns {
		cn, err := pgx.Connect(ctx, appURL)
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close(context.Background())
		conns[i] = cn
	}
	jopt := engine.Options{Workers: 2, ChunkSize: 7, LockTimeout: 2 * time.Second, Retries: 5}
	runJob := func(run func(context.Context, *pgxpool.Pool, engine.Options, zerolog.Logger) (*engine.Report, error), opt engine.Options, what string) error {
		var err error
		for try := 0; try < 20; try++ {
			if _, err = run(ctx, b.engine, opt, zerolog.Nop()); err == nil {
				counts.add("jobs: "+what, 1)
				return nil
			}
			counts.add("jobs retried: "+what, 1)
			time.Sleep(20 * time.Millisecond)
		}
		return fmt.Errorf("%s: %w", what, err)
	}

	cur := p.initial
	checks := 0
	checkpoint := func(what string) {
		t.Helper()
		if err := changes.WaitFresh(ctx, b.engine, 0, 60*time.Second); err != nil {
			t.Fatalf("seed %d, %s: wait_fresh: %v (watch step errors %d, last %v)", seed, what, err, stepErrs.Load(), lastErr.Load())
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if e := consumerErr.Load(); e != nil {
			t.Fatalf("seed %d, %s: the consumer failed: %v", seed, what, e)
		}
		head, err := feed.Head(ctx, b.engine)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.catchUp(ctx); err != nil {
			t.Fatalf("seed %d, %s: consumer: %v", seed, what, err)
		}
		if c.cursor < head {
			t.Fatalf("seed %d, %s: the consumer caught up at cursor %d, below the head %d it read before", seed, what, c.cursor, head)
		}
		truth, err := c.truth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, err := oracleLevels(ctx, b, cur, users)
		if err != nil {
			t.Fatal(err)
		}
		checks++
		if d := diffLevels("access_level", truth, c.cache, c.named); d != "" {
			t.Fatalf("seed %d, %s (cursor %d): the consumer's cache differs from access_level:\n%s\n%s", seed, what, c.cursor, d, describeSchedule(sched))
		}
		if d := diffLevels("oracle", want, truth, c.named); d != "" {
			t.Fatalf("seed %d, %s: access_level differs from the oracle (not the feed's fault):\n%s", seed, what, d)
		}
	}
	checkpoint("after the attach")

	for ph := 0; ph < p.phases; ph++ {
		byWriter, imports := phaseSteps(p.steps, ph, lWriters, nil, nil)
		var failMu sync.Mutex
		var fail error
		setFail := func(err error) {
			failMu.Lock()
			if fail == nil {
				fail = err
			}
			failMu.Unlock()
		}
		var wg sync.WaitGroup
		for w := 0; w < lWriters; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(seed), uint64(w)))
				for _, s := range byWriter[w] {
					if _, err := runStep(ctx, conns[w], s, counts); err != nil {
						setFail(fmt.Errorf("writer %d, step #%d %s: %w", w, s.idx, s.kind, err))
						return
					}
					time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, s := range imports {
				time.Sleep(time.Duration(5+seed%7) * time.Millisecond)
				for start := time.Now(); ; {
					_, err := store.Import(ctx, b.engine, strings.NewReader(s.file), model.DefaultLimits(), zerolog.Nop(), nil)
					var busy *store.BusyError
					if errors.As(err, &busy) && time.Since(start) < 60*time.Second {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if err != nil {
						setFail(fmt.Errorf("import #%d (%v): %w", s.idx, s.present, err))
						return
					}
					break
				}
				counts.add("imports", 1)
				cur = s.after
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, j := range sched.jobs[ph] {
				time.Sleep(j.pause)
				var err error
				switch j.kind {
				case "run":
					err = runJob(engine.Run, jopt, "run")
				case "full":
					o := jopt
					o.InPlace = true
					err = runJob(engine.Full, o, "run --full (in place)")
				case "full-swap":
					err = runJob(engine.Full, jopt, "run --full --in-place=false")
				case "defer":
					if err = store.Defer(ctx, b.engine, j.sides); err != nil {
						break
					}
					time.Sleep(10*time.Millisecond + 2*j.pause)
					if err = store.Undefer(ctx, b.engine, j.sides); err != nil {
						break
					}
					o := jopt
					o.Trigger, o.InPlace = "resume", true
					err = runJob(engine.Run, o, "defer "+strings.Join(j.sides, "+")+", resume")
				}
				if err != nil {
					setFail(fmt.Errorf("phase %d job %s: %w", ph, j.kind, err))
					return
				}
			}
		}()
		if ph == sched.resyncAt {
			time.Sleep(5 * time.Millisecond)
			resyncNow.Store(true)
		}
		wg.Wait()
		if fail != nil {
			t.Fatalf("seed %d, phase %d: %v", seed, ph, fail)
		}
		checkpoint(fmt.Sprintf("phase %d", ph))
	}
	// A full run that swaps, and one in place, with watch still running.
	if err := runJob(engine.Full, jopt, "final run --full --in-place=false"); err != nil {
		t.Fatal(err)
	}
	checkpoint("after a final run --full --in-place=false")
	o := jopt
	o.InPlace = true
	if err := runJob(engine.Full, o, "final run --full"); err != nil {
		t.Fatal(err)
	}
	checkpoint("after a final run --full")
	stopC()
	stopW()

	// No entry at or below a cursor the consumer read may have appeared
	// since: the feed up to its cursor is what it read, less the ranges
	// its resyncs skipped.
	var all []feed.Entry
	for since := int64(0); ; {
		es, err := feed.Read(ctx, b.engine, since, feed.MaxLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		all = append(all, es...)
		since = es[len(es)-1].Cursor
	}
	skipped := func(cur int64) bool {
		for _, r := range c.skipped {
			if cur >= r[0] && cur <= r[1] {
				return true
			}
		}
		return false
	}
	read := 0
	for _, e := range all {
		if e.Cursor > c.cursor || skipped(e.Cursor) {
			continue
		}
		read++
		got, ok := c.seen[e.Cursor]
		if !ok {
			t.Fatalf("seed %d: entry %+v is at or below the consumer's cursor %d, and it never read it: it appeared after a higher cursor", seed, e, c.cursor)
		}
		if got.Kind != e.Kind || got.Key != e.Key {
			t.Fatalf("seed %d: entry at cursor %d read as %+v, the feed now holds %+v", seed, e.Cursor, got, e)
		}
	}
	if read != len(c.seen) {
		t.Fatalf("seed %d: the consumer read %d entries, the feed holds %d up to its cursor", seed, len(c.seen), read)
	}
	counts.add("seeds", 1)
	counts.add("checkpoints", checks)
	counts.add("writer steps", len(p.steps))
	counts.add("watch step errors (retried)", int(stepErrs.Load()))
}

// stepModels is the configuration after each import of p.
func stepModels(p *lplan) []*model.Model {
	var out []*model.Model
	for _, s := range p.steps {
		if s.after != nil {
			out = append(out, s.after)
		}
	}
	return out
}

func describeSchedule(s *fcSchedule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "consumer from zero %v, resync in phase %d, watch swaps %v; jobs:", s.fromZero, s.resyncAt, s.watchSwaps)
	for ph, js := range s.jobs {
		fmt.Fprintf(&b, " phase %d:", ph)
		for _, j := range js {
			fmt.Fprintf(&b, " %s%v", j.kind, j.sides)
		}
	}
	return b.String()
}

// tracedPool is a pool of the engine's role whose queries go through
// tracer (a holdAt, say); it closes when the test ends.
func tracedPool(t *testing.T, b *bundle, tracer pgx.QueryTracer) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dburl.WithUser(b.url, b.engineRole))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tracer
	testdb.CloseIdle(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// holdAt is a query tracer that holds the first query whose SQL contains
// text at its start until release is closed, after closing reached.
type holdAt struct {
	text             string
	reached, release chan struct{}
	once, freed      sync.Once
}

// free releases the held query, once, however the test ends.
func (h *holdAt) free() { h.freed.Do(func() { close(h.release) }) }

func (h *holdAt) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if strings.Contains(data.SQL, h.text) {
		h.once.Do(func() { close(h.reached); <-h.release })
	}
	return ctx
}

func (h *holdAt) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestFeedConsumerReReadAcrossSwap: a consumer applies a record entry by
// re-reading access_level, as docs/feed.md's table says, and its READ
// COMMITTED statement happens to start while a full job swaps new share
// tables in (`run --full --in-place=false`; the swap holds the live tables
// ACCESS EXCLUSIVE, so the statement waits for it, with a snapshot from
// before the swap's commit). The swap changes no access, so it publishes
// its `swap` entry alone, which the table says to ignore: the re-read must
// read the right level all the same. It does: the staged rows committed
// (chunks, staging) before the statement's snapshot; only a snapshot older
// than those commits reads the new tables as empty (see
// TestFeedConsumerBatchInRepeatableReadAcrossSwap).
func TestFeedConsumerReReadAcrossSwap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, head := ownerChangeAfterHead(t)
	es, err := feed.Read(ctx, b.engine, head, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Kind != feed.KindRecord || es[0].Key != "a1" {
		t.Fatalf("entries after the owner change: %+v, want a record entry for a1", es)
	}
	cursor := es[0].Cursor

	// A full job that swaps, held at the swap, with the live tables locked.
	h := &holdAt{text: "DROP TABLE recalc.acl_share, recalc.acl_record", reached: make(chan struct{}), release: make(chan struct{})}
	jobPool := tracedPool(t, b, h)
	defer h.free() // before the pool closes: a failing test leaves the job held otherwise
	jobDone := make(chan error, 1)
	go func() {
		_, err := engine.Full(ctx, jobPool, engine.Options{Workers: 1}, zerolog.Nop())
		jobDone <- err
	}()
	select {
	case <-h.reached:
	case err := <-jobDone:
		t.Fatalf("the full job ended before its swap: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the full job never reached its swap")
	}

	// The consumer applies the record entry: it re-reads a1 for its users.
	consumer := openPool(t, dburl.WithUser(b.url, b.engineRole))
	type level struct{ u, l string }
	reread := make(chan []level, 1)
	rerr := make(chan error, 1)
	go func() {
		rows, err := consumer.Query(ctx, `SELECT u, recalc.access_level(u, 'a1') FROM unnest(ARRAY['u1', 'u2']) u ORDER BY u`)
		if err != nil {
			rerr <- err
			return
		}
		var out []level
		var u, l string
		if _, err := pgx.ForEachRow(rows, []any{&u, &l}, func() error { out = append(out, level{u, l}); return nil }); err != nil {
			rerr <- err
			return
		}
		reread <- out
	}()
	// Once it waits for the swap's lock, the swap goes on.
	for deadline := time.Now().Add(10 * time.Second); ; {
		var waiting bool
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%access_level(u, ''a1'')%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer's re-read never waited for the swap")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.free()
	if err := <-jobDone; err != nil {
		t.Fatalf("full job: %v", err)
	}
	var got []level
	select {
	case got = <-reread:
	case err := <-rerr:
		t.Fatalf("re-read: %v", err)
	}
	// What the feed tells after the entry the consumer applied.
	after, err := feed.Read(ctx, b.engine, cursor, 100)
	if err != nil {
		t.Fatal(err)
	}
	var now string
	if err := b.engine.QueryRow(ctx, `SELECT recalc.access_level('u2', 'a1')`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range after {
		kinds = append(kinds, e.Kind+":"+e.Key)
	}
	t.Logf("re-read across the swap: %v; access_level('u2', 'a1') now %s; entries after the consumer's cursor: %v", got, now, kinds)
	if fmt.Sprint(got) != "[{u1 none} {u2 all}]" || now != "all" {
		t.Fatalf("a consumer that follows docs/feed.md's table re-read a1 across the swap as %v (access_level(u2, a1) is now %s); "+
			"the feed after its cursor holds only %v, which tells it nothing", got, now, kinds)
	}
}

// TestFeedConsumerBatchInRepeatableReadAcrossSwap: a consumer that keeps
// its state in PostgreSQL applies each batch in one transaction with its
// cursor (docs/feed.md, "Store the cursor with the effect"), and makes the
// transaction REPEATABLE READ. Its snapshot is taken when it reads the
// batch; a full job then stages and swaps new share tables in (the
// consumer holds no lock on them yet, so the swap does not wait), and the
// re-read of the batch's record finds the new tables empty: 'none' for the
// record's owner. The swap changed no access, so no entry after the
// consumer's cursor names the record; docs/feed.md says to re-read in READ
// COMMITTED, or to re-read a batch again when a swap follows it. The test
// holds the feed to that: after a wrong re-read, a swap entry follows.
func TestFeedConsumerBatchInRepeatableReadAcrossSwap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, head := ownerChangeAfterHead(t)

	consumer := openPool(t, dburl.WithUser(b.url, b.engineRole))
	var cursor int64
	var level string
	err := pgx.BeginTxFunc(ctx, consumer, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		es, err := feed.Read(ctx, tx, head, 100)
		if err != nil {
			return err
		}
		if len(es) != 1 || es[0].Kind != feed.KindRecord || es[0].Key != "a1" {
			return fmt.Errorf("entries after the owner change: %+v, want a record entry for a1", es)
		}
		cursor = es[0].Cursor
		// Meanwhile, a nightly full run that swaps.
		if _, err := engine.Full(ctx, b.engine, engine.Options{Workers: 1}, zerolog.Nop()); err != nil {
			return fmt.Errorf("full run: %w", err)
		}
		return tx.QueryRow(ctx, `SELECT recalc.access_level('u2', 'a1')`).Scan(&level)
	})
	if err != nil {
		t.Fatal(err)
	}
	after, err := feed.Read(ctx, b.engine, cursor, 100)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	retold, swapped := false, false
	for _, e := range after {
		kinds = append(kinds, e.Kind+":"+e.Key)
		retold = retold || (e.Kind == feed.KindRecord && e.Key == "a1")
		swapped = swapped || e.Kind == feed.KindSwap
	}
	var now string
	if err := b.engine.QueryRow(ctx, `SELECT recalc.access_level('u2', 'a1')`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	// docs/feed.md ("Resuming after a crash"): a batch re-read in a
	// transaction older than a swap is re-read again when a swap follows it.
	if level != now && !retold && !swapped {
		t.Fatalf("the consumer's batch re-read access_level(u2, a1) = %s in its REPEATABLE READ transaction, across a swap; it is %s, "+
			"and the feed after the consumer's cursor holds %v, neither a1 nor a swap: the consumer keeps %s for good", level, now, kinds, level)
	}
	if level == now {
		t.Fatalf("premise: the re-read across the swap was right (%s): the swap did not run inside the transaction's snapshot", level)
	}
}

// ownerChangeAfterHead: u1's account a1 computed, then given to u2 and
// recomputed; head is the feed's cursor before the owner change, so the
// entries after it are the change's record entry.
func ownerChangeAfterHead(t *testing.T) (*bundle, int64) {
	t.Helper()
	ctx := context.Background()
	b := newBundle(t, nil, nil)
	if _, err := schema.Migrate(ctx, b.engine); err != nil {
		t.Fatal(err)
	}
	const cfg = `"version": 1, "objects": [{"name": "account", "internal_owd": "private", "external_owd": "private"}],
		"users": [{"id": "u1"}, {"id": "u2"}]`
	if _, err := testkit.ImportString(ctx, b.engine, `{`+cfg+`, "records": [{"object": "account", "id": "a1", "owner": "u1"}]}`); err != nil {
		t.Fatal(err)
	}
	b.full(t)
	head, err := feed.Head(ctx, b.engine)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testkit.ImportString(ctx, b.engine, `{`+cfg+`, "records": [{"object": "account", "id": "a1", "owner": "u2"}]}`); err != nil {
		t.Fatal(err)
	}
	b.run(t)
	return b, head
}
