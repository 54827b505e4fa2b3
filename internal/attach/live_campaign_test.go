package attach_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/internal/watch"
)

// TestLiveCampaign is a random differential campaign of the live path:
// application tables attached as docs/attach.md says (bigint accounts, text
// opportunities and uuid contacts, with owner, parent and typed criteria
// columns), a random model imported, and `recalc watch` (watch.Run stepping
// an engine.Live) running in-process while several connections write the
// tables at once (inserts, deletes, owner changes, re-parenting, criteria
// field changes, id changes, multi-row statements, COPY, rolled-back work,
// occasionally TRUNCATE) and model imports change the configuration. After
// every phase it waits with recalc.wait_fresh and holds every (user,
// record) access to the oracle's for the model with the application's rows
// as its records (read back from the tables, not from recalc.record); at
// the end it also holds the share tables to a full run's.
//
// A few fixed seeds always run. The campaign runs when RECALC_CAMPAIGN is
// set:
//
//	RECALC_CAMPAIGN=1 CAMPAIGN_SEED_START=5000 CAMPAIGN_SEEDS=300 CAMPAIGN_MINUTES=15
//
// A failing seed is replayed sequentially, and with LIVE_CAMPAIGN_MINIMIZE=1
// minimized to the fewest steps that still disagree. LIVE_CAMPAIGN_REPLAY
// = "SEED:i,j,k" replays those steps of SEED sequentially.
func TestLiveCampaign(t *testing.T) {
	if r := os.Getenv("LIVE_CAMPAIGN_REPLAY"); r != "" {
		seedS, idx, _ := strings.Cut(r, ":")
		seed, _ := strconv.Atoi(seedS)
		var keep []int
		for _, s := range strings.Split(idx, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				keep = append(keep, n)
			}
		}
		p := livePlan(seed, &liveCounts{n: map[string]int{}})
		res := runLiveSeed(t, p, keep)
		t.Logf("replay of seed %d with steps %v: %s\n%s", seed, keep, res.failure, res.detail)
		return
	}
	if os.Getenv("RECALC_CAMPAIGN") == "" {
		for _, seed := range []int{1, 2} {
			t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
				t.Parallel()
				liveCampaignSeed(t, seed, &liveCounts{n: map[string]int{}})
			})
		}
		return
	}
	campaignSeeds(t, "CAMPAIGN", 5000, 2, func(t *testing.T, seed int, counts *liveCounts) {
		res := liveCampaignSeed(t, seed, counts)
		counts.add("committed steps", res.steps)
		counts.add("checkpoints", res.checks)
	})
}

// campaignSeeds runs a campaign's seeds, workers at a time (each is mostly
// waiting on PostgreSQL), each a subtest of run, from PREFIX_SEED_START
// (default start) until PREFIX_SEEDS seeds (default 1,000) or
// PREFIX_MINUTES minutes (default 10) are done, and logs the seeds run and
// failed and what counts counted.
func campaignSeeds(t *testing.T, prefix string, start, workers int, run func(t *testing.T, seed int, counts *liveCounts)) {
	first, n := testkit.Seeds(prefix, 1000, 0)
	if first == 0 {
		first = start
	}
	minutes, _ := strconv.Atoi(os.Getenv(prefix + "_MINUTES"))
	if minutes <= 0 {
		minutes = 10
	}
	deadline := time.Now().Add(time.Duration(minutes) * time.Minute)
	counts := &liveCounts{n: map[string]int{}}
	var mu sync.Mutex
	next, seeds, failed := first, 0, []int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				seed := next
				next++
				mu.Unlock()
				if seed >= first+n || time.Now().After(deadline) {
					return
				}
				ok := t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) { run(t, seed, counts) })
				mu.Lock()
				seeds++
				if !ok {
					failed = append(failed, seed)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%s campaign: %d seeds from %d; failed seeds %v", prefix, seeds, first, failed)
	counts.log(t)
}

// liveCounts counts what the campaign did, by kind.
type liveCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *liveCounts) add(k string, n int) {
	c.mu.Lock()
	c.n[k] += n
	c.mu.Unlock()
}

// log logs the counts, one kind a line.
func (c *liveCounts) log(t *testing.T) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(c.n)) {
		t.Logf("%7d %s", c.n[k], k)
	}
}

// liveCampaignSeed runs seed concurrently, and on a disagreement replays
// it sequentially (and minimizes it when asked) before failing.
func liveCampaignSeed(t *testing.T, seed int, counts *liveCounts) liveResult {
	t.Helper()
	p := livePlan(seed, counts)
	res := runLiveSeed(t, p, nil)
	if res.failure == "" {
		return res
	}
	report := fmt.Sprintf("seed %d: %s\n%s\ncommitted steps in commit order:\n%s", seed, res.failure, res.detail, p.describe(res.order))
	seq := runLiveSeed(t, p, res.order)
	report += fmt.Sprintf("\nsequential replay of the committed steps: %s", orStr(seq.failure, "agrees (a race)"))
	if seq.failure != "" && os.Getenv("LIVE_CAMPAIGN_MINIMIZE") != "" {
		small := minimizeLive(t, p, res.order)
		final := runLiveSeed(t, p, small)
		report += fmt.Sprintf("\nminimized to steps %v (LIVE_CAMPAIGN_REPLAY=%d:%s):\n%s\n%s\n%s", small, seed, joinInts(small), p.describe(small), final.failure, final.detail)
	}
	t.Fatal(report)
	return res
}

func orStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func joinInts(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, strconv.Itoa(x))
	}
	return strings.Join(s, ",")
}

