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
	"regexp"
	"slices"
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
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/internal/watch"
	"github.com/recalc-dev/recalc/schema"
)

// TestLiveUsersDefer is a random differential campaign of the live path
// with the application's users table attached beside its object tables
// (docs/attach.md, "Attaching the users"). While `recalc watch` (watch.Run
// stepping an engine.Live) runs in-process, three connections write the
// object tables (TestLiveCampaign's steps) and a fourth writes the users
// table: activations and deactivations (NULL included), role changes (to
// roles the model has, roles a later import adds, roles it lacks, none),
// type changes (internal, external, NULL, an unknown type), new users,
// deleted users, id changes, multi-row updates, a truncate refilled in the
// same transaction, a row holding a queue's id, rolled-back work.
// Meanwhile model imports change roles (added, re-parented, removed), groups
// (roles, role_and_subordinates and users as members, new groups), rules
// (shared with roles, role_and_subordinates, groups, users) and OWDs.
//
// A phase is live (with a concurrent `recalc run --full` now and then), or
// deferred: `recalc defer` (both sides, or --rules or --closure), the
// writes and imports, `recalc run` (must change nothing), then
// recalc.wait_fresh on a token taken after a users-table write must raise
// RC001 (README "Read your writes": a deferred side's changes stay in the
// log), and with both sides deferred the materialized access must not have
// moved; then `recalc resume`. After every phase it waits with
// recalc.wait_fresh and holds every (user, record) access, and the stored
// users section, to what the application's tables say by the rules of
// docs/attach.md (computed by the test, with internal/oracle); at the end a
// full run must leave the share tables as they are.
//
// Seeds 1 and 2 always run. The campaign runs when RECALC_USERS_CAMPAIGN is
// set:
//
//	RECALC_USERS_CAMPAIGN=1 USERS_CAMPAIGN_SEED_START=5000 USERS_CAMPAIGN_SEEDS=200 USERS_CAMPAIGN_MINUTES=10
//
// A failing seed is replayed sequentially (its committed steps in commit
// order); LIVE_USERS_REPLAY=SEED:i,j,k replays those steps of SEED, and
// LIVE_USERS_MINIMIZE=1 minimizes a failing sequential replay.
func TestLiveUsersDefer(t *testing.T) {
	if r := os.Getenv("LIVE_USERS_REPLAY"); r != "" {
		seedS, idx, _ := strings.Cut(r, ":")
		seed, _ := strconv.Atoi(seedS)
		var keep []int
		for _, s := range strings.Split(idx, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				keep = append(keep, n)
			}
		}
		p := usersPlan(seed, &liveCounts{n: map[string]int{}})
		res := runUsersSeed(t, p, keep)
		t.Logf("replay of seed %d (phases %v, fast path batches of %d) with steps %v: %s\n%s", seed, p.phaseKinds(), p.fast, keep, orStr(res.failure, "agrees"), res.detail)
		if res.failure != "" && os.Getenv("LIVE_USERS_MINIMIZE") != "" {
			small := minimizeUsers(t, p, keep)
			final := runUsersSub(t, p, small)
			t.Logf("minimized to steps %v (LIVE_USERS_REPLAY=%d:%s):\n%s\n%s\n%s", small, seed, joinInts(small), p.describe(small), final.failure, final.detail)
		}
		return
	}
	if os.Getenv("RECALC_USERS_CAMPAIGN") == "" {
		t.Parallel()
		for _, seed := range []int{1, 2} { // one at a time: each holds a dozen connections
			t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) { usersCampaignSeed(t, seed, &liveCounts{n: map[string]int{}}) })
		}
		return
	}
	campaignSeeds(t, "USERS_CAMPAIGN", 5000, 2, usersCampaignSeed)
}

func usersCampaignSeed(t *testing.T, seed int, counts *liveCounts) {
	t.Helper()
	p := usersPlan(seed, counts)
	res := runUsersSeed(t, p, nil)
	if res.failure == "" {
		t.Logf("seed %d: %d steps committed, %d checkpoints, phases %v", seed, res.steps, res.checks, p.phaseKinds())
		return
	}
	report := fmt.Sprintf("seed %d: %s\n%s\ncommitted steps in commit order (LIVE_USERS_REPLAY=%d:%s):\n%s", seed, res.failure, res.detail,
		seed, joinInts(res.order), p.describe(res.order))
	seq := runUsersSub(t, p, res.order)
	report += fmt.Sprintf("\nsequential replay of the committed steps: %s %s", orStr(seq.failure, "agrees (a race)"), seq.detail)
	if seq.failure != "" && os.Getenv("LIVE_USERS_MINIMIZE") != "" {
		small := minimizeUsers(t, p, res.order)
		final := runUsersSub(t, p, small)
		report += fmt.Sprintf("\nminimized to steps %v (LIVE_USERS_REPLAY=%d:%s):\n%s\n%s\n%s", small, seed, joinInts(small), p.describe(small), final.failure, final.detail)
	}
	t.Fatal(report)
}

