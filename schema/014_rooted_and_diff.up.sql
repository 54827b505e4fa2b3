-- recalc schema, version 14: updates that keep a record's family need no
-- root fixing, a full job diffs its share rows once, and the capture of an
-- attached table checks itself with a cached plan.
--
-- A record's family root follows its id and parent chain only. An UPDATE
-- that keeps a row's id and parent (an owner, field, territory or object
-- change) moves no family root, its own or a descendant's, so its change
-- row is marked rooted and the planner (changes.FixRoots) skips the subtree
-- walk for it. The mark comes from the rows themselves, not from a session
-- setting, so no role can forge it; rows whose id or parent changed are
-- logged unrooted, as before, unless the engine's own session marks them.
-- Everything else is version 7's trigger unchanged.
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
    PERFORM pg_notify('recalc_changes', TG_OP);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.log_record_change() FROM PUBLIC;

-- acl_share_diff: the records whose share rows a full job's staging table
-- changes, found while the job stages its tables (feed.Diff, beside the
-- index builds) and read at the swap for the feed (feed.Swap), which
-- empties it. One full join of acl_share with acl_share_next serves both
-- the nightly drift count and the feed. Only the engine uses it.
CREATE TABLE IF NOT EXISTS recalc.acl_share_diff (rid bigint NOT NULL);

-- attach_complete, unchanged, in PL/pgSQL: every capture runs it once per
-- statement, and a SQL function with a SET clause is planned again at each
-- call (about 1-3 ms of catalog joins); PL/pgSQL keeps the plan for the
-- session. That was nearly all of a single-row write's capture cost.
CREATE OR REPLACE FUNCTION recalc.attach_complete(p_object text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT (SELECT count(*) FROM recalc.attach_capture c
                JOIN pg_proc p ON p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace
                JOIN pg_trigger t ON t.tgfoid = p.oid AND t.tgrelid = c.relid AND t.tgenabled IN ('O', 'A')
                WHERE c.object = p_object)
             = 4 * (SELECT count(*) FROM recalc.attach_capture c WHERE c.object = p_object)
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
