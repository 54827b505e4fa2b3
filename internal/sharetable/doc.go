// Package sharetable reads and writes the materialized access tables: the
// group closure (acl_member), record rows (acl_record), share rows
// (acl_share), users and objects, and the dictionaries of their integer ids.
// It loads record families for computation, locks them without ever waiting
// while it holds a lock, diffs and applies their rows with unnest arrays,
// and builds a full run's staging tables with COPY and swaps them in. It
// also resolves a plan's selectors into the families they touch. Nothing
// here writes a row at a time.
package sharetable
