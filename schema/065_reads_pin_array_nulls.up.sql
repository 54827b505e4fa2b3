-- recalc schema, version 65: every read of an attached source pins
-- array_nulls too.
--
-- Version 61 pinned, for every read (attach_sandboxed), the settings that
-- PostgreSQL's own conversions follow, which the database's owner (often
-- the application's role) may ALTER DATABASE ... SET for the engine's
-- sessions. It left out array_nulls, which text read as an array follows:
-- an attached view that builds an array from text (`('{' || csv || '}')::text[]`,
-- a list of tags or territories kept as one string) read the element NULL as
-- SQL's NULL, and under the database's `array_nulls = off` as the string
-- 'NULL', so a rule `tag2 equals "NULL"` granted its user records the same
-- rows do not give under PostgreSQL's default (TestViewReadsUnderHostileSettings,
-- found by an attack helper). CREATE OR REPLACE keeps the owner and the
-- grants; the body is version 61's.

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