// minimizeUsers is ddmin over the steps keep, replayed sequentially.
func minimizeUsers(t *testing.T, p *uplan, keep []int) []int {
	fails := func(c []int) bool { return runUsersSub(t, p, c).failure != "" }
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

// runUsersSub is runUsersSeed in a subtest of its own, so that each
// replay's database and connections go when it ends.
func runUsersSub(t *testing.T, p *uplan, keep []int) (res liveResult) {
	t.Run("replay", func(t *testing.T) { res = runUsersSeed(t, p, keep) })
	return res
}

// --- the plan.

const (
	uObjectWriters = 3
	uUsersWriter   = 3 // the writer index of the users table's connection
	uSentinel      = "zz_sentinel"
)

// uphase is what a phase does besides the writes and imports.
type uphase struct {
	deferred bool
	sides    []string // the flags of `recalc defer`: none (both sides), --rules or --closure
	full     bool     // a `recalc run --full` while the writes go on (live phases)
}

type uplan struct {
	*lplan
	userRows  []lop    // the users table's rows, before the attach
	stable    []string // users never deleted nor renamed: imports may name them
	mutable   []string // users that writers delete, re-insert and rename
	rolePool  []string // roles a writer gives users: the model's, later imports', unknown
	extraRole []string // roles an import may add
	uphases   []uphase
}

func (p *uplan) phaseKinds() []string {
	var out []string
	for _, ph := range p.uphases {
		switch {
		case ph.deferred:
			out = append(out, "deferred"+strings.Join(ph.sides, ""))
		case ph.full:
			out = append(out, "live+full")
		default:
			out = append(out, "live")
		}
	}
	return out
}

// usersSpec attaches liveSpec's objects and app.app_user.
var uSpec = strings.TrimSuffix(strings.TrimSpace(liveSpec), "}") +
	`, "users": {"table": "app.app_user", "id": "id", "role": "role_id", "type": "kind", "active": "active"}}`

const uUsersTable = `CREATE TABLE app.app_user (id text PRIMARY KEY, name text, role_id text, kind text, active boolean)`

func usersPlan(seed int, counts *liveCounts) *uplan {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x05e5))
	lp := &lplan{seed: seed, fast: []int{1000, 1000, 4, 1}[rng.IntN(4)], counts: counts}
	p := &uplan{lplan: lp, extraRole: []string{"rx1", "rx2", "rx3"}}
	m := oracle.RandomModel(rng, 10+rng.IntN(25))
	liveSanitize(m)
	liveExtraRules(rng, m)
	if _, err := m.Validate(); err != nil {
		panic(fmt.Sprintf("seed %d: initial model invalid: %v", seed, err))
	}
	lp.initial = m
	for _, r := range m.Roles {
		p.rolePool = append(p.rolePool, r.ID)
	}
	p.rolePool = append(p.rolePool, p.extraRole...)
	p.rolePool = append(p.rolePool, "nosuch")
	// The users table holds the model's users (its truth from the attach
	// on); some of them may go, and new ones come.
	for _, u := range m.Users {
		lp.users = append(lp.users, u.ID)
		if rng.IntN(3) == 0 {
			p.mutable = append(p.mutable, u.ID)
		} else {
			p.stable = append(p.stable, u.ID)
		}
		role := "NULL"
		if u.Role != "" {
			role = q(u.Role)
		}
		kind := []string{"NULL", "'internal'"}[rng.IntN(2)]
		if u.External {
			kind = "'external'"
		}
		p.userRows = append(p.userRows, lop{sql: fmt.Sprintf(`INSERT INTO app.app_user (id, name, role_id, kind, active) VALUES (%s, 'n', %s, %s, %v)`,
			q(u.ID), role, kind, u.Active)})
	}
	if len(p.stable) == 0 {
		p.stable, p.mutable = p.mutable[:1], p.mutable[1:]
	}
	p.userRows = append(p.userRows, lop{sql: `INSERT INTO app.app_user (id, name, role_id, kind, active) VALUES ('` + uSentinel + `', 's', NULL, NULL, true)`})
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("nu%d", i)
		p.mutable = append(p.mutable, id)
		lp.users = append(lp.users, id) // records may name them before they exist
	}
	for _, g := range m.Groups {
		if g.Queue {
			lp.queues = append(lp.queues, g.ID)
		}
	}
	for _, tr := range m.Territories {
		lp.territory = append(lp.territory, tr.ID)
	}
	g := &lgen{rng: rng, p: lp}
	for i := 0; i < 6+rng.IntN(8); i++ {
		lp.initRows = append(lp.initRows, g.insertAccount(int64(1+i)))
	}
	for i := 0; i < 4+rng.IntN(6); i++ {
		lp.initRows = append(lp.initRows, g.insertOpp(fmt.Sprintf("o%d", i)), g.insertContact(i))
	}
	for i := 0; i < 2; i++ {
		lp.postRows = append(lp.postRows, g.insertAccount(int64(20+i)), g.insertOpp(fmt.Sprintf("o%d", 20+i)))
	}
	lp.phases = 4 + rng.IntN(3)
	cur := m
	nImport := 0
	for ph := 0; ph < lp.phases; ph++ {
		up := uphase{}
		// Phase 1 is always deferred, so that every seed defers.
		if ph == 1 || (ph > 1 && rng.IntN(2) == 0) {
			up.deferred = true
			switch rng.IntN(5) {
			case 0:
				up.sides = []string{"--rules"}
			case 1:
				up.sides = []string{"--closure"}
			}
		} else {
			up.full = rng.IntN(3) == 0
		}
		p.uphases = append(p.uphases, up)
		for w := 0; w < uObjectWriters; w++ {
			wr := rand.New(rand.NewPCG(uint64(seed), uint64(1000*ph+w)))
			wg := &lgen{rng: wr, p: lp, writer: w, phase: ph}
			for i, n := 0, 4+wr.IntN(8); i < n; i++ {
				s := wg.step()
				s.phase, s.writer, s.idx = ph, w, len(lp.steps)
				lp.steps = append(lp.steps, s)
			}
		}
		ur := rand.New(rand.NewPCG(uint64(seed), uint64(1000*ph+uUsersWriter)))
		ug := &ugen{rng: ur, p: p}
		for i, n := 0, 6+ur.IntN(10); i < n; i++ {
			s := ug.step()
			s.phase, s.writer, s.idx = ph, uUsersWriter, len(lp.steps)
			lp.steps = append(lp.steps, s)
		}
		for i, n := 0, 1+rng.IntN(3); i < n; i++ {
			s, next := usersImport(rng, cur, p, &nImport)
			if s == nil {
				continue
			}
			cur = next
			s.phase, s.writer, s.idx = ph, -1, len(lp.steps)
			lp.steps = append(lp.steps, s)
		}
	}
	lp.finalModel = cur
	return p
}

// ugen makes the users writer's steps.
type ugen struct {
	rng *rand.Rand
	p   *uplan
}

func (g *ugen) pick(xs ...string) string { return xs[g.rng.IntN(len(xs))] }
func (g *ugen) role() string {
	switch k := g.rng.IntN(20); {
	case k < 2:
		return "NULL"
	case k < 3:
		return "'nosuch'"
	case k < 6:
		return q(g.pick(g.p.extraRole...))
	}
	return q(g.pick(g.p.rolePool...))
}
func (g *ugen) kind() string {
	return g.pick("NULL", "NULL", "'internal'", "'internal'", "'external'", "'external'", "'alien'")
}
func (g *ugen) active() string { return g.pick("true", "true", "true", "false", "false", "NULL") }
func (g *ugen) anyUser() string {
	all := append(slices.Clone(g.p.stable), g.p.mutable...)
	return q(g.pick(all...))
}
func (g *ugen) mutableUser() string { return q(g.pick(g.p.mutable...)) }

func (g *ugen) step() *lstep {
	s := &lstep{tz: "UTC"}
	one := func(kind string, stmts ...string) *lstep {
		s.kind = kind
		for _, st := range stmts {
			s.ops = append(s.ops, lop{sql: st})
		}
		return s
	}
	switch k := g.rng.IntN(100); {
	case k < 18:
		return one("user active", fmt.Sprintf(`UPDATE app.app_user SET active = %s WHERE id = %s`, g.active(), g.anyUser()))
	case k < 34:
		return one("user role", fmt.Sprintf(`UPDATE app.app_user SET role_id = %s WHERE id = %s`, g.role(), g.anyUser()))
	case k < 46:
		return one("user type", fmt.Sprintf(`UPDATE app.app_user SET kind = %s WHERE id = %s`, g.kind(), g.anyUser()))
	case k < 58:
		return one("user insert", fmt.Sprintf(`INSERT INTO app.app_user (id, name, role_id, kind, active) VALUES (%s, 'new', %s, %s, %s) ON CONFLICT (id) DO NOTHING`,
			g.mutableUser(), g.role(), g.kind(), g.active()))
	case k < 68:
		return one("user delete", fmt.Sprintf(`DELETE FROM app.app_user WHERE id = %s`, g.mutableUser()))
	case k < 74:
		return one("user id change", fmt.Sprintf(`UPDATE app.app_user SET id = %s WHERE id = %s`, g.mutableUser(), g.mutableUser()))
	case k < 79:
		return one("users multi-row active", fmt.Sprintf(`UPDATE app.app_user SET active = NOT coalesce(active, false) WHERE id <> '%s' AND md5(id) < %s`,
			uSentinel, q(fmt.Sprintf("%x", g.rng.IntN(16)))))
	case k < 83:
		return one("users multi-row role", fmt.Sprintf(`UPDATE app.app_user SET role_id = %s WHERE id <> '%s' AND md5(id || 'r') < %s`,
			g.role(), uSentinel, q(fmt.Sprintf("%x", g.rng.IntN(16)))))
	case k < 86:
		return one("user other columns only", `UPDATE app.app_user SET name = name || '.' WHERE true`)
	case k < 89:
		s.rollback = true
		return one("users rolled back", `UPDATE app.app_user SET active = false WHERE true`, fmt.Sprintf(`DELETE FROM app.app_user WHERE id = %s`, g.anyUser()))
	case k < 91 && len(g.p.queues) > 0:
		return one("user row with a queue's id", fmt.Sprintf(`INSERT INTO app.app_user (id, name, role_id, active) VALUES (%s, 'q', %s, true) ON CONFLICT (id) DO NOTHING`,
			q(g.pick(g.p.queues...)), g.role()))
	case k < 93:
		// Truncated and refilled at once: the stable users are never missing
		// from a committed table, so that imports may name them.
		stmts := []string{`TRUNCATE app.app_user`,
			`INSERT INTO app.app_user (id, name, role_id, kind, active) VALUES ('` + uSentinel + `', 's', NULL, NULL, true)`}
		for _, u := range g.p.stable {
			stmts = append(stmts, fmt.Sprintf(`INSERT INTO app.app_user (id, name, role_id, kind, active) VALUES (%s, 'refill', %s, %s, %s)`, q(u), g.role(), g.kind(), g.active()))
		}
		return one("users truncate and refill", stmts...)
	case k < 96:
		return one("user same values", `UPDATE app.app_user SET role_id = role_id, kind = kind, active = active WHERE true`)
	}
	return one("user role and back", fmt.Sprintf(`UPDATE app.app_user SET role_id = 'nosuch' WHERE id = %s`, g.anyUser()),
		`UPDATE app.app_user SET role_id = role_id WHERE true`)
}

