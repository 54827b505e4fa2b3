package sharetable

// What a dry run (internal/engine, internal/access) needs to know of a
// difference before it applies it: which grants and which closure entries
// change, so that it compares only the (record, user) pairs they can reach.

// Grants lists, each once, the (record, grantee) pairs whose share rows the
// difference inserts, deletes or changes: rids[i] with gids[i]. It includes
// every cause, so a pair that only moves from one cause to another is
// listed too.
func (f *FamilyDiff) Grants() (rids []int64, gids []int32) {
	type grant struct {
		rid int64
		gid int32
	}
	seen := map[grant]bool{}
	for _, keys := range [][]shareKey{f.del, f.ins, f.upd} {
		for _, k := range keys {
			g := grant{k.rid, k.gid}
			if !seen[g] {
				seen[g] = true
				rids, gids = append(rids, k.rid), append(gids, k.gid)
			}
		}
	}
	return rids, gids
}

// Inserted lists the closure entries the difference inserts: gids[i]
// reaches uids[i], through the role hierarchy only when boss[i] (an entry
// whose boss flag changes is deleted and inserted).
func (c *ClosureDiff) Inserted() (gids, uids []int32, boss []bool) { return c.insG, c.insU, c.insB }

// Deleted lists the closure entries the difference deletes.
func (c *ClosureDiff) Deleted() (gids, uids []int32) { return c.delG, c.delU }
