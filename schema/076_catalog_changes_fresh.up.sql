-- recalc schema, version 76: a catalog change that alters what an attached
-- source shows while no row is written (a view redefined, an enum label
-- renamed, the capture's triggers disabled around a write: what the catalog
-- fingerprints of versions 20, 45 and 48 follow) reaches the share tables
-- within a fraction of a second, and wait_fresh waits for it.
--
-- Before, nothing was logged and nothing sent a notification: `recalc
-- watch` found such a change at its next poll (10 s by default), and
-- recalc.wait_fresh returned at once, before it was materialized.
--
-- attach_catalog_stamp is what `recalc watch` reads between steps, every
-- --catalog-poll (250 ms by default), on a connection of its pool: a digest
-- of the catalog rows the fingerprints read but for the enums, which it
-- replaces with a digest of the whole of pg_enum (a few hundred rows in a
-- CRM). It follows no type, so it costs a few index lookups per captured
-- table and one scan of pg_enum; when it moves, the watch steps, and the
-- step compares the fingerprints themselves (changes.Idle). A change it
-- cannot see (an enum reached through a composite type that was altered)
-- is found at the next poll, as before.

CREATE OR REPLACE FUNCTION recalc.attach_catalog_stamp() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM recalc.attach_capture) THEN
        RETURN '';
    END IF;
    RETURN md5((SELECT string_agg(concat_ws('|', c.object, c.relid, coalesce(k.relfilenode::text, 'gone'), k.xmin,
        (SELECT string_agg(t.oid || ':' || t.xmin, ',' ORDER BY t.oid)
         FROM (SELECT DISTINCT d.objid
               FROM (SELECT d.classid, d.objid FROM pg_depend d
                     WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid AND d.refobjsubid = 0 OFFSET 0) d
               WHERE d.classid = 'pg_trigger'::regclass) d,
              LATERAL (SELECT t.oid, t.xmin, t.tgrelid, t.tgfoid FROM pg_trigger t WHERE t.oid = d.objid OFFSET 0) t
         WHERE t.tgrelid = c.relid AND t.tgfoid = p.oid),
        (SELECT string_agg(b.attname || ':' || b.attnum || ':' || b.atttypmod || ':' || b.xmin, ',' ORDER BY b.attname)
         FROM pg_attribute b WHERE b.attrelid = c.relid AND b.attname = ANY (c.cols) AND NOT b.attisdropped),
        (SELECT string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid) FROM pg_rewrite r WHERE o.is_view AND r.ev_class = o.relid)),
        '/' ORDER BY c.object, c.relid)
        FROM recalc.attach_capture c
        JOIN recalc.attachment o ON o.object = c.object
        LEFT JOIN LATERAL (SELECT k.relfilenode, k.xmin FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
        LEFT JOIN LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p ON true)
        || '/' || (SELECT count(*) || ':' || coalesce(sum(n.xmin::text::bigint), 0) FROM pg_enum n));
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_catalog_stamp() FROM PUBLIC;

-- attach_absorb_begin: as in version 71, but the whole re-read it logs for
-- a fingerprint that changed is logged below every token.
CREATE OR REPLACE FUNCTION recalc.attach_absorb_begin(p_retry interval DEFAULT NULL, p_max bigint DEFAULT NULL)
RETURNS TABLE (object text, keys bigint, whole boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_objects text[];
    v_relids oid[];
    v_prints text[];
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    -- A captured table written without its capture (see attach_fingerprints)
    -- is read again whole. Under the model lock, as every absorb.
    SELECT array_agg(f.object), array_agg(f.relid), array_agg(f.fingerprint) INTO v_objects, v_relids, v_prints
    FROM recalc.attach_fingerprints() f JOIN recalc.attach_capture c ON c.object = f.object AND c.relid = f.relid
    WHERE c.fingerprint IS DISTINCT FROM f.fingerprint;
    IF p_max IS NOT NULL AND (v_objects IS NOT NULL OR (
            SELECT coalesce(bool_or(c.kind = 'attached_all'), false) OR coalesce(sum(cardinality(c.keys)), 0) > p_max
            FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all')
              AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry))) THEN
        RETURN QUERY SELECT x.object, sum(x.n)::bigint, bool_or(x.whole) FROM (
                         SELECT c.object, cardinality(c.keys) AS n, c.kind = 'attached_all' AS whole FROM recalc.change c
                         WHERE c.kind IN ('attached', 'attached_all')
                           AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry)
                         UNION ALL
                         SELECT u.object, 0, true FROM unnest(v_objects) u (object)) x
                     GROUP BY x.object ORDER BY 1;
        RETURN;
    END IF;
    -- An attached view redefined since its columns were recorded reads
    -- the columns of the names it was defined with: record them. (Its
    -- rule, attach_view_rule's, is read here without the function call.)
    UPDATE recalc.attach_capture c SET (read_nums, read_names, read_rule) = (
        SELECT r.nums, r.names, recalc.attach_view_rule(a.relid) FROM recalc.attach_view_reads(a.relid, c.relid) r)
    FROM recalc.attachment a
    WHERE a.object = c.object AND a.is_view AND c.read_rule IS DISTINCT FROM (
        SELECT coalesce(string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid), '') FROM pg_rewrite r WHERE r.ev_class = a.relid);
    IF v_objects IS NOT NULL THEN
        UPDATE recalc.attach_capture c SET fingerprint = f.print FROM unnest(v_objects, v_relids, v_prints) f (object, relid, print)
        WHERE c.object = f.object AND c.relid = f.relid AND c.fingerprint IS DISTINCT FROM f.print;
        -- Logged as by a transaction older than any token (xid 1): the
        -- catalog change committed before some tokens that a wait_fresh may
        -- call with after this commits, and its re-read, whose record
        -- changes inherit this xid (change_inherit_xid), is what they wait for.
        INSERT INTO recalc.change (kind, object, keys, xid)
        SELECT DISTINCT 'attached_all', u.object, '{}'::text[], '1'::xid8 FROM unnest(v_objects) u (object);
    END IF;
    RETURN QUERY SELECT c.object, sum(cardinality(c.keys))::bigint, bool_or(c.kind = 'attached_all') FROM recalc.change c
                 WHERE c.kind IN ('attached', 'attached_all')
                   AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry)
                 GROUP BY c.object ORDER BY 1;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_absorb_begin(interval, bigint) FROM PUBLIC;

