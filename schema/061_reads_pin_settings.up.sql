-- recalc schema, version 61: every read of an attached source pins the
-- settings PostgreSQL's own conversions follow.
--
-- The reader (recalc.attach_read, version 21) pinned TimeZone and
-- extra_float_digits, which to_jsonb of a timestamptz or a real follows.
-- But an attached view may turn a value into text itself (docs/attach.md
-- suggests `col::text` for an enum or a domain), and that text followed
-- the engine session's DateStyle (a date or timestamp), IntervalStyle (an
-- interval), bytea_output, lc_monetary (money), lc_numeric and lc_time
-- (to_char), xmlbinary and xmloption, default_text_search_config
-- (to_tsvector without a configuration), or DateStyle's field order when
-- the view reads text as a date. A session
-- takes those from the engine's role and from the database, whose owner
-- (often the application's role) may ALTER DATABASE ... SET them: under
-- DateStyle 'SQL, DMY', a due date of 1 March 2027 read as "01/03/2027"
-- matched `due lt "2027-02-01"` and its rule granted the record
-- (TestViewReadsUnderHostileSettings).
--
-- attach_sandboxed, through which every read goes (backfill, absorb,
-- re-read, verify, the users), now sets each of them to PostgreSQL's
-- built-in default for the read. Not timezone_abbreviations, which only
-- text read as a timestamp with an abbreviated zone ('EST') follows: setting
-- it loads its file at each call, a quarter of a millisecond. CREATE OR
-- REPLACE keeps the owner and the grants; the body is version 21's.

CREATE OR REPLACE FUNCTION recalc.attach_sandboxed(p_view text, p_sql text, p_keys text[]) RETURNS recalc.attach_row[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    SET TimeZone = 'UTC' SET extra_float_digits = 1 SET DateStyle = 'ISO, MDY' SET IntervalStyle = 'postgres'
    SET bytea_output = 'hex' SET lc_monetary = 'C' SET lc_numeric = 'C' SET lc_time = 'C'
    SET xmlbinary = 'base64' SET xmloption = 'content' SET default_text_search_config = 'pg_catalog.simple' AS $$
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