// usersImport is a random import over cur that names no user but the
// stable ones: roles, groups, rules or objects. Nil when none fits.
func usersImport(rng *rand.Rand, cur *model.Model, p *uplan, n *int) (*lstep, *model.Model) {
	pickS := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	roleIDs := func(m *model.Model) []string {
		var out []string
		for _, r := range m.Roles {
			out = append(out, r.ID)
		}
		return out
	}
	var groupIDs []string
	for _, g := range cur.Groups {
		if !g.Queue {
			groupIDs = append(groupIDs, g.ID)
		}
	}
	grantee := func(m *model.Model, users bool) model.Grantee {
		roles := roleIDs(m)
		for {
			switch rng.IntN(6) {
			case 0:
				if len(roles) > 0 {
					return model.Grantee{Kind: model.GRole, ID: pickS(roles)}
				}
			case 1, 2:
				if len(roles) > 0 {
					return model.Grantee{Kind: model.GRoleAndSubordinates, ID: pickS(roles)}
				}
			case 3:
				if len(groupIDs) > 0 {
					return model.Grantee{Kind: model.GGroup, ID: pickS(groupIDs)}
				}
			case 4:
				if users {
					return model.Grantee{Kind: model.GUser, ID: pickS(p.stable)}
				}
			case 5:
				if len(roles) > 0 {
					return model.Grantee{Kind: model.GRoleAndInternalSubordinates, ID: pickS(roles)}
				}
			}
		}
	}
	cbp := func(m *model.Model, o string) bool {
		for _, ob := range m.Objects {
			if ob.Name == o {
				return ob.CBP()
			}
		}
		return true
	}
	rule := func(m *model.Model, id string) (model.Rule, bool) {
		obj := pickS([]string{model.Account, model.Account, model.Opportunity, model.Contact, model.Case, model.Lead})
		if cbp(m, obj) {
			return model.Rule{}, false
		}
		r := model.Rule{ID: id, Object: obj, Target: grantee(m, true), Access: model.Read + model.Level(rng.IntN(2))}
		if obj == model.Account && rng.IntN(2) == 0 {
			r.Child = model.ChildAccess{Contact: model.Level(rng.IntN(3)), Opportunity: model.Level(rng.IntN(3)), Case: model.Level(rng.IntN(3))}
		}
		conds := map[string][]model.Condition{
			model.Account: {{Field: "industry", Op: model.OpEquals, Value: model.Str("Tech")}, {Field: "vip", Op: model.OpEquals, Value: model.Bol(true)},
				{Field: "revenue", Op: model.OpGE, Value: model.Num(100)}, {Field: "priority", Op: model.OpGE, Value: model.Num(2)}},
			model.Opportunity: {{Field: "status", Op: model.OpEquals, Value: model.Str("Closed")}, {Field: "revenue", Op: model.OpGE, Value: model.Num(3)}},
			model.Contact:     {{Field: "region", Op: model.OpEquals, Value: model.Str("Retail")}, {Field: "status", Op: model.OpStartsWith, Value: model.Str("Esc")}},
		}[obj]
		if len(conds) == 0 || rng.IntN(2) == 0 {
			r.Type, r.Source = model.OwnerRule, grantee(m, false)
			return r, true
		}
		c, err := model.NewCriteria([]model.Condition{conds[rng.IntN(len(conds))]}, "")
		if err != nil {
			panic(err)
		}
		r.Type, r.Criteria = model.CriteriaRule, c
		return r, true
	}
	for try := 0; try < 20; try++ {
		next := &model.Model{Config: cur.Config, Records: cur.Records, Shares: cur.Shares, Teams: cur.Teams}
		var present []string
		switch rng.IntN(8) {
		case 0, 1: // a rule added or replaced, or removed
			next.Rules = slices.Clone(cur.Rules)
			if len(next.Rules) > 0 && rng.IntN(4) == 0 {
				i := rng.IntN(len(cur.Rules))
				next.Rules = slices.Delete(slices.Clone(cur.Rules), i, i+1)
			} else {
				*n++
				r, ok := rule(next, fmt.Sprintf("ur%d", *n))
				if !ok {
					continue
				}
				next.Rules = append(next.Rules, r)
			}
			present = []string{"rules"}
		case 2, 3: // a group's members change, or a new group of roles and a rule to it
			next.Groups = slices.Clone(cur.Groups)
			if len(groupIDs) > 0 && rng.IntN(3) > 0 {
				gid := pickS(groupIDs)
				i := slices.IndexFunc(next.Groups, func(g model.Group) bool { return g.ID == gid })
				grp := &next.Groups[i]
				grp.Members = slices.Clone(grp.Members)
				if len(grp.Members) > 1 && rng.IntN(3) == 0 {
					j := rng.IntN(len(grp.Members))
					grp.Members = slices.Delete(grp.Members, j, j+1)
				} else {
					mem := grantee(next, true)
					if mem.Kind == model.GGroup || slices.Contains(grp.Members, mem) {
						continue // nesting is left to the initial model: no cycles
					}
					grp.Members = append(grp.Members, mem)
				}
				grp.IncludeBosses = rng.IntN(2) == 0
				present = []string{"groups"}
			} else {
				*n++
				grp := model.Group{ID: fmt.Sprintf("ug%d", *n), IncludeBosses: rng.IntN(2) == 0}
				for i := 0; i < 1+rng.IntN(3); i++ {
					mem := grantee(next, true)
					if mem.Kind != model.GGroup && !slices.Contains(grp.Members, mem) {
						grp.Members = append(grp.Members, mem)
					}
				}
				if len(grp.Members) == 0 {
					continue
				}
				next.Groups = append(next.Groups, grp)
				r, ok := rule(next, fmt.Sprintf("ur%d", *n))
				if !ok {
					continue
				}
				r.Target = model.Grantee{Kind: model.GGroup, ID: grp.ID}
				next.Rules = append(slices.Clone(cur.Rules), r)
				present = []string{"groups", "rules"}
			}
		case 4, 5: // roles: added, re-parented, removed, their child access
			next.Roles = slices.Clone(cur.Roles)
			roles := roleIDs(cur)
			switch rng.IntN(4) {
			case 0:
				var free []string
				for _, x := range p.extraRole {
					if !slices.Contains(roles, x) {
						free = append(free, x)
					}
				}
				if len(free) == 0 {
					continue
				}
				r := model.Role{ID: pickS(free)}
				if len(roles) > 0 && rng.IntN(4) > 0 {
					r.Parent = pickS(roles)
				}
				next.Roles = append(next.Roles, r)
			case 1:
				if len(roles) == 0 {
					continue
				}
				i := rng.IntN(len(next.Roles))
				next.Roles[i].Parent = ""
				if rng.IntN(4) > 0 {
					next.Roles[i].Parent = pickS(roles) // a cycle is refused by Validate below
				}
			case 2:
				if len(roles) == 0 {
					continue
				}
				i := rng.IntN(len(next.Roles))
				next.Roles = slices.Delete(next.Roles, i, i+1) // unless something names it
			default:
				if len(roles) == 0 {
					continue
				}
				i := rng.IntN(len(next.Roles))
				next.Roles[i].Child = model.ChildAccess{Contact: model.Level(rng.IntN(3)), Opportunity: model.Level(rng.IntN(3)), Case: model.Level(rng.IntN(3))}
			}
			present = []string{"roles"}
		default: // an OWD or the hierarchy flag
			next.Objects = slices.Clone(cur.Objects)
			o := &next.Objects[rng.IntN(len(next.Objects))]
			if o.CBP() {
				continue
			}
			if !model.IsStandard(o.Name) && rng.IntN(3) == 0 {
				o.Hierarchy = !o.Hierarchy
			} else {
				o.InternalOWD = model.OWD(rng.IntN(3))
				o.ExternalOWD = model.OWD(rng.IntN(int(o.InternalOWD) + 1))
			}
			present = []string{"objects"}
		}
		// Validate against every user the model may have, with no role (an
		// attached user whose role goes becomes inactive, docs/attach.md):
		// the configuration, and the records, shares and teams that name it.
		vm := *next
		vm.Users = nil
		for _, u := range p.initial.Users {
			vm.Users = append(vm.Users, model.User{ID: u.ID, Active: true})
		}
		if _, err := vm.Validate(); err != nil {
			continue
		}
		var buf bytes.Buffer
		if err := model.Encode(&buf, next, present); err != nil {
			panic(err)
		}
		return &lstep{kind: "import", file: buf.String(), present: present, after: next}, next
	}
	return nil, cur
}

