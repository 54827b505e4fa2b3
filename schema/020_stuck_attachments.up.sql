-- recalc schema, version 20: an attached object whose writes cannot be
-- absorbed no longer slows down or misleads everyone else (docs/attach.md,
-- "When an object's writes cannot be absorbed").
--
-- Since version 19 an object whose capture is not intact, or whose source
-- the engine may not read (a revoked SELECT, row-level security it does not
-- bypass, a lock held past lock_timeout), keeps its change rows. Until
-- someone fixed it:
--   * every step of `recalc watch` tried that object again: it took the
--     model lock, and waited up to 2 s (lock_timeout) for a locked table, so
--     every other change waited too; with more ids logged than a fast batch
--     holds (or a TRUNCATE), every step fell back to a whole job;
--   * recalc.wait_fresh waited its whole timeout, for every caller, and then
--     said only "not materialized";
--   * each absorb notified recalc_changes of the records it wrote, waking the
--     watch for one more step with nothing left to do.
-- Now recalc.attach_absorb remembers each object it left in recalc.attach_stuck
-- (why, since when, last tried), and forgets it once absorbed, re-attached
-- or detached. The fast path (attach_absorb with p_retry) and the watch's
-- idle check leave a remembered object alone until p_retry has passed since
-- its last try; jobs try every object. recalc.wait_fresh fails with SQLSTATE
-- RC002 as soon as all it still waits for is writes of objects that cannot
-- be absorbed until someone acts (anything but a lock or serialization
-- failure). An absorb no longer notifies: the records it writes are read by
-- the transaction that absorbed them. And an object's absorbs are
-- serialized by a lock on its recalc.attachment row, which no other role may
-- take, instead of an advisory lock, which any role could.
-- Every statement is safe to run again on an upgraded database.

-- The attached objects whose last absorb left their writes logged.
CREATE TABLE IF NOT EXISTS recalc.attach_stuck (
    object     text PRIMARY KEY REFERENCES recalc.attachment ON DELETE CASCADE,
    error_code text,                               -- the SQLSTATE; NULL: the capture is not intact
    since      timestamptz NOT NULL DEFAULT now(), -- first left for this reason
    checked_at timestamptz NOT NULL DEFAULT now()  -- last tried
);
REVOKE ALL ON recalc.attach_stuck FROM PUBLIC;

-- attach_absorb as in version 19, but for what the top of this file says:
-- with p_retry, it leaves alone the objects last tried less than p_retry ago
-- and still remembered; it records each object it leaves, forgets each it
-- absorbs; and it runs with recalc.notify off.
DROP FUNCTION IF EXISTS recalc.attach_absorb();
CREATE OR REPLACE FUNCTION recalc.attach_absorb(p_retry interval DEFAULT NULL)
RETURNS TABLE (object text, keys bigint, absorbed boolean, error_code text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off SET lock_timeout = '2s'
    SET TimeZone = 'UTC' SET extra_float_digits = 1 AS $$
DECLARE
    v_notify text := current_setting('recalc.notify', true); -- restored at the end (a function's SET clause may not name it)
    a recalc.attachment;
    v_object text;
    v_rel regclass;
    v_name text;
    v_keys text[];
    v_all boolean;
    v_xid xid8;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    PERFORM set_config('recalc.notify', 'off', true);
    FOR v_object IN SELECT DISTINCT c.object FROM recalc.change c
                    WHERE c.kind IN ('attached', 'attached_all')
                      AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry)
                    ORDER BY 1 LOOP
        object := v_object; keys := 0; absorbed := false; error_code := NULL;
        BEGIN
            -- The object's lock is its registry row (version 19 took an advisory
            -- lock, whose key any role could hold to stop the object's absorbs).
            SELECT * INTO a FROM recalc.attachment t WHERE t.object = v_object FOR NO KEY UPDATE;
            IF NOT FOUND THEN -- detached since; recalc.attach_remove deleted its records
                DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = v_object;
                CONTINUE;
            END IF;
            -- Lock what the re-read reads, by oid, before checking it.
            FOR v_rel IN SELECT x.relid::regclass FROM (SELECT c.relid FROM recalc.attach_capture c WHERE c.object = v_object
                                                        UNION SELECT a.relid) x
                         WHERE EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = x.relid) ORDER BY x.relid LOOP
                v_name := v_rel::text;
                EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', v_name);
                IF to_regclass(v_name) IS DISTINCT FROM v_rel THEN -- renamed meanwhile: the name locked is another's
                    RAISE EXCEPTION 'a relation captured for object % was renamed while it was locked', v_object
                        USING ERRCODE = 'lock_not_available';
                END IF;
            END LOOP;
            IF recalc.attach_intact(v_object) THEN
                WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = v_object
                              RETURNING c.kind, c.keys, c.xid)
                SELECT bool_or(g.kind = 'attached_all'), min(g.xid),
                       (SELECT array_agg(DISTINCT k) FROM gone, unnest(gone.keys) k)
                INTO v_all, v_xid, v_keys FROM gone g;
                CONTINUE WHEN v_xid IS NULL; -- another absorb took them
                a.source := a.relid::regclass::text; -- schema-qualified: search_path is pg_catalog only
                IF v_all THEN
                    EXECUTE recalc.attach_sync_sql(a, false);
                ELSIF cardinality(v_keys) > 0 THEN
                    EXECUTE recalc.attach_sync_sql(a, true) USING v_keys;
                END IF;
                PERFORM recalc.change_inherit_xid(v_xid);
                keys := coalesce(cardinality(v_keys), 0); absorbed := true;
            END IF;
        EXCEPTION WHEN OTHERS THEN -- never the message: it may quote a row's values
            error_code := SQLSTATE;
        END;
        IF absorbed THEN
            DELETE FROM recalc.attach_stuck s WHERE s.object = v_object;
        ELSE
            INSERT INTO recalc.attach_stuck AS s (object, error_code)
            SELECT v_object, error_code WHERE EXISTS (SELECT FROM recalc.attachment t WHERE t.object = v_object)
            ON CONFLICT ON CONSTRAINT attach_stuck_pkey DO UPDATE SET checked_at = excluded.checked_at, error_code = excluded.error_code,
                since = CASE WHEN s.error_code IS NOT DISTINCT FROM excluded.error_code THEN s.since ELSE excluded.since END;
        END IF;
        RETURN NEXT;
    END LOOP;
    PERFORM set_config('recalc.notify', coalesce(v_notify, ''), true);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_absorb(interval) FROM PUBLIC;

