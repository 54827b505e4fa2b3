-- recalc schema, version 36: a failed backfill names its SQLSTATE, never
-- the server's message.
--
-- attach_install's backfill reads the application's rows. Many of
-- PostgreSQL's input functions quote the value they could not read, and not
-- only in class 22: a view column cast to regrole fails with 42704 `role
-- "..." does not exist`, regclass with 42P01, tsquery with 42601, regnamespace
-- with 3F000. `recalc attach` showed the message of every class but 22, and
-- so printed an application row's value. The backfill's errors now keep
-- their SQLSTATE (so a lock timeout or a deadlock is retried as before) and
-- lose their message, except recalc's own (RC...) and those of classes that
-- quote no row: 40 (a transaction to retry), 53 (resources), 55 (a lock or
-- an object in use) and 57 (a cancel or shutdown). The checks before the
-- backfill read no row and keep their messages; so does the sandbox's own
-- check, now run before the backfill.
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
    WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object RETURNING c.xid)
    SELECT min(xid) INTO v_xid FROM gone;
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
    PERFORM recalc.change_inherit_xid(v_xid);
    RETURN v_rows;
END $$;
