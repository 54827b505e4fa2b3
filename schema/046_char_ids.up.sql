-- recalc schema, version 46: objects attached to tables whose ids are
-- char(n) (bpchar), as SuiteCRM's and SugarCRM's char(36) ids are.
--
-- An attached object's id_type may now be 'bpchar'. The capture and the
-- absorb read a key as the column's own type (k::bpchar), so the column's
-- index answers; a char value reads as text without its trailing blanks,
-- as bpchar's equality ignores them, and that text is the record's key.
-- The functions that name the id types restate their bodies with it:
--   * record_key (version 34, its settings as version 35 pinned them)
--     reads an application's char id as the column does (trailing blanks
--     dropped);
--   * visible_ids (version 42) takes the id to continue after as the
--     column's type, char (and, for a text id, varchar) included;
--   * rls_write_guard (version 42) looks up a parent written moments ago in
--     a char-keyed table too.
-- Otherwise each is as before; CREATE OR REPLACE keeps owners and grants.

ALTER TABLE recalc.attachment DROP CONSTRAINT IF EXISTS attachment_id_type_check;
ALTER TABLE recalc.attachment ADD CONSTRAINT attachment_id_type_check
    CHECK (id_type IN ('text', 'bigint', 'integer', 'uuid', 'bpchar'));

CREATE OR REPLACE FUNCTION recalc.record_key(p_object text, p_id text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET standard_conforming_strings = on AS $$ -- as version 35 pinned it
DECLARE
    v_type text;
    v_max numeric;
BEGIN
    SELECT id_type INTO v_type FROM recalc.attachment WHERE object = p_object;
    IF NOT FOUND THEN
        RETURN p_id;
    END IF;
    CASE v_type
    WHEN 'bigint', 'integer' THEN
        v_max := CASE v_type WHEN 'bigint' THEN 9223372036854775807 ELSE 2147483647 END;
        IF p_id !~ '^\s*[+-]?0*[0-9]{1,19}\s*$' OR NOT p_id::numeric BETWEEN -v_max - 1 AND v_max THEN
            RETURN NULL;
        END IF;
        RETURN p_object || ':' || p_id::bigint::text;
    WHEN 'uuid' THEN
        IF p_id !~ '^(\{[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7}\}|[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7})$' THEN
            RETURN NULL;
        END IF;
        RETURN p_object || ':' || p_id::uuid::text;
    WHEN 'bpchar' THEN -- as a char column's value reads as text: without trailing blanks
        RETURN p_object || ':' || p_id::bpchar::text;
    ELSE
        RETURN p_object || ':' || p_id;
    END CASE;
END
$$;

CREATE OR REPLACE FUNCTION recalc.visible_ids(p_user text, p_object text, p_min_level text, p_after anyelement, p_limit integer)
RETURNS TABLE (id anyelement, level text, next_after anyelement)
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    -- A char column's values are bpchar (pg_typeof says character), a
    -- varchar column's are text's.
    v_type text := CASE pg_typeof(p_after) WHEN 'bpchar'::regtype THEN 'bpchar' WHEN 'varchar'::regtype THEN 'text'
                   ELSE pg_typeof(p_after)::text END;
    v_id_type text := 'text';
    v_prefix text := '';
    v_after text;
    r record;
BEGIN
    SELECT a.id_type, a.object || ':' INTO v_id_type, v_prefix FROM recalc.attachment a WHERE a.object = p_object;
    IF NOT FOUND THEN
        v_id_type := 'text';
        v_prefix := '';
    END IF;
    IF v_type NOT IN ('text', v_id_type) AND NOT (v_type = 'bigint' AND v_id_type = 'integer') THEN
        RAISE EXCEPTION 'the ids of object % are %, not %', quote_literal(left(p_object, 64)), v_id_type, v_type
            USING ERRCODE = '22023', HINT = CASE v_id_type WHEN 'text' THEN 'pass the id to continue after as text, and NULL::text for the first page'
                ELSE format('pass the id to continue after as %s or text, and NULL::%s for the first page', v_id_type, v_id_type) END;
    END IF;
    IF p_after IS NOT NULL THEN
        v_after := recalc.record_key(p_object, p_after::text);
        IF v_after IS NULL THEN
            RAISE EXCEPTION 'the id to continue after is not an id of object %: its ids are %', quote_literal(left(p_object, 64)), v_id_type
                USING ERRCODE = '22023', HINT = 'pass the last id of the previous page, or NULL for the first page';
        END IF;
    END IF;
    FOR r IN SELECT * FROM recalc.visible_records(p_user, p_object, p_min_level, v_after, p_limit) LOOP
        id := substr(r.record, length(v_prefix) + 1);
        level := r.level;
        next_after := substr(r.next_after, length(v_prefix) + 1);
        RETURN NEXT;
    END LOOP;
END
$$;

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
            RAISE EXCEPTION 'only a user with all access to a record of object % may change its owner or its id', g.object USING ERRCODE = '42501';
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
