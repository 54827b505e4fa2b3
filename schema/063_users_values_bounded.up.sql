-- recalc schema, version 63: a users table's row cannot stop every users
-- change by the size of its id or its role.
--
-- attach_users_sync (versions 23, 28 and 39) reads the whole users table
-- into one array, then stores its rows in recalc.attached_user, keyed by
-- id. Only the type was bounded (version 28), and by its stored size, which
-- a compressible value keeps small (90 KB of one letter is stored in about
-- 1 KiB). So a row of the application's, which its role writes with any
-- values, could stop every absorb of the users table, and with it every
-- user change, a deactivation included (the deactivated user kept access),
-- with SQLSTATE 54000 in recalc.attach_stuck:
--   - an id over about 2,700 bytes (a users view whose id is a column with
--     no unique index, a login or an e-mail) broke attached_user's index;
--   - roles or types of some hundred megabytes, or many of some hundred
--     kilobytes, took the array past PostgreSQL's 1 GB for a value.
-- Found by a limits helper (TestUsersOversizedValuesFailClosed).
--
-- Each value is now measured as it is read, by its length as text, which
-- octet_length reads without decompressing: a row whose id is over 1,024
-- bytes is no user (not read, as the model already skipped it), a role over
-- 1,024 bytes makes the user inactive with no role, as a role the model
-- lacks does (only a model imported with --max-id-bytes raised past 1 KiB
-- could have so long a role), and a type over 1,024
-- bytes reads as '(over 1 KiB)', as before. A row then holds at most about
-- 3 KiB, whatever the application writes. The function is as in version 39
-- but for that.

CREATE OR REPLACE FUNCTION recalc.attach_users_sync(a recalc.attachment) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_view text := recalc.attach_read_view(a.object);
    v_type text := a.spec #>> '{users,type}';
    v_active text := a.spec #>> '{users,active}';
    v_sql text;
    v_keys text[];
    v_rows recalc.attach_row[];
    v_bad text[];
    v_good text;
    v_n bigint;
BEGIN
    IF a.object <> 'users' THEN
        RAISE EXCEPTION 'recalc.attach_users_sync reads only the users attachment';
    END IF;
    IF to_regclass(v_view) IS NULL THEN
        PERFORM recalc.attach_source_install(a.object);
    END IF;
    v_sql := format(
        'SELECT (s.%1$I)::text, NULL::text, CASE WHEN octet_length((s.%2$I)::text) <= 1024 THEN (s.%2$I)::text END, NULL::text, '
        'jsonb_build_object(''type'', %3$s, ''active'', CASE WHEN octet_length((s.%2$I)::text) > 1024 THEN NULL ELSE %4$s END), NULL::text[] '
        'FROM %5$s s WHERE s.%1$I IS NOT NULL AND octet_length((s.%1$I)::text) <= 1024',
        a.id_col, a.owner_col,
        CASE WHEN v_type IS NULL THEN 'NULL::text'
             ELSE format('CASE WHEN octet_length((s.%1$I)::text) > 1024 THEN ''(over 1 KiB)'' ELSE (s.%1$I)::text END', v_type) END,
        CASE WHEN v_active IS NULL THEN 'true' ELSE format('s.%I', v_active) END,
        v_view);
    BEGIN
        v_rows := recalc.attach_sandboxed(v_view, v_sql, NULL);
    EXCEPTION WHEN data_exception THEN
        v_sql := v_sql || format(' AND s.%I IN (SELECT k::%s FROM unnest($1::text[]) k)', a.id_col, a.id_type);
        SELECT coalesce(array_agg(x.id), '{}') INTO v_keys
        FROM unnest(recalc.attach_sandboxed(v_view, format(
            'SELECT DISTINCT (s.%1$I)::text, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::text[] FROM %2$s s '
            'WHERE s.%1$I IS NOT NULL AND octet_length((s.%1$I)::text) <= 1024',
            a.id_col, v_view), NULL)) x;
        SELECT * INTO v_rows, v_bad, v_good FROM recalc.attach_read_apart(v_view, v_sql, v_keys);
        IF cardinality(v_bad) > 0 AND recalc.attach_blames_view(a, v_view, v_sql, v_keys, v_good) THEN
            RAISE;
        END IF;
        v_rows := v_rows || ARRAY(SELECT ROW(k, NULL, NULL, NULL, jsonb_build_object('type', NULL, 'active', NULL), NULL)::recalc.attach_row
                                  FROM unnest(v_bad) k);
    END;
    WITH src AS (SELECT r.id, r.owner AS role, r.fields->>'type' AS type, (r.fields->>'active')::boolean AS active
                 FROM (SELECT u.*, count(*) OVER (PARTITION BY u.id) AS n FROM unnest(v_rows) u) r WHERE r.n = 1),
    gone AS (DELETE FROM recalc.attached_user u WHERE NOT EXISTS (SELECT 1 FROM src WHERE src.id = u.id) RETURNING 1),
    put AS (INSERT INTO recalc.attached_user AS u (id, role, type, active) SELECT * FROM src
            ON CONFLICT (id) DO UPDATE SET role = excluded.role, type = excluded.type, active = excluded.active
            WHERE (u.role, u.type, u.active) IS DISTINCT FROM (excluded.role, excluded.type, excluded.active) RETURNING 1)
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM put) INTO v_n;
    IF v_n > 0 OR (SELECT s.fixes IS NULL FROM recalc.attached_users_state s) THEN
        UPDATE recalc.attached_users_state SET dirty = true;
        INSERT INTO recalc.change (kind, keys) VALUES ('section', ARRAY['users']);
    END IF;
    RETURN v_n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_users_sync(recalc.attachment) FROM PUBLIC;