// --- running a plan.

// urun is one run of a plan on a database of its own (runUsersSeed).
type urun struct {
	t     *testing.T
	ctx   context.Context
	p     *uplan
	b     *bundle
	keep  []int // nil: concurrently; else only these steps, one after another
	kept  map[int]bool
	conns []*pgx.Conn
	// cur is the configuration the product must hold: the imports it had
	// to take, not the ones its rules refuse.
	cur       *model.Model
	stepErrs  atomic.Int64 // watch steps that failed (and were retried)
	lastErr   atomic.Value
	commitSeq atomic.Int64
	cmu       sync.Mutex
	commits   []committedStep
	res       liveResult
}

// record notes that step i committed (or, an import, ran), now.
func (r *urun) record(i int) {
	r.cmu.Lock()
	r.commits = append(r.commits, committedStep{i, r.commitSeq.Add(1)})
	r.cmu.Unlock()
}

// fail is the run's result with failure f (detail d) and the steps so far.
func (r *urun) fail(f, d string) liveResult {
	r.res.failure, r.res.detail = f, d
	r.cmu.Lock()
	r.res.order = orderOf(r.commits)
	r.cmu.Unlock()
	return r.res
}

// uMismatch is an import that did not do what the product's rules say it
// must: a failure of the run (replayed, minimized), not of the harness.
type uMismatch struct{ failure, detail string }

func (m *uMismatch) Error() string { return m.failure }

func runUsersSeed(t *testing.T, p *uplan, keep []int) liveResult {
	t.Helper()
	r := &urun{t: t, ctx: context.Background(), p: p, keep: keep, kept: map[int]bool{}, cur: p.initial}
	for _, i := range keep {
		r.kept[i] = true
	}
	r.b = uSetupSeed(t, p)
	if f, d := usersCheck(t, r.b, p.initial); f != "" {
		return r.fail("after the attach and a run: "+f, d)
	}
	stop := r.startWatch()
	defer stop()
	appURL := dburl.WithUser(r.b.url, r.b.appRole)
	r.conns = make([]*pgx.Conn, uUsersWriter+1)
	for i := range r.conns {
		c, err := pgx.Connect(r.ctx, appURL)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		r.conns[i] = c
	}
	for ph, up := range p.uphases {
		if f, d := r.phase(ph, up); f != "" {
			return r.fail(f, d)
		}
	}
	stop()
	return r.finish()
}

// uSetupSeed makes p's database: the tables, the initial model, the rows,
// the attach (the users table's included) and a run.
func uSetupSeed(t *testing.T, p *uplan) *bundle {
	t.Helper()
	ctx := context.Background()
	b := setup(t)
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.admin, `GRANT CREATE ON DATABASE `+ident(strings.TrimPrefix(u.Path, "/"))+` TO `+ident(b.appRole))
	b.exec(t, b.app, liveSchema, uUsersTable, `GRANT USAGE ON SCHEMA app TO `+ident(b.engineRole),
		`GRANT SELECT, TRIGGER ON app.account, app.opportunity, app.contact, app.app_user TO `+ident(b.engineRole))
	if err := liveImportModel(ctx, b, p.initial, nil); err != nil {
		t.Fatalf("seed %d: initial import: %v", p.seed, err)
	}
	for _, o := range append(slices.Clone(p.initRows), p.userRows...) {
		b.exec(t, b.app, o.sql)
	}
	b.mustAttach(t, uSpec)
	for _, o := range p.postRows {
		b.exec(t, b.app, o.sql)
	}
	b.run(t)
	return b
}

// startWatch runs `recalc watch` in-process; the function returned stops
// it (once).
func (r *urun) startWatch() (stop func()) {
	wctx, stopWatch := context.WithCancel(r.ctx)
	live := engine.NewLive(engine.Options{Trigger: "watch", LockTimeout: 2 * time.Second, Retries: 5, Workers: 2, ChunkSize: 7}, r.p.fast)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = watch.Run(wctx, r.b.engine, watch.Options{Debounce: time.Millisecond, MaxWait: 10 * time.Millisecond, Poll: 200 * time.Millisecond},
			func(ctx context.Context) error {
				_, err := live.Step(ctx, r.b.engine, zerolog.Nop())
				if err != nil && ctx.Err() == nil {
					r.stepErrs.Add(1)
					r.lastErr.Store(err.Error())
				}
				return err
			}, zerolog.Nop())
	}()
	stopped := false
	return func() {
		if !stopped {
			stopped = true
			stopWatch()
			<-done
		}
	}
}

// phase runs phase ph: its writes and imports (and deferral, and full
// run), then the checkpoint. It returns the first disagreement.
func (r *urun) phase(ph int, up uphase) (failure, detail string) {
	t, p, b, ctx := r.t, r.p, r.b, r.ctx
	var snapshot string
	if up.deferred {
		if out, err := b.recalc(append([]string{"defer"}, up.sides...)...); err != nil {
			t.Fatalf("seed %d, phase %d: recalc defer %v: %v\n%s", p.seed, ph, up.sides, err, out)
		}
		p.counts.add("deferrals "+orStr(strings.Join(up.sides, ""), "both"), 1)
		// A step that started before the deferral reads what commits
		// while it runs; `recalc defer` returns once it has ended
		// (TestDeferWaitsForStepInFlight), so none writes after this.
		snapshot = testkit.AccessCSV(t, ctx, b.engine)
	}
	var failMu sync.Mutex
	var stepFail error
	setFail := func(err error) {
		failMu.Lock()
		if stepFail == nil {
			stepFail = err
		}
		failMu.Unlock()
	}
	if r.keep != nil {
		r.sequential(ph, up, setFail)
	} else {
		r.concurrent(ph, up, setFail)
	}
	if m := (*uMismatch)(nil); errors.As(stepFail, &m) {
		return fmt.Sprintf("phase %d: %s", ph, m.failure), m.detail
	}
	if stepFail != nil {
		t.Fatalf("seed %d, phase %d: %v", p.seed, ph, stepFail)
	}
	if up.deferred {
		if f, d := r.deferredChecks(ph, up, snapshot); f != "" {
			return f, d
		}
	}
	if err := changes.WaitFresh(ctx, b.engine, 0, 60*time.Second); err != nil {
		return fmt.Sprintf("phase %d: wait_fresh: %v (watch step errors %d, last %v)", ph, err, r.stepErrs.Load(), r.lastErr.Load()), ""
	}
	r.res.checks++
	if f, d := usersCheck(t, b, r.cur); f != "" {
		return fmt.Sprintf("phase %d (%s) checkpoint: %s", ph, p.phaseKinds()[ph], f), d
	}
	return "", ""
}

