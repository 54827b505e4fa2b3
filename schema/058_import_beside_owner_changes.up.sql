-- recalc schema, version 58: an owner change of an attached table's row
-- that commits while an import runs, before it commits, no longer wipes the
-- manual shares the import adds.
--
-- An import absorbs the writes committed to attached tables before it
-- (docs/attach.md), so that an owner change's wipe of manual shares (section
-- 5 of the contract) comes before the shares it adds. An owner change that
-- committed after that absorb, but before the import committed, was
-- absorbed later, and its wipe then took the import's shares too: the
-- outcome of a serial order where the import committed first. Written to
-- recalc.record, the same owner change is ordered by commit (the import
-- holds the records its shares name FOR SHARE).
--
-- The import now absorbs once more, just before it commits, the attached
-- objects with an owner change logged (changes.AbsorbOwnerChanges), and an
-- absorb's wipe of manual shares spares those its own transaction wrote:
-- attach_effects always (only an absorb, or `recalc attach`, applies
-- effects), and recalc.record's trigger while an absorb re-reads the rows
-- (the setting recalc.absorbing, honoured in the engine's own sessions
-- only, as recalc.rooted: SECURITY.md). A transaction's own rows are those
-- whose xmin is its top-level id: the import writes its shares outside any
-- savepoint, and the absorb's own subtransactions write none. (A row
-- written 2^32 transaction ids earlier, and frozen since, shows the same
-- xmin; it would be spared.) An owner change that commits
-- after that last absorb (as the import commits) wipes the import's shares
-- at the next absorb, as it would have committed after the import.

-- log_record_change as in version 19, sparing its transaction's own manual
-- shares while an absorb re-reads the rows.
CREATE OR REPLACE FUNCTION recalc.log_record_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_engine boolean := session_user = current_user;
    v_rooted boolean := v_engine AND coalesce(current_setting('recalc.rooted', true), '') = 'on';
    v_moved text[];   -- ids, old and new, of the records whose id or object changed
    v_reowned text[]; -- ids of the records whose owner changed
    v_absorbing boolean := v_engine AND coalesce(current_setting('recalc.absorbing', true), '') = 'on'; -- an absorb's re-read
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
        WITH j AS MATERIALIZED (
            SELECT o.id AS old_id, n.id AS new_id, o.id <> n.id OR o.object <> n.object AS moved, o.owner <> n.owner AS reowned
            FROM old_rows o FULL JOIN new_rows n ON n.rid = o.rid)
        SELECT coalesce((SELECT array_agg(v) FROM j, unnest(ARRAY[j.old_id, j.new_id]) v WHERE j.moved), '{}'),
               coalesce((SELECT array_agg(j.old_id) FROM j WHERE j.reowned), '{}')
        INTO v_moved, v_reowned;
        IF cardinality(v_moved) > 0 THEN
            DELETE FROM recalc.share_input WHERE record = ANY (v_moved);
            DELETE FROM recalc.team WHERE record = ANY (v_moved);
        END IF;
        IF cardinality(v_reowned) > 0 THEN
            DELETE FROM recalc.share_input s WHERE s.record = ANY (v_reowned) AND s.cause = 'manual'
                AND NOT (v_absorbing AND s.xmin = pg_current_xact_id()::xid);
        END IF;
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

-- attach_effects as in version 54, sparing its transaction's own manual shares.
CREATE OR REPLACE FUNCTION recalc.attach_effects(a recalc.attachment, p_all_gone boolean, p_gone text[], p_reowned text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_gone text[] := ARRAY(SELECT a.object || ':' || k FROM unnest(p_gone) k);
    v_reowned text[] := ARRAY(SELECT a.object || ':' || k FROM unnest(p_reowned) k);
BEGIN
    WITH s AS (DELETE FROM recalc.share_input s
               WHERE s.object = a.object AND (p_all_gone OR s.record IN (SELECT unnest(v_gone))
                                              OR s.cause = 'manual' AND s.record IN (SELECT unnest(v_reowned))
                                                 AND s.xmin <> pg_current_xact_id()::xid)
               RETURNING s.record),
         t AS (DELETE FROM recalc.team t
               WHERE t.record IN (SELECT r.id FROM recalc.record r WHERE r.object = a.object
                                  AND (p_all_gone OR r.id IN (SELECT unnest(v_gone))))
               RETURNING t.record)
    INSERT INTO recalc.change (kind, keys)
    SELECT 'record', array_agg(DISTINCT x.record) FROM (SELECT record FROM s UNION ALL SELECT record FROM t) x HAVING count(*) > 0;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_effects(recalc.attachment, boolean, text[], text[]) FROM PUBLIC;
