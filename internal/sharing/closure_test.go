package sharing

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/cputime"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
)

// ref computes members and bosses the plain way, straight from the
// definitions, as the closure did before it was made linear.
type ref struct{ ix *model.Index }

func (r ref) ancestors(role string) []string {
	var out []string
	for x := r.ix.Roles[role]; x != nil && x.Parent != ""; x = r.ix.Roles[x.Parent] {
		out = append(out, x.Parent)
	}
	return out
}

func (r ref) below(role string) []string {
	out := []string{role}
	for i := 0; i < len(out); i++ {
		for _, x := range r.ix.Config.Roles {
			if x.Parent == out[i] {
				out = append(out, x.ID)
			}
		}
	}
	return out
}

func (r ref) roleUsers(set map[string]bool, roles []string, internalOnly, inactive bool) {
	for _, u := range r.ix.Config.Users {
		if slices.Contains(roles, u.Role) && u.Role != "" && (inactive || u.Active) && (!internalOnly || !u.External) {
			set[u.ID] = true
		}
	}
}

func (r ref) members(set map[string]bool, g model.Grantee, inactive bool, seen map[string]bool) {
	switch g.Kind {
	case model.GUser:
		if u := r.ix.Users[g.ID]; u != nil && (inactive || u.Active) {
			set[u.ID] = true
		}
	case model.GRole:
		r.roleUsers(set, []string{g.ID}, false, inactive)
	case model.GRoleAndSubordinates:
		r.roleUsers(set, r.below(g.ID), false, inactive)
	case model.GRoleAndInternalSubordinates:
		r.roleUsers(set, r.below(g.ID), true, inactive)
	case model.GAllInternalUsers:
		for _, u := range r.ix.Config.Users {
			if (inactive || u.Active) && !u.External {
				set[u.ID] = true
			}
		}
	case model.GGroup:
		if seen[g.ID] {
			return
		}
		seen[g.ID] = true
		for _, m := range r.ix.Groups[g.ID].Members {
			r.members(set, m, inactive, seen)
		}
	case model.GTerritory:
		for t := r.ix.Territories[g.ID]; t != nil; t = r.ix.Territories[t.Parent] {
			for _, id := range t.Users {
				if inactive || r.ix.Users[id].Active {
					set[id] = true
				}
			}
		}
	}
}

func (r ref) bosses(g model.Grantee) map[string]bool {
	set := map[string]bool{}
	switch g.Kind {
	case model.GUser:
		if u := r.ix.Users[g.ID]; u != nil && u.Role != "" {
			r.roleUsers(set, r.ancestors(u.Role), false, false)
		}
	case model.GRole, model.GRoleAndSubordinates, model.GRoleAndInternalSubordinates:
		r.roleUsers(set, r.ancestors(g.ID), false, false)
	case model.GGroup:
		if !r.ix.Groups[g.ID].IncludeBosses {
			break
		}
		o := &Org{ix: r.ix}
		for _, m := range o.flatten(g.ID) {
			maps.Copy(set, r.bosses(m))
		}
	}
	return set
}

func (r ref) closure(g model.Grantee) []Member {
	mem := map[string]bool{}
	r.members(mem, g, false, map[string]bool{})
	var out []Member
	for u := range mem {
		out = append(out, Member{User: u})
	}
	for u := range r.bosses(g) {
		if !mem[u] {
			out = append(out, Member{User: u, Boss: true})
		}
	}
	slices.SortFunc(out, func(a, b Member) int {
		if a.User < b.User {
			return -1
		}
		return 1
	})
	return out
}

// shuffled returns m's configuration with every section in random order,
// so that children often come before their parents.
func shuffled(rng *rand.Rand, m *model.Model) *model.Config {
	c := m.Config
	c.Roles, c.Users, c.Groups, c.Territories = slices.Clone(c.Roles), slices.Clone(c.Users), slices.Clone(c.Groups), slices.Clone(c.Territories)
	rng.Shuffle(len(c.Roles), func(i, j int) { c.Roles[i], c.Roles[j] = c.Roles[j], c.Roles[i] })
	rng.Shuffle(len(c.Users), func(i, j int) { c.Users[i], c.Users[j] = c.Users[j], c.Users[i] })
	rng.Shuffle(len(c.Groups), func(i, j int) { c.Groups[i], c.Groups[j] = c.Groups[j], c.Groups[i] })
	rng.Shuffle(len(c.Territories), func(i, j int) { c.Territories[i], c.Territories[j] = c.Territories[j], c.Territories[i] })
	return &c
}

