// Package sharetable reads and writes the materialized access tables: the
// group closure (acl_member), record rows (acl_record), share rows
// (acl_share), users and objects, and the dictionaries of their integer ids
// (dict.go). It looks up record families and loads them for computation
// (families.go), locks them without ever waiting while it holds a lock
// (lock.go), diffs and applies their rows with unnest arrays (diff.go),
// diffs and writes the closure (closure.go), and builds a full run's
// staging tables with COPY and swaps them in (staging.go). Its lookups of
// the families that hold some records (by id, object, owner, territory or
// criteria) are what internal/engine resolves a plan's selectors with; it
// knows nothing of the planner. Nothing here writes a row at a time.
package sharetable