// minimizeLive shrinks the steps keep (replayed sequentially) to a
// smaller list that still fails: ddmin over the steps.
func minimizeLive(t *testing.T, p *lplan, keep []int) []int {
	fails := func(c []int) bool { return runLiveSeed(t, p, c).failure != "" }
	cur := slices.Clone(keep)
	n := 2
	for len(cur) >= 2 {
		chunk := (len(cur) + n - 1) / n
		reduced := false
		for i := 0; i < len(cur); i += chunk {
			comp := append(slices.Clone(cur[:i]), cur[min(i+chunk, len(cur)):]...)
			if len(comp) > 0 && fails(comp) {
				cur, n, reduced = comp, max(n-1, 2), true
				break
			}
		}
		if !reduced {
			if n >= len(cur) {
				break
			}
			n = min(2*n, len(cur))
		}
	}
	return cur
}

// --- the plan: everything random is decided before anything runs, so a
// seed's steps are the same whatever the interleaving, and can be replayed.

const (
	lWriters = 3
)

// lop is one operation of a step: a statement, or a COPY.
type lop struct {
	sql   string
	table string
	cols  []string
	rows  [][]any
}

// lstep is one transaction of a writer, or one import.
type lstep struct {
	idx      int
	phase    int
	writer   int // -1: an import
	kind     string
	ops      []lop
	rollback bool   // written, then rolled back
	tz       string // the session's TimeZone
	// an import
	file    string
	present []string
	after   *model.Model // the configuration stored after it
}

type lplan struct {
	seed       int
	fast       int // engine.Live's MaxRecords
	initial    *model.Model
	initRows   []lop // before the attach (backfilled)
	postRows   []lop // right after the attach
	phases     int
	steps      []*lstep
	users      []string
	queues     []string
	territory  []string
	finalModel *model.Model
	counts     *liveCounts
}

func (p *lplan) describe(order []int) string {
	var b strings.Builder
	for _, i := range order {
		s := p.steps[i]
		who := fmt.Sprintf("writer %d", s.writer)
		if s.writer < 0 {
			who = "import"
		}
		fmt.Fprintf(&b, "  #%d phase %d %s %s", s.idx, s.phase, who, s.kind)
		if s.writer < 0 {
			fmt.Fprintf(&b, " sections %v: %.400s\n", s.present, s.file)
			continue
		}
		if s.rollback {
			b.WriteString(" (rolled back)")
		}
		b.WriteString(":\n")
		for _, o := range s.ops {
			if o.table != "" {
				fmt.Fprintf(&b, "      COPY %s %v %v\n", o.table, o.cols, o.rows)
			} else {
				fmt.Fprintf(&b, "      %s\n", o.sql)
			}
		}
	}
	return b.String()
}

// attached objects: never records of an import.
var liveAttached = map[string]bool{model.Account: true, model.Opportunity: true, model.Contact: true}

// liveSanitize drops what an import may not hold once account,
// opportunity and contact are attached: their records, and the shares and
// teams on them; a parent among them is dropped.
func liveSanitize(m *model.Model) {
	var recs []model.Record
	ids := map[string]bool{}
	for _, r := range m.Records {
		if !liveAttached[r.Object] {
			recs = append(recs, r)
			ids[r.ID] = true
		}
	}
	for i := range recs {
		if recs[i].Parent != "" && !ids[recs[i].Parent] {
			recs[i].Parent = ""
		}
	}
	m.Records = recs
	m.Shares = slices.DeleteFunc(m.Shares, func(s model.Share) bool { return !ids[s.Record] })
	m.Teams = slices.DeleteFunc(m.Teams, func(t model.Team) bool { return !ids[t.Record] })
}

func livePlan(seed int, counts *liveCounts) *lplan {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x11fe))
	p := &lplan{seed: seed, fast: []int{1000, 1000, 4, 1}[rng.IntN(4)], counts: counts}
	m := oracle.RandomModel(rng, 10+rng.IntN(30))
	liveSanitize(m)
	liveExtraRules(rng, m)
	if _, err := m.Validate(); err != nil {
		panic(fmt.Sprintf("seed %d: initial model invalid: %v", seed, err))
	}
	p.initial = m
	for _, u := range m.Users {
		p.users = append(p.users, u.ID)
	}
	for _, g := range m.Groups {
		if g.Queue {
			p.queues = append(p.queues, g.ID)
		}
	}
	for _, tr := range m.Territories {
		p.territory = append(p.territory, tr.ID)
	}
	g := &lgen{rng: rng, p: p}
	for i := 0; i < 6+rng.IntN(10); i++ {
		p.initRows = append(p.initRows, g.insertAccount(int64(1+i)))
	}
	for i := 0; i < 4+rng.IntN(8); i++ {
		p.initRows = append(p.initRows, g.insertOpp(fmt.Sprintf("o%d", i)), g.insertContact(i))
	}
	for i := 0; i < 3; i++ {
		p.postRows = append(p.postRows, g.insertAccount(int64(20+i)), g.insertOpp(fmt.Sprintf("o%d", 20+i)))
	}
	p.phases = 3 + rng.IntN(3)
	cur := m
	for ph := 0; ph < p.phases; ph++ {
		for w := 0; w < lWriters; w++ {
			wr := rand.New(rand.NewPCG(uint64(seed), uint64(1000*ph+w)))
			wg := &lgen{rng: wr, p: p, writer: w, phase: ph}
			for i, n := 0, 6+wr.IntN(10); i < n; i++ {
				s := wg.step()
				s.phase, s.writer = ph, w
				s.idx = len(p.steps)
				p.steps = append(p.steps, s)
			}
		}
		// Imports while the writes go on.
		for i, n := 0, rng.IntN(3); i < n; i++ {
			s, next := liveImport(rng, cur)
			if s == nil {
				continue
			}
			cur = next
			s.phase, s.writer, s.idx = ph, -1, len(p.steps)
			p.steps = append(p.steps, s)
		}
	}
	p.finalModel = cur
	return p
}

