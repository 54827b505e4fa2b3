package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestFamilyGroups pins familyGroups' output: the roots in their order but
// for the families records moved between since they were materialized,
// which come sorted, each group where its first member was, with joins
// set on all but the first of a group; the families of moves added
// transitively; every root once; nothing for nothing.
//
// Each record is "id:was>now": materialized in family was ("" none) and
// stored in family now ("" deleted).
func TestFamilyGroups(t *testing.T) {
	t.Parallel()
	pool := testdb.Migrated(t)
	ctx := context.Background()
	for i, tc := range []struct {
		name      string
		records   []string
		roots     []string
		every     bool
		want      []string
		wantJoins []bool
	}{
		{name: "nothing", records: []string{"x1:a>a"}, want: []string{}, wantJoins: []bool{}},
		{name: "nothing, every family", every: true, want: []string{}, wantJoins: []bool{}},
		{name: "no move keeps the order", records: []string{"x1:c>c", "x2:a>a", "x3:b>b"},
			roots: []string{"c", "a", "b"}, want: []string{"c", "a", "b"}, wantJoins: []bool{false, false, false}},
		{name: "a move joins its two families where the first one was", records: []string{"x1:d>b", "x2:c>c", "x3:d>d"},
			roots: []string{"c", "d", "a", "b"}, want: []string{"c", "b", "d", "a"}, wantJoins: []bool{false, false, true, false}},
		{name: "the family moved into is added", records: []string{"x1:a>z", "x2:m>m"},
			roots: []string{"m", "a"}, want: []string{"m", "a", "z"}, wantJoins: []bool{false, false, true}},
		{name: "the family moved from is added", records: []string{"x1:z>a"},
			roots: []string{"a"}, want: []string{"a", "z"}, wantJoins: []bool{false, true}},
		{name: "transitively, two moves away", records: []string{"k2:p1>p5", "k1:p9>p1", "k5:p5>", "s1:p9>p9"},
			roots: []string{"p5"}, want: []string{"p1", "p5", "p9"}, wantJoins: []bool{false, true, true}},
		{name: "two groups stay apart", records: []string{"x1:a>b", "x2:c>d", "x3:e>e"},
			roots: []string{"d", "e", "a"}, want: []string{"c", "d", "e", "a", "b"}, wantJoins: []bool{false, true, false, false, true}},
		{name: "a chain of moves is one group", records: []string{"x1:a>b", "x2:b>c", "x3:c>d"},
			roots: []string{"d"}, want: []string{"a", "b", "c", "d"}, wantJoins: []bool{false, true, true, true}},
		{name: "a root listed twice comes once with its group", records: []string{"x1:a>b"},
			roots: []string{"a", "b", "a"}, want: []string{"a", "b"}, wantJoins: []bool{false, true}},
		{name: "a new record or a deleted one joins nothing", records: []string{"x1:>a", "x2:b>", "x3:c>c"},
			roots: []string{"c", "b", "a"}, want: []string{"c", "b", "a"}, wantJoins: []bool{false, false, false}},
		{name: "every family: the tables joined whole", every: true, records: []string{"x1:a>c", "x2:b>b", "x3:d>d", "x4:e>d"},
			roots: []string{"a", "b", "c", "d", "e"}, want: []string{"a", "c", "b", "d", "e"}, wantJoins: []bool{false, true, false, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One schema per case, in one database: the cases run one by one.
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			for j, r := range tc.records {
				id, fams, _ := strings.Cut(r, ":")
				was, now, _ := strings.Cut(fams, ">")
				rid := int64(i*100 + j + 1)
				if now != "" {
					if _, err := tx.Exec(ctx, `INSERT INTO recalc.record (rid, id, object, owner, root_id) OVERRIDING SYSTEM VALUE
						VALUES ($1, $2, 'account', 'u1', $3)`, rid, fmt.Sprint(i, id), now); err != nil {
						t.Fatal(err)
					}
				}
				if was != "" {
					if _, err := tx.Exec(ctx, `INSERT INTO recalc.acl_record (rid, id, object, access_root, root_id)
						VALUES ($1, $2, 'account', $1, $3)`, rid, fmt.Sprint(i, id), was); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, joins, err := familyGroups(ctx, tx, slices.Clone(tc.roots), tc.every)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) || !slices.Equal(joins, tc.wantJoins) {
				t.Errorf("familyGroups(%q, every %v) = %q, joins %v; want %q, joins %v", tc.roots, tc.every, got, joins, tc.want, tc.wantJoins)
			}
		})
	}
}
