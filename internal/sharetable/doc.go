// Package sharetable holds every SQL statement that reads the stored model
// for recalculation or reads and writes the materialized access tables: the
// group closure (acl_member), records (acl_record) and share rows
// (acl_share). Bulk writes use COPY; nothing here writes a row at a time.
package sharetable
