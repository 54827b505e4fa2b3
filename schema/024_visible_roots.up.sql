-- recalc schema, version 24: a page of visible_records reads each access
-- root once (docs/rls.md).
--
-- A child's level is the highest of its access root's OWD, its own share
-- rows' and its root's that the user's closure reaches. Version 17 read the
-- root's share rows again for every child: a page of 1,000 contacts whose
-- accounts hold a thousand share rows each (rules that share an account
-- with many groups) sorted and probed a million rows, 0.3–0.4 s a page on
-- the 100,000-record bench org. Now a batch's distinct roots are read
-- first, once each, and the children look their level up: 25–30 ms for
-- that page; a batch of roots, as accounts are, costs what it did. Same
-- bounds and continuation rows.
--
-- It also fixes a level: version 17 found a record's highest level with
-- `ORDER BY level DESC ... WHERE EXISTS (closure) LIMIT 1`, and with
-- statistics the planner could run the EXISTS as a join that reads the
-- closure first, losing the order: an owner's record listed as `read`, and
-- left out at `min_level` `all`. A level was never too high: the rows are
-- the user's. Now the order is kept by the query's own ORDER BY.

CREATE OR REPLACE FUNCTION recalc.visible_records(p_user text, p_object text, p_min_level text, p_after text, p_limit integer)
RETURNS TABLE (record text, level text, next_after text)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
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
    v_mode := recalc.rls_mode(p_user, p_object, p_min_level);
    IF v_mode = 0 THEN
        RETURN;
    END IF;
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    SELECT coalesce(CASE WHEN v_internal THEN internal_level ELSE external_level END, 0) INTO v_owd
    FROM recalc.acl_object WHERE name = p_object;
    LOOP
        -- The next candidates, in id order: at most p_limit.
        IF v_mode = 1 THEN
            SELECT array_agg(a.rid ORDER BY a.id), array_agg(a.id ORDER BY a.id), array_agg(a.access_root ORDER BY a.id)
            INTO v_rids, v_ids, v_roots
            FROM recalc.acl_record a
            WHERE a.id IN (SELECT k FROM recalc.rls_records(p_user, p_object, p_min_level) k
                           WHERE k > v_after COLLATE "default" ORDER BY k LIMIT p_limit);
        ELSE
            SELECT array_agg(a.rid ORDER BY a.id), array_agg(a.id ORDER BY a.id), array_agg(a.access_root ORDER BY a.id)
            INTO v_rids, v_ids, v_roots
            FROM (SELECT a.rid, a.id, a.access_root FROM recalc.acl_record a
                  WHERE a.object = p_object AND a.id > v_after COLLATE "default" ORDER BY a.id LIMIT p_limit) a;
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
            LEFT JOIN LATERAL (
                -- The highest level among the record's share rows that the
                -- user's closure holds. They are read highest first (OFFSET
                -- 0 keeps the sort below the probes) and probed one by one
                -- through a LATERAL join, so the first that the closure
                -- holds ends the search. Version 17 probed with EXISTS,
                -- which the planner may turn into a join that reads the
                -- closure first: then LIMIT 1 took any row, not the
                -- highest. The ORDER BY makes the highest the answer
                -- whatever the plan.
                SELECT s.level FROM (
                    SELECT s.gid, s.level, s.boss_ok FROM recalc.acl_share s
                    WHERE s.rid = c.rid ORDER BY s.level DESC OFFSET 0
                ) s
                CROSS JOIN LATERAL (
                    SELECT 1 FROM recalc.acl_member m WHERE m.gid = s.gid AND m.uid = v_uid AND (s.boss_ok OR NOT m.boss) LIMIT 1
                ) m
                WHERE s.level > o.owd
                ORDER BY s.level DESC
                LIMIT 1
            ) sh ON true
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
        EXIT WHEN coalesce(cardinality(v_ids), 0) < p_limit;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.visible_records(text, text, text, text, integer) FROM PUBLIC;