// liveExtraRules adds criteria rules on the date and timestamp columns.
func liveExtraRules(rng *rand.Rand, m *model.Model) {
	cbp := func(o string) bool {
		for _, ob := range m.Objects {
			if ob.Name == o {
				return ob.CBP()
			}
		}
		return true
	}
	add := func(id, object string, c model.Condition) {
		if cbp(object) || rng.IntN(3) == 0 {
			return
		}
		cr, err := model.NewCriteria([]model.Condition{c}, "")
		if err != nil {
			panic(err)
		}
		m.Rules = append(m.Rules, model.Rule{ID: id, Object: object, Type: model.CriteriaRule, Criteria: cr,
			Target: model.Grantee{Kind: model.GUser, ID: m.Users[rng.IntN(len(m.Users))].ID}, Access: model.Read + model.Level(rng.IntN(2))})
	}
	add("lc_closes", model.Opportunity, model.Condition{Field: "closes_on", Op: model.OpGE, Value: model.Str("2027-01-05")})
	add("lc_seen", model.Contact, model.Condition{Field: "seen_at", Op: model.OpStartsWith, Value: model.Str("2026-12-31")})
	add("lc_char", model.Contact, model.Condition{Field: "industry", Op: model.OpEquals, Value: model.Str("Tech        ")})
}

// liveImport is a random import over cur: oracle.Mutate's, without
// records of attached objects. Nil when none applies.
func liveImport(rng *rand.Rand, cur *model.Model) (*lstep, *model.Model) {
	for try := 0; try < 10; try++ {
		step, file, ok := func() (st *model.Model, f *model.File, ok bool) {
			defer func() {
				if recover() != nil {
					ok = false
				}
			}()
			st, f = oracle.Mutate(rng, cur)
			return st, f, true
		}()
		if !ok {
			continue
		}
		next := oracle.Merge(cur, step, file)
		next = &model.Model{Config: next.Config, Records: slices.Clone(next.Records), Shares: slices.Clone(next.Shares), Teams: slices.Clone(next.Teams)}
		liveSanitize(next)
		if _, err := next.Validate(); err != nil {
			continue
		}
		present := file.Present()
		var buf bytes.Buffer
		if err := model.Encode(&buf, next, present); err != nil {
			panic(err)
		}
		return &lstep{kind: "import", file: buf.String(), present: present, after: next}, next
	}
	return nil, cur
}

// lgen makes a writer's random steps.
type lgen struct {
	rng           *rand.Rand
	p             *lplan
	writer, phase int
	n             int
}

func (g *lgen) chance(p float64) bool { return g.rng.Float64() < p }
func pick[T any](g *lgen, xs []T) T   { return xs[g.rng.IntN(len(xs))] }

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func (g *lgen) owner() string {
	switch n := g.rng.IntN(40); {
	case n == 0:
		return "NULL"
	case n == 1:
		return q("ghost")
	case n < 6 && len(g.p.queues) > 0:
		return q(pick(g, g.p.queues))
	}
	return q(pick(g, g.p.users))
}

var (
	lStrings  = []string{"Tech", "tech", "Healthcare", "Retail", "New", "Escalated", "Closed", "", "EMEA,APAC", "Tech Retail", "Ümlaut", "Esc"}
	lNumerics = []string{"0", "1", "2", "3", "5", "-3", "2.5", "2.50", "100", "1e6", "1000000.000", "9007199254740993", "0.1", "-0"}
)

func (g *lgen) text() string {
	if g.chance(0.12) {
		return "NULL"
	}
	return q(pick(g, lStrings))
}
func (g *lgen) num() string {
	if g.chance(0.1) {
		return "NULL"
	}
	return pick(g, lNumerics)
}
func (g *lgen) integer() string {
	if g.chance(0.1) {
		return "NULL"
	}
	return strconv.Itoa(g.rng.IntN(7) - 1)
}
func (g *lgen) boolean() string { return pick(g, []string{"true", "false", "NULL"}) }
func (g *lgen) date() string {
	if g.chance(0.1) {
		return "NULL"
	}
	return q(fmt.Sprintf("2027-01-%02d", 1+g.rng.IntN(9)))
}
func (g *lgen) ts() string {
	return pick(g, []string{"NULL", "'2026-12-31 23:30:00+00'", "'2027-01-01 00:30:00+01'", "'2026-12-31 10:00:00-05'",
		"'2026-12-31 20:00:00-05'", "'2027-01-01 00:00:00.25+00'"})
}
func (g *lgen) territories() string {
	var ts []string
	for i, n := 0, g.rng.IntN(3); i < n; i++ {
		switch {
		case g.chance(0.05):
			ts = append(ts, "tghost")
		case len(g.p.territory) > 0:
			ts = append(ts, pick(g, g.p.territory))
		}
	}
	if g.chance(0.03) {
		return "ARRAY[NULL]::text[]"
	}
	if g.chance(0.15) {
		return "NULL"
	}
	var qs []string
	for _, t := range ts {
		qs = append(qs, q(t))
	}
	return "ARRAY[" + strings.Join(qs, ",") + "]::text[]"
}

