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
--
-- It also closes holes that attack tests found (internal/attach/
-- attack2_test.go, SECURITY.md): index and statistics expressions calling
-- the table owner's code (attach_foreign_code), a backfill that read the
-- table by name, writes that bypass the capture (attach_fingerprints; the fifth capture trigger), and an
-- UPDATE compared as text under the writer's settings (attach_capture_body);
-- and it mirrors timestamps in UTC, keeps the owner of a row that fails
-- closed (attach_rows_sql), and re-reads every attached source once.
-- Every statement is safe to run again on an upgraded database.

-- The attached objects whose last absorb left their writes logged.
CREATE TABLE IF NOT EXISTS recalc.attach_stuck (
    object     text PRIMARY KEY REFERENCES recalc.attachment ON DELETE CASCADE,
    error_code text,                               -- the SQLSTATE; NULL: the capture is not intact
    since      timestamptz NOT NULL DEFAULT now(), -- first left for this reason
    checked_at timestamptz NOT NULL DEFAULT now()  -- last tried
);
REVOKE ALL ON recalc.attach_stuck FROM PUBLIC;

-- Writes that fire no capture trigger. The owner of a captured table can
-- write it without firing the capture and leave its catalog as attached:
-- disable the triggers, write, enable them, in one transaction; or rewrite
-- a column (ALTER TYPE ... USING, a numeric's scale, dropping a column and
-- adding it again). (Writing through a temporary inheritance or partitioned
-- parent, which leaves no trace, is refused by the fifth capture trigger,
-- below.) Each of those leaves a trace in the catalog: a new xmin on the table's pg_class row, on
-- a capture trigger's pg_trigger row or on a read column's pg_attribute row,
-- a new relfilenode, a new attnum or typmod. attach_fingerprints sums them
-- up per captured table; attach_install stores it; attach_absorb, and the
-- engine's idle check and fast path (internal/changes), compare it, and on a
-- difference the object's whole source is read again, as after a TRUNCATE.
-- Benign DDL (a GRANT, an added column) costs one such re-read.
ALTER TABLE recalc.attach_capture ADD COLUMN IF NOT EXISTS fingerprint text;

-- attach_fingerprints: every captured table's fingerprint, in one query
-- (a function called per row costs its SET clause and a plan each time).
CREATE OR REPLACE FUNCTION recalc.attach_fingerprints() RETURNS TABLE (object text, relid oid, fingerprint text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.object, c.relid, concat_ws('|', coalesce(k.relfilenode::text, 'gone'), k.xmin, t.fp, a.fp)
    FROM recalc.attach_capture c
    LEFT JOIN pg_class k ON k.oid = c.relid
    LEFT JOIN pg_proc p ON p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace
    LEFT JOIN LATERAL (SELECT string_agg(g.oid || ':' || g.xmin, ',' ORDER BY g.oid) AS fp FROM pg_trigger g
                       WHERE g.tgrelid = c.relid AND g.tgfoid = p.oid) t ON true
    LEFT JOIN LATERAL (SELECT string_agg(b.attname || ':' || b.attnum || ':' || b.atttypmod || ':' || b.xmin, ',' ORDER BY b.attname) AS fp
                       FROM pg_attribute b WHERE b.attrelid = c.relid AND b.attname = ANY (c.cols) AND NOT b.attisdropped) a ON true
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints() FROM PUBLIC;

-- attach_fingerprints_changed: whether some captured table's fingerprint
-- differs from the one stored (read only).
CREATE OR REPLACE FUNCTION recalc.attach_fingerprints_changed() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM recalc.attach_fingerprints() f JOIN recalc.attach_capture c ON c.object = f.object AND c.relid = f.relid
                   WHERE c.fingerprint IS DISTINCT FROM f.fingerprint)
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints_changed() FROM PUBLIC;

