-- recalc schema, version 59: the write guard refuses a change of an
-- account's territories below all access.
--
-- A record's territories give access, as a share does: each territory's
-- account access to its users, and its contact, opportunity and case
-- access to them on the account's children (docs/semantics.md, "Implicit
-- child"). The write guard (version 34) judged an UPDATE's owner, id and
-- parent, not its territories, so under `recalc rls enable --write` a
-- user with edit access to an account (a team entry giving nothing on its
-- children, say) could put it in a territory of their own whose
-- opportunity access is edit, and, once absorbed, edit every opportunity
-- of the account, which nothing in the model gave them; or share the
-- account with any territory's users. Assigning an account to a territory
-- is no field edit (in Salesforce it takes the territory managers'
-- rights), and sharing a record takes full access. The guard now refuses
-- an UPDATE that changes the attached territories column unless the user
-- has all access to the record (or recalc has no record of it yet: a row
-- not absorbed), as for an owner change; the territories are compared as
-- a set (NULL, an empty array, an order or a repeat change nothing, so an
-- application that writes every column back on save is not refused). An
-- INSERT names its owner, who gets all, so its territories are not judged
-- (a session that may insert may name any owner). Found by an attack
-- helper (TestRLSWriteTerritoriesNeedAll).
--
-- rls_guard_territories(relid): the territories column of the object
-- attached to the table itself, read by the guard, which runs as the
-- writing role; given, as the guard's other lookups, to every role that
-- may run them (recalc grant reader). It tells a column name, as
-- rls_guard does.

CREATE OR REPLACE FUNCTION recalc.rls_guard_territories(p_relid oid) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.territories_col FROM recalc.attachment a
    WHERE a.relid = p_relid AND NOT a.is_view AND a.object <> 'users'
    ORDER BY a.object LIMIT 1
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_guard_territories(oid) FROM PUBLIC;

-- Roles granted the write guard's lookups (recalc grant reader) get it too.
DO $$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN
        SELECT DISTINCT quote_ident(r.rolname)
        FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE p.oid = 'recalc.rls_guard(oid)'::regprocedure
          AND a.privilege_type = 'EXECUTE' AND r.oid <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.rls_guard_territories(oid) TO %s', v_role);
    END LOOP;
END
$$;

-- The guard, as in version 47 with the check above.
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
    RAISE EXCEPTION 'the parent of a record of object % must be a record of object % that the user may read', g.object, g.parent_object USING ERRCODE = '42501';
END
$$;
