-- recalc schema, version 32: visible_ids reads the id to continue after as
-- access_level reads an id.
--
-- For an attached object it compared the object's prefix and the id's text
-- as given, so an id written otherwise than the application stores it
-- (bigint 01 or +1, an upper-case or braced uuid) listed the record again,
-- restarted the list, or skipped every later record. Now the id goes
-- through recalc.record_key, as in access_level, and one that is not an id
-- of the object's type is refused. NULL still lists from the start, and
-- '' is an id (a text id may be empty).
CREATE OR REPLACE FUNCTION recalc.visible_ids(p_user text, p_object text, p_min_level text, p_after anyelement, p_limit integer)
RETURNS TABLE (id anyelement, level text, next_after anyelement)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    v_type text := pg_typeof(p_after)::text;
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
        RAISE EXCEPTION 'object %''s ids are %, not %', quote_literal(left(p_object, 64)), v_id_type, v_type
            USING ERRCODE = '22023', HINT = format('pass the id to continue after as %s or text, and NULL::%s for the first page', v_id_type, v_id_type);
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
