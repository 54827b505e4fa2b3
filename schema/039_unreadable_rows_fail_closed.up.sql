-- recalc schema, version 39: a row that cannot be read fails closed alone.
--
-- An attached view that casts a column (`(p.properties ->> 'vip')::boolean`)
-- raises on a row whose value the cast does not fit (22P02), and so does
-- any expression of the application's view on its own data (a division by
-- zero, a date out of range: SQLSTATE class 22). The absorb read each
-- slice of 5,000 ids in one statement, so one such row failed its whole
-- object's absorb on every try: none of the object's later writes was
-- mirrored, a revocation included, and every `wait_fresh` failed with RC002
-- until someone corrected the row (or, for a backfill, the whole attach
-- failed). attach_sync_slice now halves a slice that fails so, as it
-- halves one whose rows do not fit an array, down to the single id whose
-- read fails, and mirrors that record closed, as a row whose values are out
-- of bounds (version 27): its stored owner kept (the moment of failure is
-- no owner change, so its manual shares stay), no parent or fields, the
-- territory list {""}; a new record gets the empty owner too. Reading the
-- row again, once it is corrected, mirrors it as it is. A check_violation
-- of recalc.record on one row is isolated the same way. A read that fails
-- even for no id is the view's fault, not a row's: it still fails the
-- absorb.
CREATE OR REPLACE FUNCTION recalc.attach_sync_slice(a recalc.attachment, p_view text, p_rows text, p_keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_half int := cardinality(p_keys) / 2;
BEGIN
    RETURN recalc.attach_apply(a, p_keys, recalc.attach_sandboxed(p_view, p_rows, p_keys));
EXCEPTION WHEN program_limit_exceeded OR data_exception OR check_violation THEN
    IF v_half > 0 THEN
        RETURN recalc.attach_sync_slice(a, p_view, p_rows, p_keys[1:v_half])
             + recalc.attach_sync_slice(a, p_view, p_rows, p_keys[v_half + 1:]);
    ELSIF SQLSTATE LIKE '54%' THEN -- one row that does not fit: nothing to halve
        RAISE;
    END IF;
    -- A read that fails with no row at all (a constant cast in the view,
    -- folded when planned) is not this row's doing: that fails the absorb.
    PERFORM recalc.attach_sandboxed(p_view, p_rows, '{}'::text[]);
    RETURN recalc.attach_unreadable(a, p_keys[1]);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync_slice(recalc.attachment, text, text, text[]) FROM PUBLIC;

-- attach_unreadable mirrors closed the record of attachment a whose id (the
-- source's, as text) is p_key, whose row could not be read. A record of
-- another object holding the id is never taken over.
CREATE OR REPLACE FUNCTION recalc.attach_unreadable(a recalc.attachment, p_key text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_n bigint;
BEGIN
    INSERT INTO recalc.record AS r (id, object, owner, parent, fields, territories)
    VALUES (a.object || ':' || p_key, a.object, '', NULL, '{}', '{""}')
    ON CONFLICT (id) DO UPDATE SET parent = NULL, fields = '{}', territories = '{""}'
    WHERE r.object = a.object AND (r.parent, r.fields, r.territories) IS DISTINCT FROM (NULL::text, '{}'::jsonb, '{""}'::text[]);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_unreadable(recalc.attachment, text) FROM PUBLIC;
