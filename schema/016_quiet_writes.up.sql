-- recalc schema, version 16: writes that need not wake `recalc watch`.
--
-- Every write to recalc.record (an attached table's capture included)
-- ended with pg_notify, to wake `recalc watch` at once. PostgreSQL takes one
-- database-wide lock at the commit of every notifying transaction, held
-- through its WAL flush, so notifying writers commit one at a time: 16
-- concurrent single-record updates committed about 930 a second with it
-- and 1,900 without (pgbench, 100,000 records). A session, role or
-- database with the setting recalc.notify = off skips the notification;
-- `recalc watch --poll` then bounds how long its changes wait (docs/
-- operations.md). The setting changes only when watch wakes, never what
-- is materialized. Everything else is version 14's trigger unchanged.
CREATE OR REPLACE FUNCTION recalc.log_record_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_engine boolean := session_user = current_user;
    v_rooted boolean := v_engine AND coalesce(current_setting('recalc.rooted', true), '') = 'on';
BEGIN
    IF TG_RELID IS DISTINCT FROM 'recalc.record'::regclass OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.log_record_change() runs only as the AFTER statement trigger of recalc.record';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM recalc.share_input;
        DELETE FROM recalc.team;
        INSERT INTO recalc.change (kind, keys) VALUES ('truncate', '{}');
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', array_agg(id), v_rooted FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT (v_engine AND coalesce(current_setting('recalc.fixing_roots', true), '') = 'on') THEN
            INSERT INTO recalc.change (kind, keys, rooted)
            SELECT 'record', array_agg(DISTINCT id), kept OR v_rooted
            FROM (SELECT o.id, n.id, coalesce(o.id = n.id AND o.parent IS NOT DISTINCT FROM n.parent, false)
                  FROM old_rows o FULL JOIN new_rows n ON n.rid = o.rid) m (old_id, new_id, kept),
                 LATERAL unnest(ARRAY[old_id, new_id]) id
            WHERE id IS NOT NULL
            GROUP BY kept;
        END IF;
        DELETE FROM recalc.share_input s
        USING old_rows o JOIN new_rows n ON n.rid = o.rid
        WHERE (o.id <> n.id OR o.object <> n.object) AND s.record IN (o.id, n.id)
           OR o.owner <> n.owner AND s.record = o.id AND s.cause = 'manual';
        DELETE FROM recalc.team t
        USING old_rows o JOIN new_rows n ON n.rid = o.rid
        WHERE (o.id <> n.id OR o.object <> n.object) AND t.record IN (o.id, n.id);
    ELSE
        INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', array_agg(id), v_rooted FROM old_rows HAVING count(*) > 0;
        DELETE FROM recalc.share_input s USING old_rows o WHERE s.record = o.id;
        DELETE FROM recalc.team t USING old_rows o WHERE t.record = o.id;
    END IF;
    IF coalesce(current_setting('recalc.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('recalc_changes', TG_OP);
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.log_record_change() FROM PUBLIC;

