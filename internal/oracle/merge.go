package oracle

import "github.com/recalc-dev/recalc/internal/model"

// Merge returns the model stored after importing file on top of prev
// (interface.md, `recalc import`): each section present in the file replaces
// prev's wholesale, and absent sections keep prev's. present says which
// sections the file had, as model.Parse reports it; prev may be nil before the
// first import.
//
// It then applies the owner-change rule (docs/semantics.md, changes between imports): for each record
// whose owner differs from prev's record of the same id, every manual share
// prev had on that record is dropped, even when the file lists it again.
//
// Merge neither validates nor modifies its inputs; the result may share
// slices with them.
func Merge(prev, file *model.Model, present *model.File) *model.Model {
	out := &model.Model{}
	if prev != nil {
		*out = *prev
	}
	out.Config.Overlay(&file.Config, &present.Config)
	if present.HasRecords {
		out.Records = file.Records
	}
	if present.HasShares {
		out.Shares = file.Shares
	}
	if present.HasTeams {
		out.Teams = file.Teams
	}
	if prev == nil {
		return out
	}

	oldOwner := map[string]string{}
	for _, r := range prev.Records {
		oldOwner[r.ID] = r.Owner
	}
	changed := map[string]bool{}
	for _, r := range out.Records {
		if owner, ok := oldOwner[r.ID]; ok && owner != r.Owner {
			changed[r.ID] = true
		}
	}
	type shareID struct{ record, grantee, cause string }
	wiped := map[shareID]bool{}
	for _, s := range prev.Shares {
		if s.Cause == model.CauseManual && changed[s.Record] {
			wiped[shareID{s.Record, s.Grantee.String(), s.Cause}] = true
		}
	}
	if len(wiped) == 0 {
		return out
	}
	kept := []model.Share{}
	for _, s := range out.Shares {
		if !wiped[shareID{s.Record, s.Grantee.String(), s.Cause}] {
			kept = append(kept, s)
		}
	}
	out.Shares = kept
	return out
}
