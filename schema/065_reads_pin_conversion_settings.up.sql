-- recalc schema, version 65: every read of an attached source pins
-- array_nulls and timezone_abbreviations too.
--
-- Version 61 pinned, for every read (attach_sandboxed), the settings that
-- PostgreSQL's own conversions follow, which the database's owner (often
-- the application's role) may ALTER DATABASE ... SET for the engine's
-- sessions. It left out two, found by an attack helper and a review:
-- - array_nulls, which text read as an array follows: a view that builds
--   an array from text (`('{' || csv || '}')::text[]`) read the element
--   NULL as the string 'NULL' under `array_nulls = off`, and a rule
--   `tag2 equals "NULL"` granted records (TestViewReadsPinArrayNulls);
-- - timezone_abbreviations: under 'India', '2027-01-01 05:30 IST'::timestamptz
--   read as midnight UTC where the default set reads IST as Israel's UTC+2,
--   and a rule on that time granted a record the default does not
--   (TestViewReadsPinTimezoneAbbreviations).
-- array_nulls is a SET clause (under 1 us a call). A SET clause of
-- timezone_abbreviations loads the set's file at every call (55 us), so
-- the read sets it to 'Default' only when it is not, inside the
-- subtransaction that every read rolls back: the setting comes back with
-- the rollback, and a session that keeps the default pays one
-- current_setting. CREATE OR REPLACE keeps the owner and the grants; the
-- rest of the body is version 61's.

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
