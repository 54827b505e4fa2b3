-- recalc schema, version 83: a selective user's list probes its records
-- through a hash index, and rls_keys reads the share rows once.
--
-- A selective user's primary-key lookup through either policy builds the
-- user's whole list (rls_records, rls_keys), and most of its buffers were
-- the probes of acl_record by rid, one for each distinct record among the
-- user's share rows, whatever its object: three btree pages (root, inner,
-- leaf) and the heap page each. At 1,000,000 records the bench's selective
-- user (70 share rows, 64 records, 28 of them accounts) read 296 buffers
-- through the adaptive policy, 256 of them these probes; at 10,000,000 they
-- were 1,274 of 1,842 (docs/rls.md). A hash index on rid answers a probe
-- from the one bucket page (its metapage is cached by the backend), and the
-- planner reads the list's records as a bitmap, each heap page once: the
-- same probes read 98 buffers (64 bucket pages, 34 heap pages) instead of
-- 256, measured with EXPLAIN (ANALYZE, BUFFERS). Fill factor 50: at the
-- default 75, 512 of the 3,584 buckets overflowed their page and a probe
-- read 1.3 pages. rls_records and visible_records need no change: the
-- planner picks the index for their rid = ANY (...) by cost.
--
-- rls_keys (version 40) counted the user's share rows (rls_many_shares),
-- then read them again for the list. It now reads them once, group by
-- group through the share index and at most 1,001 of them as before: more
-- than 1,000 notes the user as broad for the session as rls_many_shares
-- does (the note's format and meaning are unchanged) and returns NULL;
-- otherwise it keeps the records of those that give the level. The result
-- is unchanged for every input; a broad user not yet noted reads up to
-- 1,001 share rows' heap pages once per session rather than the index
-- alone.
--
-- Idempotent: IF NOT EXISTS, CREATE OR REPLACE (which keeps the owner and
-- the grants; the attributes are restated as version 40 set them). The
-- index is built under a SHARE lock: the upgrade blocks writes to
-- acl_record while it builds (about 13 s at 1,000,000 records on a busy
-- two-core machine).

CREATE INDEX IF NOT EXISTS acl_record_rid_hash_idx ON recalc.acl_record USING hash (rid) WITH (fillfactor = 50);

CREATE OR REPLACE FUNCTION recalc.rls_keys(p_user text, p_object text, p_min_level text) RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_mode smallint := 0;
    v_uid integer;
    v_internal boolean;
    v_owd smallint;
    v_cbp boolean;
    v_note text;
    v_rows integer;
    v_rids bigint[];
BEGIN
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    IF FOUND AND v_min IS NOT NULL THEN
        SELECT CASE WHEN v_internal THEN internal_level ELSE external_level END, cbp INTO v_owd, v_cbp
        FROM recalc.acl_object WHERE name = p_object;
        v_note := coalesce(current_setting('recalc.rls_broad_uids', true), '');
        IF coalesce(v_owd, 0) >= v_min OR coalesce(v_cbp, true) OR strpos(v_note, ',' || v_uid || ',') > 0 THEN
            v_mode := 2;
        ELSE
            -- The share rows once, group by group through the share index
            -- (LATERAL: a join could hash every share row), at most 1,001.
            SELECT count(*), array_agg(DISTINCT x.rid) FILTER (WHERE x.ok) INTO v_rows, v_rids FROM (
                SELECT s.rid, (s.boss_ok OR NOT m.boss) AND s.level >= v_min AS ok
                FROM recalc.acl_member m
                CROSS JOIN LATERAL (SELECT s.rid, s.level, s.boss_ok FROM recalc.acl_share s WHERE s.gid = m.gid LIMIT 1001) s
                WHERE m.uid = v_uid LIMIT 1001) x;
            IF v_rows <= 1000 THEN
                v_mode := 1;
            ELSE
                -- Noted as rls_many_shares notes (version 40).
                v_mode := 2;
                IF v_note !~ '^,' OR octet_length(v_note) > 2000 THEN
                    v_note := ',';
                END IF;
                PERFORM set_config('recalc.rls_broad_uids', v_note || v_uid || ',', false);
            END IF;
        END IF;
    END IF;
    PERFORM recalc.rls_note(p_user, p_object, p_min_level, v_mode = 2);
    IF v_mode <> 1 THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT coalesce(array_agg(r.id), '{}') FROM recalc.acl_record r WHERE r.rid = ANY (v_rids) AND r.object = p_object);
END
$$;