-- The capture gets a fifth trigger (attach_install_capture), and the checks
-- that count a capture's triggers count five (attach_guard_sql,
-- attach_complete): as in versions 19 and 14 otherwise.
CREATE OR REPLACE FUNCTION recalc.attach_guard_sql(c recalc.attach_capture) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
    IF TG_RELID IS DISTINCT FROM %1$s::oid OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER'
       OR NOT EXISTS (SELECT 1 FROM recalc.attach_capture WHERE object = %2$L AND relid = TG_RELID AND func = %3$L) THEN
        RAISE EXCEPTION 'recalc.%% runs only as the capture trigger of %%', %3$L, %4$L;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(%5$L::text[], %6$L::oid[], %7$L::oid[]) c(n, t, l)
               WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = TG_RELID AND a.attname = c.n
                                 AND a.atttypid = c.t AND a.attcollation = c.l AND NOT a.attisdropped)) THEN
        RAISE EXCEPTION 'columns of %% read by the capture of object %% changed since it was attached: run `recalc attach` again', %4$L, %2$L;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_class k WHERE k.oid = TG_RELID AND k.relkind = 'r' AND NOT k.relhassubclass AND NOT k.relispartition
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = k.oid)
          AND (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = k.oid AND t.tgenabled IN ('O', 'A') AND t.tgfoid = to_regprocedure(%8$L)) = 5
          AND (%9$L::boolean OR EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0]
                WHERE i.indrelid = k.oid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1
                  AND i.indpred IS NULL AND i.indexprs IS NULL AND t.attname = %10$L))) THEN
        RAISE EXCEPTION 'the capture of object %% is incomplete: a capture trigger is missing or disabled, %% is no longer a plain table without parent or children, or its id column lost its unique index', %2$L, %4$L
            USING HINT = 'run `recalc attach` again (`recalc attach --list` shows which object)';
    END IF;$f$, c.relid, c.object, c.func, c.source, c.cols, c.types, c.colls, format('recalc.%I()', c.func),
        (SELECT a.is_view FROM recalc.attachment a WHERE a.object = c.object), c.key_col)
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_guard_sql(recalc.attach_capture) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_install_capture(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c recalc.attach_capture;
    v_op text;
    v_ref text;
BEGIN
    FOR c IN SELECT * FROM recalc.attach_capture WHERE object = p_object ORDER BY relid LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS recalc.%I() CASCADE', c.func);
        EXECUTE format('CREATE FUNCTION recalc.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                       'SET search_path = pg_catalog, pg_temp SET row_security = off AS %L', c.func,
                       recalc.attach_capture_body(c));
        EXECUTE format('REVOKE EXECUTE ON FUNCTION recalc.%I() FROM PUBLIC', c.func);
        FOREACH v_op IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] LOOP
            v_ref := CASE v_op WHEN 'INSERT' THEN 'REFERENCING NEW TABLE AS new_rows'
                               WHEN 'UPDATE' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                               WHEN 'DELETE' THEN 'REFERENCING OLD TABLE AS old_rows' ELSE '' END;
            EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION recalc.%I()',
                           c.func || '_' || lower(v_op), v_op, c.relid::regclass, v_ref, c.func);
        END LOOP;
        -- The fifth: a row trigger with a transition table that never fires.
        -- PostgreSQL refuses to make a table with one an inheritance child or a
        -- partition, so its owner cannot write it through a parent, which
        -- fires no statement trigger of the table (nor leaves a trace).
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH ROW WHEN (false) EXECUTE FUNCTION recalc.%I()',
                       c.func || '_pin', c.relid::regclass, c.func);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_install_capture(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_complete(p_object text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT (SELECT count(*) FROM recalc.attach_capture c
                JOIN pg_proc p ON p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace
                JOIN pg_trigger t ON t.tgfoid = p.oid AND t.tgrelid = c.relid AND t.tgenabled IN ('O', 'A')
                WHERE c.object = p_object)
             = 5 * (SELECT count(*) FROM recalc.attach_capture c WHERE c.object = p_object)
           AND NOT EXISTS (
                SELECT 1 FROM (SELECT c.relid FROM recalc.attach_capture c WHERE c.object = p_object
                               UNION
                               SELECT d.refobjid FROM recalc.attachment a
                               JOIN pg_rewrite r ON r.ev_class = a.relid
                               JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> a.relid
                               WHERE a.object = p_object AND a.is_view) x
                LEFT JOIN pg_class k ON k.oid = x.relid
                WHERE k.oid IS NULL OR k.relkind <> 'r' OR k.relhassubclass OR k.relispartition
                   OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = k.oid)
                   OR NOT EXISTS (SELECT 1 FROM recalc.attach_capture c WHERE c.object = p_object AND c.relid = x.relid))
           AND NOT EXISTS (
                SELECT 1 FROM recalc.attachment a WHERE a.object = p_object AND NOT a.is_view AND NOT EXISTS (
                    SELECT 1 FROM pg_index i JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0]
                    WHERE i.indrelid = a.relid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1
                      AND i.indpred IS NULL AND i.indexprs IS NULL AND t.attname = a.id_col))
    );
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_complete(text) FROM PUBLIC;

