-- recalc schema, version 44: rls_records reads each of the user's records
-- once.
--
-- rls_records (version 9) builds a selective user's list for the adaptive
-- policy, once per query: for a primary-key lookup the list is most of the
-- query's cost. It probed acl_record for each share row to keep only the
-- object's records, then probed it again for each of those to read its id.
-- At 10,000,000 records that was 1,496 of the list's 2,313 buffers for a
-- user with 374 share rows (352 records, 138 of them accounts). Now the
-- share rows alone are read and counted, and each distinct record among
-- them is probed once, keeping the object's: as rls_keys (version 18)
-- has always done. The bound (at most 1,001 share rows read, 54000 above
-- 1,000) and the result are unchanged. CREATE OR REPLACE keeps the owner
-- and the grants; the attributes are restated as version 9 set them.

CREATE OR REPLACE FUNCTION recalc.rls_records(p_user text, p_object text, p_min_level text DEFAULT 'read') RETURNS SETOF text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_rows integer;
    v_rids bigint[];
BEGIN
    IF v_min IS NULL THEN
        RETURN;
    END IF;
    -- The share rows, group by group through the share index, at most
    -- 1,001 of them; the records of those that give the level.
    SELECT count(*), array_agg(DISTINCT x.rid) FILTER (WHERE x.ok) INTO v_rows, v_rids FROM (
        SELECT s.rid, (s.boss_ok OR NOT m.boss) AND s.level >= v_min AS ok
        FROM recalc.acl_user u
        JOIN recalc.acl_member m ON m.uid = u.uid
        CROSS JOIN LATERAL (SELECT s.rid, s.level, s.boss_ok FROM recalc.acl_share s WHERE s.gid = m.gid LIMIT 1001) s
        WHERE u.id = p_user LIMIT 1001) x;
    IF v_rows > 1000 THEN
        RAISE EXCEPTION 'the user reaches more than 1000 share rows: use can_access or visible_records'
            USING ERRCODE = '54000';
    END IF;
    RETURN QUERY SELECT r.id FROM recalc.acl_record r WHERE r.rid = ANY (v_rids) AND r.object = p_object;
END
$$;
