-- recalc schema, version 41: moving a record controlled by its parent
-- under another parent needs all access to it.
--
-- A record of an object whose OWD is controlled_by_parent takes all of its
-- access from its parent (docs/semantics.md, section 3.3): whoever has all
-- on the parent has all on it. Version 34's write guard judged a new parent
-- only by whether the user may read it, so an editor of such a record (edit
-- on its parent, a team entry say) moved it under an account of their own,
-- had all on it once recalc absorbed the write, and then changed its owner:
-- edit became transfer in two statements, and the old parent's users lost
-- the record. Moving such a record is now judged as an owner change is: all
-- access to it, or no record of it yet. Records of other objects keep
-- version 34's rule: under a parent they may read, a user gains at most the
-- parent's implicit child access, which is never above edit.

-- rls_may_reparent: whether p_user may move the record p_key of p_object
-- under another parent. Any user the policies let write it, unless the
-- object is controlled by its parent, in the materialized tables or in the
-- stored model (an import not yet run): then as rls_may_transfer. A reader
-- may ask it about any object: it tells whether an object is controlled by
-- its parent, in the stored model too (an import not yet run, which no
-- other reader function tells).
CREATE FUNCTION recalc.rls_may_reparent(p_user text, p_object text, p_key text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT (coalesce((SELECT o.cbp FROM recalc.acl_object o WHERE o.name = p_object), false)
                OR EXISTS (SELECT 1 FROM recalc.model_section s,
                                  jsonb_array_elements(CASE WHEN jsonb_typeof(s.doc) = 'array' THEN s.doc ELSE '[]' END) o
                           WHERE s.name = 'objects' AND o ->> 'name' = p_object
                             AND 'controlled_by_parent' IN (o ->> 'internal_owd', o ->> 'external_owd')))
        OR recalc.rls_may_transfer(p_user, p_key)
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_may_reparent(text, text, text) FROM PUBLIC;

-- Roles granted the write guard's lookups (recalc grant reader) get it too.
DO $$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN
        SELECT DISTINCT quote_ident(r.rolname)
        FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE p.oid = 'recalc.rls_may_transfer(text, text)'::regprocedure
          AND a.privilege_type = 'EXECUTE' AND r.oid <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.rls_may_reparent(text, text, text) TO %s', v_role);
    END LOOP;
END
$$;

-- The guard, as in version 34 with the check above, and the check that the
-- writing role may run all three lookups.
CREATE OR REPLACE FUNCTION recalc.rls_write_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_user text;
    g record;
    v_new jsonb;
    v_old jsonb;
    v_owner text;
BEGIN
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE') OR TG_NARGS <> 1 THEN
        RAISE EXCEPTION 'recalc.rls_write_guard runs only as the row trigger recalc rls enable installs' USING ERRCODE = '42501';
    END IF;
    IF NOT row_security_active(TG_RELID) THEN
        RETURN NULL; -- the table's owner, a superuser, a BYPASSRLS role: no policy applies either
    END IF;
    IF NOT (has_schema_privilege('recalc', 'USAGE') AND has_function_privilege('recalc.rls_guard(oid)', 'EXECUTE')
            AND has_function_privilege('recalc.rls_may_reparent(text, text, text)', 'EXECUTE')) THEN
        RAISE EXCEPTION 'a role writing to % under recalc''s write policies needs the reader''s functions for recalc''s write guard: recalc grant reader ROLE',
            TG_TABLE_NAME USING ERRCODE = '42501';
    END IF;
    SELECT * INTO g FROM recalc.rls_guard(TG_RELID);
    IF NOT FOUND THEN
        RETURN NULL; -- no object attached to the table itself
    END IF;
    v_new := to_jsonb(NEW);
    IF NOT (v_new ? g.id_col AND v_new ? g.owner_col AND (g.parent_col IS NULL OR v_new ? g.parent_col)) THEN
        RAISE EXCEPTION 'the write guard of object % finds none of its columns: run recalc attach, then recalc rls enable, again', g.object
            USING ERRCODE = '42501';
    END IF;
    -- NULL: no user set (the application's own role, through --insert-role).
    -- It has no access: it may give a row only an id recalc holds nothing
    -- under, and no parent check applies, as it gains nothing by one.
    v_user := CASE WHEN TG_ARGV[0] = '' THEN current_user::text ELSE nullif(current_setting(TG_ARGV[0], true), '') END;
    IF TG_OP = 'UPDATE' THEN
        v_old := to_jsonb(OLD);
        IF (v_old -> g.id_col IS DISTINCT FROM v_new -> g.id_col OR v_old -> g.owner_col IS DISTINCT FROM v_new -> g.owner_col)
           AND NOT coalesce(recalc.rls_may_transfer(v_user, g.object || ':' || (v_old ->> g.id_col)), false) THEN
            RAISE EXCEPTION 'only a user with all access to a % record may change its owner or its id', g.object USING ERRCODE = '42501';
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND g.parent_col IS NOT NULL AND v_old -> g.parent_col IS DISTINCT FROM v_new -> g.parent_col
       AND NOT coalesce(recalc.rls_may_reparent(v_user, g.object, g.object || ':' || (v_old ->> g.id_col)), false) THEN
        RAISE EXCEPTION 'only a user with all access to a % record may move it under another parent: its access comes from its parent', g.object
            USING ERRCODE = '42501';
    END IF;
    IF (TG_OP = 'INSERT' OR v_old -> g.id_col IS DISTINCT FROM v_new -> g.id_col)
       AND NOT coalesce(recalc.rls_may_transfer(v_user, g.object || ':' || (v_new ->> g.id_col)), false) THEN
        RAISE EXCEPTION 'only a user with all access to the % record recalc holds under an id may give a row that id', g.object
            USING ERRCODE = '42501';
    END IF;
    IF v_user IS NULL OR g.parent_col IS NULL OR v_new ->> g.parent_col IS NULL
       OR TG_OP = 'UPDATE' AND v_old -> g.parent_col IS NOT DISTINCT FROM v_new -> g.parent_col
       OR recalc.access_level(v_user, g.parent_object || ':' || (v_new ->> g.parent_col)) <> 'none' THEN
        RETURN NULL;
    END IF;
    -- A parent recalc has no record of that the user may see and owns: one
    -- written moments ago, in this transaction or another, not absorbed.
    -- The type is spliced into the SQL: only the four attachment.id_type
    -- admits. A value that is no id of that type is no such row: the cast's
    -- error would carry the value.
    IF g.parent_table IS NOT NULL AND g.parent_id_type IN ('text', 'bigint', 'integer', 'uuid') THEN
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
    RAISE EXCEPTION 'the parent of a % record must be a % record the user may read', g.object, g.parent_object USING ERRCODE = '42501';
END
$$;
