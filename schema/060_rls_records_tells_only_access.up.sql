-- recalc schema, version 60: rls_records tells a reader only what
-- access_level does.
--
-- rls_records (versions 9 and 44) listed the records of an object that a
-- user's share rows give a level, whatever the object's defaults. The
-- policies call it only for a user in rls_mode 1 (an object whose defaults
-- give the user less than the level, not controlled by its parent), where
-- that list is exactly the records access_level gives the level. But a
-- reader may call it for any user and object: on a public object, where
-- every internal user reads every record, it told which records a user
-- held a share row on (a manual share, a team entry, a territory, a rule's
-- group, the owner's own row), and on an object controlled by its parent
-- the share rows its children hold, neither of which access_level,
-- can_access or visible_records tell (SECURITY.md: a reader learns who may
-- access a record, not why). Found by an attack helper
-- (TestRevealRLSRecordsOnlyWhatAccessTells).
--
-- It now returns nothing unless the user is active and the object is one
-- rls_mode would put in mode 1 for the level: its defaults give the user
-- less than the level and it is not controlled by its parent, as rls_keys
-- (version 18) has always required. The policies and visible_records, which
-- call it only in mode 1, in the same statement's snapshot, get the same
-- rows as before. The bound (at most 1,001 share rows read, 54000 above
-- 1,000) is unchanged. CREATE OR REPLACE keeps the owner and the grants.

CREATE OR REPLACE FUNCTION recalc.rls_records(p_user text, p_object text, p_min_level text DEFAULT 'read') RETURNS SETOF text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_uid integer;
    v_internal boolean;
    v_owd smallint;
    v_cbp boolean;
    v_rows integer;
    v_rids bigint[];
BEGIN
    IF v_min IS NULL THEN
        RETURN;
    END IF;
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- As rls_mode: an object public to the user at the level, controlled by
    -- its parent, or unknown is filtered by can_access, not by this list.
    SELECT CASE WHEN v_internal THEN internal_level ELSE external_level END, cbp INTO v_owd, v_cbp
    FROM recalc.acl_object WHERE name = p_object;
    IF coalesce(v_owd, 0) >= v_min OR coalesce(v_cbp, true) THEN
        RETURN;
    END IF;
    -- The share rows, group by group through the share index, at most
    -- 1,001 of them; the records of those that give the level.
    SELECT count(*), array_agg(DISTINCT x.rid) FILTER (WHERE x.ok) INTO v_rows, v_rids FROM (
        SELECT s.rid, (s.boss_ok OR NOT m.boss) AND s.level >= v_min AS ok
        FROM recalc.acl_member m
        CROSS JOIN LATERAL (SELECT s.rid, s.level, s.boss_ok FROM recalc.acl_share s WHERE s.gid = m.gid LIMIT 1001) s
        WHERE m.uid = v_uid LIMIT 1001) x;
    IF v_rows > 1000 THEN
        RAISE EXCEPTION 'the user reaches more than 1000 share rows: use can_access or visible_records'
            USING ERRCODE = '54000';
    END IF;
    RETURN QUERY SELECT r.id FROM recalc.acl_record r WHERE r.rid = ANY (v_rids) AND r.object = p_object;
END
$$;
