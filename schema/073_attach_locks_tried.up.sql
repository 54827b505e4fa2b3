-- recalc schema, version 73: an attach's capture triggers are installed by
-- a statement of their own, which recalc tries 100 ms at a time.
--
-- attach_install (version 54) created the capture triggers on the
-- application's tables (a SHARE ROW EXCLUSIVE lock on each), then read the
-- rows, in one statement: recalc attach waited, without a bound and under
-- the model lock, for any transaction the application kept open on one of
-- those tables, and PostgreSQL queued every later write of the table
-- behind that waiting lock. Now attach_install_begin installs the capture
-- and locks the attached table or view; recalc attach runs it first, in a
-- savepoint with a short lock_timeout, again after a pause until it is
-- granted or its bound passes (internal/locks.Retry), then
-- attach_install_rows, the rest of attach_install as in version 54.
-- attach_install runs both, for SQL callers.

CREATE OR REPLACE FUNCTION recalc.attach_install_begin(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_relid oid;
BEGIN
    SELECT relid INTO STRICT v_relid FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_install_capture(p_object); -- locks each captured table SHARE ROW EXCLUSIVE: no index or DDL until commit
    EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', v_relid::regclass);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_install_begin(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_install_rows(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off
    SET TimeZone = 'UTC' SET extra_float_digits = 1 AS $$
DECLARE
    a recalc.attachment;
    v_rows bigint;
    v_code text;
    t record;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
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
REVOKE EXECUTE ON FUNCTION recalc.attach_install_rows(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_install(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM recalc.attach_install_begin(p_object);
    RETURN recalc.attach_install_rows(p_object);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_install(text) FROM PUBLIC;
