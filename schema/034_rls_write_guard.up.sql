-- recalc schema, version 34: the write guard of an attached table's
-- policies, and record_key bounded on long numbers.
--
-- A policy sees the row before an UPDATE (USING) or the row after it (WITH
-- CHECK), never both. Version 33's restrictive policy judged an owner change
-- by the new row alone, and admitted a row whose id recalc had no record of
-- yet, so an editor who changed the id column with the owner column in one
-- UPDATE took the record; so did one who deleted a row and wrote another
-- under its id. And no policy looked at the parent column, so a user who
-- could write a child row (the owner policy, --write) could put it under any
-- parent and, once absorbed, read that parent (implicit parent access,
-- docs/semantics.md).
--
-- `rls enable` with a write policy now installs recalc_write_guard, an
-- AFTER INSERT OR UPDATE row trigger, which sees both rows as written (after
-- every BEFORE trigger, generated columns included). It reads the table's
-- attachment when it runs (rls_guard), so it follows `recalc attach` after
-- a column changes, and does nothing on a table no object is attached to
-- (or only through a view). In a session under the table's row-level
-- security, for the session's user (the setting, or current_user):
--   * changing a row's id or owner needs all access to its record (or a
--     row recalc has no record of yet);
--   * a row that takes an id (an INSERT, or an UPDATE of the id) needs all
--     access to what recalc still holds under that id: its record, or
--     records naming it as their parent (a deleted parent's children);
--   * a new or changed parent must be a record the user may read, or, not
--     absorbed yet, a row of the parent's table that this session can see
--     and whose owner is the user.
-- A session with no user set (the application's own role inserting through
-- --insert-role) has no access: it may give a row only an id recalc holds
-- nothing under, and no parent check applies, as it gains nothing by one.
-- Every role writing under the policies needs the reader's functions.
-- Tables enabled before this version keep version 33's policies until
-- `rls enable` runs again (recalc init names them). The restrictive policy
-- is no longer created; `rls enable` drops it.

-- What the guard of table p_relid needs, read as it runs: the attached
-- object's columns and its parent's table. No row when no object is
-- attached to the table itself. A reader may ask it about any table: it
-- tells the columns an attachment names.
CREATE FUNCTION recalc.rls_guard(p_relid oid,
    OUT object text, OUT id_col text, OUT owner_col text, OUT parent_col text, OUT parent_object text,
    OUT parent_table text, OUT parent_id_col text, OUT parent_id_type text, OUT parent_owner_col text)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.object, a.id_col, a.owner_col, a.parent_col, a.parent_object,
           p.relid::regclass::text, p.id_col, p.id_type, p.owner_col
    FROM recalc.attachment a LEFT JOIN recalc.attachment p ON p.object = a.parent_object AND NOT p.is_view
    WHERE a.relid = p_relid AND NOT a.is_view AND a.object <> 'users'
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_guard(oid) FROM PUBLIC;

-- Whether p_user may change the id or the owner of the record p_key, or
-- give a row its id: all access to it, or no such record and none naming
-- it as parent (a deleted parent's children stay, invalid, until a record
-- takes its id again, and would go to that record's owner). Like
-- access_level, a reader may ask it about any user and key: it tells
-- besides whether a record of that id exists or is named as a parent,
-- which a unique index and a foreign key tell as well.
CREATE FUNCTION recalc.rls_may_transfer(p_user text, p_key text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = p_key)
           AND NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.parent = p_key)
        OR recalc.access_level(p_user, p_key) = 'all'
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_may_transfer(text, text) FROM PUBLIC;

-- The trigger. Not SECURITY DEFINER: it runs as the writing role, which
-- the policies already require to hold the reader's functions, and reads a
-- parent not absorbed yet through that role's own rights (its row-level
-- security included). Its one argument, set by rls enable: the custom
-- setting holding the user ('' for current_user). Its errors name the
-- object, never a value.
CREATE FUNCTION recalc.rls_write_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_user text;
    g record;
    v_new jsonb;
    v_old jsonb;
    v_owner text;