// TestClosureMatchesDefinitions holds the closure, members_all and the
// closure estimate against the plain definitions on random models.
func TestClosureMatchesDefinitions(t *testing.T) {
	t.Parallel()
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 99))
		m := oracle.RandomModel(rng, 20+int(seed%80))
		ix, err := shuffled(rng, m).Validate()
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		o, r := NewOrg(ix), ref{ix}
		total := int64(0)
		for _, g := range o.Grantees() {
			got, want := o.Closure(g), r.closure(g)
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d: closure of %s is %v, want %v", seed, g, got, want)
			}
			total += int64(len(got))
			if g.Kind == model.GTerritory {
				continue // not a rule source
			}
			all := map[string]bool{}
			r.members(all, g, true, map[string]bool{})
			if got := o.MembersAll(g); !maps.Equal(got, all) {
				t.Fatalf("seed %d: members_all of %s is %v, want %v", seed, g, got, all)
			}
		}
		if est := o.ClosureEstimate(); est < total {
			t.Fatalf("seed %d: closure estimate %d is under the closure's %d entries", seed, est, total)
		}
	}
}

// TestClosureEstimateExact checks the estimate on hierarchies where it is
// exact: roles and users only.
func TestClosureEstimateExact(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 10, 50} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			ix := roleChain(t, n, true)
			o := NewOrg(ix)
			total := int64(0)
			for _, g := range o.Grantees() {
				total += int64(len(o.Closure(g)))
			}
			if est := o.ClosureEstimate(); est != total {
				t.Fatalf("estimate %d, closure %d entries", est, total)
			}
		})
	}
}

// roleChain returns a chain of n roles, listed bottom first, with one user
// in each role when everyRole is true, else users at the top and the bottom.
func roleChain(t testing.TB, n int, everyRole bool) *model.Index {
	c := &model.Config{}
	for i := n - 1; i >= 0; i-- {
		r := model.Role{ID: fmt.Sprintf("r%d", i)}
		if i > 0 {
			r.Parent = fmt.Sprintf("r%d", i-1)
		}
		c.Roles = append(c.Roles, r)
		if everyRole || i == 0 || i == n-1 {
			c.Users = append(c.Users, model.User{ID: fmt.Sprintf("u%d", i), Role: r.ID, Active: true})
		}
	}
	lim := model.DefaultLimits()
	lim.RoleDepth = 0
	ix, err := c.ValidateLimited(lim)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// TestDeepHierarchiesCostTheirOutput validates and computes the whole
// closure of hierarchies that took minutes when each grantee walked its
// ancestors and each group re-walked its nested groups' bosses: a chain of
// 20,000 roles, and 400 nested groups with include_bosses over a 400-role
// chain. The bound is on the processor time the computation spends, not
// the time elapsed, which the other subtest and a loaded machine stretch
// (past 10 s once each, against 0.5 and 0.8 s of processor time under
// -race, loaded or not); a role tree that walked each role's ancestors
// spends 5.6 s of it on the chain.
func TestDeepHierarchiesCostTheirOutput(t *testing.T) {
	t.Parallel()
	nested := func(t testing.TB) *model.Index {
		const n = 400
		c := &model.Config{}
		for i := range n {
			r := model.Role{ID: fmt.Sprintf("r%d", i)}
			if i > 0 {
				r.Parent = fmt.Sprintf("r%d", i-1)
			}
			c.Roles = append(c.Roles, r)
			c.Users = append(c.Users, model.User{ID: fmt.Sprintf("u%d", i), Role: r.ID, Active: true})
			g := model.Group{ID: fmt.Sprintf("g%d", i), IncludeBosses: true,
				Members: []model.Grantee{{Kind: model.GRole, ID: r.ID}, {Kind: model.GUser, ID: fmt.Sprintf("u%d", i)}}}
			if i > 0 {
				g.Members = append(g.Members, model.Grantee{Kind: model.GGroup, ID: fmt.Sprintf("g%d", i-1)})
			}
			c.Groups = append(c.Groups, g)
		}
		lim := model.DefaultLimits()
		lim.RoleDepth, lim.GroupDepth = n, n
		ix, err := c.ValidateLimited(lim)
		if err != nil {
			t.Fatal(err)
		}
		return ix
	}
	for _, tc := range []struct {
		name  string
		build func(testing.TB) *model.Index
	}{
		{"20k-role chain", func(t testing.TB) *model.Index { return roleChain(t, 20000, false) }},
		{"400 nested groups with bosses", nested},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var o *Org
			total := int64(0)
			d := cputime.Of(func() {
				o = NewOrg(tc.build(t))
				for _, g := range o.Grantees() {
					total += int64(len(o.Closure(g)))
				}
			})
			if est := o.ClosureEstimate(); est < total {
				t.Fatalf("estimate %d under the closure's %d entries", est, total)
			}
			if d > 3*time.Second {
				t.Fatalf("took %s of processor time for %d closure entries", d, total)
			}
		})
	}
}
