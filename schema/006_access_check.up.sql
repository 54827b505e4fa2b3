-- recalc schema, version 6: an access check probes the closure by
-- (group, user) instead of reading every member of each group sharing the
-- record.
--
-- Joined to acl_user in one statement, the planner read acl_member by gid
-- alone and hashed the user in afterwards: about 1,700 closure rows for a
-- record shared with a few big groups, 0.85 ms a check at a million
-- records. With the user's uid read first it is a constant, and each share
-- row costs one primary-key probe on (gid, uid). Same results as before.
CREATE OR REPLACE FUNCTION recalc.access_level(p_user text, p_record text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_uid integer;
    v_internal boolean;
    v_share smallint;
    v_owd smallint;
BEGIN
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    IF NOT FOUND THEN
        RETURN 'none';
    END IF;
    SELECT max(s.level) INTO v_share
    FROM recalc.acl_record r
    JOIN recalc.acl_share s ON s.rid = r.rid OR s.rid = r.access_root
    JOIN recalc.acl_member m ON m.gid = s.gid AND m.uid = v_uid AND (s.boss_ok OR NOT m.boss)
    WHERE r.id = p_record;
    SELECT max(CASE WHEN v_internal THEN o.internal_level ELSE o.external_level END) INTO v_owd
    FROM recalc.acl_record r
    JOIN recalc.acl_record root ON root.rid = r.access_root
    JOIN recalc.acl_object o ON o.name = root.object
    WHERE r.id = p_record;
    RETURN (ARRAY['none', 'read', 'edit', 'all'])[1 + greatest(coalesce(v_share, 0), coalesce(v_owd, 0))];
END
$$;
