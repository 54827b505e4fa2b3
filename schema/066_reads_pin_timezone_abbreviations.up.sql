-- recalc schema, version 66: every read of an attached source reads
-- abbreviated time zones by PostgreSQL's default set.
--
-- Version 61 left timezone_abbreviations unpinned, since a SET clause on
-- attach_sandboxed loads the set's file at every call (55 us measured
-- here, against under 1 us for array_nulls), and docs/attach.md asked to
-- keep abbreviated zones out of a view's casts. But the database's owner
-- (often the application's role) may ALTER DATABASE ... SET it for the
-- engine's sessions: under 'India', '2027-01-01 05:30 IST'::timestamptz
-- read as midnight UTC where the default set reads IST as Israel's UTC+2,
-- and a rule on that time granted its user a record the default does not
-- (TestViewReadsPinTimezoneAbbreviations). The read now sets it to
-- 'Default' only when it is not, inside the subtransaction that every
-- read rolls back, so the setting comes back with the rollback and a
-- session that keeps the default pays one current_setting. CREATE OR
-- REPLACE keeps the owner and the grants; the body is version 65's.

CREATE OR REPLACE FUNCTION recalc.attach_sandboxed(p_view text, p_sql text, p_keys text[]) RETURNS recalc.attach_row[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC' SET extra_float_digits = 1 SET DateStyle = 'ISO, MDY' SET IntervalStyle = 'postgres'
    SET bytea_output = 'hex' SET lc_monetary = 'C' SET lc_numeric = 'C' SET lc_time = 'C'
    SET xmlbinary = 'base64' SET xmloption = 'content' SET default_text_search_config = 'pg_catalog.simple'
    SET array_nulls = on AS $$
DECLARE
    v recalc.attach_row[];
    v_done boolean := false;
    v_state text;
BEGIN
    PERFORM recalc.attach_sandbox_check();
    v_state := recalc.attach_session_state();
    BEGIN
        IF current_setting('timezone_abbreviations') <> 'Default' THEN
            PERFORM set_config('timezone_abbreviations', 'Default', true); -- undone with the read
        END IF;
        EXECUTE format('GRANT SELECT ON %s TO %I', p_view, recalc.attach_sandbox_role());
        v := recalc.attach_read(p_sql, p_keys);
        v_done := true;
        RAISE EXCEPTION 'undo the read' USING ERRCODE = 'RC900';
    EXCEPTION WHEN OTHERS OR query_canceled OR assert_failure THEN
        PERFORM pg_advisory_unlock_all();
        IF recalc.attach_session_state() IS DISTINCT FROM v_state THEN
            RAISE EXCEPTION 'a read of an attached source changed the session''s prepared statements'
                USING ERRCODE = 'RC004';
        END IF;
        IF SQLSTATE <> 'RC900' THEN
            RAISE;
        ELSIF NOT v_done THEN
            RAISE EXCEPTION 'a read of an attached source raised SQLSTATE RC900' USING ERRCODE = 'RC003';
        END IF;
    END;
    RETURN v;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sandboxed(text, text, text[]) FROM PUBLIC;
