package gen

import (
	"bytes"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
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

	// Ownership is skewed: the busiest owner owns far more than the average owner.
	owned := map[string]int{}
	for _, r := range m.Records {
		owned[r.Owner]++
	}
	busiest := 0
	for _, n := range owned {
		busiest = max(busiest, n)
	}
	if avg := len(m.Records) / len(owned); busiest < 5*avg {
		t.Errorf("busiest owner owns %d records, average %d: want skew", busiest, avg)
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
	for _, o := range []string{"account", "opportunity", "case", "lead", "project__c"} {
		if kinds[o+"/owner"] == 0 || kinds[o+"/criteria"] == 0 {
			t.Errorf("rules on %s: %d owner, %d criteria; want both kinds", o, kinds[o+"/owner"], kinds[o+"/criteria"])
		}
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
	for _, opt := range []Options{{Records: 0}, {Records: 10, Users: 5}, {Records: 10, ExternalShare: 1}} {
		if _, err := Write(&bytes.Buffer{}, opt); err == nil {
			t.Errorf("Write(%+v) succeeded", opt)
		}
	}
}
