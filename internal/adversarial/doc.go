// Package adversarial holds recalc's security regression tests: one test per
// finding of the hardening review, each run against a fresh database as real
// non-superuser roles set up exactly as SECURITY.md prescribes.
//
// The share tables are an authorization source, so every role that can
// reach the schema is treated as untrusted:
//
//   - the engine role owns the recalc schema and runs init, import and run;
//   - a reader role was given `recalc grant reader` and asks the SQL access
//     API (access_level, visible_records, invalid_records);
//   - a writer role was given `recalc grant writer` and writes recalc.record
//     with plain SQL;
//   - an outsider role can only CONNECT (and LISTEN).
//
// The tests attack the engine through those roles: borrowing the
// SECURITY DEFINER capture trigger, writing records that are invalid or
// shaped to break a run, deleting, renaming, truncating and re-creating
// records to inherit their shares, writing tables other than recalc.record,
// and looking for record field values in errors and notifications. Access is
// always read back through recalc.access_level as the reader, and compared
// with a from-scratch full run where that helps.
//
// The package has no non-test code besides this comment. SECURITY.md names
// the test that proves each of its claims.
package adversarial
