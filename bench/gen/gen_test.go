package gen

import (
	"bufio"
	"bytes"
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// generate writes an org and parses and validates it with the project's model package.
func generate(t *testing.T, opt Options) (*model.Model, *model.Index, *Summary, []byte) {
	t.Helper()
	var buf bytes.Buffer
	s, err := Write(&buf, opt)
	if err != nil {
		t.Fatalf("Write(%+v): %v", opt, err)
	}
	if s.Bytes != int64(buf.Len()) {
		t.Errorf("summary says %d bytes, wrote %d", s.Bytes, buf.Len())
	}
	m, f, err := model.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Parse(%+v): %v", opt, err)
	}
	if got, want := strings.Join(f.Present(), ","), "objects,roles,users,groups,territories,records,rules,shares,teams"; got != want {
		t.Errorf("sections = %s, want %s", got, want)
	}
	ix, err := m.Validate()
	if err != nil {
		t.Fatalf("Validate(%+v): %v", opt, err)
	}
	return m, ix, s, buf.Bytes()
}

func TestOrgParsesAndValidates(t *testing.T) {
	t.Parallel()
	m, ix, s, _ := generate(t, NewOptions(2000, 1))

	if len(m.Records) != 2000 {
		t.Errorf("%d records, want 2000", len(m.Records))
	}
	if len(m.Users) != 100 {
		t.Errorf("%d users, want 2000/20", len(m.Users))
	}
	if s.Shares != len(m.Shares) || s.Teams != len(m.Teams) {
		t.Errorf("summary counts %d shares and %d teams, file has %d and %d", s.Shares, s.Teams, len(m.Shares), len(m.Teams))
	}

	// The ids the demo and docs rely on.
	u := ix.Users["u0001"]
	if u == nil || !u.Active || u.External || u.Role == "" {
		t.Errorf("u0001 = %+v, want an active internal user with a role", u)
	}
	var acc *model.Record
	for i := range m.Records {
		if m.Records[i].ID == "acc000001" {
			acc = &m.Records[i]
		}
	}
	if acc == nil || acc.Object != model.Account || acc.Owner != "u0001" {
		t.Errorf("acc000001 = %+v, want an account owned by u0001", acc)
	}

	// Every object has records, children have parents, and fields vary.
	byObject := map[string]int{}
	queueOwned, twoTerritories, nulls, missing := 0, 0, 0, 0
	for _, r := range m.Records {
		byObject[r.Object]++
		if p := ix.Objects[r.Object].Parent; p != "" && r.Parent == "" {
			t.Errorf("record %s of %s has no parent", r.ID, r.Object)
		}
		if g := ix.Groups[r.Owner]; g != nil && g.Queue {
			queueOwned++
		}
		if len(r.Territories) == 2 {
			twoTerritories++
		}
		for _, v := range r.Fields {
			if v.Kind == model.Null {
				nulls++
			}
		}
		if _, ok := r.Fields["status"]; !ok && r.Object != model.Contact {
			missing++
		}
	}
	for _, o := range m.Objects {
		if byObject[o.Name] == 0 {
			t.Errorf("no %s records", o.Name)
		}
	}
	if byObject[model.Account] != 500 {
		t.Errorf("%d accounts, want a quarter of 2000", byObject[model.Account])
	}
	for what, n := range map[string]int{"queue-owned records": queueOwned, "accounts in two territories": twoTerritories,
		"null fields": nulls, "records missing a field": missing} {
		if n == 0 {
			t.Errorf("no %s", what)
		}
	}

	// Ownership is skewed: the skewed owners each own about 12% of the records, and the
	// busiest of the others far more than the average owner.
	owned := map[string]int{}
	children := map[string]int{}
	for _, r := range m.Records {
		owned[r.Owner]++
		if r.Object == model.Contact || r.Object == model.Opportunity || r.Object == model.Case {
			children[r.Parent]++
		}
	}
	if s.MaxOwned != slices.Max(slices.Collect(maps.Values(owned))) {
		t.Errorf("summary says the busiest owner owns %d records, want %d", s.MaxOwned, slices.Max(slices.Collect(maps.Values(owned))))
	}
	for _, u := range []string{"u0002", "u0003", "u0004"} {
		if n := owned[u]; n < 2000/10 {
			t.Errorf("skewed owner %s owns %d records, want about 12%% of 2000", u, n)
		}
	}
	busiest, avg := 0, len(m.Records)/len(owned)
	for u, n := range owned {
		if u > "u0004" {
			busiest = max(busiest, n)
		}
	}
	if busiest < 5*avg {
		t.Errorf("busiest other owner owns %d records, average %d: want skew", busiest, avg)
	}
	// Account skew: the skewed accounts have about 22% of the children each.
	kids := byObject[model.Contact] + byObject[model.Opportunity] + byObject[model.Case]
	for _, a := range []string{"acc000002", "acc000003", "acc000004"} {
		if n := children[a]; n < kids/6 {
			t.Errorf("skewed account %s has %d children of %d, want about 22%%", a, n, kids)
		}
	}

	// Users, groups, rules, shares and teams have the shape the package promises.
	external, inactive := 0, 0
	for _, u := range m.Users {
		if u.External {
			external++
		}
		if !u.Active {
			inactive++
		}
	}
	if external != 20 || inactive != 2 {
		t.Errorf("%d external and %d inactive users of 100, want 20 and 2", external, inactive)
	}
	queues, noBosses, nested := 0, 0, 0
	for _, g := range m.Groups {
		if g.Queue {
			queues++
		}
		if !g.IncludeBosses {
			noBosses++
		}
		for _, mem := range g.Members {
			if mem.Kind == model.GGroup {
				nested++
			}
		}
	}
	if len(m.Groups) != 20 || queues != 3 || noBosses == 0 || nested == 0 {
		t.Errorf("%d groups, %d queues, %d without bosses, %d nested: want 20, 3 and some", len(m.Groups), queues, noBosses, nested)
	}
	if len(m.Territories) != 15 {
		t.Errorf("%d territories, want 15", len(m.Territories))
	}
	depth := 0
	for _, r := range m.Roles {
		d := 1
		for p := r.Parent; p != ""; p = ix.Roles[p].Parent {
			d++
		}
		depth = max(depth, d)
	}
	if depth < 6 || depth > 8 {
		t.Errorf("role tree is %d deep, want 6 to 8", depth)
	}
	kinds := map[string]int{}
	for _, r := range m.Rules {
		kinds[r.Object+"/"+map[model.RuleType]string{model.OwnerRule: "owner", model.CriteriaRule: "criteria"}[r.Type]]++
		if !r.Child.IsZero() && r.Object != model.Account {
			t.Errorf("rule %s on %s has child access", r.ID, r.Object)
		}
	}
	// 100 users: the floors, except 250 × 100/2500 = 10 owner rules on account.
	for o, want := range map[string][2]int{"account": {10, 6}, "opportunity": {4, 4}, "case": {3, 4}, "lead": {2, 3}, "project__c": {3, 3}} {
		if got := [2]int{kinds[o+"/owner"], kinds[o+"/criteria"]}; got != want {
			t.Errorf("rules on %s: %d owner, %d criteria; want %d and %d", o, got[0], got[1], want[0], want[1])
		}
	}

	// The ids benchmarks build changes from.
	broad := 0
	for _, r := range m.Rules {
		if r.Type == model.OwnerRule && r.Source.Kind == model.GAllInternalUsers && r.Target.String() == "group:"+BroadGroup {
			broad++
		}
	}
	if g := ix.Groups[BroadGroup]; g == nil || g.Queue || broad != 5 {
		t.Errorf("BroadGroup %s = %+v, target of %d broad rules: want a public group and 5", BroadGroup, g, broad)
	}
	mr, np := ix.Roles[MovableRole], ix.Roles[MovableRoleNewParent]
	if mr == nil || np == nil || mr.Parent == MovableRoleNewParent {
		t.Fatalf("MovableRole %s = %+v, new parent %s = %+v", MovableRole, mr, MovableRoleNewParent, np)
	}
	for p := MovableRoleNewParent; p != ""; p = ix.Roles[p].Parent {
		if p == MovableRole {
			t.Errorf("new parent %s is below %s: moving would make a cycle", MovableRoleNewParent, MovableRole)
		}
	}
	if o := ix.Objects[TightenObject]; o == nil || o.CBP() || o.InternalOWD == model.Private {
		t.Errorf("TightenObject %s = %+v, want an object with an open internal OWD", TightenObject, o)
	}
	if u := ix.Users[SkewedOwner]; u == nil || !u.Active || u.External || u.Role == "" {
		t.Errorf("SkewedOwner %s = %+v, want an active internal user with a role", SkewedOwner, u)
	}
	if children[SkewedAccount] == 0 {
		t.Errorf("SkewedAccount %s has no children", SkewedAccount)
	}
	manual, apex := 0, 0
	for _, sh := range m.Shares {
		if sh.Cause == "manual" {
			manual++
		} else {
			apex++
			if sh.Object != "project__c" {
				t.Errorf("apex share on %s %s", sh.Object, sh.Record)
			}
		}
	}
	if manual == 0 || apex == 0 || len(m.Teams) == 0 {
		t.Errorf("%d manual shares, %d apex shares, %d team entries: want some of each", manual, apex, len(m.Teams))
	}
}

