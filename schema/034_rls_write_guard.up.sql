-- recalc schema, version 34: the write guard of an attached table's
-- policies, and record_key bounded on long numbers.
--
-- A policy sees the row before an UPDATE (USING) or the row after it (WITH
-- CHECK), never both. Version 33's restrictive policy judged an owner change
-- by the new row alone, and admitted a row whose id recalc had no record of
-- yet, so an editor who changed the id column with the owner column in one
-- UPDATE took the record. And no policy looked at the parent column, so a
-- user who could write a child row (the owner policy, --write) could put
-- it under any parent and, once absorbed, read that parent (implicit parent
-- access, docs/semantics.md).
--
-- `rls enable` with a write policy on an object's attached table (not a
-- view's base table) now installs recalc_write_guard, a BEFORE INSERT OR
-- UPDATE row trigger that sees both rows. In a session under the table's
-- row-level security:
--   * changing a row's id or owner column needs all access to its record
--     (or a row recalc has no record of yet: one not absorbed);
--   * a new row's parent, or a changed one, must be a record the session's
--     user may read (or one not absorbed yet). A session whose user is not
--     an active recalc user (the application's own role inserting through
--     --insert-role with no user set) gains no access by it and is not
--     checked.
-- The restrictive policy is no longer created; `rls enable` drops it.
-- Tables enabled before this version keep version 33's policies until
-- `rls enable` runs again (recalc init warns of them).

-- Whether p_user may change the id or the owner of the record p_key: all
-- access to it, or no such record yet. What it tells a reader,
-- access_level tells too, but for whether a record exists.
CREATE FUNCTION recalc.rls_may_transfer(p_user text, p_key text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = p_key)
        OR recalc.access_level(p_user, p_key) = 'all'
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_may_transfer(text, text) FROM PUBLIC;

-- Whether p_user may make p_key a row's parent: p_user is not an active
-- user (it gains no access by it), or may read p_key, or there is no such
-- record yet.
CREATE FUNCTION recalc.rls_parent_readable(p_user text, p_key text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT EXISTS (SELECT 1 FROM recalc.acl_user u WHERE u.id = p_user)
        OR NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = p_key)
        OR recalc.access_level(p_user, p_key) <> 'none'
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_parent_readable(text, text) FROM PUBLIC;

-- The trigger. Not SECURITY DEFINER: it runs as the writing role, which
-- the policies already require to hold the reader's functions. Its
-- arguments, set by rls enable: the object, the id, owner and parent
-- columns (parent '' when none), the parent object, and the custom
-- setting holding the user ('' for current_user). Its errors name the
-- object, never a value.
CREATE FUNCTION recalc.rls_write_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_new jsonb;
    v_old jsonb;
    v_user text;
BEGIN
    IF TG_WHEN <> 'BEFORE' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE') OR TG_NARGS <> 6 THEN
        RAISE EXCEPTION 'recalc.rls_write_guard runs only as the row trigger recalc rls enable installs' USING ERRCODE = '42501';
    END IF;
    IF NOT row_security_active(TG_RELID) THEN
        RETURN NEW; -- the table's owner, a superuser, a BYPASSRLS role: no policy applies either
    END IF;
    v_user := CASE WHEN TG_ARGV[5] = '' THEN current_user::text ELSE nullif(current_setting(TG_ARGV[5], true), '') END;
    v_new := to_jsonb(NEW);
    IF TG_OP = 'UPDATE' THEN
        v_old := to_jsonb(OLD);
        IF (v_old -> TG_ARGV[1] IS DISTINCT FROM v_new -> TG_ARGV[1] OR v_old -> TG_ARGV[2] IS DISTINCT FROM v_new -> TG_ARGV[2])
           AND NOT coalesce(recalc.rls_may_transfer(v_user, TG_ARGV[0] || ':' || (v_old ->> TG_ARGV[1])), false) THEN
            RAISE EXCEPTION 'only a user with all access to a % record may change its owner or its id', TG_ARGV[0]
                USING ERRCODE = '42501';
        END IF;
    END IF;
    IF TG_ARGV[3] <> '' AND v_new ->> TG_ARGV[3] IS NOT NULL
       AND (TG_OP = 'INSERT' OR v_old -> TG_ARGV[3] IS DISTINCT FROM v_new -> TG_ARGV[3])
       AND NOT coalesce(recalc.rls_parent_readable(v_user, TG_ARGV[4] || ':' || (v_new ->> TG_ARGV[3])), false) THEN
        RAISE EXCEPTION 'the parent of a % record must be a % record the user may read', TG_ARGV[0], TG_ARGV[4]
            USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_write_guard() FROM PUBLIC;

-- Roles granted the reader's functions (recalc grant reader) get the two
-- checks too.
DO $$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN
        SELECT DISTINCT quote_ident(r.rolname)
        FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE p.oid = 'recalc.rls_mode(text, text, text)'::regprocedure
          AND a.privilege_type = 'EXECUTE' AND r.oid <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.rls_may_transfer(text, text), recalc.rls_parent_readable(text, text) TO %s', v_role);
    END LOOP;
END
$$;

-- record_key: a number of more than 19 significant digits is no bigint;
-- the cast to numeric of a longer one could overflow (22003) instead of
-- answering NULL.
CREATE OR REPLACE FUNCTION recalc.record_key(p_object text, p_id text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_type text;
    v_max numeric;
BEGIN
    SELECT id_type INTO v_type FROM recalc.attachment WHERE object = p_object;
    IF NOT FOUND THEN
        RETURN p_id;
    END IF;
    CASE v_type
    WHEN 'bigint', 'integer' THEN
        v_max := CASE v_type WHEN 'bigint' THEN 9223372036854775807 ELSE 2147483647 END;
        IF p_id !~ '^\s*[+-]?0*[0-9]{1,19}\s*$' OR NOT p_id::numeric BETWEEN -v_max - 1 AND v_max THEN
            RETURN NULL;
        END IF;
        RETURN p_object || ':' || p_id::bigint::text;
    WHEN 'uuid' THEN
        IF p_id !~ '^(\{[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7}\}|[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7})$' THEN
            RETURN NULL;
        END IF;
        RETURN p_object || ':' || p_id::uuid::text;
    ELSE
        RETURN p_object || ':' || p_id;
    END CASE;
END
$$;