-- attach_install, as in version 19, also forgets that the object was stuck:
-- its change rows go, and its records are read again whole. Both it and
-- attach_absorb mirror in UTC and with shortest-exact floats: to_jsonb of a
-- timestamptz (or a real) follows the session's TimeZone (extra_float_digits),
-- so a criteria rule's result depended on which connection mirrored the row.
CREATE OR REPLACE FUNCTION recalc.attach_install(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off
    SET TimeZone = 'UTC' SET extra_float_digits = 1 AS $$
DECLARE
    a recalc.attachment;
    v_rows bigint;
    v_xid xid8;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_install_capture(p_object);
    PERFORM recalc.attach_check(p_object);
    PERFORM recalc.attach_writer_guard();
    WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object RETURNING c.xid)
    SELECT min(xid) INTO v_xid FROM gone;
    DELETE FROM recalc.attach_stuck WHERE object = p_object;
    EXECUTE recalc.attach_sync_sql(a, false);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    PERFORM recalc.change_inherit_xid(v_xid);
    RETURN v_rows;
END $$;

-- wait_fresh as in version 11, but it fails (SQLSTATE RC002) as soon as all
-- that is left of what it waits for is writes of attached objects that
-- cannot be absorbed until someone acts: the capture not intact, or the
-- engine may not read the source. Everything else committed before the
-- token is then materialized. It still names neither object nor record.
CREATE OR REPLACE FUNCTION recalc.wait_fresh(token bigint, timeout interval DEFAULT '5 s') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_token    xid8;
    v_own      xid8 := pg_current_xact_id_if_assigned();
    v_deadline timestamptz;
    v_sleep    float8 := 0.001;
    v_stuck    boolean; -- writes of objects that cannot be absorbed are left below the token
    v_other    boolean; -- anything else is
BEGIN
    IF token IS NULL OR token < 1 OR token > pg_snapshot_xmax(pg_current_snapshot())::text::bigint THEN
        RAISE EXCEPTION 'recalc.wait_fresh: % is not a token of recalc.fresh_token(): pass the value it returned', token
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout IS NULL OR timeout < interval '0' OR timeout > interval '10 min' THEN
        RAISE EXCEPTION 'recalc.wait_fresh: the timeout must be between 0 and 10 minutes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.wait_fresh needs READ COMMITTED: its transaction''s snapshot would never see the changes materialized'
            USING ERRCODE = 'invalid_transaction_state', HINT = 'Call it in its own statement outside a REPEATABLE READ or SERIALIZABLE transaction.';
    END IF;
    IF v_own IS NOT NULL AND EXISTS (SELECT FROM recalc.change WHERE xid = v_own) THEN
        RAISE EXCEPTION 'recalc.wait_fresh: this transaction wrote changes that are not committed yet, so they cannot be materialized'
            USING ERRCODE = 'invalid_transaction_state', HINT = 'Commit the write first, then take the token and wait in a new transaction.';
    END IF;
    v_token := token::text::xid8;
    v_deadline := clock_timestamp() + timeout;
    LOOP
        -- One statement, one snapshot: what is left, and whether all of it is stuck.
        WITH stuck AS (SELECT s.object FROM recalc.attach_stuck s WHERE coalesce(s.error_code, '') NOT IN ('55P03', '40P01', '40001'))
        SELECT EXISTS (SELECT FROM recalc.change c WHERE c.xid < v_token AND c.object IN (SELECT object FROM stuck)),
               EXISTS (SELECT FROM recalc.change c WHERE c.xid < v_token AND (c.object IS NULL OR c.object NOT IN (SELECT object FROM stuck)))
        INTO v_stuck, v_other;
        EXIT WHEN NOT v_stuck AND NOT v_other;
        IF NOT v_other THEN
            RAISE EXCEPTION 'recalc: every change committed before the token is materialized but writes to an attached table that recalc cannot absorb until someone repairs its capture'
                USING ERRCODE = 'RC002',
                      HINT = '`recalc attach --list` shows the object and why (absorb_error); run `recalc attach FILE` again, or grant recalc''s role what it lacks.';
        END IF;
        IF clock_timestamp() >= v_deadline THEN
            RAISE EXCEPTION 'recalc: changes committed before the token are still not materialized after %', timeout
                USING ERRCODE = 'RC001',
                      HINT = 'Is `recalc watch` running? Is calculation deferred (`recalc status`, `recalc resume`)? Retry with a longer timeout.';
        END IF;
        PERFORM pg_sleep(v_sleep);
        v_sleep := least(v_sleep * 2, 0.01);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.wait_fresh(bigint, interval) FROM PUBLIC;