-- wait_fresh: as in version 37, and it waits too for a catalog change of an
-- attached source not yet absorbed (above). Reading the fingerprints costs
-- each call one to a few milliseconds of server time where anything is
-- attached (nothing where nothing is); while one differs, each try reads
-- the stored ones only, a few rows, and the catalogs again when they moved.
CREATE OR REPLACE FUNCTION recalc.wait_fresh(token bigint, timeout interval DEFAULT '5 s') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_token    xid8;
    v_own      xid8 := pg_current_xact_id_if_assigned();
    v_deadline timestamptz;
    v_sleep    float8 := 0.001;
    v_stuck    boolean; -- writes of objects that cannot be absorbed are left below the token
    v_other    boolean; -- anything else is
    v_catalog  boolean; -- an attached source's catalog fingerprint differs from the one last absorbed
    v_stored   text;    -- a digest of the fingerprints stored, as last read
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
    -- A catalog change that alters what an attached source shows, with no
    -- row written (attach_fingerprints: a view redefined, an enum label
    -- renamed, triggers disabled around a write), logs nothing until an
    -- absorb finds it. The fingerprints are compared once; while one
    -- differs, again only when the stored ones have moved (an absorb
    -- stored some): once the absorb that stores it has committed, the
    -- re-read it logged is a change row below any token
    -- (attach_absorb_begin), which the same statement sees.
    SELECT md5(string_agg(c.object || ':' || c.relid || ':' || coalesce(c.fingerprint, ''), '/' ORDER BY c.object, c.relid)),
           CASE WHEN EXISTS (SELECT FROM recalc.attach_capture) THEN recalc.attach_fingerprints_changed() ELSE false END
    INTO v_stored, v_catalog FROM recalc.attach_capture c;
    LOOP
        -- One statement, one snapshot: what is left, and whether all of it is stuck.
        WITH stuck AS (SELECT s.object FROM recalc.attach_stuck s WHERE coalesce(s.error_code, '') NOT IN ('55P03', '40P01', '40001', '57014')),
             stored AS (SELECT md5(string_agg(c.object || ':' || c.relid || ':' || coalesce(c.fingerprint, ''), '/' ORDER BY c.object, c.relid)) AS d
                        FROM recalc.attach_capture c WHERE v_catalog)
        SELECT EXISTS (SELECT FROM recalc.change c WHERE c.xid < v_token AND c.object IN (SELECT object FROM stuck)),
               EXISTS (SELECT FROM recalc.change c WHERE c.xid < v_token AND (c.object IS NULL OR c.object NOT IN (SELECT object FROM stuck))),
               CASE WHEN NOT v_catalog THEN false
                    WHEN (SELECT d FROM stored) IS NOT DISTINCT FROM v_stored THEN true
                    ELSE recalc.attach_fingerprints_changed() END,
               CASE WHEN v_catalog THEN (SELECT d FROM stored) ELSE v_stored END
        INTO v_stuck, v_other, v_catalog, v_stored;
        v_other := v_other OR v_catalog;
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