// accountID is one of a small range, so that writers collide, ids are
// reused, and children point at deleted accounts.
func (g *lgen) accountID() int64 { return int64(1 + g.rng.IntN(30)) }
func (g *lgen) parent() string {
	if g.chance(0.1) {
		return "NULL"
	}
	return strconv.FormatInt(g.accountID(), 10)
}
func (g *lgen) oppID() string { return q(fmt.Sprintf("o%d", g.rng.IntN(30))) }
func contactUUID(i int) string {
	return fmt.Sprintf("'00000000-0000-4000-8000-%012d'", i)
}
func (g *lgen) contactID() string { return contactUUID(g.rng.IntN(30)) }

func (g *lgen) insertAccount(id int64) lop {
	rev := g.num()
	if g.chance(0.02) {
		rev = "1e400"
	}
	return lop{sql: fmt.Sprintf(`INSERT INTO app.account (id, name, owner_id, industry, revenue, vip, priority, region, status, territories)
		VALUES (%d, 'acct', %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING`,
		id, g.owner(), g.text(), rev, g.boolean(), g.integer(), g.text(), g.text(), g.territories())}
}

func (g *lgen) insertOpp(id string) lop {
	rev := g.num()
	if g.chance(0.03) {
		rev = "'NaN'"
	}
	return lop{sql: fmt.Sprintf(`INSERT INTO app.opportunity (id, name, owner_id, account_id, status, revenue, priority, vip, region, closes_on)
		VALUES (%s, 'opp', %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING`,
		q(id), g.owner(), g.parent(), g.text(), rev, g.integer(), g.boolean(), g.text(), g.date())}
}

func (g *lgen) insertContact(i int) lop {
	return lop{sql: fmt.Sprintf(`INSERT INTO app.contact (id, owner_id, account_id, industry, region, status, seen_at, note)
		VALUES (%s, %s, %s, %s, %s, %s, %s, 'n') ON CONFLICT (id) DO NOTHING`,
		contactUUID(i), g.owner(), g.parent(), g.text(), g.text(), g.text(), g.ts())}
}

