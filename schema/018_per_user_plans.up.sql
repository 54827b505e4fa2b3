-- recalc schema, version 18: policies the planner plans per user
-- (`recalc rls enable --per-user-plans`, docs/rls.md).
--
-- Version 9's policy decides at run time how to filter (rls_mode, an
-- InitPlan): a hash of a selective user's records, or can_access per row.
-- Either way the query scans the application table: a list in name order
-- for a user who sees 29 of 250,000 accounts read every row (0.2 to 0.4 s).
-- A per-user policy is an OR the planner can run both ways:
--
--   ID = ANY ((SELECT the user's visible ids))             -- a selective user
--   OR (ID >= CASE WHEN rls_broad(...) THEN min END       -- anyone else
--       AND can_access(...))
--
-- Both arms are index conditions on the id column, so for a selective user
-- the planner can fetch the rows by id (a BitmapOr) and sort them; it does
-- so when it sees the second arm's range empty. It sees that because it
-- evaluates stable functions while estimating: rls_broad is false for a
-- selective user, the range is `ID >= NULL`, and no row is estimated. For
-- a broad user the range is every row, and the planner scans in the list's
-- order, filtering as it goes, as before.
--
-- rls_broad runs per row in that filter, so it must be cheap: it reads the
-- answer that rls_keys (the first arm's InitPlan, run before the second
-- arm is evaluated on any row: an OR evaluates its arms in order, a
-- BitmapOr runs its scans in order) or rls_broad_exact left in the setting
-- recalc.rls_plan.LEVEL.OBJECT for this user, and computes it only when the
-- setting holds anything else. While planning, the note is the last
-- statement's for the user: planning a user's next query reads no share
-- row. Any session can write that setting: a false answer
-- makes the second arm false (the user sees less), a true one leaves
-- can_access to decide. Neither widens what a user sees; the ids of the
-- first arm come only from rls_keys, a SECURITY DEFINER function.

-- rls_note: notes in the session's setting recalc.rls_plan.LEVEL.OBJECT
-- whether the user is broad ('t' and the user id) or not ('f' and the id).
-- A level or object that cannot be part of a setting's name is not noted.
CREATE FUNCTION recalc.rls_note(p_user text, p_object text, p_min_level text, p_broad boolean) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_min_level IN ('read', 'edit', 'all') AND p_object ~ '^[a-z][a-z0-9_]*$' THEN
        PERFORM set_config('recalc.rls_plan.' || p_min_level || '.' || p_object,
                           CASE WHEN p_broad THEN 't' ELSE 'f' END || coalesce(p_user, ''), false);
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_note(text, text, text, boolean) FROM PUBLIC;

-- rls_keys: the record ids of the object the user may access at the level,
-- when rls_mode would put the user in mode 1 (a selective user: exactly
-- the records rls_records lists); NULL otherwise. Notes the user's mode for
-- rls_broad. It counts the user's share rows as rls_mode does, reads them
-- only when there are at most 1,000, then the object's records among them.
-- JIT off: the estimate over a generic user's groups made calls compile the
-- read (12 ms).
CREATE FUNCTION recalc.rls_keys(p_user text, p_object text, p_min_level text) RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    v_min smallint := array_position(ARRAY['read', 'edit', 'all'], p_min_level);
    v_mode smallint := 0;
    v_uid integer;
    v_internal boolean;
    v_owd smallint;
    v_cbp boolean;
    v_rows integer;
    v_rids bigint[];
BEGIN
    SELECT uid, internal INTO v_uid, v_internal FROM recalc.acl_user WHERE id = p_user;
    IF FOUND AND v_min IS NOT NULL THEN
        SELECT CASE WHEN v_internal THEN internal_level ELSE external_level END, cbp INTO v_owd, v_cbp
        FROM recalc.acl_object WHERE name = p_object;
        IF coalesce(v_owd, 0) >= v_min OR coalesce(v_cbp, true) THEN
            v_mode := 2;
        ELSE
            -- Counted from the share index alone, as rls_mode counts: a
            -- broad user's share rows are never read.
            SELECT count(*) INTO v_rows FROM (
                SELECT 1 FROM recalc.acl_member m
                CROSS JOIN LATERAL (SELECT 1 FROM recalc.acl_share s WHERE s.gid = m.gid LIMIT 1001) s
                WHERE m.uid = v_uid LIMIT 1001) x;
            v_mode := CASE WHEN v_rows <= 1000 THEN 1 ELSE 2 END;
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
REVOKE EXECUTE ON FUNCTION recalc.rls_keys(text, text, text) FROM PUBLIC;

-- rls_broad_exact: whether a policy filters the user's rows with
-- can_access (rls_mode 2), noted for rls_broad.
CREATE FUNCTION recalc.rls_broad_exact(p_user text, p_object text, p_min_level text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_broad boolean := recalc.rls_mode(p_user, p_object, p_min_level) = 2;
BEGIN
    PERFORM recalc.rls_note(p_user, p_object, p_min_level, v_broad);
    RETURN v_broad;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_broad_exact(text, text, text) FROM PUBLIC;

-- rls_broad: rls_broad_exact, read from the note when it is for this
-- user, object and level. Not SECURITY DEFINER and a
-- single expression, so the planner inlines it (and evaluates it while
-- estimating); its body is parsed here, not with the caller's search_path.
CREATE FUNCTION recalc.rls_broad(p_user text, p_object text, p_min_level text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL UNSAFE
RETURN CASE WHEN substr(current_setting('recalc.rls_plan.' || p_min_level || '.' || p_object, true), 2) = p_user
            THEN left(current_setting('recalc.rls_plan.' || p_min_level || '.' || p_object, true), 1) = 't'
            ELSE recalc.rls_broad_exact(p_user, p_object, p_min_level) END;
REVOKE EXECUTE ON FUNCTION recalc.rls_broad(text, text, text) FROM PUBLIC;

-- The ids of keys that start with p_prefix, the prefix removed, as the
-- application's id column type: a policy compares them with the column so
-- that its index finds the rows. Keys that are not the text of a value of
-- that type (the form `col::text` gives) match no row and are dropped.
CREATE FUNCTION recalc.rls_text_ids(p_keys text[], p_prefix text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT array_agg(substr(k, length(p_prefix) + 1)) FROM unnest(p_keys) k WHERE starts_with(k, p_prefix));

CREATE FUNCTION recalc.rls_int_ids(p_keys text[], p_prefix text, p_lo bigint, p_hi bigint) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT array_agg(n) FROM (
    SELECT CASE WHEN k ~ '^(0|-?[1-9][0-9]{0,18})$' THEN
                CASE WHEN k::numeric BETWEEN p_lo AND p_hi THEN k::bigint END END AS n
    FROM unnest(recalc.rls_text_ids(p_keys, p_prefix)) k) x WHERE n IS NOT NULL);

CREATE FUNCTION recalc.rls_uuid_ids(p_keys text[], p_prefix text) RETURNS uuid[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT array_agg(k::uuid) FROM unnest(recalc.rls_text_ids(p_keys, p_prefix)) k
        WHERE k ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$');

REVOKE EXECUTE ON FUNCTION recalc.rls_text_ids(text[], text), recalc.rls_int_ids(text[], text, bigint, bigint),
    recalc.rls_uuid_ids(text[], text) FROM PUBLIC;

-- Readers granted before this version (`recalc grant reader`, which now
-- grants these too) may call them as they may call rls_records.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS role
             FROM pg_proc p, aclexplode(p.proacl) a
             WHERE p.oid = 'recalc.rls_records(text, text, text)'::regprocedure
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.rls_keys(text, text, text), recalc.rls_broad(text, text, text),
            recalc.rls_broad_exact(text, text, text), recalc.rls_text_ids(text[], text),
            recalc.rls_int_ids(text[], text, bigint, bigint), recalc.rls_uuid_ids(text[], text) TO %s', r.role);
    END LOOP;
END
$$;