-- attach_foreign_code names the first index or extended statistics object
-- of a table captured for the object that depends on a function, operator,
-- operator class or type that no superuser owns (NULL when none): PostgreSQL's
-- own and extensions' (pg_trgm, citext, ...) are owned by a superuser, a
-- table owner's own are not. PostgreSQL's
-- planner evaluates constant calls in index expressions and predicates, and
-- in statistics expressions, of every table a query reads, as the role that
-- plans the query: with such an index, the table's owner could have recalc
-- run its code with recalc's rights whenever recalc re-reads the table.
CREATE OR REPLACE FUNCTION recalc.attach_foreign_code(p_object text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH objs AS (
        SELECT 'pg_class'::regclass AS classid, i.indexrelid AS objid, c.relid
        FROM recalc.attach_capture c JOIN pg_index i ON i.indrelid = c.relid WHERE c.object = p_object
        UNION ALL
        SELECT 'pg_statistic_ext'::regclass, s.oid, c.relid
        FROM recalc.attach_capture c JOIN pg_statistic_ext s ON s.stxrelid = c.relid WHERE c.object = p_object)
    SELECT format('%s on %s depends on %s', pg_describe_object(d.classid, d.objid, 0), x.relid::regclass,
                  pg_describe_object(d.refclassid, d.refobjid, 0))
    FROM objs x JOIN pg_depend d ON d.classid = x.classid AND d.objid = x.objid
    WHERE NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = CASE d.refclassid
              WHEN 'pg_proc'::regclass THEN (SELECT p.proowner FROM pg_proc p WHERE p.oid = d.refobjid)
              WHEN 'pg_operator'::regclass THEN (SELECT o.oprowner FROM pg_operator o WHERE o.oid = d.refobjid)
              WHEN 'pg_opclass'::regclass THEN (SELECT o.opcowner FROM pg_opclass o WHERE o.oid = d.refobjid)
              WHEN 'pg_type'::regclass THEN (SELECT t.typowner FROM pg_type t WHERE t.oid = d.refobjid)
          END), d.refclassid NOT IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_opclass'::regclass, 'pg_type'::regclass))
    ORDER BY 1 LIMIT 1
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_foreign_code(text) FROM PUBLIC;