// fullRun is a `recalc run --full` beside the writes.
func (r *urun) fullRun(setFail func(error)) {
	if out, err := r.b.recalc("run", "--full"); err != nil {
		setFail(fmt.Errorf("recalc run --full: %w\n%s", err, out))
		return
	}
	r.p.counts.add("run --full beside the writes", 1)
}

// sequential runs the kept steps of phase ph one after another, in the
// order kept.
func (r *urun) sequential(ph int, up uphase, setFail func(error)) {
	for _, i := range r.keep {
		s := r.p.steps[i]
		if s.phase != ph {
			continue
		}
		if s.writer < 0 {
			if err := r.doImport(s); err != nil {
				setFail(err)
				return
			}
			continue
		}
		ok, err := runStep(r.ctx, r.conns[0], s, r.p.counts)
		if err != nil {
			r.t.Fatalf("seed %d: replay of step #%d: %v", r.p.seed, s.idx, err)
		}
		if ok {
			r.record(s.idx)
		}
	}
	if up.full {
		r.fullRun(setFail)
	}
}

// concurrent runs the steps of phase ph: each writer's on its connection,
// the imports, and the full run, all at once.
func (r *urun) concurrent(ph int, up uphase, setFail func(error)) {
	p := r.p
	byWriter, imports := phaseSteps(p.steps, ph, uUsersWriter+1, r.keep, r.kept)
	var wg sync.WaitGroup
	for w := 0; w <= uUsersWriter; w++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p.seed), uint64(w)))
			for _, s := range byWriter[w] {
				ok, err := runStep(r.ctx, r.conns[w], s, p.counts)
				if err != nil {
					setFail(fmt.Errorf("writer %d, step #%d %s: %w", w, s.idx, s.kind, err))
					return
				}
				if ok {
					r.record(s.idx)
					p.counts.add("committed: "+s.kind, 1)
				}
				time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
			}
		})
	}
	wg.Go(func() {
		for _, s := range imports {
			time.Sleep(time.Duration(5+p.seed%7) * time.Millisecond)
			if err := r.doImport(s); err != nil {
				setFail(err)
				return
			}
		}
	})
	if up.full {
		wg.Go(func() {
			time.Sleep(time.Duration(10+p.seed%13) * time.Millisecond)
			r.fullRun(setFail)
		})
	}
	wg.Wait()
}

// deferredChecks ends a deferred phase: a users-table write, `recalc run`
// (changing nothing), wait_fresh (RC001), the access unmoved when both
// sides are deferred, and `recalc resume`.
func (r *urun) deferredChecks(ph int, up uphase, snapshot string) (failure, detail string) {
	t, b, ctx := r.t, r.b, r.ctx
	// A users-table write that changes a user: its change is one a
	// deferred side keeps (README, "Read your writes"). It flips what the
	// table holds: a truncate and refill of the users writer sets the
	// sentinel active again, so a flag the test kept could be a write of
	// the same value (seed 791, LIVE_USERS_REPLAY=791:105).
	b.exec(t, b.app, fmt.Sprintf(`UPDATE app.app_user SET active = NOT active WHERE id = '%s'`, uSentinel))
	token, err := changes.FreshToken(ctx, b.engine)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := b.recalc("run"); err != nil {
		return fmt.Sprintf("phase %d (deferred %v): recalc run while deferred: %v", ph, up.sides, err), out
	}
	time.Sleep(50 * time.Millisecond) // let watch absorb the write, if it does while deferred
	err = changes.WaitFresh(ctx, b.engine, token, 200*time.Millisecond)
	if !changes.IsNotFresh(err) {
		return fmt.Sprintf("phase %d (deferred %v): wait_fresh after a users-table write while deferred returned %v, want RC001 (not fresh)", ph, up.sides, err), ""
	}
	if err := changes.WaitFresh(ctx, b.engine, 0, 100*time.Millisecond); !changes.IsNotFresh(err) {
		return fmt.Sprintf("phase %d (deferred %v): wait_fresh() while deferred returned %v, want RC001", ph, up.sides, err), ""
	}
	if len(up.sides) == 0 {
		if got := testkit.AccessCSV(t, ctx, b.engine); got != snapshot {
			return fmt.Sprintf("phase %d: access moved while both sides were deferred", ph), oracle.Diff(snapshot, got)
		}
	}
	if out, err := b.recalc("resume"); err != nil {
		return fmt.Sprintf("phase %d: recalc resume: %v", ph, err), out
	}
	return "", ""
}

// finish, once the watch is stopped, holds the share tables to a full
// run's, and the access after it to the oracle's.
func (r *urun) finish() liveResult {
	t, p, b := r.t, r.p, r.b
	r.cmu.Lock()
	r.res.order = orderOf(r.commits)
	r.cmu.Unlock()
	res := r.res
	res.steps = len(res.order)
	before := testdb.Materialized(t, b.admin)
	if _, err := engine.Full(r.ctx, b.engine, engine.Options{Workers: 2}, zerolog.Nop()); err != nil {
		t.Fatalf("seed %d: full run: %v", p.seed, err)
	}
	if after := testdb.Materialized(t, b.admin); after != before {
		d := oracle.Diff(after, before)
		res.failure, res.detail = "the live share tables differ from a full run's (< full run, > live)", d+"\n"+uMaterializedDiag(t, b, d)
		if f, d := usersCheck(t, b, r.cur); f != "" {
			res.detail += "\nand after the full run: " + f + "\n" + d
		} else {
			res.detail += "\nthe full run's access agrees with the oracle's"
		}
		return res
	}
	if f, d := usersCheck(t, b, r.cur); f != "" {
		res.failure, res.detail = "after run --full: "+f, d
	}
	if e := r.lastErr.Load(); e != nil {
		t.Logf("seed %d: %d watch step errors, last: %v", p.seed, r.stepErrs.Load(), e)
	}
	p.counts.add("seeds", 1)
	p.counts.add("checkpoints", res.checks)
	return res
}

// doImport runs import s as an application does (waiting behind a running
// job), and holds what it did to what the product's rules say it must do
// (uExpectImport): taken, and r.cur becomes the configuration it leads
// to, or refused, and r.cur stays. A disagreement is a *uMismatch.
func (r *urun) doImport(s *lstep) error {
	for start := time.Now(); ; {
		next, refused, err := uImportTx(r.ctx, r.b, s, r.cur)
		var busy *store.BusyError
		if errors.As(err, &busy) && time.Since(start) < 60*time.Second {
			r.p.counts.add("imports retried behind a job", 1)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			if m := (*uMismatch)(nil); errors.As(err, &m) {
				return err
			}
			return fmt.Errorf("import #%d (%v): %w\n%s", s.idx, s.present, err, s.file)
		}
		if refused {
			r.p.counts.add("imports refused, as they must be", 1)
		} else {
			r.p.counts.add("imports "+strings.Join(s.present, "+"), 1)
		}
		r.cur = next
		r.record(s.idx) // replayed too: taken or refused again, as the state then says
		return nil
	}
}

