-- recalc schema, version 26: no role but the engine's may take the key of
-- an attached object's row.
--
-- The guard of recalc.record (version 10) refused a writer's records of an
-- attached object, but not a record of another object keyed like one of
-- its rows ('account:5' of object case, while account is attached): when
-- the application then inserted account 5, the capture left the writer's
-- record alone (it never takes over another object's record), so the row
-- was never mirrored and record_key('account', '5') named the writer's
-- record, with the access the writer chose. Imports refuse such keys
-- (internal/store); now the guard does too. The engine's own role (the
-- schema's owner) is trusted, as before. The attached users table
-- (object 'users', version 23) has no records, so no keys.
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
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_writer_guard() FROM PUBLIC;
SELECT recalc.attach_writer_guard();