// step is one random transaction.
func (g *lgen) step() *lstep {
	s := &lstep{tz: pick(g, []string{"UTC", "UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"})}
	one := func(kind string, ops ...lop) *lstep { s.kind, s.ops = kind, ops; return s }
	sqlop := func(f string, a ...any) lop { return lop{sql: fmt.Sprintf(f, a...)} }
	table := pick(g, []string{"account", "account", "opportunity", "contact"})
	idOf := map[string]func() string{
		"account":     func() string { return strconv.FormatInt(g.accountID(), 10) },
		"opportunity": g.oppID,
		"contact":     g.contactID,
	}[table]
	switch k := g.rng.IntN(100); {
	case k < 14:
		switch table {
		case "account":
			return one("insert account", g.insertAccount(g.accountID()))
		case "opportunity":
			return one("insert opportunity", g.insertOpp(fmt.Sprintf("o%d", g.rng.IntN(30))))
		}
		return one("insert contact", g.insertContact(g.rng.IntN(30)))
	case k < 24:
		return one("delete", sqlop(`DELETE FROM app.%s WHERE id = %s`, table, idOf()))
	case k < 38:
		return one("owner change", sqlop(`UPDATE app.%s SET owner_id = %s WHERE id = %s`, table, g.owner(), idOf()))
	case k < 46:
		if table == "account" {
			return one("territories change", sqlop(`UPDATE app.account SET territories = %s WHERE id = %s`, g.territories(), idOf()))
		}
		return one("re-parent", sqlop(`UPDATE app.%s SET account_id = %s WHERE id = %s`, table, g.parent(), idOf()))
	case k < 60:
		col, val := pick(g, []string{"industry", "region", "status"}), g.text()
		switch g.rng.IntN(3) {
		case 0:
			if table != "contact" {
				col, val = "revenue", g.num()
			}
		case 1:
			if table != "contact" {
				col, val = "vip", g.boolean()
			}
		}
		return one("criteria field change", sqlop(`UPDATE app.%s SET %s = %s WHERE id = %s`, table, col, val, idOf()))
	case k < 68:
		// Multi-row statements.
		switch g.rng.IntN(5) {
		case 0:
			return one("multi-row owner change", sqlop(`UPDATE app.%s SET owner_id = %s WHERE md5(id::text) < %s`, table, g.owner(), q(fmt.Sprintf("%x", g.rng.IntN(16)))))
		case 1:
			if table == "account" {
				return one("multi-row field change", sqlop(`UPDATE app.account SET vip = NOT coalesce(vip, false), priority = coalesce(priority, 0) + 1 WHERE id %% 3 = %d`, g.rng.IntN(3)))
			}
			return one("multi-row re-parent", sqlop(`UPDATE app.%s SET account_id = (coalesce(account_id, 0) %% 30) + 1 WHERE md5(id::text) < %s`, table, q(fmt.Sprintf("%x", g.rng.IntN(16)))))
		case 2:
			return one("multi-row delete", sqlop(`DELETE FROM app.%s WHERE md5(id::text || %d) < '2'`, table, g.rng.IntN(100)))
		case 3:
			return one("multi-row insert", sqlop(`INSERT INTO app.opportunity (id, name, owner_id, account_id, status, revenue, closes_on)
				SELECT 'm%d_%d_' || g, 'multi', %s, 1 + (g * 7) %% 30, %s, g * 10, date '2027-01-01' + g FROM generate_series(1, %d) g ON CONFLICT (id) DO NOTHING`,
				g.writer, g.rng.IntN(4), g.owner(), g.text(), 1+g.rng.IntN(5)))
		}
		return one("upsert", sqlop(`INSERT INTO app.account (id, name, owner_id, industry) VALUES (%d, 'up', %s, %s)
			ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id, industry = excluded.industry`, g.accountID(), g.owner(), g.text()))
	case k < 74:
		// COPY of new rows, ids of this writer only.
		var rows [][]any
		for i, n := 0, 1+g.rng.IntN(4); i < n; i++ {
			g.n++
			owner := strings.Trim(g.owner(), "'")
			var o any = owner
			if owner == "NULL" {
				o = nil
			}
			if table == "account" {
				rows = append(rows, []any{int64(1000 + 100*g.writer + (g.n % 100)), "copied", o, pick(g, lStrings), int64(g.rng.IntN(5)), g.rng.IntN(2) == 0})
			} else {
				rows = append(rows, []any{fmt.Sprintf("c%d_%d", g.writer, g.n%40), "copied", o, g.accountID(), pick(g, lStrings), int64(g.rng.IntN(5))})
			}
		}
		if table == "account" {
			return one("copy accounts", lop{sql: fmt.Sprintf(`DELETE FROM app.account WHERE id BETWEEN %d AND %d`, 1000+100*g.writer, 1099+100*g.writer)},
				lop{table: "account", cols: []string{"id", "name", "owner_id", "industry", "priority", "vip"}, rows: rows})
		}
		return one("copy opportunities", lop{sql: fmt.Sprintf(`DELETE FROM app.opportunity WHERE id LIKE 'c%d\_%%'`, g.writer)},
			lop{table: "opportunity", cols: []string{"id", "name", "owner_id", "account_id", "status", "priority"}, rows: rows})
	case k < 79:
		// The id itself changes: a delete and an insert.
		if table == "account" {
			return one("account id change", sqlop(`UPDATE app.account SET id = %d WHERE id = %d`, g.accountID(), g.accountID()))
		}
		return one("id change", sqlop(`UPDATE app.%s SET id = %s WHERE id = %s`, table, idOf(), idOf()))
	case k < 84:
		// Delete and re-insert, or change and change back, in one transaction.
		id := g.accountID()
		if g.chance(0.5) {
			return one("delete and re-insert account", sqlop(`DELETE FROM app.account WHERE id = %d`, id), g.insertAccount(id))
		}
		return one("owner change and back", sqlop(`UPDATE app.%s SET owner_id = %s WHERE id = %s`, table, g.owner(), idOf()),
			sqlop(`SELECT pg_sleep(0.002)`),
			sqlop(`UPDATE app.account SET owner_id = owner_id, name = name || '.' WHERE id = %d`, id))
	case k < 88:
		s.rollback = true
		return one("rolled back", sqlop(`UPDATE app.%s SET owner_id = %s WHERE true`, table, g.owner()), sqlop(`DELETE FROM app.account WHERE id < 10`))
	case k < 91:
		return one("savepoint", sqlop(`UPDATE app.%s SET owner_id = %s WHERE id = %s`, table, g.owner(), idOf()), sqlop(`SAVEPOINT a`),
			sqlop(`DELETE FROM app.%s WHERE true`, table), sqlop(`ROLLBACK TO SAVEPOINT a`))
	case k < 93:
		stmts := []lop{sqlop(`TRUNCATE app.%s`, table)}
		if g.chance(0.6) {
			switch table {
			case "account":
				stmts = append(stmts, g.insertAccount(g.accountID()), g.insertAccount(g.accountID()))
			case "opportunity":
				stmts = append(stmts, g.insertOpp("o1"), g.insertOpp("o2"))
			default:
				stmts = append(stmts, g.insertContact(1))
			}
		}
		return one("truncate", stmts...)
	case k < 96:
		return one("other columns only", sqlop(`UPDATE app.%s SET name = name || 'x' WHERE true`, pick(g, []string{"account", "opportunity"})))
	}
	// A no-op update of attached columns.
	return one("same values", sqlop(`UPDATE app.%s SET owner_id = owner_id, account_id = account_id WHERE true`, pick(g, []string{"opportunity", "contact"})))
}

// --- running a plan.

const liveSchema = `
CREATE SCHEMA app;
CREATE TABLE app.account (id bigint PRIMARY KEY, name text, owner_id text, industry text, revenue numeric,
    vip boolean, priority integer, region varchar(20), status text, territories text[]);
CREATE TABLE app.opportunity (id text PRIMARY KEY, name text, owner_id text, account_id bigint, status text, industry text,
    revenue double precision, priority bigint, vip boolean, region text, closes_on date);
CREATE TABLE app.contact (id uuid PRIMARY KEY, owner_id varchar(64), account_id bigint, industry char(12),
    region text, status text, seen_at timestamptz, note text);`

const liveSpec = `{"objects": [
  {"object": "account", "table": "app.account", "id": "id", "owner": "owner_id", "parent": null,
   "fields": ["industry", "revenue", "vip", "priority", "region", "status"], "territories": "territories"},
  {"object": "opportunity", "table": "app.opportunity", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["status", "industry", "revenue", "priority", "vip", "region", "closes_on"]},
  {"object": "contact", "table": "app.contact", "id": "id", "owner": "owner_id", "parent": "account_id",
   "fields": ["industry", "region", "status", "seen_at"]}
]}`

