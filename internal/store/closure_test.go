package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// groupsOverEveryone is a model of n users under one role and n groups
// that each hold the role and its subordinates: a few bytes a group, and
// n times n closure entries.
func groupsOverEveryone(n int) string {
	users, groups := make([]string, n), make([]string, n)
	for i := range n {
		users[i] = fmt.Sprintf(`{"id": "u%d", "role": "ceo"}`, i)
		groups[i] = fmt.Sprintf(`{"id": "g%d", "members": ["role_and_subordinates:ceo"]}`, i)
	}
	return `{"version": 1, "objects": [{"name": "account", "internal_owd": "private"}], "roles": [{"id": "ceo"}],
		"users": [` + strings.Join(users, ",") + `], "groups": [` + strings.Join(groups, ",") + `], "territories": [], "rules": []}`
}

// TestImportBoundsTheClosure checks that an import whose configuration may
// make more closure entries than --max-closure is refused, naming the
// limit and how to raise it, with nothing stored, and that one at the
// limit is taken: a small file of groups over everyone makes groups times
// users entries, which a run pays for in time and memory.
func TestImportBoundsTheClosure(t *testing.T) {
	t.Parallel()
	ctx, pool := context.Background(), testdb.Migrated(t)
	file := groupsOverEveryone(40)
	m, _, err := model.Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := m.Config.Validate()
	if err != nil {
		t.Fatal(err)
	}
	est := sharing.NewOrg(ix).ClosureEstimate()
	if est < 40*40 {
		t.Fatalf("closure estimate %d, want at least the groups' 1,600 entries", est)
	}
	sections := func() (n int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM recalc.model_section`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := sections()
	for _, tc := range []struct {
		name    string
		limit   int64
		refused bool
	}{
		{"one entry under the estimate", est - 1, true},
		{"the default", model.DefaultLimits().Closure, false},
		{"at the estimate", est, false},
	} {
		lim := model.DefaultLimits()
		lim.Closure = tc.limit
		_, err := store.Import(ctx, pool, strings.NewReader(file), lim, zerolog.Nop(), nil)
		var le *model.LimitError
		var inv *store.InvalidError
		switch {
		case !tc.refused && err != nil:
			t.Fatalf("%s (%d): %v", tc.name, tc.limit, err)
		case !tc.refused:
			continue
		case !errors.As(err, &inv) || !errors.As(err, &le) || le.Limit != model.LimitClosure || le.Max != tc.limit:
			t.Fatalf("%s: %v, want an invalid model past %s = %d", tc.name, err, model.LimitClosure, tc.limit)
		case !strings.Contains(err.Error(), "--max-closure or RECALC_MAX_CLOSURE"):
			t.Fatalf("%s: %q does not say how to raise the limit", tc.name, err)
		}
		if n := sections(); n != before {
			t.Fatalf("%s: %d sections stored after a refused import, %d before", tc.name, n, before)
		}
	}
}
