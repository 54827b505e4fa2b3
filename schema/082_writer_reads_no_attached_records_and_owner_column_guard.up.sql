-- recalc schema, version 82: a writer role reads no record of an attached
-- object; the write guard guards the owner policy's column (below).
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
-- the table's owner (the engine) and the roles that have its privileges
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

-- The write guard (version 62) checked a change of the attached owner
-- column only. `rls enable --owner-column COL` lets the user a row's COL
-- names read, update and delete it, recalculated or not; given another
-- column than the attached owner (SuiteCRM's created_by beside
-- assigned_user_id, say), a user with edit access (a share, a rule) set
-- COL to itself, which nothing checked, and so kept reading, editing and
-- deleting the row after recalc gave it nothing (found by an attack
-- helper: TestOwnerColumnChangeNeedsAll). rls enable now passes the
-- policy's owner column as the trigger's second argument, and a change
-- of it needs all, as an owner change does. A trigger with one argument
-- (rls enable before this version) checks what it checked: recalc init
-- names its table (access.OutdatedPolicies).
CREATE OR REPLACE FUNCTION recalc.rls_write_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_user text;
    g record;
    v_new jsonb;
    v_old jsonb;
    v_owner text;
    v_char text[];
    v_terr text; -- the territories column of the object attached to the table, if any
    v_own text;  -- the owner column of the recalc_owner policy, when not the attached one
