-- recalc schema, version 83: a writer role reads no record of an attached
-- object.
--
-- `recalc grant writer` gives SELECT on recalc.record, so that the
-- application can read back and target the records it writes with plain
-- SQL. That table also holds the records of every attached object, as the
-- absorb mirrors them from the application's tables: their ids, owners,
-- parents, territories and attached fields (docs/attach.md). A writer role
-- that may not read those tables (no USAGE on their schema, or under
-- their row-level security) read every row's mirrored values there
-- (found by an attack helper: a writer with no right on schema crm listed
-- crm.account's owners and criteria fields). Now row-level security on
-- recalc.record hides the records of attached objects from every role but
-- the table's owner, the engine, and the roles that have its privileges
-- (superusers and BYPASSRLS roles are not under it either). A
-- writer's SELECT, UPDATE and DELETE see only the other records; an
-- INSERT, or an UPDATE that moves a record into an attached object, is
-- refused as before (record_attached_guard, version 26), or by the policy
-- itself (42501).
--
-- The policy reads no table: recalc.attached_objects() returns the
-- attached objects as a literal, which attach_writer_guard rewrites
-- whenever they change, as it rewrites record_attached_guard. A plain SQL
-- function with a body bound when created (search_path pinned), which the
-- planner inlines: the policy costs a writer's statement one comparison a
-- row, and replacing the function invalidates the plans that inlined it.
-- Writers need EXECUTE on it: `recalc grant writer` grants it, and this
-- migration grants it to the roles that may read recalc.record.

CREATE OR REPLACE FUNCTION recalc.attached_objects() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE
RETURN '{}'::text[];
REVOKE EXECUTE ON FUNCTION recalc.attached_objects() FROM PUBLIC;

-- attach_writer_guard, as in version 26, rewriting attached_objects too.
CREATE OR REPLACE FUNCTION recalc.attach_writer_guard() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_objects text[];
BEGIN
    SELECT coalesce(array_agg(object ORDER BY object), '{}') INTO v_objects FROM recalc.attachment;
    EXECUTE format('CREATE OR REPLACE FUNCTION recalc.record_attached_guard() RETURNS trigger '
                   'LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L', format($f$
DECLARE
    v_hit boolean := false;
BEGIN
    IF TG_RELID IS DISTINCT FROM 'recalc.record'::regclass OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.record_attached_guard() runs only as an AFTER statement trigger of recalc.record';
    END IF;
    IF cardinality(%1$L::text[]) = 0
       OR current_user = (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'recalc') THEN
        RETURN NULL;
    END IF;
    -- (each transition table in its own statement: only those of TG_OP exist)
    IF TG_OP <> 'DELETE' THEN
        v_hit := EXISTS (SELECT 1 FROM new_rows n CROSS JOIN unnest(%1$L::text[]) o
                         WHERE n.object = o OR (starts_with(n.id, o || ':') AND o <> 'users'));
    END IF;
    IF TG_OP <> 'INSERT' AND NOT v_hit THEN
        v_hit := EXISTS (SELECT 1 FROM old_rows WHERE object = ANY (%1$L::text[]));
    END IF;
    IF v_hit THEN
        RAISE EXCEPTION 'records of an attached object, and the keys its rows take (object:id), are written by its table''s capture only'
            USING ERRCODE = '42501', HINT = 'write the application table instead, or give the record an id that does not start with an attached object''s name and a colon (`recalc attach --list` shows which objects are attached)';
    END IF;
    RETURN NULL;
END$f$, v_objects));
    EXECUTE 'REVOKE EXECUTE ON FUNCTION recalc.record_attached_guard() FROM PUBLIC';
    -- CREATE OR REPLACE keeps the function's privileges (the writers').
    EXECUTE format('CREATE OR REPLACE FUNCTION recalc.attached_objects() RETURNS text[] '
                   'LANGUAGE sql STABLE PARALLEL SAFE RETURN %L::text[]', v_objects);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_writer_guard() FROM PUBLIC;
SELECT recalc.attach_writer_guard();

-- The writers granted before this version.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS role
             FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = 'recalc.record'::regclass AND a.privilege_type = 'SELECT'
               AND a.grantee <> c.relowner AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.attached_objects() TO %s', r.role);
    END LOOP;
END
$$;

-- The table's owner, and a role that has its privileges (a member of the
-- engine's role running recalc's commands), are not under row-level
-- security (the table is not FORCE'd), nor are superusers.
ALTER TABLE recalc.record ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS record_not_attached ON recalc.record;
CREATE POLICY record_not_attached ON recalc.record
    USING (object <> ALL (recalc.attached_objects()))
    WITH CHECK (true);
