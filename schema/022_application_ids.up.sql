-- recalc schema, version 22: the read functions take the application's own
-- ids (docs/attach.md, "Reading access by the application's ids").
--
-- An attached object's records are keyed object || ':' || id, so that ids of
-- different tables never collide. The application knows only its ids, of its
-- own types: now
--   * record_key(object, id) is the record's key: object:id for an attached
--     object, the id itself for any other;
--   * access_level(user, object, id) takes the application's id for an
--     attached object (text, and new overloads for bigint and uuid, an
--     integer id calls the bigint one);
--   * visible_ids(user, object, min_level, after, limit) is visible_records
--     with the application's ids, of the type of after (NULL::bigint,
--     NULL::uuid or text for the first page), in the same order and with the
--     same continuation rows.
-- The two-argument access_level, can_access and visible_records still take
-- and return record keys (row-level security policies call can_access with
-- the key). Every statement is safe to run again.

-- record_key: the key of the record an application calls p_id in p_object.
-- An attached object's id is read as its column's type, as the capture
-- writes it: '01' is bigint 1, an upper-case uuid its lower-case text. An
-- id that is not a value of the type names no record: NULL. The text is
-- checked before the cast, not caught after it: an EXCEPTION block starts
-- a subtransaction, which a parallel query may not.
CREATE OR REPLACE FUNCTION recalc.record_key(p_object text, p_id text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
        IF p_id !~ '^\s*[+-]?[0-9]+\s*$' OR NOT p_id::numeric BETWEEN -v_max - 1 AND v_max THEN
            RETURN NULL;
        END IF;
        RETURN p_object || ':' || p_id::bigint::text;
    WHEN 'uuid' THEN
        IF p_id !~ '^(\{[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7}\}|[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7})$' THEN
            RETURN NULL;
        END IF;
        RETURN p_object || ':' || p_id::uuid::text;
    ELSE
        RETURN p_object || ':' || p_id;
    END CASE;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.record_key(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.access_level(p_user text, p_object text, p_record text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key text := recalc.record_key(p_object, p_record);
BEGIN
    IF v_key IS NOT NULL AND EXISTS (SELECT 1 FROM recalc.acl_record WHERE id = v_key AND object = p_object) THEN
        RETURN recalc.access_level(p_user, v_key);
    END IF;
    RETURN 'none';
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.access_level(text, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.access_level(p_user text, p_object text, p_id bigint) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT recalc.access_level(p_user, p_object, p_id::pg_catalog.text) $$;
REVOKE EXECUTE ON FUNCTION recalc.access_level(text, text, bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.access_level(p_user text, p_object text, p_id uuid) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT recalc.access_level(p_user, p_object, p_id::pg_catalog.text) $$;
REVOKE EXECUTE ON FUNCTION recalc.access_level(text, text, uuid) FROM PUBLIC;

-- visible_ids: visible_records by the application's ids. p_after's type is
-- the ids' type: text for any object, or the attached id column's type
-- (bigint also for an integer column). The order is the ids' text order, as
-- visible_records'; a continuation row has a NULL id and level and the id
-- to continue after.
CREATE OR REPLACE FUNCTION recalc.visible_ids(p_user text, p_object text, p_min_level text, p_after anyelement, p_limit integer)
RETURNS TABLE (id anyelement, level text, next_after anyelement)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    v_type text := pg_typeof(p_after)::text;
    v_id_type text := 'text';
    v_prefix text := '';
    r record;
BEGIN
    SELECT a.id_type, a.object || ':' INTO v_id_type, v_prefix FROM recalc.attachment a WHERE a.object = p_object;
    IF NOT FOUND THEN
        v_id_type := 'text';
        v_prefix := '';
    END IF;
    IF v_type NOT IN ('text', v_id_type) AND NOT (v_type = 'bigint' AND v_id_type = 'integer') THEN
        RAISE EXCEPTION 'object %''s ids are %, not %', quote_literal(left(p_object, 64)), v_id_type, v_type
            USING ERRCODE = '22023', HINT = format('pass the id to continue after as %s or text, and NULL::%s for the first page', v_id_type, v_id_type);
    END IF;
    FOR r IN SELECT * FROM recalc.visible_records(p_user, p_object, p_min_level, v_prefix || p_after::text, p_limit) LOOP
        id := substr(r.record, length(v_prefix) + 1);
        level := r.level;
        next_after := substr(r.next_after, length(v_prefix) + 1);
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.visible_ids(text, text, text, anyelement, integer) FROM PUBLIC;

-- Roles granted the reader's functions (recalc grant reader) get the new
-- ones too.
DO $$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN
        SELECT DISTINCT quote_ident(r.rolname)
        FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE p.oid = 'recalc.visible_records(text, text, text, text, integer)'::regprocedure
          AND a.privilege_type = 'EXECUTE' AND r.oid <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.record_key(text, text), recalc.access_level(text, text, bigint),
            recalc.access_level(text, text, uuid), recalc.visible_ids(text, text, text, anyelement, integer) TO %s', v_role);
    END LOOP;
END
$$;
