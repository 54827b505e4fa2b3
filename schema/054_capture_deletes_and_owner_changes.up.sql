-- recalc schema, version 54: a row deleted from an attached table, or its
-- owner changed, counts as such even when the row is back as it was before
-- recalc absorbs the write.
--
-- The capture of an attached table logs the ids a statement wrote, and the
-- absorb mirrors each id from the row it finds then. So a row deleted and
-- another inserted under its id, or an owner changed and changed back,
-- between two absorbs read as one update (or as none): the record kept
-- its manual shares and team entries, where the same writes to
-- recalc.record would have dropped them (the record's delete path; the
-- owner change's wipe of manual shares, section 5 of the contract). What a
-- record kept thus depended on when the absorb ran: within milliseconds
-- under `recalc watch`, and not at all between two nightly runs. A deleted
-- record's id given to a new row brought the old record's grants with it.
--
-- The capture of an attached table (not of a view's base tables, whose rows
-- are no records, nor of the users table) now marks its change rows
-- (recalc.change.effect): 'gone' for the ids of deleted rows, of rows whose
-- id an UPDATE changed away, and for a TRUNCATE; 'reowned' for the ids
-- whose owner column an UPDATE changed. Before it reads the rows again, the
-- absorb (and `recalc attach`, which takes the change rows too) drops the
-- shares and team entries of the records gone, as a record's delete does,
-- and the manual shares of those reowned, so a row back under the id starts
-- with none. A TRUNCATE of an attached table thus drops every share and
-- team entry of its object's records, as a TRUNCATE of recalc.record drops
-- all; the records of the rows refilled are updated in place.

ALTER TABLE recalc.change ADD COLUMN IF NOT EXISTS effect text;

-- attach_capture_body as in version 20, with the change rows' effects.
CREATE OR REPLACE FUNCTION recalc.attach_capture_body(c recalc.attach_capture) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a recalc.attachment;
    v_records boolean; -- the captured table holds the object's records
    v_updated text;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment t WHERE t.object = c.object;
    v_records := NOT a.is_view AND a.object <> 'users' AND c.relid = a.relid;
    IF a.is_view THEN
        v_updated := format('SELECT (s.%1$I)::text, NULL::text FROM new_rows s UNION ALL SELECT (s.%1$I)::text, NULL FROM old_rows s', c.key_col);
    ELSE
        v_updated := format('SELECT (coalesce(n.%1$I, o.%1$I))::text, %4$s FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
            WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR (%2$s) IS DISTINCT FROM (%3$s)', c.key_col,
            (SELECT string_agg(recalc.attach_compared('n', x, y, l), ', ') FROM unnest(c.cols, c.types, c.colls) u(x, y, l)),
            (SELECT string_agg(recalc.attach_compared('o', x, y, l), ', ') FROM unnest(c.cols, c.types, c.colls) u(x, y, l)),
            CASE WHEN v_records THEN format('CASE WHEN n.%1$I IS NULL THEN ''gone''
                WHEN o.%1$I IS NOT NULL AND (n.%2$I)::text IS DISTINCT FROM (o.%2$I)::text THEN ''reowned'' END', c.key_col, a.owner_col)
                 ELSE 'NULL::text' END);
    END IF;
    RETURN format($f$
BEGIN
%1$s
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg((s.%3$I)::text) FROM new_rows s HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO recalc.change (kind, object, keys, effect) SELECT 'attached', %2$L, array_agg(x.k), x.e FROM (%4$s) x(k, e) GROUP BY x.e;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO recalc.change (kind, object, keys, effect) SELECT 'attached', %2$L, array_agg((s.%3$I)::text), %5$L FROM old_rows s HAVING count(*) > 0;
    ELSE
        INSERT INTO recalc.change (kind, object, keys, effect) VALUES ('attached_all', %2$L, '{}', %5$L);
    END IF;
    IF FOUND AND coalesce(current_setting('recalc.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('recalc_changes', TG_OP);
    END IF;
    RETURN NULL;
END$f$, recalc.attach_guard_sql(c), c.object, c.key_col, v_updated, CASE WHEN v_records THEN 'gone' END);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_capture_body(recalc.attach_capture) FROM PUBLIC;

-- attach_take deletes the change rows logged for object p_object and
-- returns what they hold: whether a whole re-read is logged (o_all), the
-- oldest transaction id, the ids logged, whether a TRUNCATE is (o_all_gone),
-- and the ids of rows deleted or re-keyed away (o_gone) and of rows whose
-- owner changed (o_reowned). o_xid is NULL when no row was left.
CREATE OR REPLACE FUNCTION recalc.attach_take(p_object text, OUT o_all boolean, OUT o_xid xid8, OUT o_keys text[],
                                              OUT o_all_gone boolean, OUT o_gone text[], OUT o_reowned text[])
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object
                  RETURNING c.kind, c.keys, c.xid, c.effect)
    SELECT bool_or(g.kind = 'attached_all'), min(g.xid),
           (SELECT array_agg(DISTINCT k) FROM gone, unnest(gone.keys) k),
           coalesce(bool_or(g.kind = 'attached_all' AND g.effect = 'gone'), false),
           (SELECT array_agg(DISTINCT k) FROM gone, unnest(gone.keys) k WHERE gone.effect = 'gone'),
           (SELECT array_agg(DISTINCT k) FROM gone, unnest(gone.keys) k WHERE gone.effect = 'reowned')
    FROM gone g
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_take(text) FROM PUBLIC;

-- attach_effects applies what the change rows of attachment a marked
-- (p_all_gone: a TRUNCATE; p_gone: ids of rows deleted or re-keyed away;
-- p_reowned: ids whose owner changed), before the absorb reads the rows
-- again: the records gone lose their shares and team entries, as a deleted
-- record does, and those reowned their manual shares; their records are
-- logged as changed. The records themselves are left to the re-read, which
-- deletes those whose rows are gone for good, and keeps the others'
-- row ids (a refilled table's records are updated, not deleted and
-- inserted again).
CREATE OR REPLACE FUNCTION recalc.attach_effects(a recalc.attachment, p_all_gone boolean, p_gone text[], p_reowned text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_gone text[] := ARRAY(SELECT a.object || ':' || k FROM unnest(p_gone) k);
    v_reowned text[] := ARRAY(SELECT a.object || ':' || k FROM unnest(p_reowned) k);
BEGIN
    WITH s AS (DELETE FROM recalc.share_input s
               WHERE s.object = a.object AND (p_all_gone OR s.record IN (SELECT unnest(v_gone))
                                              OR s.cause = 'manual' AND s.record IN (SELECT unnest(v_reowned)))
               RETURNING s.record),
         t AS (DELETE FROM recalc.team t
               WHERE t.record IN (SELECT r.id FROM recalc.record r WHERE r.object = a.object
                                  AND (p_all_gone OR r.id IN (SELECT unnest(v_gone))))
               RETURNING t.record)
    INSERT INTO recalc.change (kind, keys)
    SELECT 'record', array_agg(DISTINCT x.record) FROM (SELECT record FROM s UNION ALL SELECT record FROM t) x HAVING count(*) > 0;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_effects(recalc.attachment, boolean, text[], text[]) FROM PUBLIC;

-- attach_absorb_one as in version 21, applying the change rows' effects.
CREATE OR REPLACE FUNCTION recalc.attach_absorb_one(p_object text)
RETURNS TABLE (object text, keys bigint, absorbed boolean, error_code text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off SET lock_timeout = '2s'
    SET TimeZone = 'UTC' SET extra_float_digits = 1 AS $$
DECLARE
    v_notify text := current_setting('recalc.notify', true); -- restored at the end (a function's SET clause may not name it)
    a recalc.attachment;
    v_rel regclass;
    v_name text;
    v_keys text[];
    v_all boolean;
    v_all_gone boolean;
    v_gone text[];
    v_reowned text[];
    v_xid xid8;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    PERFORM set_config('recalc.notify', 'off', true);
    object := p_object; keys := 0; absorbed := false; error_code := NULL;
    BEGIN
        -- The object's lock is its registry row, which no other role may take.
        SELECT * INTO a FROM recalc.attachment t WHERE t.object = p_object FOR NO KEY UPDATE;
        IF NOT FOUND THEN -- detached since; recalc.attach_remove deleted its records
            DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object;
            PERFORM set_config('recalc.notify', coalesce(v_notify, ''), true);
            RETURN;
        END IF;
        -- Lock what the re-read reads, by oid, before checking it.
        FOR v_rel IN SELECT x.relid::regclass FROM (SELECT c.relid FROM recalc.attach_capture c WHERE c.object = p_object
                                                    UNION SELECT a.relid) x
                     WHERE EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = x.relid) ORDER BY x.relid LOOP
            v_name := v_rel::text;
            EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', v_name);
            IF to_regclass(v_name) IS DISTINCT FROM v_rel THEN -- renamed meanwhile: the name locked is another's
                RAISE EXCEPTION 'a relation captured for object % was renamed while it was locked', p_object
                    USING ERRCODE = 'lock_not_available';
            END IF;
        END LOOP;
        IF recalc.attach_intact(p_object) THEN
            SELECT * INTO v_all, v_xid, v_keys, v_all_gone, v_gone, v_reowned FROM recalc.attach_take(p_object);
            IF v_xid IS NULL THEN -- another absorb took them
                PERFORM set_config('recalc.notify', coalesce(v_notify, ''), true);
                RETURN;
            END IF;
            IF v_all_gone OR v_gone IS NOT NULL OR v_reowned IS NOT NULL THEN
                PERFORM recalc.attach_effects(a, v_all_gone, v_gone, v_reowned);
            END IF;
            IF v_all THEN
                PERFORM recalc.attach_sync(a, NULL);
            ELSIF cardinality(v_keys) > 0 THEN
                PERFORM recalc.attach_sync(a, v_keys);
            END IF;
            PERFORM recalc.change_inherit_xid(v_xid);
            keys := coalesce(cardinality(v_keys), 0); absorbed := true;
        END IF;
    EXCEPTION WHEN OTHERS OR query_canceled OR assert_failure THEN -- never the message: it may quote a row's values
        error_code := SQLSTATE;
    END;
    IF absorbed THEN
        DELETE FROM recalc.attach_stuck s WHERE s.object = p_object;
    ELSE
        INSERT INTO recalc.attach_stuck AS s (object, error_code)
        SELECT p_object, error_code WHERE EXISTS (SELECT FROM recalc.attachment t WHERE t.object = p_object)
        ON CONFLICT ON CONSTRAINT attach_stuck_pkey DO UPDATE SET checked_at = excluded.checked_at, error_code = excluded.error_code,
            since = CASE WHEN s.error_code IS NOT DISTINCT FROM excluded.error_code THEN s.since ELSE excluded.since END;
    END IF;
    PERFORM set_config('recalc.notify', coalesce(v_notify, ''), true);
    RETURN NEXT;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_absorb_one(text) FROM PUBLIC;

-- attach_install as in version 36, but what the change rows it takes
-- marked is applied before the whole re-read (attaching again, as after a
-- capture that was not intact, must not drop a deletion's effect).
CREATE OR REPLACE FUNCTION recalc.attach_install(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off
    SET TimeZone = 'UTC' SET extra_float_digits = 1 AS $$
DECLARE
    a recalc.attachment;
    v_rows bigint;
    v_code text;
    t record;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_install_capture(p_object); -- locks each captured table SHARE ROW EXCLUSIVE: no index or DDL until commit
    PERFORM recalc.attach_check(p_object);
    v_code := recalc.attach_foreign_code(p_object);
    IF v_code IS NOT NULL THEN
        RAISE EXCEPTION 'cannot attach object %: % , which is not PostgreSQL''s own; PostgreSQL''s planner may run it with recalc''s rights when recalc reads the table', p_object, v_code
            USING HINT = 'drop that index or statistics object, or build it with pg_catalog functions and operators only, then attach again';
    END IF;
    PERFORM recalc.attach_ready(p_object);
    -- Read what was checked, by oid: the name may be another relation's by now.
    EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', a.relid::regclass);
    IF NOT recalc.attach_intact(p_object) THEN
        RAISE EXCEPTION 'the table or view attached for object % changed while it was being attached', p_object
            USING HINT = 'run `recalc attach` again';
    END IF;
    UPDATE recalc.attach_capture c SET fingerprint = f.fingerprint FROM recalc.attach_fingerprints() f
    WHERE f.object = c.object AND f.relid = c.relid AND c.object = p_object;
    PERFORM recalc.attach_writer_guard();
    SELECT * INTO t FROM recalc.attach_take(p_object);
    IF t.o_all_gone OR t.o_gone IS NOT NULL OR t.o_reowned IS NOT NULL THEN
        PERFORM recalc.attach_effects(a, t.o_all_gone, t.o_gone, t.o_reowned);
    END IF;
    DELETE FROM recalc.attach_stuck WHERE object = p_object;
    IF a.object <> 'users' THEN
        PERFORM recalc.attach_sandbox_check();
    END IF;
    BEGIN
        v_rows := recalc.attach_sync(a, NULL);
    EXCEPTION WHEN OTHERS OR query_canceled OR assert_failure THEN -- OTHERS leaves these two out
        GET STACKED DIAGNOSTICS v_code = RETURNED_SQLSTATE;
        IF v_code LIKE 'RC%' OR left(v_code, 2) IN ('40', '53', '55', '57') THEN
            RAISE;
        END IF;
        RAISE EXCEPTION 'reading the rows of object % failed with SQLSTATE % (the server''s message is not shown: it may quote the application''s data)', p_object, v_code
            USING ERRCODE = v_code,
                  HINT = 'check the rows of the attached table and, for a view, its casts and functions; then run `recalc attach` again';
    END;
    PERFORM recalc.change_inherit_xid(t.o_xid);
    RETURN v_rows;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_install(text) FROM PUBLIC;

-- The captures installed now get the new body in place: their functions
-- keep their oids and their triggers are untouched, so their tables'
-- fingerprints do not change (no whole re-read).
DO $$
DECLARE
    c recalc.attach_capture;
BEGIN
    FOR c IN SELECT * FROM recalc.attach_capture ORDER BY object, relid LOOP
        IF EXISTS (SELECT 1 FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace) THEN
            EXECUTE format('CREATE OR REPLACE FUNCTION recalc.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                           'SET search_path = pg_catalog, pg_temp SET row_security = off AS %L', c.func,
                           recalc.attach_capture_body(c));
        END IF;
    END LOOP;
END $$;