BEGIN
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE') OR TG_NARGS <> 1 THEN
        RAISE EXCEPTION 'recalc.rls_write_guard runs only as the row trigger recalc rls enable installs' USING ERRCODE = '42501';
    END IF;
    IF NOT row_security_active(TG_RELID) THEN
        RETURN NULL; -- the table's owner, a superuser, a BYPASSRLS role: no policy applies either
    END IF;
    IF NOT (has_schema_privilege('recalc', 'USAGE') AND has_function_privilege('recalc.rls_guard(oid)', 'EXECUTE')) THEN
        RAISE EXCEPTION 'a role writing to % under recalc''s write policies needs the reader''s functions for recalc''s write guard: recalc grant reader ROLE',
            TG_TABLE_NAME USING ERRCODE = '42501';
    END IF;
    SELECT * INTO g FROM recalc.rls_guard(TG_RELID);
    IF NOT FOUND THEN
        RETURN NULL; -- no object attached to the table itself
    END IF;
    v_new := to_jsonb(NEW);
    IF NOT (v_new ? g.id_col AND v_new ? g.owner_col AND (g.parent_col IS NULL OR v_new ? g.parent_col)) THEN
        RAISE EXCEPTION 'the write guard of object % finds none of its columns: run recalc attach, then recalc rls enable, again', g.object
            USING ERRCODE = '42501';
    END IF;
    -- NULL: no user set (the application's own role, through --insert-role).
    -- It has no access: it may give a row only an id recalc holds nothing
    -- under, and no parent check applies, as it gains nothing by one.
    v_user := CASE WHEN TG_ARGV[0] = '' THEN current_user::text ELSE nullif(current_setting(TG_ARGV[0], true), '') END;
    IF TG_OP = 'UPDATE' THEN
        v_old := to_jsonb(OLD);
        IF (v_old -> g.id_col IS DISTINCT FROM v_new -> g.id_col OR v_old -> g.owner_col IS DISTINCT FROM v_new -> g.owner_col)
           AND NOT coalesce(recalc.rls_may_transfer(v_user, g.object || ':' || (v_old ->> g.id_col)), false) THEN
            RAISE EXCEPTION 'only a user with all access to a % record may change its owner or its id', g.object USING ERRCODE = '42501';
        END IF;
    END IF;
    IF (TG_OP = 'INSERT' OR v_old -> g.id_col IS DISTINCT FROM v_new -> g.id_col)
       AND NOT coalesce(recalc.rls_may_transfer(v_user, g.object || ':' || (v_new ->> g.id_col)), false) THEN
        RAISE EXCEPTION 'only a user with all access to the % record recalc holds under an id may give a row that id', g.object
            USING ERRCODE = '42501';
    END IF;
    IF v_user IS NULL OR g.parent_col IS NULL OR v_new ->> g.parent_col IS NULL
       OR TG_OP = 'UPDATE' AND v_old -> g.parent_col IS NOT DISTINCT FROM v_new -> g.parent_col
       OR recalc.access_level(v_user, g.parent_object || ':' || (v_new ->> g.parent_col)) <> 'none' THEN
        RETURN NULL;
    END IF;
    -- A parent recalc has no record of that the user may see and owns: one
    -- written moments ago, in this transaction or another, not absorbed.
    -- The type is spliced into the SQL: only the four attachment.id_type
    -- admits. A value that is no id of that type is no such row: the cast's
    -- error would carry the value.
    IF g.parent_table IS NOT NULL AND g.parent_id_type IN ('text', 'bigint', 'integer', 'uuid') THEN
        BEGIN
            EXECUTE format('SELECT (%I)::text FROM %s WHERE %I = $1::%s', g.parent_owner_col, g.parent_table, g.parent_id_col, g.parent_id_type)
                INTO v_owner USING v_new ->> g.parent_col;
        EXCEPTION WHEN data_exception THEN
            v_owner := NULL;
        END;
        -- rls_may_transfer is true here only when recalc holds nothing
        -- under that id.
        IF v_owner COLLATE "C" = v_user AND coalesce(recalc.rls_may_transfer(v_user, g.parent_object || ':' || (v_new ->> g.parent_col)), false) THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'the parent of a % record must be a % record the user may read', g.object, g.parent_object USING ERRCODE = '42501';
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_write_guard() FROM PUBLIC;

-- Roles granted the reader's functions (recalc grant reader) get the
-- guard's two functions too.
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
        EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.rls_guard(oid), recalc.rls_may_transfer(text, text) TO %s', v_role);
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