// liveRows reads the application's rows as records, with the test's own
// SQL, in UTC: object, key, owner, parent, fields, territories, and
// whether the row's values are out of bounds (fails closed).
const liveRows = `
SELECT 'account', 'account:' || id, coalesce(owner_id, ''), '',
    jsonb_build_object('industry', industry, 'revenue', revenue, 'vip', vip, 'priority', priority, 'region', region, 'status', status)::text,
    coalesce(territories, '{}'), (abs(revenue) >= ` + float64Midpoint + ` OR array_position(territories, NULL) IS NOT NULL) IS TRUE
FROM app.account
UNION ALL
SELECT 'opportunity', 'opportunity:' || id, coalesce(owner_id, ''), coalesce('account:' || account_id, ''),
    jsonb_build_object('status', status, 'industry', industry, 'revenue', revenue, 'priority', priority, 'vip', vip, 'region', region, 'closes_on', closes_on)::text,
    '{}', false FROM app.opportunity
UNION ALL
SELECT 'contact', 'contact:' || id, coalesce(owner_id, ''), coalesce('account:' || account_id, ''),
    jsonb_build_object('industry', industry, 'region', region, 'status', status, 'seen_at', seen_at)::text,
    '{}', false FROM app.contact`

type liveResult struct {
	failure, detail string
	order           []int // the steps committed, in commit order
	steps, checks   int
}

// runLiveSeed runs plan p on a new database: concurrently when keep is
// nil, else only the steps keep, one after another in that order, phase by
// phase. It reports the first disagreement instead of failing.
func runLiveSeed(t *testing.T, p *lplan, keep []int) (res liveResult) {
	t.Helper()
	ctx := context.Background()
	b := setup(t)
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.admin, `GRANT CREATE ON DATABASE `+ident(strings.TrimPrefix(u.Path, "/"))+` TO `+ident(b.appRole))
	b.exec(t, b.app, liveSchema, `GRANT USAGE ON SCHEMA app TO `+ident(b.engineRole),
		`GRANT SELECT, TRIGGER ON app.account, app.opportunity, app.contact TO `+ident(b.engineRole))
	// The seed's model replaces the CRM's, then the tables are attached.
	if err := liveImportModel(ctx, b, p.initial, nil); err != nil {
		t.Fatalf("seed %d: initial import: %v", p.seed, err)
	}
	for _, o := range p.initRows {
		b.exec(t, b.app, o.sql)
	}
	b.mustAttach(t, liveSpec)
	for _, o := range p.postRows {
		b.exec(t, b.app, o.sql)
	}
	b.run(t)

	// recalc watch, in-process.
	wctx, stopWatch := context.WithCancel(ctx)
	var stepErrs atomic.Int64
	var lastErr atomic.Value
	var fastSteps, jobSteps atomic.Int64
	live := engine.NewLive(engine.Options{Trigger: "watch", LockTimeout: 2 * time.Second, Retries: 5, Workers: 2, ChunkSize: 7}, p.fast)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = watch.Run(wctx, b.engine, watch.Options{Debounce: time.Millisecond, MaxWait: 10 * time.Millisecond, Poll: 200 * time.Millisecond},
			func(ctx context.Context) error {
				rep, err := live.Step(ctx, b.engine, zerolog.Nop())
				if err != nil {
					if ctx.Err() == nil {
						stepErrs.Add(1)
						lastErr.Store(err.Error())
					}
					return err
				}
				if rep.Fast && rep.Changes > 0 {
					fastSteps.Add(1)
				}
				if rep.Run != nil {
					jobSteps.Add(1)
				}
				return nil
			}, zerolog.Nop())
	}()
	stop := func() { stopWatch(); <-done }
	defer stop()

	var commitSeq atomic.Int64
	var cmu sync.Mutex
	var commits []committedStep
	record := func(i int) {
		cmu.Lock()
		commits = append(commits, committedStep{i, commitSeq.Add(1)})
		cmu.Unlock()
	}
	kept := map[int]bool{}
	for _, i := range keep {
		kept[i] = true
	}
	cur := p.initial
	appURL := dburl.WithUser(b.url, b.appRole)
	conns := make([]*pgx.Conn, lWriters)
	for i := range conns {
		c, err := pgx.Connect(ctx, appURL)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	for ph := 0; ph < p.phases; ph++ {
		byWriter, imports := phaseSteps(p.steps, ph, lWriters, keep, kept)
		var failMu sync.Mutex
		var fail error
		setFail := func(err error) {
			failMu.Lock()
			if fail == nil {
				fail = err
			}
			failMu.Unlock()
		}
		doImport := func(s *lstep) {
			// An import waits for a running job, as an application does.
			for start := time.Now(); ; {
				_, err := store.Import(ctx, b.engine, strings.NewReader(s.file), model.DefaultLimits(), zerolog.Nop(), nil)
				var busy *store.BusyError
				if errors.As(err, &busy) && time.Since(start) < 60*time.Second {
					p.counts.add(fmt.Sprintf("imports retried behind a job (%v)", busy.Status), 1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if err != nil {
					setFail(fmt.Errorf("import #%d (%v): %w", s.idx, s.present, err))
					return
				}
				break
			}
			record(s.idx)
		}
		if keep != nil {
			// Sequential, in the order given.
			for _, i := range keep {
				s := p.steps[i]
				if s.phase != ph {
					continue
				}
				if s.writer < 0 {
					// An import the minimization kept may not fit the
					// configuration without the ones it dropped.
					doImport(s)
					if fail != nil {
						return liveResult{}
					}
					cur = liveMergeKept(p, keep, ph, s.idx)
					if _, err := cur.Validate(); err != nil {
						return liveResult{} // the kept imports do not fit together
					}
					continue
				}
				ok, err := runStep(ctx, conns[0], s, p.counts)
				if err != nil {
					t.Fatalf("seed %d: replay of step #%d: %v", p.seed, s.idx, err)
				}
				if ok {
					record(s.idx)
				}
			}
		} else {
			var wg sync.WaitGroup
			for w := 0; w < lWriters; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(p.seed), uint64(w)))
					for _, s := range byWriter[w] {
						ok, err := runStep(ctx, conns[w], s, p.counts)
						if err != nil {
							setFail(fmt.Errorf("writer %d, step #%d %s: %w", w, s.idx, s.kind, err))
							return
						}
						if ok {
							record(s.idx)
						}
						time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
					}
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, s := range imports {
					time.Sleep(time.Duration(5+p.seed%7) * time.Millisecond)
					doImport(s)
					if s.after != nil {
						cur = s.after
					}
				}
			}()
			wg.Wait()
		}
		if fail != nil {
			t.Fatalf("seed %d, phase %d: %v", p.seed, ph, fail)
		}
		// Checkpoint.
		if err := changes.WaitFresh(ctx, b.engine, 0, 60*time.Second); err != nil {
			res.failure = fmt.Sprintf("phase %d: wait_fresh: %v (watch step errors %d, last %v)", ph, err, stepErrs.Load(), lastErr.Load())
			cmu.Lock()
			res.order = orderOf(commits)
			cmu.Unlock()
			return res
		}
		res.checks++
		if f, d := liveCheck(t, b, cur); f != "" {
			res.failure, res.detail = fmt.Sprintf("phase %d checkpoint: %s", ph, f), d
			cmu.Lock()
			res.order = orderOf(commits)
			cmu.Unlock()
			return res
		}
	}
	stop()
	cmu.Lock()
	res.order = orderOf(commits)
	cmu.Unlock()
	res.steps = len(res.order)
	// A full run must leave the share tables as the live path did.
	before := testdb.Materialized(t, b.admin)
	if _, err := engine.Full(ctx, b.engine, engine.Options{Workers: 2}, zerolog.Nop()); err != nil {
		t.Fatalf("seed %d: full run: %v", p.seed, err)
	}
	if after := testdb.Materialized(t, b.admin); after != before {
		res.failure, res.detail = "the live share tables differ from a full run's", oracle.Diff(after, before)
		return res
	}
	if f, d := liveCheck(t, b, cur); f != "" {
		res.failure, res.detail = "after run --full: "+f, d
	}
	p.counts.add("seeds", 1)
	p.counts.add("steps committed", len(res.order))
	p.counts.add("checkpoints", res.checks)
	p.counts.add("watch fast batches", int(fastSteps.Load()))
	p.counts.add("watch steps that ran a job", int(jobSteps.Load()))
	p.counts.add("watch step errors (retried)", int(stepErrs.Load()))
	if e := lastErr.Load(); e != nil {
		t.Logf("seed %d: %d watch step errors, last: %v", p.seed, stepErrs.Load(), e)
	}
	return res
}

