// Package store holds the stored model: the configuration sections as
// JSON (what is stored now, and what each side of the materialized tables
// was last computed from), the deferral of calculation, and the import of
// model files. An import is one transaction: the file is streamed into a
// staging table with COPY, merged section by section, and every reference
// is checked before commit, so an invalid file leaves the database exactly
// as it was. It recalculates nothing; the capture triggers log what changed
// in recalc.change for the next run.
//
// A merge (Options.Merge) applies a file entry by entry: each entry
// replaces the stored one with the same key and the file's "delete"
// section removes entries, with the same validation and atomicity. Export
// writes the stored model back in the file format, streamed from one
// snapshot, and Revision identifies the stored configuration, so an import
// of a stale export is refused (StaleError).
package store