// uImportTx imports s as store.Import does, in a transaction that first
// takes the model lock and absorbs, the users too (as the import does,
// first) and, under
// it, reads what the import is checked against: nothing else may change it
// until the import ends, since the watch's and the jobs' absorbing hold
// that lock too. It reports the configuration after the import (cur when it
// was refused) and whether it was refused; an import that does other than
// uExpectImport says is a *uMismatch.
func uImportTx(ctx context.Context, b *bundle, s *lstep, cur *model.Model) (next *model.Model, refused bool, err error) {
	errRefused := errors.New("refused, as it must be")
	err = pgx.BeginFunc(ctx, b.engine, func(tx pgx.Tx) error {
		if err := schema.LockModel(ctx, tx); err != nil {
			return err
		}
		if _, _, err := changes.Absorb(ctx, tx, 0); err != nil {
			return err
		}
		if _, err := store.SyncAttachedUsers(ctx, tx); err != nil {
			return err
		}
		exp, err := uExpectImport(ctx, tx, cur, s)
		if err != nil {
			return fmt.Errorf("predict the import: %w", err)
		}
		_, err = store.ImportTx(ctx, tx, strings.NewReader(s.file), model.DefaultLimits(), zerolog.Nop())
		if inv := (*store.InvalidError)(nil); err != nil && !errors.As(err, &inv) {
			return err // busy behind a job, or worse: not a refusal
		}
		if m := exp.mismatch(s, err); m != nil {
			return m
		}
		next = exp.next
		if err != nil {
			return errRefused // nothing stored: the next checkpoint holds the database to cur
		}
		return nil
	})
	if errors.Is(err, errRefused) {
		return cur, true, nil
	}
	return next, false, err
}

// uExpect is what an import must do.
type uExpect struct {
	next    *model.Model    // the configuration after it, when it is taken
	refuse  error           // the first check it fails; nil: it must be taken
	broken  map[string]bool // the records it would break, when refuse is theirs
	explain string          // the users it was checked against
}

// uExpectImport is what import s over cur must do, by the rules of
// docs/attach.md ("While the users are attached") and docs/semantics.md
// (an import without records "fails on a record that was valid and that
// its own configuration change would break"), from what the product holds
// now: the users table's rows as last absorbed (recalc.attached_user), the
// users section as last built, and the records (an attached object's rows
// as last absorbed). The users of the merged configuration are the
// absorbed rows (less queues' ids) and a stub for every other user its
// groups, territories, rules, shares and team entries name; a stub must
// stand for a user the stored section has. The import is refused when the
// merged configuration is invalid with those users, or when a record valid
// with the stored configuration is not with the merged one, or a share or
// team entry is not.
func uExpectImport(ctx context.Context, tx pgx.Tx, cur *model.Model, s *lstep) (*uExpect, error) {
	fm, ff, err := model.Parse(strings.NewReader(s.file))
	if err != nil {
		return nil, err
	}
	exp := &uExpect{next: oracle.Merge(cur, fm, ff), broken: map[string]bool{}}
	rows, err := tx.Query(ctx, `SELECT id FROM recalc.attached_user ORDER BY id`)
	if err != nil {
		return nil, err
	}
	absorbed, err := pgx.CollectRows(rows, pgx.RowTo[*string])
	if err != nil {
		return nil, err
	}
	var doc []byte
	if err := tx.QueryRow(ctx, `SELECT doc FROM recalc.model_section WHERE name = 'users'`).Scan(&doc); err != nil {
		return nil, err
	}
	var stored []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(doc, &stored); err != nil {
		return nil, err
	}
	before := cur.Config
	before.Users = nil
	known := map[string]bool{}
	for _, u := range stored {
		known[u.ID] = true
		before.Users = append(before.Users, model.User{ID: u.ID, Active: true}) // a record needs its owner to exist, whatever its role
	}
	bix, err := before.Validate()
	if err != nil {
		return nil, fmt.Errorf("the stored users section with the expected configuration: %w", err)
	}
	after := exp.next.Config
	var stubs []string
	after.Users, stubs, exp.refuse = uUsersAfter(absorbed, cur, exp.next, known)
	exp.explain = fmt.Sprintf("users as last absorbed %v; stored users section %v; stubs after the import %v", derefs(absorbed), slices.Sorted(maps.Keys(known)), stubs)
	if exp.refuse != nil {
		return exp, nil
	}
	ix, err := after.ValidateLimited(model.DefaultLimits())
	if err != nil {
		exp.refuse = err
		return exp, nil
	}
	objects, err := uCheckRecords(ctx, tx, bix, ix, exp)
	if err != nil || exp.refuse != nil {
		return exp, err
	}
	for i := range exp.next.Shares {
		sh := &exp.next.Shares[i]
		if err := ix.CheckShareRefs(sh, objects[sh.Record]); err != nil {
			exp.refuse = err
			return exp, nil
		}
	}
	for i := range exp.next.Teams {
		tm := &exp.next.Teams[i]
		if err := ix.CheckTeamRefs(tm, objects[tm.Record]); err != nil {
			exp.refuse = err
			return exp, nil
		}
	}
	return exp, nil
}

// uUsersAfter is the users of next (ids only, with no role), made of the
// absorbed rows of the users table and the stubs it names (also
// returned). A row holding the id of a queue next has and cur lacks, or a
// stub for a user the stored section lacks (known), refuses the import.
func uUsersAfter(absorbed []*string, cur, next *model.Model, known map[string]bool) (users []model.User, stubs []string, refuse error) {
	queuesBefore, queues := uQueues(cur), uQueues(next)
	lim := model.DefaultLimits()
	have := map[string]bool{}
	for _, id := range absorbed {
		switch {
		case id == nil || *id == "" || int64(len(*id)) > lim.IDBytes || strings.ContainsRune(*id, 0) || have[*id]:
			continue
		case queues[*id]:
			if !queuesBefore[*id] && refuse == nil {
				refuse = fmt.Errorf("group %q: a queue cannot share its id with a user of the attached users table", *id)
			}
			continue
		}
		have[*id] = true
		users = append(users, model.User{ID: *id, Active: true})
	}
	for _, id := range uNamedUsers(next) {
		if !have[id] && !queues[id] {
			have[id] = true
			stubs = append(stubs, id)
			users = append(users, model.User{ID: id})
			if !known[id] && refuse == nil {
				refuse = fmt.Errorf("user %q does not exist: the users are attached, so add it to their table (recalc attach --list), then import again", id)
			}
		}
	}
	slices.SortFunc(users, func(a, b model.User) int { return strings.Compare(a.ID, b.ID) })
	return users, stubs, refuse
}

// uCheckRecords sets exp.refuse, and exp.broken, when a stored record
// valid by bix (the stored configuration) is invalid by ix (the merged
// one). It returns the records' objects.
func uCheckRecords(ctx context.Context, tx pgx.Tx, bix, ix *model.Index, exp *uExpect) (map[string]string, error) {
	rows, err := tx.Query(ctx, `SELECT r.id, r.object, r.owner, coalesce(r.parent, ''), coalesce(p.object, ''), `+changes.ReadTerritories("r.territories")+`
		FROM recalc.record r LEFT JOIN recalc.record p ON p.id = r.parent ORDER BY r.id`)
	if err != nil {
		return nil, err
	}
	objects := map[string]string{}
	var rec model.Record
	var parentObject string
	_, err = pgx.ForEachRow(rows, []any{&rec.ID, &rec.Object, &rec.Owner, &rec.Parent, &parentObject, &rec.Territories}, func() error {
		objects[rec.ID] = rec.Object
		check := func(ix *model.Index) error {
			if err := ix.CheckRecordRefs(&rec); err != nil {
				return err
			}
			return ix.CheckRecordParent(&rec, parentObject)
		}
		if err := check(ix); err != nil && check(bix) == nil {
			exp.broken[rec.ID] = true
			if exp.refuse == nil {
				exp.refuse = err
			}
		}
		return nil
	})
	return objects, err
}

