package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestDryRunMatchesActualChange: for random models and random change
// steps, `recalc plan FILE` (a dry run) predicts exactly the pairs that gain
// and lose access, by object, that importing the file and running then
// produce. Each kind of step runs on a database of its own: a change to any
// 1 to 3 sections, a rule edit, and a membership change.
func TestDryRunMatchesActualChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		seeds int
		step  func(rng *rand.Rand, cur *model.Model) (*model.Model, *model.File)
	}{
		{"any sections", 25, oracle.Mutate},
		{"rule edit", 15, ruleEdit},
		{"membership", 15, membershipChange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			first, n := testkit.Seeds("RECALC", tc.seeds, 0)
			for seed := first; seed < first+n; seed++ {
				rng := rand.New(rand.NewPCG(uint64(seed), 42))
				cur := oracle.RandomModel(rng, 20+rng.IntN(30))
				b.importModel(t, cur, nil)
				b.run(t, engine.Options{})
				var access map[[3]string]int // the access stored, once read: a step's after is the next one's before
				for step := 0; step < 3; step++ {
					next, file := tc.step(rng, cur)
					if next == nil {
						continue // nothing of the kind to change
					}
					if _, err := oracle.Merge(cur, next, file).Validate(); err != nil {
						continue // the step made the model invalid: not a change to predict
					}
					cur, access = b.checkDryRun(t, fmt.Sprintf("seed %d step %d", seed, step), cur, next, file, access)
				}
			}
		})
	}
}

// checkDryRun dry-runs importing next (file's sections) over cur, imports it
// and runs, and fails the test unless the dry run predicted the pairs that
// gained and lost access, by object. before is the access stored (nil: read
// it). It returns the model and the access stored then.
func (b *bundle) checkDryRun(t *testing.T, name string, cur, next *model.Model, file *model.File,
	before map[[3]string]int) (*model.Model, map[[3]string]int) {
	t.Helper()
	ctx, pool := b.ctx, b.pool
	var buf bytes.Buffer
	if err := model.Encode(&buf, next, file.Present()); err != nil {
		t.Fatal(err)
	}
	doc := buf.String()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ImportTx(ctx, tx, strings.NewReader(doc), model.DefaultLimits(), zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	im, err := engine.DryRun(ctx, tx, engine.Options{InPlace: true}, zerolog.Nop()) // as `recalc plan FILE`
	if err != nil {
		t.Fatalf("%s: dry run: %v", name, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if before == nil {
		before = accessMap(t, ctx, pool)
	}
	if _, err := testkit.ImportString(ctx, pool, doc); err != nil {
		t.Fatal(err)
	}
	cur = oracle.Merge(cur, next, file)
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	after := accessMap(t, ctx, pool)
	exists := map[string]bool{}
	for _, r := range cur.Records {
		exists[r.ID] = true
	}
	gained, lost, deleted := map[string]int64{}, map[string]int64{}, int64(0)
	for k, a := range after {
		if a > before[k] {
			gained[k[0]]++
		}
	}
	for k, b := range before {
		switch a := after[k]; {
		case a >= b:
		case !exists[k[1]]:
			deleted++
		default:
			lost[k[0]]++
		}
	}
	predicted := map[string][2]int64{}
	for _, o := range im.Objects {
		predicted[o.Object] = [2]int64{o.Gained, o.Lost}
	}
	for _, o := range cur.Objects {
		if got, want := predicted[o.Name], [2]int64{gained[o.Name], lost[o.Name]}; got != want {
			t.Fatalf("%s (%v): %s gained/lost predicted %v, actual %v\nplan: %s", name, file.Present(), o.Name, got, want, b.lastPlan())
		}
	}
	if im.LostWithDeleted != deleted {
		t.Fatalf("%s: pairs lost with deleted records predicted %d, actual %d", name, im.LostWithDeleted, deleted)
	}
	return cur, after
}

// ruleEdit is a step that edits one rule of cur: its access level goes
// from read to edit or back, or, one time in four, the rule is removed. It
// returns nil when cur has no rule.
func ruleEdit(rng *rand.Rand, cur *model.Model) (*model.Model, *model.File) {
	if len(cur.Rules) == 0 {
		return nil, nil
	}
	rules := append([]model.Rule{}, cur.Rules...)
	i := rng.IntN(len(rules))
	switch {
	case rng.IntN(4) == 0:
		rules = append(rules[:i], rules[i+1:]...)
	case rules[i].Access == model.Edit:
		rules[i].Access = model.Read
	default:
		rules[i].Access = model.Edit
	}
	next := &model.Model{}
	next.Rules = rules
	file := &model.File{}
	file.Rules = rules
	return next, file
}

// membershipChange is a step that changes who is in a group or a role: a
// user joins or leaves a group, or moves to another role. It returns nil
// when cur has no group or role to change.
func membershipChange(rng *rand.Rand, cur *model.Model) (*model.Model, *model.File) {
	next, file := &model.Model{}, &model.File{}
	if len(cur.Groups) > 0 && len(cur.Users) > 0 && rng.IntN(2) == 0 {
		groups := append([]model.Group{}, cur.Groups...)
		g := &groups[rng.IntN(len(groups))]
		g.Members = append([]model.Grantee{}, g.Members...)
		if len(g.Members) > 0 && rng.IntN(2) == 0 {
			i := rng.IntN(len(g.Members))
			g.Members = append(g.Members[:i], g.Members[i+1:]...)
		} else {
			g.Members = append(g.Members, model.Grantee{Kind: model.GUser, ID: cur.Users[rng.IntN(len(cur.Users))].ID})
		}
		next.Groups, file.Groups = groups, groups
		return next, file
	}
	if len(cur.Roles) == 0 || len(cur.Users) == 0 {
		return nil, nil
	}
	users := append([]model.User{}, cur.Users...)
	users[rng.IntN(len(users))].Role = cur.Roles[rng.IntN(len(cur.Roles))].ID
	next.Users, file.Users = users, users
	return next, file
}

// accessMap reads the materialized access as (object, record, user) -> level.
func accessMap(t *testing.T, ctx context.Context, pool *pgxpool.Pool) map[[3]string]int {
	t.Helper()
	csv := testkit.AccessCSV(t, ctx, pool)
	out := map[[3]string]int{}
	for _, line := range strings.Split(strings.TrimSpace(csv), "\n")[1:] {
		f := strings.Split(line, ",")
		l, _ := model.ParseLevel(f[3])
		out[[3]string{f[0], f[1], f[2]}] = int(l)
	}
	return out
}
