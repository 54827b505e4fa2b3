-- recalc schema, version 38: a page's `after` is bounded as record ids are.
--
-- visible_records (and visible_ids, which calls it) took an `after` of any
-- length and compared it with every candidate id: a reader passing 8 MiB
-- made one call cost 0.3-0.9 s of server time (20-50 ms otherwise), and
-- PostgreSQL takes up to 1 GB. No record id is longer than 1,024 bytes
-- (record_refs_bounded), so a longer `after` is refused (22023). The
-- function is otherwise as in version 29.
CREATE OR REPLACE FUNCTION recalc.visible_records(p_user text, p_object text, p_min_level text, p_after text, p_limit integer)
RETURNS TABLE (record text, level text, next_after text)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_mode smallint;
    v_uid integer;
    v_internal boolean;
    v_owd smallint;
    v_rids bigint[];
    v_ids text[];
    v_roots bigint[];
    v_after text := coalesce(p_after, '');
    v_n integer := 0;
    v_batch integer := p_limit;
    v_scanned integer := 0;
    r record;
    v_root_levels jsonb;
BEGIN
    IF v_min IS NULL THEN
        RAISE EXCEPTION 'min level % is not read, edit or all', quote_literal(left(p_min_level, 16)) USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'page limit % is not between 1 and 10000', p_limit USING ERRCODE = '22023';
    END IF;
    IF octet_length(p_after) > 1024 THEN
        RAISE EXCEPTION 'after is % bytes long, and no record id is longer than 1024 bytes', octet_length(p_after)
            USING ERRCODE = '22023', HINT = 'pass the last id of the previous page, or NULL for the first page';
    END IF;
    v_mode := recalc.rls_mode(p_user, p_object, p_min_level);
    IF v_mode = 0 THEN
        RETURN;
    END IF;
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    SELECT coalesce(CASE WHEN v_internal THEN internal_level ELSE external_level END, 0) INTO v_owd
    FROM recalc.acl_object WHERE name = p_object;
    LOOP
        -- The next candidates, in id order: at most v_batch.
        IF v_mode = 1 THEN
            SELECT array_agg(a.rid ORDER BY a.id), array_agg(a.id ORDER BY a.id), array_agg(a.access_root ORDER BY a.id)
            INTO v_rids, v_ids, v_roots
            FROM recalc.acl_record a
            WHERE a.id IN (SELECT k FROM recalc.rls_records(p_user, p_object, p_min_level) k
                           WHERE k > v_after COLLATE "default" ORDER BY k LIMIT v_batch);
        ELSE
            SELECT array_agg(a.rid ORDER BY a.id), array_agg(a.id ORDER BY a.id), array_agg(a.access_root ORDER BY a.id)
            INTO v_rids, v_ids, v_roots
            FROM (SELECT a.rid, a.id, a.access_root FROM recalc.acl_record a
                  WHERE a.object = p_object AND a.id > v_after COLLATE "default" ORDER BY a.id LIMIT v_batch) a;
        END IF;
        -- The levels the access roots of the candidates that are children
        -- give, each root read once: a root may hold a thousand share rows
        -- and many children.
        SELECT coalesce(jsonb_object_agg(k.root, sh.level), '{}') INTO v_root_levels
        FROM (SELECT DISTINCT x.root FROM unnest(v_rids, v_roots) AS x (rid, root) WHERE x.root <> x.rid) k
        JOIN recalc.acl_record rr ON rr.rid = k.root
        JOIN recalc.acl_object ob ON ob.name = rr.object
        CROSS JOIN LATERAL (
            SELECT s.level FROM (
                SELECT s.gid, s.level, s.boss_ok FROM recalc.acl_share s
                WHERE s.rid = k.root ORDER BY s.level DESC OFFSET 0
            ) s
            CROSS JOIN LATERAL (
                SELECT 1 FROM recalc.acl_member m WHERE m.gid = s.gid AND m.uid = v_uid AND (s.boss_ok OR NOT m.boss) LIMIT 1
            ) m
            WHERE s.level > coalesce(CASE WHEN v_internal THEN ob.internal_level ELSE ob.external_level END, 0)
            ORDER BY s.level DESC
            LIMIT 1
        ) sh;
        FOR r IN
            SELECT c.id, greatest(o.owd, coalesce(sh.level, 0), coalesce((v_root_levels ->> c.access_root::text)::smallint, 0)) AS lv
            FROM unnest(v_rids, v_ids, v_roots) WITH ORDINALITY AS c (rid, id, access_root, n)
            CROSS JOIN LATERAL (
                SELECT coalesce(CASE WHEN c.access_root = c.rid THEN v_owd ELSE (
                    SELECT CASE WHEN v_internal THEN ob.internal_level ELSE ob.external_level END
                    FROM recalc.acl_record root JOIN recalc.acl_object ob ON ob.name = root.object
                    WHERE root.rid = c.access_root) END, 0) AS owd
            ) o
            LEFT JOIN (
                -- The highest level among each candidate's own share rows
                -- that the user's closure holds, for the batch at once.
                SELECT s.rid, max(s.level) AS level
                FROM recalc.acl_share s
                JOIN recalc.acl_member m ON m.gid = s.gid AND (s.boss_ok OR NOT m.boss)
                WHERE s.rid = ANY (v_rids) AND m.uid = v_uid
                GROUP BY s.rid
            ) sh ON sh.rid = c.rid
            ORDER BY c.n
        LOOP
            IF v_scanned >= 50 * p_limit THEN
                record := NULL;
                level := NULL;
                next_after := v_after;
                RETURN NEXT;
                RETURN;
            END IF;
            v_scanned := v_scanned + 1;
            v_after := r.id;
            CONTINUE WHEN r.lv < v_min;
            record := r.id;
            level := (ARRAY['read', 'edit', 'all'])[r.lv];
            next_after := NULL;
            RETURN NEXT;
            v_n := v_n + 1;
            IF v_n >= p_limit THEN
                RETURN;
            END IF;
        END LOOP;
        EXIT WHEN coalesce(cardinality(v_ids), 0) < v_batch;
        v_batch := least(p_limit, greatest(p_limit / 16 + 1, 2 * (p_limit - v_n)));
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.visible_records(text, text, text, text, integer) FROM PUBLIC;
