package oracle

import "github.com/recalc-dev/recalc/internal/model"

// Breakdown returns, for an active user and a record, the level each part of
// the spec gives: "explicit" (§2), "implicit_child" (§3.1),
// "implicit_parent" (§3.2), "owd" (§3.4) for records not controlled by their
// parent; "owner" and "parent" (§3.3) for records that are. Parts that give
// nothing are left out. Tests hold `recalc explain` to it.
func Breakdown(m *model.Model) func(user, record string) map[string]model.Level {
	w := newWorld(m)
	return func(user, record string) map[string]model.Level {
		out := map[string]model.Level{}
		u, r := w.users[user], w.records[record]
		if u == nil || r == nil || !u.Active {
			return out
		}
		put := func(part string, l model.Level) {
			if l > model.None {
				out[part] = l
			}
		}
		if w.objects[r.Object].CBP() {
			if w.receivers(w.ownerGrantee(r), r.Object)[user] {
				put("owner", model.All)
			}
			if r.Parent != "" {
				put("parent", w.effective(w.records[r.Parent])[user])
			}
			return out
		}
		put("explicit", w.explicit(r)[user])
		put("implicit_child", w.implicitChild(r)[user])
		put("implicit_parent", w.implicitParent(r)[user])
		put("owd", w.owd(w.objects[r.Object])[user])
		return out
	}
}