// committedStep is a step that committed, and when (a counter).
type committedStep struct {
	idx int
	seq int64
}

func orderOf(cs []committedStep) []int {
	xs := slices.Clone(cs)
	sort.Slice(xs, func(i, j int) bool { return xs[i].seq < xs[j].seq })
	out := make([]int, len(xs))
	for i := range xs {
		out[i] = xs[i].idx
	}
	return out
}

// liveMergeKept is the configuration after the imports of keep up to
// (and including) step last, as the oracle merges them.
func liveMergeKept(p *lplan, keep []int, phase, last int) *model.Model {
	cur := p.initial
	for _, i := range keep {
		s := p.steps[i]
		if s.writer >= 0 {
			continue
		}
		m, f, err := model.Parse(strings.NewReader(s.file))
		if err != nil {
			panic(err)
		}
		cur = oracle.Merge(cur, m, f)
		if i == last {
			break
		}
	}
	return cur
}

// runStep runs s as one transaction on c. It reports whether it
// committed; a deadlock, serialization failure or unique violation rolls
// it back (false, no error).
func runStep(ctx context.Context, c *pgx.Conn, s *lstep, counts *liveCounts) (bool, error) {
	if _, err := c.Exec(ctx, `SET TimeZone = `+q(s.tz)); err != nil {
		return false, err
	}
	errRollback := errors.New("rollback")
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		for _, o := range s.ops {
			if o.table != "" {
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{"app", o.table}, o.cols, pgx.CopyFromRows(o.rows)); err != nil {
					return fmt.Errorf("copy into %s: %w", o.table, err)
				}
				continue
			}
			if _, err := tx.Exec(ctx, o.sql); err != nil {
				return fmt.Errorf("%s: %w", o.sql, err)
			}
		}
		if s.rollback {
			return errRollback
		}
		return nil
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errRollback):
		return false, nil
	case pg.IsRetryable(err) || sqlState(err) == "23505":
		counts.add("steps rolled back ("+sqlState(err)+")", 1)
		return false, nil
	}
	return false, err
}

// liveCheck holds the materialized access, every (user, record), and
// access_level on the application's ids of a sample, to the oracle's for
// config with the application's rows as records.
func liveCheck(t *testing.T, b *bundle, config *model.Model) (failure, detail string) {
	t.Helper()
	ctx := context.Background()
	expected, attached, err := liveExpected(ctx, b, config)
	if err != nil {
		t.Fatal(err)
	}
	rows := oracle.Access(expected)
	want := oracle.CSV(rows)
	got := testkit.AccessCSV(t, ctx, b.engine)
	if got != want {
		return "access differs from the oracle's", oracle.Diff(want, got) + "\n" + liveRecordDiag(t, b, want, got)
	}
	// access_level by the application's ids, on a sample.
	level := map[[2]string]string{}
	for _, r := range rows {
		level[[2]string{r.User, r.Record}] = r.Level.String()
	}
	n := 0
	for _, r := range attached {
		for _, u := range expected.Users {
			if n++; n%7 != 0 {
				continue
			}
			obj, id, _ := strings.Cut(r, ":")
			var l string
			if err := b.engine.QueryRow(ctx, `SELECT recalc.access_level($1, $2, $3::text)`, u.ID, obj, id).Scan(&l); err != nil {
				t.Fatal(err)
			}
			w := level[[2]string{u.ID, r}]
			if w == "" {
				w = "none"
			}
			if l != w {
				return "access_level by application id differs", fmt.Sprintf("access_level(%s, %s, %s) = %s, want %s", u.ID, obj, id, l, w)
			}
		}
	}
	return "", ""
}

