package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
)

// midJobBase is the org the cases of TestMidJobNoAccessNeitherModelGives
// start from: u1 owns every record; u2 has nothing of its own. Accounts
// are public read for internal users only, contacts private; the custom
// objects are private but step__c, controlled by its task__c. Task k1
// and its step s1 are in project p9's family.
const midJobBase = `{
  "version": 1,
  "objects": [
    {"name": "account", "internal_owd": "public_read_only", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "proj__c", "internal_owd": "private"},
    {"name": "task__c", "parent": "proj__c", "internal_owd": "private"},
    {"name": "step__c", "parent": "task__c", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}
  ],
  "users": [{"id": "u1"}, {"id": "u2"}],
  "records": [
    {"object": "account", "id": "a1", "owner": "u1"},
    {"object": "contact", "id": "c1", "owner": "u1", "parent": "a1"},
    {"object": "proj__c", "id": "p1", "owner": "u1"},
    {"object": "proj__c", "id": "p9", "owner": "u1"},
    {"object": "task__c", "id": "k1", "owner": "u1", "parent": "p9"},
    {"object": "task__c", "id": "k9", "owner": "u1", "parent": "p9"},
    {"object": "step__c", "id": "s1", "owner": "u1", "parent": "k1"}
  ]
}`

// cbpContact is midJobBase's objects with contacts controlled by their
// account, and accounts as account says.
func cbpContact(account string) string {
	return `"objects": [
    {"name": "account", ` + account + `},
    {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"},
    {"name": "proj__c", "internal_owd": "private"},
    {"name": "task__c", "parent": "proj__c", "internal_owd": "private"},
    {"name": "step__c", "parent": "task__c", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}
  ]`
}

