// Package attach attaches objects of the sharing model to the application's
// own tables: an attached object's records are that table's rows (or a
// view's), mirrored into recalc.record by capture triggers in the writing
// transaction, so the application writes only its own tables and recalc
// follows every INSERT, UPDATE, DELETE, COPY and TRUNCATE.
//
// The attachment spec is its own JSON file (Parse, with bounded size and
// counts). Apply validates it against the database's catalog and the stored
// model, with one clear error per problem, and makes the attachments equal
// the file in one transaction: installs or updates capture, backfills
// existing rows, and detaches objects the file no longer names. The capture
// functions and triggers are generated server-side by migration 010 with
// format(%I, %L) from the registry tables recalc.attachment and
// recalc.attach_capture, which this package fills. docs/attach.md documents
// the spec, the record keys and the security model.
package attach
