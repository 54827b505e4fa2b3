// Package gen generates realistic demo and benchmark orgs in recalc's JSON model format
// (../shared/spec/interface.md), deterministically from a seed.
//
// The org has the shape of a mid-size Salesforce org:
//   - objects: account (private), contact (controlled by parent), opportunity (private),
//     case (public read only inside, private outside), lead (public read/write inside, read
//     only outside), project__c (private, no hierarchy access) and task__c (controlled by its
//     project__c);
//   - a role tree 6 to 8 levels deep, with partner roles under it for external users;
//   - users (20% external and 2% inactive by default), most of them in a role;
//   - 17 public groups nested without cycles (some without hierarchy access) and 3 queues;
//   - a forest of 15 territories;
//   - records: 25% accounts, the rest contacts, opportunities and cases (each under an account),
//     leads, projects and tasks (each under a project); a few owners own far more records than
//     the rest, children of an account are mostly owned by the account's owner, and fields
//     (industry, region, status, revenue, tier, vip) are sometimes null or missing;
//   - 38 owner- and criteria-based sharing rules on account (some with child access),
//     opportunity, case, lead and project__c; manual shares on about 1% of the records that
//     can have them (not contacts or tasks, which are controlled by their parent), apex shares
//     on about 10% of the projects, and team entries on about 2% of the accounts,
//     opportunities and cases (child access only on account teams).
//
// Ids the generator always produces: user u0001, an active internal user with a role, and
// account acc000001, which u0001 owns. Record ids are a prefix per object and a 1-based number
// (acc000001, con000001, opp000001, cas000001, led000001, prj000001, tsk000001); users are
// u0001…; roles, groups (g_…), queues (q_…) and territories (t_…) have readable names.
//
// Write streams: records, shares and teams are generated one at a time from the seed and the
// record's position, written and forgotten, so memory stays proportional to the number of
// users, not of records, and a 10M-record org needs no more memory than a 10k one. Shares and
// teams are derived again from each record's position in their own passes.
package gen

import (
	"bufio"
	"fmt"
	"io"
)

// Options say what org to generate.
type Options struct {
	// Records is the total number of records, at least 1.
	Records int
	// Seed selects the org: the same options always give the same bytes.
	Seed int64
	// Users is the number of users, at least 10; 0 means Records/20 within [20, 5000].
	Users int
	// ExternalShare and InactiveShare are the fractions of external and inactive users
	// (u0001 is always internal and active). NewOptions sets 0.2 and 0.02.
	ExternalShare, InactiveShare float64
}

// NewOptions returns the default options for an org of records records.
func NewOptions(records int, seed int64) Options {
	return Options{Records: records, Seed: seed, ExternalShare: 0.2, InactiveShare: 0.02}
}

// Summary counts what Write wrote.
type Summary struct {
	Records  map[string]int // by object
	Users    int
	Roles    int
	Groups   int
	Rules    int
	Shares   int
	Teams    int
	Bytes    int64
	Elements int // records + shares + teams
}

func (o *Options) normalize() error {
	if o.Records < 1 {
		return fmt.Errorf("records must be at least 1, not %d", o.Records)
	}
	if o.Users == 0 {
		o.Users = min(max(o.Records/20, 20), 5000)
	}
	if o.Users < 10 {
		return fmt.Errorf("users must be at least 10, not %d", o.Users)
	}
	if o.ExternalShare < 0 || o.ExternalShare > 0.9 || o.InactiveShare < 0 || o.InactiveShare > 0.9 {
		return fmt.Errorf("external and inactive shares must be within [0, 0.9]")
	}
	return nil
}

// Write generates the org described by opt and writes it to w as one JSON model file.
func Write(w io.Writer, opt Options) (*Summary, error) {
	if err := opt.normalize(); err != nil {
		return nil, err
	}
	cw := &countingWriter{w: w}
	out := newJSONWriter(bufio.NewWriterSize(cw, 1<<16))
	o := newOrg(opt)
	s := &Summary{Records: map[string]int{}, Users: len(o.users), Roles: len(o.roles), Groups: len(o.groups), Rules: len(o.rules)}

	writeSection(out, "objects", objects)
	writeSection(out, "roles", o.roles)
	writeSection(out, "users", o.users)
	writeSection(out, "groups", o.groups)
	writeSection(out, "territories", o.territories)
	writeSection(out, "rules", o.rules)

	g := newRecordGen(o)
	out.begin("records")
	for i := range opt.Records {
		r := g.record(i)
		s.Records[r.Object]++
		out.entry(r)
	}
	out.end()
	out.begin("shares")
	for i := range opt.Records {
		for _, sh := range g.shares(i) {
			out.entry(sh)
			s.Shares++
		}
	}
	out.end()
	out.begin("teams")
	for i := range opt.Records {
		for _, t := range g.teams(i) {
			out.entry(t)
			s.Teams++
		}
	}
	out.end()
	if err := out.close(); err != nil {
		return nil, err
	}
	s.Bytes = cw.n
	s.Elements = opt.Records + s.Shares + s.Teams
	return s, nil
}

func writeSection[T any](out *jsonWriter, name string, entries []T) {
	out.begin(name)
	for i := range entries {
		out.entry(&entries[i])
	}
	out.end()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
