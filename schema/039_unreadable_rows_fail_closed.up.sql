-- recalc schema, version 39: a row that cannot be read fails closed alone.
--
-- An attached view that casts a column (`(p.properties ->> 'vip')::boolean`)
-- raises on a row whose value the cast does not fit (22P02), and so does
-- any expression of the application's view on its own data (a division by
-- zero, a date out of range: SQLSTATE class 22). The absorb read each
-- slice of 5,000 ids in one statement, so one such row failed its whole
-- object's absorb on every try: none of the object's later writes was
-- mirrored, a revocation included, and every `wait_fresh` failed with RC002
-- until someone corrected the row (or, for a backfill, the whole attach
-- failed). attach_sync_slice now halves a slice that fails so, as it
-- halves one whose rows do not fit an array, down to the single id whose
-- read fails, and mirrors that record closed, as a row whose values are out
-- of bounds (version 27): its stored owner kept (the moment of failure is
-- no owner change, so its manual shares stay), no parent or fields, the
-- territory list {""}; a new record gets the empty owner too. Reading the
-- row again, once it is corrected, mirrors it as it is. A check_violation
-- of recalc.record on one row is isolated the same way. A read that fails
-- even for no id is the view's fault, not a row's: it still fails the
-- absorb. The users attachment, read whole, isolates such a row the same
-- way: it becomes an inactive user with no role.
CREATE OR REPLACE FUNCTION recalc.attach_sync_slice(a recalc.attachment, p_view text, p_rows text, p_keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_half int := cardinality(p_keys) / 2;
BEGIN
    RETURN recalc.attach_apply(a, p_keys, recalc.attach_sandboxed(p_view, p_rows, p_keys));
EXCEPTION WHEN program_limit_exceeded OR data_exception OR check_violation THEN
    IF v_half > 0 THEN
        RETURN recalc.attach_sync_slice(a, p_view, p_rows, p_keys[1:v_half])
             + recalc.attach_sync_slice(a, p_view, p_rows, p_keys[v_half + 1:]);
    ELSIF SQLSTATE LIKE '54%' THEN -- one row that does not fit: nothing to halve
        RAISE;
    END IF;
    -- A read that fails with no row at all (a constant cast in the view,
    -- folded when planned) is not this row's doing: that fails the absorb.
    PERFORM recalc.attach_sandboxed(p_view, p_rows, '{}'::text[]);
    RETURN recalc.attach_unreadable(a, p_keys[1]);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync_slice(recalc.attachment, text, text, text[]) FROM PUBLIC;

-- attach_unreadable mirrors closed the record of attachment a whose id (the
-- source's, as text) is p_key, whose row could not be read. A record of
-- another object holding the id is never taken over.
CREATE OR REPLACE FUNCTION recalc.attach_unreadable(a recalc.attachment, p_key text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_n bigint;
BEGIN
    INSERT INTO recalc.record AS r (id, object, owner, parent, fields, territories)
    VALUES (a.object || ':' || p_key, a.object, '', NULL, '{}', '{""}')
    ON CONFLICT (id) DO UPDATE SET parent = NULL, fields = '{}', territories = '{""}'
    WHERE r.object = a.object AND (r.parent, r.fields, r.territories) IS DISTINCT FROM (NULL::text, '{}'::jsonb, '{""}'::text[]);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_unreadable(recalc.attachment, text) FROM PUBLIC;

-- attach_users_sync as in version 28, but a users row that the view cannot
-- read because of its values no longer fails every absorb of the users:
-- the ids are read alone, then the rows by halves (attach_users_read), and
-- a row that still fails alone is an inactive user with no role (a NULL
-- active, model.AttachUsers), so that it reaches nothing.
CREATE OR REPLACE FUNCTION recalc.attach_users_read(p_view text, p_sql text, p_keys text[]) RETURNS recalc.attach_row[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_half int := cardinality(p_keys) / 2;
BEGIN
    RETURN recalc.attach_sandboxed(p_view, p_sql, p_keys);
EXCEPTION WHEN data_exception THEN
    IF v_half > 0 THEN
        RETURN recalc.attach_users_read(p_view, p_sql, p_keys[1:v_half])
            || recalc.attach_users_read(p_view, p_sql, p_keys[v_half + 1:]);
    END IF;
    PERFORM recalc.attach_sandboxed(p_view, p_sql, '{}'::text[]); -- as attach_sync_slice
    RETURN ARRAY[ROW(p_keys[1], NULL, NULL, NULL, jsonb_build_object('type', NULL, 'active', NULL), NULL)::recalc.attach_row];
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_users_read(text, text, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_users_sync(a recalc.attachment) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_view text := recalc.attach_read_view(a.object);
    v_type text := a.spec #>> '{users,type}';
    v_active text := a.spec #>> '{users,active}';
    v_sql text;
    v_keys text[];
    v_rows recalc.attach_row[];
    v_n bigint;
BEGIN
    IF a.object <> 'users' THEN
        RAISE EXCEPTION 'recalc.attach_users_sync reads only the users attachment';
    END IF;
    IF to_regclass(v_view) IS NULL THEN
        PERFORM recalc.attach_source_install(a.object);
    END IF;
    v_sql := format(
        'SELECT (s.%1$I)::text, NULL::text, (s.%2$I)::text, NULL::text, jsonb_build_object(''type'', %3$s, ''active'', %4$s), NULL::text[] '
        'FROM %5$s s WHERE s.%1$I IS NOT NULL',
        a.id_col, a.owner_col,
        CASE WHEN v_type IS NULL THEN 'NULL::text'
             ELSE format('CASE WHEN pg_column_size(s.%1$I) > 1024 THEN ''(over 1 KiB)'' ELSE (s.%1$I)::text END', v_type) END,
        CASE WHEN v_active IS NULL THEN 'true' ELSE format('s.%I', v_active) END,
        v_view);
    BEGIN
        v_rows := recalc.attach_sandboxed(v_view, v_sql, NULL);
    EXCEPTION WHEN data_exception THEN
        SELECT coalesce(array_agg(x.id), '{}') INTO v_keys
        FROM unnest(recalc.attach_sandboxed(v_view, format(
            'SELECT DISTINCT (s.%1$I)::text, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::text[] FROM %2$s s WHERE s.%1$I IS NOT NULL',
            a.id_col, v_view), NULL)) x;
        v_rows := recalc.attach_users_read(v_view,
            v_sql || format(' AND s.%I IN (SELECT k::%s FROM unnest($1::text[]) k)', a.id_col, a.id_type), v_keys);
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
