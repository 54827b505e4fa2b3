package model

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
)

// UsersAttachment is the name under which a users table is attached
// (internal/attach): no object of a model may have it.
const UsersAttachment = "users"

// UserRow is a row of an application's users table (internal/attach), its
// values as text: nil is SQL NULL.
type UserRow struct {
	ID, Role, Type *string
	Active         *bool
}

// UserFixes counts what AttachUsers changed so that the model could take
// the rows: every change fails closed.
type UserFixes struct {
	Skipped  int `json:"skipped"`  // rows with no usable id, or a queue's id: no such user
	Inactive int `json:"inactive"` // rows made inactive: unknown role or type, or NULL active
	Stubs    int `json:"stubs"`    // users the configuration names but no row holds: kept, inactive
	// StubIDs are the stubs' ids, in the order they are named; QueueIDs
	// the ids of rows skipped because a queue has them.
	StubIDs, QueueIDs []string `json:"-"`
}

// AttachUsers makes c.Users the users of rows, the rows of an attached
// users table, so that c validates whatever the rows hold (named are the
// users that data outside c names: team members, users shares grant to):
//   - a row without an id, with one over lim's id bytes, or with a queue's
//     id is skipped;
//   - a row naming a role that does not exist, or a type that is neither
//     internal nor external, gives an inactive user with no role; a NULL
//     active gives an inactive user;
//   - a user that the groups, territories, rules or named name and no row
//     holds is kept as an inactive stub, with no role.
//
// The users are sorted by id. More users than lim.Users is an error.
func (c *Config) AttachUsers(rows []UserRow, named []string, lim Limits) (UserFixes, error) {
	var fx UserFixes
	roles := map[string]bool{}
	for _, r := range c.Roles {
		roles[r.ID] = true
	}
	queues := map[string]bool{}
	for _, g := range c.Groups {
		if g.Queue {
			queues[g.ID] = true
		}
	}
	have := map[string]bool{}
	users := make([]User, 0, len(rows))
	for _, r := range rows {
		if r.ID == nil || *r.ID == "" || !lim.idOK(*r.ID) || queues[*r.ID] || have[*r.ID] {
			fx.Skipped++
			if r.ID != nil && queues[*r.ID] {
				fx.QueueIDs = append(fx.QueueIDs, *r.ID)
			}
			continue
		}
		u := User{ID: *r.ID, Active: r.Active != nil && *r.Active}
		ok := true
		if r.Role != nil && *r.Role != "" {
			u.Role = *r.Role
			ok = roles[u.Role]
		}
		switch str(r.Type) {
		case "", "internal":
		case "external":
			u.External = true
		default:
			ok = false
		}
		if !ok || r.Active == nil {
			u.Role, u.Active = "", false
			fx.Inactive++
		}
		have[u.ID] = true
		users = append(users, u)
	}
	for _, id := range append(c.namedUsers(), named...) {
		if !have[id] && !queues[id] {
			have[id] = true
			users = append(users, User{ID: id})
			fx.Stubs++
			fx.StubIDs = append(fx.StubIDs, id)
		}
	}
	if lim.Users > 0 && int64(len(users)) > lim.Users {
		return fx, fmt.Errorf("the attached users table holds %d users, more than the limit of %d (%s)", len(users), lim.Users, LimitUsers)
	}
	slices.SortFunc(users, func(a, b User) int { return cmp.Compare(a.ID, b.ID) })
	c.Users = users
	return fx, nil
}

// namedUsers lists the user ids the groups, territories and rules name,
// in the order they name them, each once.
func (c *Config) namedUsers() []string {
	var out []string
	seen := map[string]bool{}
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	grantee := func(g Grantee) {
		if g.Kind == GUser {
			add(g.ID)
		}
	}
	for _, g := range c.Groups {
		for _, m := range g.Members {
			grantee(m)
		}
	}
	for _, t := range c.Territories {
		for _, u := range t.Users {
			add(u)
		}
	}
	for _, r := range c.Rules {
		grantee(r.Source)
		grantee(r.Target)
	}
	return out
}

// UsersJSON is the users section of a model file holding users.
func UsersJSON(users []User) ([]byte, error) {
	type user struct {
		ID     string `json:"id"`
		Role   string `json:"role,omitempty"`
		Type   string `json:"type,omitempty"`
		Active *bool  `json:"active,omitempty"`
	}
	out := make([]user, len(users))
	inactive := false
	for i, u := range users {
		out[i] = user{ID: u.ID, Role: u.Role}
		if u.External {
			out[i].Type = "external"
		}
		if !u.Active {
			out[i].Active = &inactive
		}
	}
	return json.Marshal(out)
}
