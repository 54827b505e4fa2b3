package access

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/pg"
)

// Access a role can be given to the schema (`recalc grant`), each the least
// its use needs. SECURITY.md describes them.
const (
	// Reader may ask the SQL access API (access_level, can_access,
	// visible_records, visible_ids, record_key, invalid_records, and the
	// rls_* functions that recalc's row-level security policies call) and
	// so read and write through those policies. It reads no table.
	Reader = "reader"
	// Writer may read, insert, update and delete records with plain SQL:
	// only the columns an application owns, never rid or root_id (nor read
	// root_id), no record of an attached object, and no other table.
	// The capture trigger logs its changes with the engine's rights.
	Writer = "writer"
)

// readerGrants and writerGrants are the privileges of each kind of role,
// with %s for the quoted role name.
var (
	readerGrants = []string{
		`GRANT USAGE ON SCHEMA recalc TO %s`,
		`GRANT EXECUTE ON FUNCTION recalc.access_level(text, text), recalc.access_level(text, text, text),
			recalc.visible_records(text, text, text), recalc.visible_records(text, text, text, text, integer),
			recalc.can_access(text, text, text, text), recalc.rls_mode(text, text, text), recalc.rls_records(text, text, text), recalc.invalid_records() TO %s`,
		`GRANT EXECUTE ON FUNCTION recalc.rls_keys(text, text, text), recalc.rls_broad(text, text, text),
			recalc.rls_broad_exact(text, text, text), recalc.rls_text_ids(text[], text),
			recalc.rls_int_ids(text[], text, bigint, bigint), recalc.rls_uuid_ids(text[], text) TO %s`, // per-user plans (migration 018)
		`GRANT EXECUTE ON FUNCTION recalc.rls_owner_kept(text, text, text, text) TO %s`, // policies enabled under migration 033
		`GRANT EXECUTE ON FUNCTION recalc.rls_guard(oid), recalc.rls_may_transfer(text, text), recalc.rls_may_reparent(text, text, text),
			recalc.rls_guard_territories(oid) TO %s`, // the write guard (migrations 034, 041 and 059)
		`GRANT EXECUTE ON FUNCTION recalc.record_key(text, text), recalc.access_level(text, text, bigint),
			recalc.access_level(text, text, uuid), recalc.visible_ids(text, text, text, anyelement, integer) TO %s`, // application ids (migration 022)
		`GRANT SELECT ON recalc.invalid_record TO %s`,
		`GRANT EXECUTE ON FUNCTION recalc.access_changes(bigint, integer), recalc.access_changes_head() TO %s`, // the feed (docs/feed.md)
		freshGrant,
	}
	writerGrants = []string{
		`GRANT USAGE ON SCHEMA recalc TO %s`,
		// Not root_id, the engine's: the top of a record's parent chain,
		// which names an attached record's account (migration 084). A
		// role granted before that held SELECT on the whole table.
		`REVOKE SELECT ON recalc.record FROM %s`,
		`GRANT SELECT (rid, id, object, owner, parent, fields, territories), DELETE ON recalc.record TO %s`,
		`GRANT INSERT (id, object, owner, parent, fields, territories), UPDATE (id, object, owner, parent, fields, territories)
			ON recalc.record TO %s`,
		// The policy that hides the records of attached objects from it
		// (migration 082) calls this.
		`GRANT EXECUTE ON FUNCTION recalc.attached_objects() TO %s`,
		freshGrant,
	}
	// freshGrant is read-your-writes (migration 011), for both kinds.
	freshGrant = `GRANT EXECUTE ON FUNCTION recalc.fresh_token(), recalc.wait_fresh(bigint, interval), recalc.wait_fresh(interval) TO %s`
)

// Grant gives role the privileges of kind (Reader or Writer). The role
// must exist; the caller must own the schema.
func Grant(ctx context.Context, tx pgx.Tx, kind, role string) error {
	var sqls []string
	switch kind {
	case Reader:
		sqls = readerGrants
	case Writer:
		sqls = writerGrants
	default:
		return fmt.Errorf("unknown kind of access %q: give %s or %s", kind, Reader, Writer)
	}
	if err := pg.CheckName("role", role); err != nil {
		return err
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return fmt.Errorf("look up role: %w", err)
	}
	if !exists {
		return fmt.Errorf("role %q does not exist: create it first (CREATE ROLE ... LOGIN)", role)
	}
	// The sandbox runs table owners' code in its reads (SECURITY.md, "The
	// sandbox role"): it must hold nothing, and recalc's checks before each
	// read look at its attributes and memberships, not at its grants.
	var sandbox string
	if err := tx.QueryRow(ctx, `SELECT recalc.attach_sandbox_role()`).Scan(&sandbox); err != nil {
		return fmt.Errorf("look up the sandbox role: %w", err)
	}
	if role == sandbox {
		return fmt.Errorf("role %q is recalc's sandbox role, which runs the code of attached tables' owners and must hold nothing: grant %s access to another role (SECURITY.md, \"The sandbox role\")", role, kind)
	}
	quoted := pgx.Identifier{role}.Sanitize()
	for _, sql := range sqls {
		if _, err := tx.Exec(ctx, strings.ReplaceAll(sql, "%s", quoted)); err != nil {
			return fmt.Errorf("grant %s access to %q: %w", kind, role, err)
		}
	}
	return nil
}
