-- recalc schema, version 9: the read path at list-view speed (docs/rls.md).
--
-- Row-level security policies (`recalc rls enable`) no longer build the
-- user's whole visible set for every query. A policy asks rls_mode once per
-- query (an InitPlan) how to filter for this user, then either probes
-- can_access per row (a primary-key lookup costs a few index probes; a list
-- stops as soon as its page is full) or, for a user with few grants, probes a
-- hash of the user's visible records built once (rls_records). visible_records gains a
-- keyset-paginated overload. Every function runs with its owner's rights, so
-- the reader role reads no table: full runs swap the share tables, which
-- would drop any grant on them. Same access as recalc.access_level.

-- can_access: the user's access to the record of that object is at least
-- p_min_level ('read', 'edit' or 'all'). Exactly recalc.access_level(user,
-- object, record) >= p_min_level: the access root's OWD first (when it grants
-- the level, no share row is read), then the share rows of the record and of
-- its access root through the user's closure entries.
CREATE OR REPLACE FUNCTION recalc.can_access(p_user text, p_object text, p_record text, p_min_level text DEFAULT 'read') RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_uid integer;
    v_internal boolean;
    v_owd smallint;
    v_share smallint;
BEGIN
    IF v_min IS NULL THEN
        RAISE EXCEPTION 'min level % is not read, edit or all', quote_literal(left(p_min_level, 16)) USING ERRCODE = '22023';
    END IF;
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Each statement looks the record up by its id, as access_level does: a
    -- parameter on the unique id keeps one cached plan per session, where
    -- parameters on rid had every call planned again (0.3 ms). The id is
    -- compared in the default collation, explicitly: a parameter takes the
    -- caller's collation (the policy passes the key COLLATE "C"), and any
    -- other than the index's would turn each probe into a scan of every
    -- record (52 ms at 1M), or, nondeterministic, match ids that differ.
    SELECT CASE WHEN v_internal THEN o.internal_level ELSE o.external_level END INTO v_owd
    FROM recalc.acl_record r
    LEFT JOIN recalc.acl_record root ON root.rid = r.access_root
    LEFT JOIN recalc.acl_object o ON o.name = root.object
    WHERE r.id = p_record COLLATE "default" AND r.object = p_object;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF coalesce(v_owd, 0) >= v_min THEN
        RETURN true;
    END IF;
    SELECT max(s.level) INTO v_share
    FROM recalc.acl_record r
    JOIN recalc.acl_share s ON s.rid = r.rid OR s.rid = r.access_root
    JOIN recalc.acl_member m ON m.gid = s.gid AND m.uid = v_uid AND (s.boss_ok OR NOT m.boss)
    WHERE r.id = p_record COLLATE "default";
    RETURN coalesce(v_share, 0) >= v_min;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.can_access(text, text, text, text) FROM PUBLIC;

