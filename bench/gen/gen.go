// Package gen generates realistic demo and benchmark orgs in recalc's JSON model format
// (docs/model.md), deterministically from a seed.
//
// The org has the shape of a large Salesforce org (figures for the default options at 100k
// records and more, where the users reach their cap of 5,000):
//   - objects: account (private), contact (controlled by parent), opportunity (private),
//     case (public read only inside, private outside), lead (public read/write inside, read
//     only outside), project__c (private, no hierarchy access) and task__c (controlled by its
//     project__c);
//   - a role tree 6 to 8 levels deep (300 internal roles), with an executive and a user role
//     per partner company (20) under mid-level roles, for external users;
//   - users: records/20 within [20, 5000], 20% external and 2% inactive by default, most of
//     them in a role;
//   - 17 public groups nested without cycles (some without hierarchy access) and 3 queues;
//   - a forest of 15 territories, to which 60% of the accounts are assigned;
//   - records: 25% accounts, the rest contacts, opportunities and cases (each under an account),
//     leads, projects and tasks (each under a project); fields (industry, region, status,
//     revenue, tier, vip) are sometimes null or missing;
//   - ownership skew: the three skewed owners (SkewedOwner, u0002 to u0004) each own about
//     12,000 records (12% of them below 100k records), spread over every object; the other
//     records mostly go to a few busy owners (about 12% of them to the top 1%: the busiest
//     has about 2% of all records, 20k at 1M records and 200k at 10M), and the other
//     children of an account are mostly owned by the account's owner;
//   - account skew: the three skewed accounts (SkewedAccount, acc000002 to acc000004) each
//     have about 11,500 contacts, opportunities and cases (22% of the children below about
//     100k records); the other children go mostly to a few busy accounts;
//   - sharing rules: 300 on account, 50 of them criteria-based (the limits of the sharing
//     model), about half with child access; 30 on opportunity (10 criteria-based), 20 on case
//     (8), 12 on lead (6) and 15 on project__c (5). Orgs of fewer than 2,500 users (50k
//     records by default) get proportionally fewer, at least 12, 8, 7, 5 and 6. The first
//     rule of each object (acc_owner_001, opp_owner_001, …) shares everything internal users
//     own with BroadGroup. The other owner rules have as source a manager's team (role and
//     subordinates from level 3), a role, a group, a branch from level 1 to 4 or a partner
//     company; criteria rules have one to three conditions with varied ops and logic, the
//     first one selective. An account matches about 10 account rules on average (seed 1,
//     1M records: 9.6, of which 3.4 owner-based; other seeds 9 to 12);
//   - manual shares on about 1% of the records that can have them (not contacts or tasks,
//     which are controlled by their parent), apex shares on about 10% of the projects, and
//     team entries on about 2% of the accounts, opportunities and cases (child access only
//     on account teams).
//
// Ids the generator always produces: user u0001, an active internal user with a role, and
// account acc000001, which u0001 owns; and the exported constants below, which benchmarks use
// to build incremental changes. Record ids are a prefix per object and a 1-based number
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
	"os"
)

// Ids every generated org has, for benchmarks that change an imported org.
const (
	// BroadGroup is the target of the first rule of every object with rules, an owner-based
	// rule with source all_internal_users (read; on account with read on opportunities), so
	// most records of those objects have a share row for it: changing its members (it nests
	// g_sales_amer, g_sales_emea and g_sales_apac) changes who can see most of the org.
	BroadGroup = "g_all_sales"
	// MovableRole is a manager on the spine of the role tree (the branch above u0001's
	// director role has a role at every level): its parent is director_003, and
	// MovableRoleNewParent, two levels above it and not below it, is a valid new parent.
	MovableRole          = "manager_004"
	MovableRoleNewParent = "vp_002"
	// TightenObject has an open internal OWD (public_read_only) that a benchmark can
	// tighten to private; its external OWD is already private.
	TightenObject = "case"
	// SkewedOwner is the first of the three skewed owners, u0002 to u0004: active internal
	// users in roles from level 3 down, each owning over 10,000 records from 100k records on.
	SkewedOwner = "u0002"
	// SkewedAccount is the first of the three skewed accounts, acc000002 to acc000004, each
	// with over 10,000 children from 100k records on. Orgs of fewer than 4 accounts have
	// fewer skewed accounts.
	SkewedAccount = "acc000002"
)

// Options say what org to generate.
type Options struct {
	// Records is the total number of records, at least 1.
	Records int
	// Seed selects the org: the same options always give the same bytes.
	Seed int64
	// Users is the number of users, at least 10; 0 means Records/20 within [20, 5000].
	Users int
	// ExternalShare and InactiveShare are the fractions of external and inactive users:
	// round(share × (Users-1)) users each, at most Users-4, since u0001 to u0004 are always
	// internal and active. NewOptions sets 0.2 and 0.02.
	ExternalShare, InactiveShare float64
}

// NewOptions returns the default options for an org of records records.
func NewOptions(records int, seed int64) Options {
	return Options{Records: records, Seed: seed, ExternalShare: 0.2, InactiveShare: 0.02}
}

// Summary counts what Write wrote.
type Summary struct {
	Records       map[string]int // by object
	Users         int
	Roles         int
	Groups        int
	Rules         int
	RulesByObject map[string]int
	Shares        int
	Teams         int
	Bytes         int64
	Elements      int // records + shares + teams
	// MaxOwned is the number of records of the busiest owner (a user or a queue).
	MaxOwned int
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
	s := &Summary{Records: map[string]int{}, Users: len(o.users), Roles: len(o.roles), Groups: len(o.groups),
		Rules: len(o.rules), RulesByObject: map[string]int{}}
	for _, r := range o.rules {
		s.RulesByObject[r.Object]++
	}

	writeSection(out, "objects", objects)
	writeSection(out, "roles", o.roles)
	writeSection(out, "users", o.users)
	writeSection(out, "groups", o.groups)
	writeSection(out, "territories", o.territories)
	writeSection(out, "rules", o.rules)

	g := newRecordGen(o)
	owned := make(map[string]int, len(o.users)+3) // memory in users, not records
	out.begin("records")
	for i := range opt.Records {
		r := g.record(i)
		s.Records[r.Object]++
		owned[r.Owner]++
		out.entry(r)
	}
	out.end()
	for _, n := range owned {
		s.MaxOwned = max(s.MaxOwned, n)
	}
	s.Shares = writeEach(out, "shares", opt.Records, g.shares)
	s.Teams = writeEach(out, "teams", opt.Records, g.teams)
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

// WriteFile generates the org described by opt into a new file at path.
func WriteFile(path string, opt Options) (*Summary, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	s, err := Write(w, opt)
	if err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return s, f.Close()
}

// writeEach writes section name: the entries that of gives for each record
// position below records, in order. It returns how many it wrote.
func writeEach[T any](out *jsonWriter, name string, records int, of func(pos int) []T) int {
	n := 0
	out.begin(name)
	for i := range records {
		for _, e := range of(i) {
			out.entry(e)
			n++
		}
	}
	out.end()
	return n
}