BEGIN
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE') OR TG_NARGS NOT IN (1, 2) THEN
        RAISE EXCEPTION 'recalc.rls_write_guard runs only as the row trigger recalc rls enable installs' USING ERRCODE = '42501';
    END IF;
    IF NOT row_security_active(TG_RELID) THEN
        RETURN NULL; -- the table's owner, a superuser, a BYPASSRLS role: no policy applies either
    END IF;
    IF NOT (has_schema_privilege('recalc', 'USAGE') AND has_function_privilege('recalc.rls_guard(oid)', 'EXECUTE')
            AND has_function_privilege('recalc.rls_may_reparent(text, text, text)', 'EXECUTE')
            AND has_function_privilege('recalc.rls_guard_territories(oid)', 'EXECUTE')) THEN
        RAISE EXCEPTION 'a role writing to % under recalc''s write policies needs the reader''s functions for recalc''s write guard: recalc grant reader ROLE',
            TG_TABLE_NAME USING ERRCODE = '42501';
    END IF;
    SELECT * INTO g FROM recalc.rls_guard(TG_RELID);
    IF NOT FOUND THEN
        RETURN NULL; -- no object attached to the table itself
    END IF;
    -- A char(n) id or parent column's value as its key: without the
    -- trailing blanks to_jsonb keeps.
    SELECT coalesce(array_agg(a.attname::text), '{}') INTO v_char FROM pg_attribute a
    WHERE a.attrelid = TG_RELID AND a.attname IN (g.id_col, g.parent_col) AND a.atttypid = 'bpchar'::regtype AND NOT a.attisdropped;
    v_new := to_jsonb(NEW);
    SELECT v_new || coalesce(jsonb_object_agg(k, rtrim(v_new ->> k, ' ')), '{}') INTO v_new FROM unnest(v_char) k WHERE v_new ->> k IS NOT NULL;
    v_terr := recalc.rls_guard_territories(TG_RELID);
    v_own := CASE WHEN TG_NARGS = 2 AND TG_ARGV[1] <> '' AND TG_ARGV[1] <> g.owner_col THEN TG_ARGV[1] END;
    IF NOT (v_new ? g.id_col AND v_new ? g.owner_col AND (g.parent_col IS NULL OR v_new ? g.parent_col)
            AND (v_terr IS NULL OR v_new ? v_terr) AND (v_own IS NULL OR v_new ? v_own)) THEN
        RAISE EXCEPTION 'the write guard of object % finds none of its columns: run recalc attach, then recalc rls enable, again', g.object
            USING ERRCODE = '42501';
    END IF;
    -- NULL: no user set (the application's own role, through --insert-role).
    -- It has no access: it may give a row only an id recalc holds nothing
    -- under, and no parent check applies, as it gains nothing by one.
    v_user := CASE WHEN TG_ARGV[0] = '' THEN current_user::text ELSE nullif(current_setting(TG_ARGV[0], true), '') END;
    IF TG_OP = 'UPDATE' THEN
        v_old := to_jsonb(OLD);
        SELECT v_old || coalesce(jsonb_object_agg(k, rtrim(v_old ->> k, ' ')), '{}') INTO v_old FROM unnest(v_char) k WHERE v_old ->> k IS NOT NULL;
        IF (v_old -> g.id_col IS DISTINCT FROM v_new -> g.id_col OR v_old -> g.owner_col IS DISTINCT FROM v_new -> g.owner_col
            OR v_old -> v_own IS DISTINCT FROM v_new -> v_own)
           AND NOT coalesce(recalc.rls_may_transfer(v_user, g.object || ':' || (v_old ->> g.id_col)), false) THEN
            RAISE EXCEPTION 'only a user with all access to a record of object % may change its owner or its id', g.object USING ERRCODE = '42501';
        END IF;
        -- The territories as a set: NULL and an empty array, their order
        -- and repeats give the same access (a NULL among them closes the
        -- record, and counts as a change).
        IF v_terr IS NOT NULL AND v_old -> v_terr IS DISTINCT FROM v_new -> v_terr
           AND (SELECT array_agg(DISTINCT e ORDER BY e) FROM jsonb_array_elements_text(
                    CASE jsonb_typeof(v_old -> v_terr) WHEN 'array' THEN v_old -> v_terr ELSE '[]' END) e)
               IS DISTINCT FROM
               (SELECT array_agg(DISTINCT e ORDER BY e) FROM jsonb_array_elements_text(
                    CASE jsonb_typeof(v_new -> v_terr) WHEN 'array' THEN v_new -> v_terr ELSE '[]' END) e)
           AND NOT coalesce(recalc.rls_may_transfer(v_user, g.object || ':' || (v_old ->> g.id_col)), false) THEN
            RAISE EXCEPTION 'only a user with all access to a record of object % may change its territories: they give access, as a share does', g.object
                USING ERRCODE = '42501';
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND g.parent_col IS NOT NULL AND v_old -> g.parent_col IS DISTINCT FROM v_new -> g.parent_col
       AND NOT coalesce(recalc.rls_may_reparent(v_user, g.object, g.object || ':' || (v_old ->> g.id_col)), false) THEN
        RAISE EXCEPTION 'only a user with all access to a record of object % may move it under another parent: its access comes from its parent', g.object
            USING ERRCODE = '42501';
    END IF;
    IF (TG_OP = 'INSERT' OR v_old -> g.id_col IS DISTINCT FROM v_new -> g.id_col)
       AND NOT coalesce(recalc.rls_may_transfer(v_user, g.object || ':' || (v_new ->> g.id_col)), false) THEN
        RAISE EXCEPTION 'only a user with all access to the record of object % that recalc holds under an id may give a row that id', g.object
            USING ERRCODE = '42501';
    END IF;
    IF v_user IS NULL OR g.parent_col IS NULL OR v_new ->> g.parent_col IS NULL
       OR TG_OP = 'UPDATE' AND v_old -> g.parent_col IS NOT DISTINCT FROM v_new -> g.parent_col
       OR recalc.access_level(v_user, g.parent_object || ':' || (v_new ->> g.parent_col)) <> 'none' THEN
        RETURN NULL;
    END IF;
    -- A parent recalc has no record of that the user may see and owns: one
    -- written moments ago, in this transaction or another, not absorbed.
    -- The type is spliced into the SQL: only the five attachment.id_type
    -- admits. A value that is no id of that type is no such row: the cast's
    -- error would carry the value.
    IF g.parent_table IS NOT NULL AND g.parent_id_type IN ('text', 'bigint', 'integer', 'uuid', 'bpchar') THEN
        BEGIN
            EXECUTE format('SELECT (%I)::text FROM %s WHERE %I = $1::%s', g.parent_owner_col, g.parent_table, g.parent_id_col, g.parent_id_type)
                INTO v_owner USING v_new ->> g.parent_col;
        EXCEPTION WHEN data_exception THEN
            v_owner := NULL;
        END;
        -- rls_may_transfer is true here only when recalc holds nothing
        -- under that id.
        IF v_owner COLLATE "C" = v_user AND coalesce(recalc.rls_may_transfer(v_user, g.parent_object || ':' || (v_new ->> g.parent_col)), false) THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'the parent of a record of object % must be a record of object % that the user may read', g.object, g.parent_object
        USING ERRCODE = '42501', HINT = 'the parent may be invalid (recalc.invalid_record: no owner, say), or not materialized yet: such a parent counts '
            || 'only when this session sees its row, owned by the user, '
            || 'in the parent object''s own attached table (not a view): commit the parent and SELECT recalc.wait_fresh(interval ''2 s'') '
            || 'before writing the child (docs/rls.md)';
END
$$;
