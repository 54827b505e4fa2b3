-- recalc schema, version 40: a broad user's count is noted for the session.
--
-- Every query through an adaptive policy (rls_mode, version 9) and every
-- per-user policy (rls_keys, version 18) first counted the user's share
-- rows, up to 1,001, to pick how to filter. For a user who reaches more,
-- that count read about 450 buffers of the share index on every query: at
-- 1,000,000 records, a primary-key lookup through the adaptive policy cost
-- 0.41 ms against 0.09 ms with row-level security off (pgbench, prepared,
-- a first look), about 0.18 ms of it the count; the README has the side by
-- side measure. Now a user found to reach more than 1,000 share rows is noted in
-- the session's setting recalc.rls_broad_uids, and later queries of the
-- session read the note instead of counting again.
--
-- The note only ever says "filter this user's rows with can_access", which
-- is exact for anyone: can_access reads the user, the record and its share
-- rows on every call. So a stale note (the user's share rows fell to 1,000
-- or fewer during the session) or a forged one (any session can write the
-- setting) costs speed, never a row: such a user's list scans the table
-- rather than hashing the user's few records, and visible_records walks the
-- object's records rather than the user's. The user's existence, its
-- activity and the object's defaults are still read on every call, so mode
-- 0 (no such user) and mode 2 for a public object are never noted.
--
-- Writing a setting is not allowed in a parallel operation, so rls_mode and
-- its callers become PARALLEL UNSAFE. A query through the adaptive policy
-- never ran in parallel anyway: its filter holds a SubPlan, which is
-- parallel restricted.

-- rls_many_shares: whether the user reaches more than 1,000 share rows,
-- counted group by group from the share index (LATERAL ... LIMIT: never a
-- scan of every share row), or read from the session's note. At most about
-- 2,000 bytes of uids are kept: past that the note starts again.
CREATE FUNCTION recalc.rls_many_shares(p_uid integer) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_note text := coalesce(current_setting('recalc.rls_broad_uids', true), '');
    v_rows integer;
BEGIN
    IF p_uid IS NULL THEN
        RETURN false;
    END IF;
    IF strpos(v_note, ',' || p_uid || ',') > 0 THEN
        RETURN true;
    END IF;
    SELECT count(*) INTO v_rows FROM (
        SELECT 1 FROM recalc.acl_member m
        CROSS JOIN LATERAL (SELECT 1 FROM recalc.acl_share s WHERE s.gid = m.gid LIMIT 1001) s
        WHERE m.uid = p_uid LIMIT 1001) x;
    IF v_rows <= 1000 THEN
        RETURN false;
    END IF;
    IF v_note !~ '^,' OR octet_length(v_note) > 2000 THEN
        v_note := ',';
    END IF;
    PERFORM set_config('recalc.rls_broad_uids', v_note || p_uid || ',', false);
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_many_shares(integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.rls_mode(p_user text, p_object text, p_min_level text DEFAULT 'read') RETURNS smallint
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_uid integer;
    v_internal boolean;
    v_owd smallint;
    v_cbp boolean;
BEGIN
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    IF NOT FOUND OR v_min IS NULL THEN
        RETURN 0;
    END IF;
    SELECT CASE WHEN v_internal THEN internal_level ELSE external_level END, cbp INTO v_owd, v_cbp
    FROM recalc.acl_object WHERE name = p_object;
    IF coalesce(v_owd, 0) >= v_min OR coalesce(v_cbp, true) THEN
        RETURN 2;
    END IF;
    RETURN CASE WHEN recalc.rls_many_shares(v_uid) THEN 2 ELSE 1 END;
END
$$;

CREATE OR REPLACE FUNCTION recalc.rls_keys(p_user text, p_object text, p_min_level text) RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_mode smallint := 0;
    v_uid integer;
    v_internal boolean;
    v_owd smallint;
    v_cbp boolean;
    v_rids bigint[];
BEGIN
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    IF FOUND AND v_min IS NOT NULL THEN
        SELECT CASE WHEN v_internal THEN internal_level ELSE external_level END, cbp INTO v_owd, v_cbp
        FROM recalc.acl_object WHERE name = p_object;
        IF coalesce(v_owd, 0) >= v_min OR coalesce(v_cbp, true) OR recalc.rls_many_shares(v_uid) THEN
            v_mode := 2;
        ELSE
            v_mode := 1;
        END IF;
    END IF;
    PERFORM recalc.rls_note(p_user, p_object, p_min_level, v_mode = 2);
    IF v_mode <> 1 THEN
        RETURN NULL;
    END IF;
    -- LATERAL: group by group through the share index (a join could hash
    -- every share row), at most the 1,000 counted.
    SELECT array_agg(DISTINCT s.rid) INTO v_rids FROM recalc.acl_member m
    CROSS JOIN LATERAL (SELECT s.rid FROM recalc.acl_share s
                        WHERE s.gid = m.gid AND (s.boss_ok OR NOT m.boss) AND s.level >= v_min LIMIT 1001) s
    WHERE m.uid = v_uid;
    RETURN (SELECT coalesce(array_agg(r.id), '{}') FROM recalc.acl_record r WHERE r.rid = ANY (v_rids) AND r.object = p_object);
END
$$;

ALTER FUNCTION recalc.visible_records(text, text, text, text, integer) PARALLEL UNSAFE;
ALTER FUNCTION recalc.visible_records(text, text, text) PARALLEL UNSAFE;
ALTER FUNCTION recalc.visible_ids(text, text, text, anyelement, integer) PARALLEL UNSAFE;