// mismatch is nil when the import's outcome got (nil, or its
// *store.InvalidError) is what e says; a refusal of a record must name one
// it breaks, and any other one must say what e.refuse says.
func (e *uExpect) mismatch(s *lstep, got error) error {
	var want string
	switch {
	case e.refuse == nil && got == nil:
		return nil
	case e.refuse == nil:
		want = "taken"
	case got == nil:
		want = "refused: " + e.refuse.Error()
	case len(e.broken) > 0:
		m := regexp.MustCompile(`^invalid model: record "([^"]*)": `).FindStringSubmatch(got.Error())
		if m != nil && e.broken[m[1]] {
			return nil
		}
		want = fmt.Sprintf("refused naming one of the records it breaks %v: %v", slices.Sorted(maps.Keys(e.broken)), e.refuse)
	case got.Error() == (&store.InvalidError{Err: e.refuse}).Error():
		return nil
	default:
		want = "refused: " + e.refuse.Error()
	}
	return &uMismatch{fmt.Sprintf("import #%d (%v): got %v, want %s", s.idx, s.present, orStr(fmt.Sprint(got), "taken"), want),
		fmt.Sprintf("%s\nfile: %s", e.explain, s.file)}
}

// uQueues is the ids of m's queues.
func uQueues(m *model.Model) map[string]bool {
	out := map[string]bool{}
	for _, g := range m.Groups {
		if g.Queue {
			out[g.ID] = true
		}
	}
	return out
}

// uNamedUsers lists the users m's groups, territories, rules, team
// entries and shares name, in that order, each once.
func uNamedUsers(m *model.Model) []string {
	var out []string
	seen := map[string]bool{}
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	grantee := func(g model.Grantee) {
		if g.Kind == model.GUser {
			add(g.ID)
		}
	}
	for _, g := range m.Groups {
		for _, mem := range g.Members {
			grantee(mem)
		}
	}
	for _, tr := range m.Territories {
		for _, u := range tr.Users {
			add(u)
		}
	}
	for _, r := range m.Rules {
		grantee(r.Source)
		grantee(r.Target)
	}
	for _, tm := range m.Teams {
		add(tm.User)
	}
	for _, s := range m.Shares {
		grantee(s.Grantee)
	}
	return out
}

func derefs(xs []*string) []string {
	var out []string
	for _, x := range xs {
		if x != nil {
			out = append(out, *x)
		}
	}
	return out
}

// usersExpected is the users section the users table gives config, by
// docs/attach.md's rules, computed by the test: a row whose id is a
// queue's is no user; a role the model lacks, a type other than internal
// and external (NULL: internal) or a NULL active make an inactive user with
// no role; active false keeps the role and type; a user that a group,
// territory, rule, team entry or share names and the table lacks is an
// inactive stub with no role.
func usersExpected(t *testing.T, b *bundle, config *model.Model) []model.User {
	t.Helper()
	roles, queues := map[string]bool{}, map[string]bool{}
	for _, r := range config.Roles {
		roles[r.ID] = true
	}
	for _, g := range config.Groups {
		if g.Queue {
			queues[g.ID] = true
		}
	}
	rows, err := b.admin.Query(context.Background(), `SELECT id, role_id, kind, active FROM app.app_user ORDER BY id COLLATE "C"`)
	if err != nil {
		t.Fatal(err)
	}
	var users []model.User
	have := map[string]bool{}
	var id string
	var role, kind *string
	var active *bool
	if _, err := pgx.ForEachRow(rows, []any{&id, &role, &kind, &active}, func() error {
		if queues[id] {
			return nil
		}
		u := model.User{ID: id}
		ok := active != nil
		if role != nil && *role != "" { // '' is no role, as NULL (docs/attach.md)
			u.Role = *role
			ok = ok && roles[*role]
		}
		if kind != nil {
			switch *kind {
			case "internal", "": // '' is internal, as NULL
			case "external":
				u.External = true
			default:
				ok = false
			}
		}
		if ok {
			u.Active = *active
		} else {
			u.Role, u.Active = "", false
		}
		have[id] = true
		users = append(users, u)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range uNamedUsers(config) {
		if !have[id] && !queues[id] {
			have[id] = true
			users = append(users, model.User{ID: id})
		}
	}
	slices.SortFunc(users, func(a, b model.User) int { return strings.Compare(a.ID, b.ID) })
	return users
}

// usersCheck holds the stored users section, and every (user, record)
// access, to what the application's tables say for config (its users
// replaced by the users table's).
func usersCheck(t *testing.T, b *bundle, config *model.Model) (failure, detail string) {
	t.Helper()
	users := usersExpected(t, b, config)
	// The stored users section first: it says why access would differ.
	stored := storedUsers(t, b)
	var diffs []string
	for _, u := range users {
		s, ok := stored[u.ID]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("user %s missing from the stored users section, want %+v", u.ID, u))
			continue
		}
		got := model.User{ID: u.ID, Role: fmt.Sprint(s["role"]), External: s["type"] == "external", Active: s["active"] != false}
		if s["role"] == nil {
			got.Role = ""
		}
		if got != u {
			diffs = append(diffs, fmt.Sprintf("user %s stored %+v, want %+v", u.ID, got, u))
		}
		delete(stored, u.ID)
	}
	for id, s := range stored {
		diffs = append(diffs, fmt.Sprintf("user %s stored %v, want no such user", id, s))
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		var rows strings.Builder
		r, _ := b.admin.Query(context.Background(), `SELECT row_to_json(u)::text FROM app.app_user u ORDER BY id`)
		for r.Next() {
			var s string
			_ = r.Scan(&s)
			rows.WriteString("  " + s + "\n")
		}
		r.Close()
		return "the stored users section differs from the users table's", strings.Join(diffs, "\n") + "\nusers table:\n" + rows.String()
	}
	// The imported records (of the objects not attached) whose owner or
	// parent is no more are invalid: no access (docs/attach.md, "Imports,
	// model changes and table changes").
	m := &model.Model{Config: config.Config}
	m.Users = users
	owners := map[string]bool{}
	for _, u := range users {
		owners[u.ID] = true
	}
	for _, g := range config.Groups {
		if g.Queue {
			owners[g.ID] = true
		}
	}
	byID := map[string]*model.Record{}
	for i := range config.Records {
		byID[config.Records[i].ID] = &config.Records[i]
	}
	memo := map[string]bool{}
	var valid func(r *model.Record) bool
	valid = func(r *model.Record) bool {
		if v, ok := memo[r.ID]; ok {
			return v
		}
		memo[r.ID] = false
		ok := owners[r.Owner]
		if ok && r.Parent != "" {
			pr := byID[r.Parent]
			ok = pr != nil && valid(pr)
		}
		memo[r.ID] = ok
		return ok
	}
	kept := map[string]bool{}
	for i := range config.Records {
		if r := &config.Records[i]; valid(r) {
			m.Records = append(m.Records, *r)
			kept[r.ID] = true
		}
	}
	for _, s := range config.Shares {
		if kept[s.Record] {
			m.Shares = append(m.Shares, s)
		}
	}
	for _, tm := range config.Teams {
		if kept[tm.Record] {
			m.Teams = append(m.Teams, tm)
		}
	}
	return liveCheck(t, b, m)
}

