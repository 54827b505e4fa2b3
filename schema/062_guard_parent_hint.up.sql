-- recalc schema, version 62: the write guard's refusal of a parent says
-- how to write a child under a parent not yet materialized.
--
-- The guard (version 34) lets a user give a row a parent the user may
-- read, or one recalc has not absorbed yet whose row, owned by the user,
-- the session sees in the parent object's own attached table. A parent
-- object attached through a view has no such table, so a parent written
-- moments ago (an Odoo quotation for a customer created in the same
-- request, the customer attached through a view of res_partner) is
-- refused, even in the transaction that wrote it, with "must be a record
-- ... that the user may read": the user owns it, and the message gave no
-- way forward. The refusal now carries a hint: commit the parent and wait
-- for it with recalc.wait_fresh before writing the child (docs/rls.md).
-- It says too that the parent may be invalid (a customer with no
-- salesperson, whose row fails closed), which no user may read. The
-- message is unchanged, and the hint names no value. Found by a
-- newcomer's trial (TestGuardParentRefusalHints).

-- The guard, as in version 59 with the hint.
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
BEGIN
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE') OR TG_NARGS <> 1 THEN
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
    IF NOT (v_new ? g.id_col AND v_new ? g.owner_col AND (g.parent_col IS NULL OR v_new ? g.parent_col)
            AND (v_terr IS NULL OR v_new ? v_terr)) THEN
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
        IF (v_old -> g.id_col IS DISTINCT FROM v_new -> g.id_col OR v_old -> g.owner_col IS DISTINCT FROM v_new -> g.owner_col)
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
