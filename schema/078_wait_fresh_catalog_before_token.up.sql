-- recalc schema, version 78: a loop of catalog changes after a token no
-- longer keeps recalc.wait_fresh from returning.
--
-- Since version 76 wait_fresh waits while an attached source's catalog
-- fingerprint differs from the one last absorbed, compared again each time
-- an absorb stored some. An application's role that loops GRANT and REVOKE
-- on an attached table (each a new xmin on its pg_class row, so a new
-- fingerprint) made it differ again after every absorb: every caller's
-- wait_fresh waited until its timeout (RC001), as long as the loop went on,
-- though all that committed before its token was materialized
-- (TestWaitFreshBesideCatalogChurn).
--
-- Now an absorb that stores a fingerprint records too the snapshot it
-- computed it from (recalc.attach_print_seen): the fingerprint holds every
-- catalog change of the transactions that snapshot sees ended. wait_fresh
-- waits only for a fingerprint that differs from one stored from a
-- snapshot that may have missed a change committed before its token
-- (attach_catalog_pending): a transaction left open, in this database or
-- another, holds nothing up (TestWaitFreshBesideAnOpenTransaction; the
-- snapshot's xmin alone would have counted it). The changes after the
-- token are the next token's to wait for, as a write's are.

-- A table of its own: a column added to recalc.attach_capture would wait
-- for every open application transaction that wrote an attached table (its
-- capture reads attach_capture), and hold those queued behind it.
CREATE TABLE IF NOT EXISTS recalc.attach_print_seen (
    object text NOT NULL,
    relid  oid  NOT NULL,
    seen   pg_snapshot NOT NULL, -- the snapshot the stored fingerprint was computed from
    PRIMARY KEY (object, relid)
);
REVOKE ALL ON recalc.attach_print_seen FROM PUBLIC;

-- attach_catalog_pending: whether a captured table's fingerprint differs
-- from the one stored from a snapshot that may have missed a transaction
-- that committed before p_token (or with no such record: stored at attach,
-- or before version 78). A snapshot whose xmax is above the token was
-- taken after it (both are one above the latest transaction completed
-- when they were taken, which only grows): what it saw running had not
-- committed before the token, and it sees every transaction that had. One
-- whose xmax is the token may be either: it missed nothing unless a
-- transaction below the token that it saw running has committed since.
-- pg_current_snapshot lists top-level transactions only, and a
-- subtransaction commits with its parent, whose id is below its own.
CREATE OR REPLACE FUNCTION recalc.attach_catalog_pending(p_token xid8) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN EXISTS (SELECT FROM recalc.attach_fingerprints() f JOIN recalc.attach_capture c ON c.object = f.object AND c.relid = f.relid
                   LEFT JOIN recalc.attach_print_seen s ON s.object = c.object AND s.relid = c.relid
                   WHERE c.fingerprint IS DISTINCT FROM f.fingerprint
                     AND (s.seen IS NULL OR pg_snapshot_xmax(s.seen) < p_token
                          OR pg_snapshot_xmax(s.seen) = p_token AND EXISTS (
                              SELECT FROM pg_snapshot_xip(s.seen) x
                              WHERE x < p_token AND coalesce(pg_xact_status(x), 'committed') = 'committed')));
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_catalog_pending(xid8) FROM PUBLIC;

-- attach_absorb_begin: as in version 76, and it records attach_print_seen
-- with a fingerprint.
CREATE OR REPLACE FUNCTION recalc.attach_absorb_begin(p_retry interval DEFAULT NULL, p_max bigint DEFAULT NULL)
RETURNS TABLE (object text, keys bigint, whole boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_objects text[];
    v_relids oid[];
    v_prints text[];
    v_seen pg_snapshot; -- the fingerprints' snapshot (version 78)
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    -- A captured table written without its capture (see attach_fingerprints)
    -- is read again whole. Under the model lock, as every absorb.
    SELECT array_agg(f.object), array_agg(f.relid), array_agg(f.fingerprint), pg_current_snapshot()
    INTO v_objects, v_relids, v_prints, v_seen
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
        INSERT INTO recalc.attach_print_seen (object, relid, seen) SELECT f.object, f.relid, v_seen FROM unnest(v_objects, v_relids) f (object, relid)
        ON CONFLICT ON CONSTRAINT attach_print_seen_pkey DO UPDATE SET seen = excluded.seen;
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

-- wait_fresh: as in version 76, waiting only for the catalog changes
-- before the token (attach_catalog_pending).
CREATE OR REPLACE FUNCTION recalc.wait_fresh(token bigint, timeout interval DEFAULT '5 s') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_token    xid8;
    v_own      xid8 := pg_current_xact_id_if_assigned();
    v_deadline timestamptz;
    v_sleep    float8 := 0.001;
    v_stuck    boolean; -- writes of objects that cannot be absorbed are left below the token
    v_other    boolean; -- anything else is
    v_catalog  boolean; -- an attached source's catalog fingerprint differs from the one last absorbed before the token (version 78)
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
    -- (attach_absorb_begin), which the same statement sees. A fingerprint
    -- stored by an absorb that saw every transaction below the token ended
    -- holds every catalog change committed before it: one that differs
    -- from it differs by later changes, which are not waited for
    -- (attach_catalog_pending).
    SELECT md5(string_agg(c.object || ':' || c.relid || ':' || coalesce(c.fingerprint, ''), '/' ORDER BY c.object, c.relid)),
           CASE WHEN EXISTS (SELECT FROM recalc.attach_capture) THEN recalc.attach_catalog_pending(v_token) ELSE false END
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
                    ELSE recalc.attach_catalog_pending(v_token) END,
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