func TestSameSeedSameBytes(t *testing.T) {
	t.Parallel()
	_, _, _, a := generate(t, NewOptions(3000, 7))
	_, _, _, b := generate(t, NewOptions(3000, 7))
	if !bytes.Equal(a, b) {
		t.Error("two runs with seed 7 differ")
	}
	_, _, _, c := generate(t, NewOptions(3000, 8))
	if bytes.Equal(a, c) {
		t.Error("seeds 7 and 8 give the same org")
	}
}

func TestEdgeSizesValidate(t *testing.T) {
	t.Parallel()
	for _, opt := range []Options{
		NewOptions(1, 1),
		NewOptions(2, 2),
		NewOptions(9, 3),
		NewOptions(41, 4),
		{Records: 500, Seed: 5, Users: 10},
		{Records: 500, Seed: 6, Users: 10, ExternalShare: 0.9, InactiveShare: 0.9},
		{Records: 500, Seed: 7, Users: 300, ExternalShare: 0, InactiveShare: 0},
	} {
		m, _, _, _ := generate(t, opt)
		if len(m.Records) != opt.Records {
			t.Errorf("%+v: %d records", opt, len(m.Records))
		}
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	for _, opt := range []Options{{Records: 0}, {Records: 10, Users: 5}, {Records: 10, ExternalShare: 1}} {
		if _, err := Write(&bytes.Buffer{}, opt); err == nil {
			t.Errorf("Write(%+v) succeeded", opt)
		}
	}
}

// scaleOrg returns the configuration and record generator of the default org of n records,
// without generating any record.
func scaleOrg(t *testing.T, n int) *recordGen {
	t.Helper()
	opt := NewOptions(n, 1)
	if err := opt.normalize(); err != nil {
		t.Fatal(err)
	}
	return newRecordGen(newOrg(opt))
}

// TestShapeAtScale checks the shape the benchmarks ask for at 100k, 1M and 10M records:
// 5,000 users (20% external), 300 account rules of which 50 criteria-based, and a few owners
// and accounts with over 10,000 records and children each. The configuration and the skew
// parameters come from the generator; the 100k org's records are generated and counted.
func TestShapeAtScale(t *testing.T) {
	t.Parallel()
	for _, n := range []int{100_000, 1_000_000, 10_000_000} {
		g := scaleOrg(t, n)
		external := 0
		for _, u := range g.users {
			if u.Type == "external" {
				external++
			}
		}
		if len(g.users) != 5000 || external != 1000 {
			t.Errorf("%d records: %d users, %d external; want 5000 and 1000", n, len(g.users), external)
		}
		if g.depth < 6 || g.depth > 8 {
			t.Errorf("%d records: role tree %d deep", n, g.depth)
		}
		rules := map[string][2]int{}
		for _, r := range g.rules {
			c := rules[r.Object]
			if r.Type == "criteria" {
				c[1]++
			} else {
				c[0]++
			}
			rules[r.Object] = c
		}
		if a := rules["account"]; a[0]+a[1] != 300 || a[1] != 50 {
			t.Errorf("%d records: %d account rules, %d criteria-based; want 300 and 50", n, a[0]+a[1], a[1])
		}
		for _, o := range []string{"opportunity", "case", "lead", "project__c"} {
			if c := rules[o]; c[0]+c[1] < 10 || c[0]+c[1] > 40 || c[1] == 0 {
				t.Errorf("%d records: %d rules on %s, %d criteria-based; want 10 to 40, some criteria-based", n, c[0]+c[1], o, c[1])
			}
		}
		children := g.byObject["contact"].n + g.byObject["opportunity"].n + g.byObject["case"].n
		if perOwner, perAccount := g.ownerShare*float64(n), g.accountShare*float64(children); len(g.skewed) != 3 ||
			g.skewedAccounts != 3 || perOwner < 11_000 || perAccount < 11_000 {
			t.Errorf("%d records: %d skewed owners expecting %.0f records, %d skewed accounts expecting %.0f children; want 3 and over 11,000 each",
				n, len(g.skewed), perOwner, g.skewedAccounts, perAccount)
		}
	}

	// Count the 100k org's records: the expectations above hold.
	g := scaleOrg(t, 100_000)
	owned, children := map[string]int{}, map[string]int{}
	for i := range g.opt.Records {
		r := g.record(i)
		owned[r.Owner]++
		if model.IsAccountChild(r.Object) {
			children[r.Parent]++
		}
	}
	for _, u := range []string{"u0002", "u0003", "u0004"} {
		if owned[u] <= 10_000 {
			t.Errorf("skewed owner %s owns %d of 100k records, want over 10,000", u, owned[u])
		}
	}
	for _, a := range []string{"acc000002", "acc000003", "acc000004"} {
		if children[a] <= 10_000 {
			t.Errorf("skewed account %s has %d children at 100k records, want over 10,000", a, children[a])
		}
	}
}

// TestAccountRulesPerAccount checks that owner rule sources and criteria are selective: an
// account matches 5 to 15 of the 300 account rules on average, measured on a sample of the
// accounts of the 100k and 1M orgs. It generates the configuration and the sampled accounts
// only, and matches them with the project's own closure and criteria code.
func TestAccountRulesPerAccount(t *testing.T) {
	t.Parallel()
	for _, n := range []int{100_000, 1_000_000} {
		g := scaleOrg(t, n)
		var buf bytes.Buffer
		out := newJSONWriter(bufio.NewWriter(&buf))
		writeSection(out, "objects", objects)
		writeSection(out, "roles", g.roles)
		writeSection(out, "users", g.users)
		writeSection(out, "groups", g.groups)
		writeSection(out, "territories", g.territories)
		writeSection(out, "rules", g.rules)
		out.begin("records")
		for p := 0; p < g.blocks[0].n; p += g.blocks[0].n / 5000 {
			out.entry(g.record(p))
		}
		out.end()
		if err := out.close(); err != nil {
			t.Fatal(err)
		}
		m, _, err := model.Parse(&buf)
		if err != nil {
			t.Fatal(err)
		}
		ix, err := m.Validate()
		if err != nil {
			t.Fatal(err)
		}
		org := sharing.NewOrg(ix)
		sources := map[string]map[string]bool{}
		owner, criteria := 0, 0
		for _, r := range m.Rules {
			if r.Object == model.Account && r.Type == model.OwnerRule && sources[r.ID] == nil {
				sources[r.ID] = org.MembersAll(r.Source)
			}
		}
		for _, rec := range m.Records {
			for _, r := range m.Rules {
				switch {
				case r.Object != model.Account:
				case r.Type == model.OwnerRule && sources[r.ID][rec.Owner]:
					owner++
				case r.Type == model.CriteriaRule && r.Criteria.Match(rec.Fields):
					criteria++
				}
			}
		}
		accounts := float64(len(m.Records))
		avg := float64(owner+criteria) / accounts
		t.Logf("%d records: an account matches %.1f account rules on average (%.1f owner-based, %.1f criteria-based; %d accounts sampled)",
			n, avg, float64(owner)/accounts, float64(criteria)/accounts, len(m.Records))
		if avg < 5 || avg > 15 || owner == 0 || criteria == 0 {
			t.Errorf("%d records: %.1f applying account rules per account, want 5 to 15 of both kinds", n, avg)
		}
	}
}

// TestImports loads a generated org through internal/store, as `recalc import` does.
func TestImports(t *testing.T) {
	t.Parallel()
	pool := testdb.Migrated(t)
	var buf bytes.Buffer
	s, err := Write(&buf, NewOptions(2000, 1))
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.Import(context.Background(), pool, &buf, model.DefaultLimits(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if res.Records != 2000 || res.Shares != int64(s.Shares) || res.Teams != int64(s.Teams) {
		t.Errorf("imported %d records, %d shares, %d teams; want 2000, %d, %d", res.Records, res.Shares, res.Teams, s.Shares, s.Teams)
	}
}