-- attach_intact as in version 19, and no index or statistics object of a
-- captured table calls code that is not PostgreSQL's own.
CREATE OR REPLACE FUNCTION recalc.attach_intact(p_object text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN recalc.attach_complete(p_object) AND EXISTS (
        SELECT 1 FROM recalc.attachment a JOIN pg_class k ON k.oid = a.relid
        WHERE a.object = p_object AND k.relkind = CASE WHEN a.is_view THEN 'v' ELSE 'r' END
          AND (NOT a.is_view OR k.relowner = (SELECT nspowner FROM pg_namespace WHERE nspname = 'recalc'))
    ) AND NOT EXISTS (
        SELECT 1 FROM recalc.attach_capture c, unnest(c.cols, c.types, c.colls) x(n, t, l)
        WHERE c.object = p_object AND NOT EXISTS (
            SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.relid AND a.attname = x.n
              AND a.atttypid = x.t AND a.attcollation = x.l AND NOT a.attisdropped)
    ) AND recalc.attach_foreign_code(p_object) IS NULL;
END $$;

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
    -- A captured table written without its capture (see attach_fingerprints)
    -- is read again whole. Under the model lock, as every absorb.
    WITH changed AS (
        UPDATE recalc.attach_capture c SET fingerprint = f.fingerprint FROM recalc.attach_fingerprints() f
        WHERE f.object = c.object AND f.relid = c.relid AND c.fingerprint IS DISTINCT FROM f.fingerprint RETURNING c.object)
    INSERT INTO recalc.change (kind, object, keys) SELECT DISTINCT 'attached_all', x.object, '{}'::text[] FROM changed x;
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
    v_code text;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_install_capture(p_object); -- locks each captured table SHARE ROW EXCLUSIVE: no index or DDL until commit
    PERFORM recalc.attach_check(p_object);
    v_code := recalc.attach_foreign_code(p_object);
    IF v_code IS NOT NULL THEN
        RAISE EXCEPTION 'cannot attach object %: % , which is not PostgreSQL''s own; PostgreSQL''s planner may run it with recalc''s rights when recalc reads the table', p_object, v_code
            USING HINT = 'drop that index or statistics object, or build it with pg_catalog functions and operators only, then attach again';
    END IF;
    -- Read what was checked, by oid: the name may be another relation's by now.
    EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', a.relid::regclass);
    IF NOT recalc.attach_intact(p_object) THEN
        RAISE EXCEPTION 'the table or view attached for object % changed while it was being attached', p_object
            USING HINT = 'run `recalc attach` again';
    END IF;
    a.source := a.relid::regclass::text; -- schema-qualified: search_path is pg_catalog only
    UPDATE recalc.attach_capture c SET fingerprint = f.fingerprint FROM recalc.attach_fingerprints() f
    WHERE f.object = c.object AND f.relid = c.relid AND c.object = p_object;
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

-- attach_capture_body as in version 19, but an UPDATE compares the old and
-- new values of the columns it reads as values of their own types (text
-- types in the C collation, bpchar as bytes: its = ignores trailing blanks,
-- which to_jsonb keeps), not as text: their text forms follow the
-- writing session's settings (extra_float_digits = -15 prints 999 and 1000
-- alike, DateStyle and TimeZone make distinct timestamps print alike), so
-- the application could hide an update from recalc.
CREATE OR REPLACE FUNCTION recalc.attach_compared(p_alias text, p_col text, p_type oid, p_coll oid) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_type = 'bpchar'::regtype THEN format('pg_catalog.bpcharsend(%I.%I)', p_alias, p_col) -- = ignores trailing blanks
                WHEN p_coll <> 0 THEN format('%I.%I COLLATE "C"', p_alias, p_col)
                ELSE format('%I.%I', p_alias, p_col) END
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_compared(text, text, oid, oid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_capture_body(c recalc.attach_capture) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_updated text;
BEGIN
    IF (SELECT a.is_view FROM recalc.attachment a WHERE a.object = c.object) THEN
        v_updated := format('SELECT (s.%1$I)::text FROM new_rows s UNION ALL SELECT (s.%1$I)::text FROM old_rows s', c.key_col);
    ELSE
        v_updated := format('SELECT (coalesce(n.%1$I, o.%1$I))::text FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
            WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR (%2$s) IS DISTINCT FROM (%3$s)', c.key_col,
            (SELECT string_agg(recalc.attach_compared('n', x, y, l), ', ') FROM unnest(c.cols, c.types, c.colls) u(x, y, l)),
            (SELECT string_agg(recalc.attach_compared('o', x, y, l), ', ') FROM unnest(c.cols, c.types, c.colls) u(x, y, l)));
    END IF;
    RETURN format($f$
BEGIN
%1$s
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg((s.%3$I)::text) FROM new_rows s HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg(k) FROM (%4$s) x(k) HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg((s.%3$I)::text) FROM old_rows s HAVING count(*) > 0;
    ELSE
        INSERT INTO recalc.change (kind, object, keys) VALUES ('attached_all', %2$L, '{}');
    END IF;
    IF FOUND AND coalesce(current_setting('recalc.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('recalc_changes', TG_OP);
    END IF;
    RETURN NULL;
END$f$, recalc.attach_guard_sql(c), c.object, c.key_col, v_updated);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_capture_body(recalc.attach_capture) FROM PUBLIC;

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
                          FROM %13$s%10$s s WHERE %11$s) r) o) m
        WHERE octet_length(m.id) <= 1024 %12$s$f$,
        a.object, a.object || ':', a.id_col, a.owner_col,
        CASE WHEN a.parent_col IS NULL THEN 'NULL::text' ELSE format('%L || (s.%I)::text', a.parent_object || ':', a.parent_col) END,
        v_fields,
        CASE WHEN a.is_view THEN 'DISTINCT ON (m.id)' ELSE '' END,
        CASE WHEN a.is_view THEN 'AND count(*) OVER (PARTITION BY o.id) = 1' ELSE '' END,
        CASE WHEN a.territories_col IS NULL THEN '''{}''::text[]' ELSE format('coalesce(s.%I, ''{}'')', a.territories_col) END,
        p_from, p_where,
        CASE WHEN a.is_view THEN 'ORDER BY m.id, m.owner COLLATE "C"' ELSE '' END,
        CASE WHEN a.is_view THEN '' ELSE 'ONLY ' END); -- no child a table's owner adds for a moment is read
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_rows_sql(recalc.attachment, text, text) FROM PUBLIC;

-- Rebuild the captures of the objects attached now (their UPDATE comparison
-- above), and re-read every attached source once, so that records mirrored in another
-- time zone, or failed closed with owner '', before this version are
-- written as this version writes them.
SELECT recalc.attach_install_capture(t.object) FROM recalc.attachment t ORDER BY t.object;
INSERT INTO recalc.change (kind, object, keys) SELECT 'attached_all', t.object, '{}' FROM recalc.attachment t ORDER BY t.object;
