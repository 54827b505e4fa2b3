-- recalc schema, version 35: two read functions no longer depend on what the
-- calling session chose, and the unpaged list of visible records is bounded
-- by the object's records.
--
-- record_key's patterns hold backslashes ('\s'). PL/pgSQL reads its string
-- literals with the session's standard_conforming_strings, so a reader that
-- set it off before the first call in a session had the patterns compiled
-- as 's' (and kept that way for the session, pooled connections included):
-- ' 5' was no key of a bigint object, 's5' raised an error. The setting is
-- now pinned on the function.
ALTER FUNCTION recalc.record_key(text, text) SET standard_conforming_strings = on;

-- visible_records(user, object[, level]) read every share row the user's
-- closure reaches, of every object, to answer for one: a reader could make
-- it read a broad user's whole share set. It now follows the pages of the
-- paged form (10,000 records at a time, continuations included), which
-- starts from the user's grants for a selective user and otherwise walks
-- the object's records: its cost follows the object and what it returns.
-- Same rows and levels as before, now in record id order.
CREATE OR REPLACE FUNCTION recalc.visible_records(p_user text, p_object text, p_min_level text DEFAULT 'read')
RETURNS TABLE (record text, level text)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_after text;
    v_rows integer;
    v_more boolean;
    r record;
BEGIN
    -- As before: 'none' lists what 'read' does, and an unknown level nothing.
    IF p_min_level = 'none' THEN
        p_min_level := 'read';
    ELSIF p_min_level IS NULL OR p_min_level NOT IN ('read', 'edit', 'all') THEN
        RETURN;
    END IF;
    LOOP
        v_rows := 0;
        v_more := false;
        FOR r IN SELECT p.record, p.level, p.next_after
                 FROM recalc.visible_records(p_user, p_object, p_min_level, v_after, 10000) p LOOP
            IF r.record IS NULL THEN -- a continuation: the walk stopped at its bound
                v_after := r.next_after;
                v_more := true;
            ELSE
                record := r.record;
                level := r.level;
                RETURN NEXT;
                v_after := r.record;
                v_rows := v_rows + 1;
            END IF;
        END LOOP;
        EXIT WHEN NOT v_more AND v_rows < 10000;
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.visible_records(text, text, text) FROM PUBLIC;