// liveRecordDiag shows, for the records whose access differs, the
// application's row and recalc.record's.
func liveRecordDiag(t *testing.T, b *bundle, want, got string) string {
	ids := map[string]bool{}
	for _, l := range strings.Split(oracle.Diff(want, got), "\n") {
		parts := strings.Split(strings.TrimPrefix(strings.TrimPrefix(l, "< "), "> "), ",")
		if len(parts) >= 2 {
			ids[parts[1]] = true
		}
	}
	var out strings.Builder
	for id := range ids {
		var rec, inv string
		_ = b.admin.QueryRow(context.Background(), `SELECT coalesce((SELECT row_to_json(r)::text FROM recalc.record r WHERE id = $1), 'no record'),
			coalesce((SELECT string_agg(reason, ';') FROM recalc.invalid_record WHERE record = $1), '')`, id).Scan(&rec, &inv)
		fmt.Fprintf(&out, "%s: recalc.record %s invalid %q\n", id, rec, inv)
	}
	return out.String()
}

// liveExpected is config with the application's rows as its records,
// less the rows that fail closed (docs/attach.md): an owner that is no
// user or queue, a territory the model lacks, values out of bounds, a
// parent missing or invalid. It returns the keys of the attached rows.
func liveExpected(ctx context.Context, b *bundle, config *model.Model) (*model.Model, []string, error) {
	type row struct {
		object, id, owner, parent string
		fields                    model.Fields
		terr                      []string
		bad                       bool
	}
	var rows []*row
	err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL TimeZone = 'UTC'`); err != nil {
			return err
		}
		rs, err := tx.Query(ctx, liveRows)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			r := &row{}
			var f string
			var terr []*string
			if err := rs.Scan(&r.object, &r.id, &r.owner, &r.parent, &f, &terr, &r.bad); err != nil {
				return err
			}
			for _, x := range terr {
				if x == nil {
					r.bad = true
				} else {
					r.terr = append(r.terr, *x)
				}
			}
			if r.bad {
				rows = append(rows, r) // fails closed: its fields do not matter
				continue
			}
			if err := json.Unmarshal([]byte(f), &r.fields); err != nil {
				return fmt.Errorf("fields of %s: %s: %w", r.id, f, err)
			}
			rows = append(rows, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, nil, err
	}
	users, queues, terrs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, u := range config.Users {
		users[u.ID] = true
	}
	for _, g := range config.Groups {
		if g.Queue {
			queues[g.ID] = true
		}
	}
	for _, tr := range config.Territories {
		terrs[tr.ID] = true
	}
	byID := map[string]*row{}
	for _, r := range rows {
		byID[r.id] = r
	}
	memo := map[string]bool{}
	var valid func(r *row) bool
	valid = func(r *row) bool {
		if v, ok := memo[r.id]; ok {
			return v
		}
		memo[r.id] = false
		ok := !r.bad && (users[r.owner] || queues[r.owner])
		for _, tr := range r.terr {
			ok = ok && terrs[tr]
		}
		if ok && r.parent != "" {
			p := byID[r.parent]
			ok = p != nil && p.object == model.Account && valid(p)
		}
		memo[r.id] = ok
		return ok
	}
	m := &model.Model{Config: config.Config, Records: slices.Clone(config.Records), Shares: config.Shares, Teams: config.Teams}
	var keys []string
	for _, r := range rows {
		keys = append(keys, r.id)
		if !valid(r) {
			continue
		}
		rec := model.Record{Object: r.object, ID: r.id, Owner: r.owner, Parent: r.parent, Fields: r.fields}
		if r.object == model.Account {
			rec.Territories = r.terr
		}
		m.Records = append(m.Records, rec)
	}
	if _, err := m.Validate(); err != nil {
		return nil, nil, fmt.Errorf("the expected model is invalid (a bug of the test): %w", err)
	}
	return m, keys, nil
}

// liveImportModel imports m (the sections present, every one when nil).
func liveImportModel(ctx context.Context, b *bundle, m *model.Model, present []string) error {
	var buf bytes.Buffer
	if err := model.Encode(&buf, m, present); err != nil {
		return err
	}
	_, err := store.Import(ctx, b.engine, &buf, model.DefaultLimits(), zerolog.Nop(), nil)
	return err
}

// phaseSteps splits the steps of phase ph among its writers, and lists its
// imports: all of them, or only those kept names when keep is not nil.
func phaseSteps(steps []*lstep, ph, writers int, keep []int, kept map[int]bool) (byWriter [][]*lstep, imports []*lstep) {
	byWriter = make([][]*lstep, writers)
	for _, s := range steps {
		if s.phase != ph || (keep != nil && !kept[s.idx]) {
			continue
		}
		if s.writer < 0 {
			imports = append(imports, s)
		} else {
			byWriter[s.writer] = append(byWriter[s.writer], s)
		}
	}
	return byWriter, imports
}