// uTinyModel is a small model over liveSpec's objects.
const uTinyModel = `{"version": 1,
  "objects": [{"name": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "opportunity", "parent": "account", "internal_owd": "private", "external_owd": "private"},
    {"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}],
  "roles": [{"id": "r1"}, {"id": "r2", "parent": "r1"}],
  "users": [{"id": "alice", "role": "r1"}, {"id": "bob", "role": "r2"}],
  "groups": [{"id": "q1", "queue": true, "members": ["user:alice"]}], "territories": [], "rules": [], "records": []}`

// setupTiny creates liveSchema and the users table (alice, bob), imports
// uTinyModel and attaches spec, then runs.
func setupTiny(t *testing.T, spec string) *bundle {
	t.Helper()
	ctx := context.Background()
	b := setup(t)
	b.exec(t, b.admin, `GRANT CREATE ON DATABASE `+ident(dbName(t, b.url))+` TO `+ident(b.appRole))
	b.exec(t, b.app, liveSchema, uUsersTable, `GRANT USAGE ON SCHEMA app TO `+ident(b.engineRole),
		`GRANT SELECT, TRIGGER ON app.account, app.opportunity, app.contact, app.app_user TO `+ident(b.engineRole),
		`INSERT INTO app.app_user VALUES ('alice', 'a', 'r1', NULL, true), ('bob', 'b', 'r2', NULL, true)`)
	if _, err := testkit.ImportString(ctx, b.engine, uTinyModel); err != nil {
		t.Fatal(err)
	}
	b.mustAttach(t, spec)
	b.run(t)
	return b
}

// uCompareFull fails unless a full run leaves the share tables as they are.
func uCompareFull(t *testing.T, b *bundle, after string) {
	t.Helper()
	before := testdb.Materialized(t, b.admin)
	b.full(t)
	if got := testdb.Materialized(t, b.admin); got != before {
		t.Errorf("%s: the share tables differ from a full run's (< full run, > incremental)\n%s", after, oracle.Diff(got, before))
	}
}

// TestUsersNewOwnerRevalidatesChildren: an account owned by a user the
// model does not have yet is an invalid record, and so is its child
// opportunity. Once the user appears (a row of the attached users table,
// or an import of users), the next run must make both valid: "a user ...
// added makes valid the records that named it before it existed (the next
// run recomputes those records)" (docs/attach.md).
func TestUsersNewOwnerRevalidatesChildren(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, spec string
		addUser    func(t *testing.T, b *bundle)
	}{
		{"users attached", uSpec, func(t *testing.T, b *bundle) {
			b.exec(t, b.app, `INSERT INTO app.app_user VALUES ('nu0', 'n', 'r2', NULL, true)`)
		}},
		{"users imported", liveSpec, func(t *testing.T, b *bundle) {
			if _, err := testkit.ImportString(context.Background(), b.engine,
				`{"users": [{"id": "alice", "role": "r1"}, {"id": "bob", "role": "r2"}, {"id": "nu0", "role": "r2"}]}`); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupTiny(t, tc.spec)
			b.exec(t, b.app, `INSERT INTO app.account (id, name, owner_id) VALUES (30, 'a', 'nu0')`,
				`INSERT INTO app.opportunity (id, name, owner_id, account_id) VALUES ('c', 'o', 'bob', 30)`)
			b.run(t)
			tc.addUser(t, b)
			b.run(t)
			if l := levelOf(t, b, "bob", "opportunity:c"); l != "all" {
				t.Errorf("bob on his opportunity:c, whose account's owner nu0 now exists: %s, want all", l)
			}
			if l := levelOf(t, b, "nu0", "account:30"); l != "all" {
				t.Errorf("nu0 on its account:30: %s, want all", l)
			}
			uCompareFull(t, b, "after the owner appeared")
		})
	}
}

// uMaterializedDiag shows recalc.record's row, its invalid reasons, and its
// parent's, for the records a Materialized diff names.
func uMaterializedDiag(t *testing.T, b *bundle, diff string) string {
	t.Helper()
	var out strings.Builder
	seen := map[string]bool{}
	for _, l := range strings.Split(diff, "\n") {
		f := strings.Fields(strings.TrimLeft(l, "<> "))
		if len(f) < 2 || f[0] != "record" && f[0] != "share" || seen[f[1]] {
			continue
		}
		seen[f[1]] = true
		var rec, inv, par string
		_ = b.admin.QueryRow(context.Background(), `SELECT coalesce((SELECT row_to_json(r)::text FROM recalc.record r WHERE id = $1), 'no record'),
			coalesce((SELECT string_agg(reason, ';') FROM recalc.invalid_record WHERE record = $1), ''),
			coalesce((SELECT row_to_json(p)::text || ' invalid: ' || coalesce((SELECT string_agg(reason, ';') FROM recalc.invalid_record WHERE record = p.id), '')
			          FROM recalc.record r JOIN recalc.record p ON p.id = r.parent WHERE r.id = $1), 'no parent record')`, f[1]).Scan(&rec, &inv, &par)
		fmt.Fprintf(&out, "%s: recalc.record %s invalid %q; parent %s\n", f[1], rec, inv, par)
	}
	return out.String()
}

// TestOrphanAdoptedThenOrphanedAgain: an opportunity whose account does not
// exist yet is invalid, its own family root; the account is inserted (the
// opportunity joins its family and becomes valid), then deleted again (the
// opportunity is its own root again, invalid). However the runs go (plain
// runs, or the delete made while calculation is deferred, then resumed),
// they must leave the share tables as a full run does. Minimized from
// TestLiveUsersDefer seed 1 (LIVE_USERS_REPLAY=1:35,110).
func TestOrphanAdoptedThenOrphanedAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		deferDelete   []string // `recalc defer` flags around the delete; nil: no deferral
		watchInsteadR bool
	}{
		{"runs", nil, false},
		{"watch", nil, true},
		{"delete deferred (both sides)", []string{}, false},
		{"delete deferred (--rules)", []string{"--rules"}, false},
		{"delete deferred (--closure)", []string{"--closure"}, false},
		{"delete deferred (--rules), watch", []string{"--rules"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setupTiny(t, uSpec)
			live := engine.NewLive(engine.Options{}, 1000)
			step := func() {
				t.Helper()
				if !tc.watchInsteadR {
					b.run(t)
					return
				}
				for range 2 {
					if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
						t.Fatal(err)
					}
				}
			}
			b.exec(t, b.app, `INSERT INTO app.opportunity (id, name, owner_id, account_id) VALUES ('o20', 'o', 'bob', 22)`)
			step()
			b.exec(t, b.app, `INSERT INTO app.account (id, name, owner_id) VALUES (22, 'a', 'alice')`)
			step()
			if l := levelOf(t, b, "bob", "opportunity:o20"); l != "all" {
				t.Errorf("bob on opportunity:o20 once its account exists: %s, want all", l)
			}
			if tc.deferDelete != nil {
				if out, err := b.recalc(append([]string{"defer"}, tc.deferDelete...)...); err != nil {
					t.Fatal(err, out)
				}
			}
			b.exec(t, b.app, `DELETE FROM app.account WHERE id = 22`)
			step()
			if tc.deferDelete != nil {
				if out, err := b.recalc("resume"); err != nil {
					t.Fatal(err, out)
				}
				step()
			}
			if l := levelOf(t, b, "bob", "opportunity:o20"); l != "none" {
				t.Errorf("bob on opportunity:o20 once its account is gone: %s, want none", l)
			}
			// docs/attach.md, "Rows that fail closed": an invalid record is
			// "listed in recalc.invalid_record with its reason".
			var listed int
			if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.invalid_record WHERE record = 'opportunity:o20'`).Scan(&listed); err != nil {
				t.Fatal(err)
			}
			if listed != 1 {
				t.Errorf("opportunity:o20, whose account is gone, is listed %d times in recalc.invalid_record, want once", listed)
			}
			uCompareFull(t, b, "after the account was inserted and deleted again")
		})
	}
}