-- rls_mode: how a policy filters the rows of an object for a user, decided
-- once per query (an InitPlan):
--   0: no row (no such active user, or not a level);
--   1: the user reaches at most 1,000 share rows, and the object's OWD does
--      not grant the level and is not controlled by parent: the rows are
--      exactly rls_records (the user's share rows on the object), built once
--      and probed as a hash;
--   2: can_access per row: a broad user, or one the OWD already grants,
--      whose rows then need no share lookup.
-- Counting stops at 1,001 share rows.
CREATE OR REPLACE FUNCTION recalc.rls_mode(p_user text, p_object text, p_min_level text DEFAULT 'read') RETURNS smallint
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_uid integer;
    v_internal boolean;
    v_owd smallint;
    v_cbp boolean;
    v_rows integer;
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
    -- LATERAL ... LIMIT: probe the share index group by group, never a
    -- scan of every share row.
    SELECT count(*) INTO v_rows FROM (
        SELECT 1 FROM recalc.acl_member m
        CROSS JOIN LATERAL (SELECT 1 FROM recalc.acl_share s WHERE s.gid = m.gid LIMIT 1001) s
        WHERE m.uid = v_uid LIMIT 1001) x;
    RETURN CASE WHEN v_rows <= 1000 THEN 1 ELSE 2 END;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_mode(text, text, text) FROM PUBLIC;

-- rls_records: the records of an object that the user's share rows grant
-- the level, from the user's closure entries through the share index. For
-- an object neither controlled by parent nor granting the level by its OWD
-- (rls_mode 1), these are exactly the records access_level gives the level:
-- each record is its own access root, and the OWD adds nothing.
-- Bounded: it reads at most 1,001 of the user's share rows (as rls_mode
-- counts them) and raises 54000 when there are more, as rls_mode then never
-- picks mode 1; only the records of p_object are aggregated.
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
    -- The share rows first, group by group through the share index, at most
    -- 1,001 of them; then the object's records among them by primary key.
    -- The object is a scalar subquery, one probe per share row: as EXISTS
    -- the planner hashed every record of the object (0.3 s at 1M).
    SELECT count(*), array_agg(DISTINCT x.rid) FILTER (WHERE x.ok) INTO v_rows, v_rids FROM (
        SELECT s.rid, (s.boss_ok OR NOT m.boss) AND s.level >= v_min
               AND (SELECT r.object FROM recalc.acl_record r WHERE r.rid = s.rid) = p_object AS ok
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
REVOKE EXECUTE ON FUNCTION recalc.rls_records(text, text, text) FROM PUBLIC;

-- visible_records(user, object, min_level, after, limit): one page of the
-- records of an object the user can access at min_level or above, with the
-- level, in the order of record id (the database's collation), after the id
-- p_after (NULL: from the start). A page holds at most p_limit records
-- (1 to 10,000). A call reads at most 50 x p_limit records of the object:
-- when it stops there before the page is full, its last row is a
-- continuation row, record and level NULL and next_after the id to continue
-- after (next_after is NULL on every other row). So a page is the last
-- exactly when it is shorter than p_limit and has no continuation row;
-- otherwise the next page starts after its last record, or after the
-- continuation's next_after. Nothing is dropped between pages.
CREATE OR REPLACE FUNCTION recalc.visible_records(p_user text, p_object text, p_min_level text, p_after text, p_limit integer)
RETURNS TABLE (record text, level text, next_after text)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_n integer := 0;
    v_scanned integer := 0;
    v_last text;
    v_level text;
    r record;
BEGIN
    IF v_min IS NULL THEN
        RAISE EXCEPTION 'min level % is not read, edit or all', quote_literal(left(p_min_level, 16)) USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'page limit % is not between 1 and 10000', p_limit USING ERRCODE = '22023';
    END IF;
    CASE recalc.rls_mode(p_user, p_object, p_min_level)
    WHEN 0 THEN
        RETURN;
    WHEN 1 THEN
        RETURN QUERY SELECT k.k, recalc.access_level(p_user, k.k), NULL::text
            FROM (SELECT k FROM recalc.rls_records(p_user, p_object, p_min_level) k
                  WHERE k > coalesce(p_after, '') COLLATE "default" ORDER BY k LIMIT p_limit) k;
    ELSE
        -- Walk the record id index from p_after and check each record of the
        -- object until the page is full or 50 x p_limit records are read: a
        -- fast-start plan, as a cursor's.
        FOR r IN SELECT a.id FROM recalc.acl_record a WHERE a.id > coalesce(p_after, '') COLLATE "default" AND a.object = p_object ORDER BY a.id LOOP
            IF v_scanned >= 50 * p_limit THEN
                record := NULL;
                level := NULL;
                next_after := v_last;
                RETURN NEXT;
                RETURN;
            END IF;
            v_scanned := v_scanned + 1;
            v_last := r.id;
            v_level := recalc.access_level(p_user, r.id);
            CONTINUE WHEN array_position(ARRAY['read', 'edit', 'all'], v_level) IS NULL
                OR array_position(ARRAY['read', 'edit', 'all'], v_level) < v_min;
            record := r.id;
            level := v_level;
            RETURN NEXT;
            v_n := v_n + 1;
            EXIT WHEN v_n >= p_limit;
        END LOOP;
    END CASE;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.visible_records(text, text, text, text, integer) FROM PUBLIC;