// TestMidJobNoAccessNeitherModelGives: an incremental job (and a full job
// in place, which is one) commits its chunks one transaction each, and its
// OWD table, user table and closure with its finish. At every point in
// between (stopped before each chunk's claim and before the finish, one
// worker, one family a chunk), no user may read a record at a level
// above both what the model before gives and what the model after gives.
//
//   - contact c1 becomes controlled by a1 as accounts become private: a
//     chunk made a1 c1's access root while the OWD table still said
//     accounts are public: u2 read c1;
//   - u2 becomes external, or inactive, as c1 becomes controlled by a1:
//     the user table still said u2 is an active internal user, whom the
//     (unchanged) account OWD gives read: u2 read c1;
//   - task k1 moves to project p1, and u2 gets it, while its step s1 moves
//     to task k9, staying in p9's family: the chunk of p1's family
//     (first, by root) wrote k1's new rows, and s1's row, left to p9's
//     chunk, still took its access from k1: u2 read (and could delete) s1.
//
// The OWD and user tables are now narrowed with the job's creation, as the
// closure is, to what both configurations give; families a record moved
// between are written by one chunk.
func TestMidJobNoAccessNeitherModelGives(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, change string
		inPlace      bool
	}{
		{"contact controlled by parent as accounts turn private",
			`{"version": 1, ` + cbpContact(`"internal_owd": "private", "external_owd": "private"`) + `}`, false},
		{"the same, recomputed in place",
			`{"version": 1, ` + cbpContact(`"internal_owd": "private", "external_owd": "private"`) + `}`, true},
		{"user made external as the contact is controlled by parent",
			`{"version": 1, ` + cbpContact(`"internal_owd": "public_read_only", "external_owd": "private"`) + `,
			  "users": [{"id": "u1"}, {"id": "u2", "type": "external"}]}`, false},
		{"user deactivated as the contact is controlled by parent",
			`{"version": 1, ` + cbpContact(`"internal_owd": "public_read_only", "external_owd": "private"`) + `,
			  "users": [{"id": "u1"}, {"id": "u2", "active": false}]}`, false},
		{"task moved to another project and given away, its step left behind",
			`{"version": 1, "records": [` + strings.NewReplacer(
				`"id": "k1", "owner": "u1", "parent": "p9"`, `"id": "k1", "owner": "u2", "parent": "p1"`,
				`"id": "s1", "owner": "u1", "parent": "k1"`, `"id": "s1", "owner": "u1", "parent": "k9"`).Replace(midJobRecords()) + `]}`, false},
		{"the same, recomputed in place",
			`{"version": 1, "records": [` + strings.NewReplacer(
				`"id": "k1", "owner": "u1", "parent": "p9"`, `"id": "k1", "owner": "u2", "parent": "p1"`,
				`"id": "s1", "owner": "u1", "parent": "k1"`, `"id": "s1", "owner": "u1", "parent": "k9"`).Replace(midJobRecords()) + `]}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, midJobBase, engine.Options{})
			old := b.cur
			b.importFile(t, tc.change)
			chk := &boundCheck{t: t, ctx: b.ctx, pool: b.pool}
			pool := tracedPool(t, b.pool, &midJobTracer{check: chk.check})
			chk.arm(tc.name, old, b.cur)
			opt := engine.Options{Workers: 1, ChunkSize: 1, Full: tc.inPlace, InPlace: tc.inPlace}
			if _, err := engine.Run(b.ctx, pool, opt, zerolog.Nop()); err != nil {
				t.Fatalf("run: %v", err)
			}
			chk.disarm()
			if chk.checks < 3 { // the job's creation, a claim after a chunk, the finish
				t.Fatalf("the run stopped at %d points, want at least 3", chk.checks)
			}
			b.checkOracle(t, "after the run")
		})
	}
}

// midJobRecords is midJobBase's records section, without brackets.
func midJobRecords() string {
	i := strings.Index(midJobBase, `"records": [`) + len(`"records": [`)
	j := strings.LastIndex(midJobBase, `]`)
	return midJobBase[i:j]
}

// midJobPoints are the statements before which the engine has committed a
// consistent part of its work and nothing else: taking the model lock (a
// job's creation, a fast-path batch), claiming a chunk (every chunk
// before it is committed), and locking the job to finish it.
var midJobPoints = []string{
	`FROM recalc.engine_lock WHERE scope = $1 FOR UPDATE`,
	`WHERE job_id = $1 AND status = 'pending' ORDER BY n LIMIT 1 FOR UPDATE SKIP LOCKED`,
	`FROM recalc.job WHERE id = $1 FOR UPDATE`,
}

// midJobTracer calls check, synchronously in the engine's session, before
// each statement of midJobPoints.
type midJobTracer struct {
	check func(point string)
}

func (g *midJobTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	for _, p := range midJobPoints {
		if strings.Contains(data.SQL, p) {
			g.check(p)
		}
	}
	return ctx
}

func (g *midJobTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// tracedPool is a pool on pool's database whose statements tr sees.
func tracedPool(t *testing.T, pool *pgxpool.Pool, tr pgx.QueryTracer) *pgxpool.Pool {
	t.Helper()
	cfg := pool.Config()
	cfg.ConnConfig.Tracer = tr
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// boundCheck holds every (user, record) pair's materialized access to the
// greater of the oracle's levels under two models.
type boundCheck struct {
	t    *testing.T
	ctx  context.Context
	pool *pgxpool.Pool

	mu      sync.Mutex
	what    string
	bound   map[[2]string]model.Level
	users   []string
	records []string
	objects []string
	checks  int
	same    int    // checks whose access tables and bound the last asked check had
	asked   string // the access tables' digest when access was last asked under this bound
	fast    int    // steps the watch's fast path took (TestMidJobAccessBounded)
	fails   int
}

// arm sets the bound to the greatest of the models' access (a nil model:
// none): the model before and the model after, or every state a path
// passes through.
func (c *boundCheck) arm(what string, models ...*model.Model) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.what, c.bound, c.asked = what, map[[2]string]model.Level{}, ""
	users, objects := map[string]bool{"nobody": true}, map[string]string{}
	for _, m := range models {
		if m == nil {
			continue
		}
		for _, r := range oracle.Access(m) {
			k := [2]string{r.User, r.Record}
			c.bound[k] = max(c.bound[k], r.Level)
		}
		for _, u := range m.Users {
			users[u.ID] = true
		}
		for _, r := range m.Records {
			objects[r.ID] = r.Object
		}
	}
	c.users, c.records, c.objects = nil, nil, nil
	for u := range users {
		c.users = append(c.users, u)
	}
	for r, o := range objects {
		c.records, c.objects = append(c.records, r), append(c.objects, o)
	}
}

func (c *boundCheck) disarm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bound = nil
}

var levelNames = []string{"none", "read", "edit", "all"}

// check reads every pair's access_level, and can_access at each level
// above the pair's bound, on another session, and reports those above the
// bound. can_access at or below the bound could not exceed it, true or
// false: asking only above it is about two thirds of the calls. Nor is
// access asked again while the tables both functions read (aclDigest) and
// the bound are as at the last check that asked: their answers could not
// differ. Every check reads lists (checkLists).
func (c *boundCheck) check(point string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bound == nil || c.fails > 0 {
		return
	}
	c.checks++
	var leaks []string
	err := pgx.BeginTxFunc(c.ctx, c.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var digest string
		if err := tx.QueryRow(c.ctx, aclDigest).Scan(&digest); err != nil {
			return err
		}
		if digest == c.asked {
			c.same++
			return nil
		}
		var err error
		if leaks, err = c.askAccess(tx); err == nil {
			c.asked = digest
		}
		return err
	})
	if c.report(point, "access", "access above both the old and the new model's", err, leaks) {
		c.checkLists(point)
	}
}

// askAccess reads every pair's access_level, and can_access at each level
// above its bound, in tx, and returns the pairs above the bound.
func (c *boundCheck) askAccess(tx pgx.Tx) ([]string, error) {
	var users, records, objects []string
	var bounds []int32
	for _, u := range c.users {
		for i, r := range c.records {
			users, records, objects = append(users, u), append(records, r), append(objects, c.objects[i])
			bounds = append(bounds, int32(c.bound[[2]string{u, r}]))
		}
	}
	rows, err := tx.Query(c.ctx, `SELECT u, r, recalc.access_level(u, r),
		CASE WHEN b < 1 THEN recalc.can_access(u, o, r, 'read') END,
		CASE WHEN b < 2 THEN recalc.can_access(u, o, r, 'edit') END,
		CASE WHEN b < 3 THEN recalc.can_access(u, o, r, 'all') END
		FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) x (u, r, o, b)`, users, records, objects, bounds)
	if err != nil {
		return nil, err
	}
	var leaks []string
	var user, record, level string
	var can [3]*bool
	_, err = pgx.ForEachRow(rows, []any{&user, &record, &level, &can[0], &can[1], &can[2]}, func() error {
		bound := c.bound[[2]string{user, record}]
		got := model.Level(slices.Index(levelNames, level))
		var asked []string
		for i, ok := range can {
			at := model.Level(i + 1)
			switch {
			case at <= bound:
				continue
			case ok == nil:
				return fmt.Errorf("can_access(%s, %s, %s) is NULL", user, record, at)
			case *ok:
				got = max(got, at)
			}
			asked = append(asked, fmt.Sprintf("%s %v", at, *ok))
		}
		if got > bound {
			leaks = append(leaks, fmt.Sprintf("%s on %s: access_level %s, can_access %s; at most %s", user, record, level, strings.Join(asked, ", "), bound))
		}
		return nil
	})
	return leaks, err
}

// aclDigest is a digest of every row of the tables access_level and
// can_access read (schema versions 6 and 43): about 550 rows on
// TestMidJobAccessBounded's models, where asking every pair is some 1,500
// calls that each scan them.
const aclDigest = `SELECT md5(concat_ws('|',
	(SELECT string_agg(x::text, ';' ORDER BY x::text) FROM recalc.acl_object x),
	(SELECT string_agg(x::text, ';' ORDER BY x::text) FROM recalc.acl_user x),
	(SELECT string_agg(x::text, ';' ORDER BY x::text) FROM recalc.acl_member x),
	(SELECT string_agg(x::text, ';' ORDER BY x::text) FROM recalc.acl_record x),
	(SELECT string_agg(x::text, ';' ORDER BY x::text) FROM recalc.acl_share x)))`

// report fails the test with what a check at point found (err reading
// what, or leaks), and says whether it found nothing.
func (c *boundCheck) report(point, what, found string, err error, leaks []string) bool {
	switch {
	case err != nil:
		c.t.Errorf("%s, before %q: read %s: %v", c.what, point, what, err)
	case len(leaks) > 0:
		slices.Sort(leaks)
		c.t.Errorf("%s, before %q: %s:\n%s", c.what, point, found, strings.Join(leaks, "\n"))
	default:
		return true
	}
	c.fails++
	return false
}

// listWalk reads, in one statement, every page of
// recalc.visible_records(user, object, level, after, 2) for each user,
// object and level (following continuation rows), and the lists
// rls_records and rls_keys give a user in mode 1: one row per record
// listed, with the page it came on (0 for the lists) and its level.
const listWalk = `WITH RECURSIVE q AS (
	SELECT u, o, lv FROM unnest($1::text[]) u CROSS JOIN unnest($2::text[]) o CROSS JOIN unnest($3::text[]) lv
), w (u, o, lv, page, after, recs, lvls, more) AS (
	SELECT u, o, lv, 0, NULL::text, '{}'::text[], '{}'::text[], true FROM q
	UNION ALL
	SELECT w.u, w.o, w.lv, w.page + 1, x.next, x.recs, x.lvls, x.more
	FROM w CROSS JOIN LATERAL (
		SELECT coalesce(array_agg(v.record ORDER BY v.n) FILTER (WHERE v.record IS NOT NULL), '{}') AS recs,
			coalesce(array_agg(v.level ORDER BY v.n) FILTER (WHERE v.record IS NOT NULL), '{}') AS lvls,
			(array_agg(coalesce(v.record, v.next_after) ORDER BY v.n DESC))[1] AS next,
			count(v.record) >= 2 OR bool_or(v.next_after IS NOT NULL) AS more
		FROM recalc.visible_records(w.u, w.o, w.lv, w.after, 2) WITH ORDINALITY v (record, level, next_after, n)
	) x
	WHERE w.more AND w.page < 500
)
SELECT 'visible_records', u, o, lv, page, r.rec, r.lvl FROM w CROSS JOIN LATERAL unnest(w.recs, w.lvls) r (rec, lvl)
UNION ALL
SELECT 'more pages', u, o, lv, page, NULL, NULL FROM w WHERE w.more AND w.page >= 500
UNION ALL
SELECT l.fn, q.u, q.o, q.lv, 0, l.rec, q.lv FROM q CROSS JOIN LATERAL (
	SELECT CASE WHEN recalc.rls_mode(q.u, q.o, q.lv) = 1 THEN ARRAY(SELECT recalc.rls_records(q.u, q.o, q.lv)) END AS recs,
		recalc.rls_keys(q.u, q.o, q.lv) AS keys
) m CROSS JOIN LATERAL (
	SELECT 'rls_records', unnest(m.recs) UNION ALL SELECT 'rls_keys', unnest(m.keys)
) l (fn, rec)`

// listSample is the users and the level checkLists reads at the n-th
// check. Every user and level at once cost about 0.7 s a check on the
// property test's models, seven times the rest of the test; so a check
// reads as many users, in turn, as make about 40 records (every user of
// midJobBase's org), at one level, the next once every user has had one.
func listSample(users []string, records, n int) ([]string, []string) {
	slices.Sort(users)
	k := min(len(users), max(1, 40/max(records, 1)))
	var out []string
	for i := range k {
		out = append(out, users[(n*k+i)%len(users)])
	}
	return out, []string{levelNames[1+n*k/len(users)%3]}
}

// checkLists reports a record that visible_records, rls_records or
// rls_keys list above the bound, below the level asked, or more than
// once for one user, object and level.
func (c *boundCheck) checkLists(point string) {
	objects := slices.Compact(slices.Sorted(slices.Values(c.objects)))
	users, levels := listSample(c.users, len(c.records), c.checks)
	rows, err := c.pool.Query(c.ctx, listWalk, users, objects, levels)
	if err != nil {
		c.t.Errorf("%s, before %q: read lists: %v", c.what, point, err)
		c.fails++
		return
	}
	var leaks []string
	seen := map[[4]string]bool{}
	var fn, user, object, minLevel, record, level string
	var page int
	_, err = pgx.ForEachRow(rows, []any{&fn, &user, &object, &minLevel, &page, &record, &level}, func() error {
		if fn == "more pages" {
			leaks = append(leaks, fmt.Sprintf("%s on %s at %s: visible_records still has pages after %d", user, object, minLevel, page))
			return nil
		}
		bound := c.bound[[2]string{user, record}]
		got := model.Level(slices.Index(levelNames, level))
		switch k := [4]string{fn, user, minLevel, record}; {
		case seen[k]:
			leaks = append(leaks, fmt.Sprintf("%s on %s at %s: %s lists %s twice (page %d)", user, object, minLevel, fn, record, page))
		case got > bound:
			leaks = append(leaks, fmt.Sprintf("%s on %s at %s: %s lists %s at %s (page %d); at most %s", user, object, minLevel, fn, record, level, page, bound))
		case got < model.Level(slices.Index(levelNames, minLevel)):
			leaks = append(leaks, fmt.Sprintf("%s on %s at %s: %s lists %s at %s (page %d)", user, object, minLevel, fn, record, level, page))
		default:
			seen[k] = true
		}
		return nil
	})
	c.report(point, "lists", "records listed above both the old and the new model's access", err, leaks)
}
