// Package peer is the benchmark's "materialized view peer": what a DBA would
// write instead of recalc. It defines recalc's materialized tables as plain
// PostgreSQL materialized views over recalc's input tables, refreshed with
// REFRESH MATERIALIZED VIEW, so a full recalculation can be compared with a
// full refresh of the same semantics (docs/semantics.md) computed in SQL.
//
// The views live in schema peer (peer.sql.tmpl):
//   - peer.member is recalc.acl_member, the grantee closure: members(g) with
//     boss false, bosses(g) minus members(g) with boss true. Role and
//     territory hierarchies and nested groups are recursive CTEs.
//   - peer.share is recalc.acl_share, share rows at group grain deduplicated
//     by (record, grantee, cause) with the highest level and boss_ok OR-ed:
//     owner (user or queue), rules, manual and apex shares, teams,
//     territories, implicit child, implicit parent, and the owner grants
//     of controlled-by-parent chains (causes owner and parent_owner).
//   - peer.record is recalc.acl_record: each record with its access root.
//
// They read recalc.model_section, recalc.record, recalc.share_input and
// recalc.team only, never a recalc.acl_* table. recalc.grantee and
// recalc.principal serve as key -> integer dictionaries; recalc fills them
// for every grantee and user of the configuration it computes, so run it (or
// its dictionary step) before refreshing the peer.
//
// Criteria rules are the one part compiled from Go, as a DBA writes rule
// predicates by hand: Create reads the stored rules with the model's own
// parser and compiles each rule's conditions and filter logic into a SQL
// boolean over the record's fields (criteria.go), with every field name and
// value as an escaped string literal. The compiled text is fixed at Create;
// Refresh refuses to run once the stored rules differ.
//
// Known differences from recalc, by design of a simple peer:
//   - Records that fail validation (written with plain SQL and naming an
//     unknown owner, parent or territory, a parent of the wrong object, or a
//     parent cycle) get rows in the peer; recalc gives them none. Records of
//     an unknown object get none in both. Imports never store such records.
//   - A criteria condition on a number casts the stored JSON number to
//     float8, as recalc reads it into a float64 (one that rounds to zero,
//     such as 1e-400, is 0, as in recalc); a number beyond float8's range
//     fails the refresh (recalc fails to read such a record too).
package peer
