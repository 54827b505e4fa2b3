-- recalc schema, version 25: a token taken after a write to an attached
-- users table waits until the users change is applied.
--
-- An absorb consumes an attached table's change rows and, in the same
-- transaction, logs what the engine must still do, with the oldest
-- consumed row's transaction id (change_inherit_xid), so that wait_fresh
-- keeps waiting for it. For the users table that is a section change
-- (version 23), which kept the absorbing transaction's id: a token taken
-- after the write found nothing older than itself left, and wait_fresh
-- returned before the job that applies the users change had run.
CREATE OR REPLACE FUNCTION recalc.change_inherit_xid(p_xid xid8) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE recalc.change SET xid = p_xid
    WHERE p_xid IS NOT NULL AND xid = pg_current_xact_id() AND p_xid < xid
      AND (kind = 'record' OR (kind = 'section' AND keys = ARRAY['users']))
$$;
REVOKE EXECUTE ON FUNCTION recalc.change_inherit_xid(xid8) FROM PUBLIC;
