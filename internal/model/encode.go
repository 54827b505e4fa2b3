package model

import (
	"encoding/json"
	"io"
)

// Encode writes m in the model file format, with only the sections that
// present lists (nil writes every section). Tests and generators use it.
func Encode(w io.Writer, m *Model, present []string) error {
	all := map[string]any{
		"objects": mapSlice(m.Objects, encObject), "roles": mapSlice(m.Roles, encRole),
		"users": mapSlice(m.Users, encUser), "groups": mapSlice(m.Groups, encGroup),
		"territories": mapSlice(m.Territories, encTerritory), "records": mapSlice(m.Records, encRecord),
		"rules": mapSlice(m.Rules, encRule), "shares": mapSlice(m.Shares, encShare), "teams": mapSlice(m.Teams, encTeam),
	}
	out := map[string]any{}
	if present == nil {
		out = all
	}
	for _, s := range present {
		out[s] = all[s]
	}
	return json.NewEncoder(w).Encode(out)
}

func mapSlice[T any](in []T, f func(*T) map[string]any) []map[string]any {
	out := make([]map[string]any, len(in))
	for i := range in {
		out[i] = f(&in[i])
	}
	return out
}

func setChild(m map[string]any, c ChildAccess) map[string]any {
	if c.Contact != None {
		m["contact_access"] = c.Contact.String()
	}
	if c.Opportunity != None {
		m["opportunity_access"] = c.Opportunity.String()
	}
	if c.Case != None {
		m["case_access"] = c.Case.String()
	}
	return m
}

func setOpt(m map[string]any, key, v string) map[string]any {
	if v != "" {
		m[key] = v
	}
	return m
}

func encObject(o *Object) map[string]any {
	m := map[string]any{"name": o.Name, "internal_owd": o.InternalOWD.String(), "external_owd": o.ExternalOWD.String(), "hierarchy": o.Hierarchy}
	return setOpt(m, "parent", o.Parent)
}

func encRole(r *Role) map[string]any {
	return setChild(setOpt(map[string]any{"id": r.ID}, "parent", r.Parent), r.Child)
}

func encUser(u *User) map[string]any {
	t := "internal"
	if u.External {
		t = "external"
	}
	return setOpt(map[string]any{"id": u.ID, "type": t, "active": u.Active}, "role", u.Role)
}

func grantees(gs []Grantee) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.String()
	}
	return out
}

func encGroup(g *Group) map[string]any {
	return map[string]any{"id": g.ID, "members": grantees(g.Members), "include_bosses": g.IncludeBosses, "queue": g.Queue}
}

func encTerritory(t *Territory) map[string]any {
	users := t.Users
	if users == nil {
		users = []string{}
	}
	m := map[string]any{"id": t.ID, "users": users, "account_access": t.AccountAccess.String()}
	return setChild(setOpt(m, "parent", t.Parent), t.Child)
}

func encRecord(r *Record) map[string]any {
	m := map[string]any{"object": r.Object, "id": r.ID, "owner": r.Owner}
	if r.Fields != nil {
		m["fields"] = r.Fields
	}
	if len(r.Territories) > 0 {
		m["territories"] = r.Territories
	}
	return setOpt(m, "parent", r.Parent)
}

func encRule(r *Rule) map[string]any {
	m := map[string]any{"id": r.ID, "object": r.Object, "target": r.Target.String(), "access": r.Access.String()}
	if r.Type == OwnerRule {
		m["type"] = "owner"
		m["source"] = r.Source.String()
	} else {
		m["type"] = "criteria"
		conds := make([]map[string]any, len(r.Criteria.Conditions))
		for i, c := range r.Criteria.Conditions {
			conds[i] = map[string]any{"field": c.Field, "op": c.Op.String(), "value": c.Value}
		}
		crit := map[string]any{"conditions": conds}
		m["criteria"] = setOpt(crit, "logic", r.Criteria.Logic)
	}
	return setChild(m, r.Child)
}

func encShare(s *Share) map[string]any {
	return map[string]any{"object": s.Object, "record": s.Record, "grantee": s.Grantee.String(), "access": s.Access.String(), "cause": s.Cause}
}

func encTeam(t *Team) map[string]any {
	return setChild(map[string]any{"record": t.Record, "user": t.User, "access": t.Access.String()}, t.Child)
}
