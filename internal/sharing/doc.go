// Package sharing computes, in pure Go, what the materialized tables must hold
// for a validated model: the group closure (which active users each grantee
// reaches, and whether only through the role hierarchy) and the share rows of
// a set of record families at group grain.
//
// A family is a root record and all its descendants. Everything a record's
// rows depend on, besides configuration, lies in its family: implicit child
// access reads the parent account, implicit parent access reads the children,
// and controlled-by-parent records read their ancestors. Families are
// therefore the unit of work: the engine can recompute any set of families
// independently, in parallel, and in any order.
//
// The package holds no SQL; internal/sharetable reads and writes the rows.
package sharing
