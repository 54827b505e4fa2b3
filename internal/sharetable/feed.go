package sharetable

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// recordFeed records, in tx, the feed entries of the families' records
// whose access the difference changes: those whose share rows differ, or
// whose record row differs in what access reads (existence, id, object,
// access root, invalid), and the records that take their access from one
// of them (controlled by parent). A record whose id changes is named
// under both ids.
func (f *FamilyDiff) recordFeed(ctx context.Context, tx pgx.Tx) error {
	changed := map[int64]bool{}
	for _, keys := range [][]shareKey{f.del, f.ins, f.upd} {
		for _, k := range keys {
			changed[k.rid] = true
		}
	}
	access := func(r sharing.RecordRow) sharing.RecordRow { r.RootID = ""; return r }
	want := make(map[int64]sharing.RecordRow, len(f.records.Records))
	for _, r := range f.records.Records {
		want[r.RID] = access(r)
	}
	have := make(map[int64]bool, len(f.stored))
	for _, r := range f.stored {
		have[r.RID] = true
		if w, ok := want[r.RID]; !ok || w != access(r) {
			changed[r.RID] = true
		}
	}
	for rid := range want {
		if !have[rid] {
			changed[rid] = true
		}
	}
	if len(changed) == 0 {
		return nil
	}
	type named struct{ id, object string }
	seen := map[named]bool{}
	var ids, objects []string
	for _, rows := range [][]sharing.RecordRow{f.records.Records, f.stored} {
		for _, r := range rows {
			n := named{r.ID, r.Object}
			if (changed[r.RID] || changed[r.AccessRoot]) && !seen[n] {
				seen[n] = true
				ids, objects = append(ids, r.ID), append(objects, r.Object)
			}
		}
	}
	return feed.Records(ctx, tx, ids, objects)
}