-- attach_rows_sql as in version 10, but a row that fails closed keeps its
-- owner when the owner column itself is valid (1 to 1024 bytes), and is
-- marked invalid by the territory list {""} (no territory has an empty id;
-- the engine gives the reason "values out of bounds"), with no parent or
-- fields. Version 10 wrote every such row with owner '', which
-- recalc.record's trigger took for an owner change: a row that failed
-- closed for a moment (a contact linked to two accounts while the
-- application moves it, a numeric out of float64's range) lost its manual
-- shares for good. A view's rows sharing an id are read in owner order, so
-- the owner written does not depend on the scan.
CREATE OR REPLACE FUNCTION recalc.attach_rows_sql(a recalc.attachment, p_from text, p_where text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fields text := '''{}''::jsonb';
    v_part text;
    i int;
BEGIN
    -- jsonb_build_object takes at most 100 arguments: 50 fields a call.
    FOR i IN 0 .. cardinality(a.fields) - 1 BY 50 LOOP
        SELECT string_agg(format('%L, to_jsonb(s.%I)', f, f), ', ') INTO v_part FROM unnest(a.fields[i + 1:i + 50]) f;
        v_fields := v_fields || format(' || jsonb_build_object(%s)', v_part);
    END LOOP;
    RETURN format($f$
        SELECT %7$s m.id, %1$L::text AS object,
               CASE WHEN m.owner_ok THEN m.owner ELSE '' END AS owner,
               CASE WHEN m.ok THEN m.parent END AS parent,
               CASE WHEN m.ok THEN m.fields ELSE '{}'::jsonb END AS fields,
               CASE WHEN m.ok THEN m.territories WHEN m.owner_ok THEN '{""}'::text[] ELSE '{}'::text[] END AS territories
        FROM (SELECT o.*, o.owner_ok AND coalesce(coalesce(octet_length(o.parent), 0) <= 1024
                  AND cardinality(o.territories) <= 1000 AND array_position(o.territories, NULL) IS NULL
                  AND octet_length(o.fields::text) <= 1048576
                  AND NOT jsonb_path_exists(o.fields, 'strict $.* ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))')
                  %8$s, false) AS ok
              FROM (SELECT r.*, coalesce(octet_length(r.owner) BETWEEN 1 AND 1024, false) AS owner_ok
                    FROM (SELECT %2$L || (s.%3$I)::text AS id, (s.%4$I)::text AS owner, %5$s AS parent, %6$s AS fields,
                                 %9$s AS territories
                          FROM %10$s s WHERE %11$s) r) o) m
        WHERE octet_length(m.id) <= 1024 %12$s$f$,
        a.object, a.object || ':', a.id_col, a.owner_col,
        CASE WHEN a.parent_col IS NULL THEN 'NULL::text' ELSE format('%L || (s.%I)::text', a.parent_object || ':', a.parent_col) END,
        v_fields,
        CASE WHEN a.is_view THEN 'DISTINCT ON (m.id)' ELSE '' END,
        CASE WHEN a.is_view THEN 'AND count(*) OVER (PARTITION BY o.id) = 1' ELSE '' END,
        CASE WHEN a.territories_col IS NULL THEN '''{}''::text[]' ELSE format('coalesce(s.%I, ''{}'')', a.territories_col) END,
        p_from, p_where,
        CASE WHEN a.is_view THEN 'ORDER BY m.id, m.owner COLLATE "C"' ELSE '' END);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_rows_sql(recalc.attachment, text, text) FROM PUBLIC;

-- Re-read every attached source once, so that records mirrored in another
-- time zone, or failed closed with owner '', before this version are
-- written as this version writes them.
INSERT INTO recalc.change (kind, object, keys) SELECT 'attached_all', t.object, '{}' FROM recalc.attachment t ORDER BY t.object;
