-- recalc schema, version 23: users attached to an application table
-- (docs/attach.md, "Attaching the users").
--
-- A spec file's "users" entry attaches the users of the model to a table:
-- its id, role, type and active columns. It is registered as the
-- attachment named 'users' (no object of a model may have that name: a
-- standard object is named otherwise, a custom one ends in __c), whose
-- capture logs the ids written as any attachment's does, and whose absorb
-- re-reads the whole table, as the sandbox role (version 21), into
-- recalc.attached_user. The engine then rebuilds the stored model's users
-- section from those rows (internal/store.SyncAttachedUsers): a user whose
-- row the model cannot take fails closed (inactive), and a user that the
-- model's groups, territories or rules name but the table lacks is kept as
-- an inactive stub, so that the stored model stays valid.
-- Every statement is safe to run again.

-- The users table's rows as last absorbed: ids, role ids and types as
-- text. Only the engine reads it.
CREATE TABLE IF NOT EXISTS recalc.attached_user (
    id     text PRIMARY KEY,
    role   text,
    type   text,
    active boolean
);

-- dirty: recalc.attached_user changed since the users section was rebuilt
-- from it; fixes: what the last rebuild changed so that the model could
-- take the rows (model.UserFixes), for `recalc attach --list`.
CREATE TABLE IF NOT EXISTS recalc.attached_users_state (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    dirty boolean NOT NULL DEFAULT false,
    fixes jsonb
);
INSERT INTO recalc.attached_users_state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- attach_users_sync reads every row of the users attachment a, in the
-- sandbox, and makes recalc.attached_user equal them. Its type and active
-- columns are in a.spec (the fingerprint of internal/attach): without a
-- type column every user is internal, without an active column every user
-- is active; a NULL active is read as inactive. Rows sharing an id (a view
-- may return them) are left out: no user. When a row changed, or the
-- users section was never built from the rows since they were attached
-- (an attach of an empty table must still replace the users an import
-- gave), it marks the rows dirty and logs a section change, so that the
-- next job, or `recalc watch`'s next step, rebuilds the users section. It
-- returns how many rows it inserted, updated or deleted.
CREATE OR REPLACE FUNCTION recalc.attach_users_sync(a recalc.attachment) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_view text := recalc.attach_read_view(a.object);
    v_type text := a.spec #>> '{users,type}';
    v_active text := a.spec #>> '{users,active}';
    v_rows recalc.attach_row[];
    v_n bigint;
BEGIN
    IF a.object <> 'users' THEN
        RAISE EXCEPTION 'recalc.attach_users_sync reads only the users attachment';
    END IF;
    IF to_regclass(v_view) IS NULL THEN
        PERFORM recalc.attach_source_install(a.object);
    END IF;
    v_rows := recalc.attach_sandboxed(v_view, format(
        'SELECT (s.%1$I)::text, NULL::text, (s.%2$I)::text, NULL::text, jsonb_build_object(''type'', %3$s, ''active'', %4$s), NULL::text[] '
        'FROM %5$s s WHERE s.%1$I IS NOT NULL',
        a.id_col, a.owner_col,
        CASE WHEN v_type IS NULL THEN 'NULL::text' ELSE format('(s.%I)::text', v_type) END,
        CASE WHEN v_active IS NULL THEN 'true' ELSE format('s.%I', v_active) END,
        v_view), NULL);
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

-- attach_sync as in version 21, but the users attachment is always read
-- whole, into recalc.attached_user.
CREATE OR REPLACE FUNCTION recalc.attach_sync(a recalc.attachment, p_keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_view text := recalc.attach_read_view(a.object);
    v_rows text := recalc.attach_rows_sql(a, v_view,
        format('s.%I IN (SELECT k::%s FROM unnest($1::text[]) k)', a.id_col, a.id_type));
    v_keys text[] := p_keys;
    v_slice text[];
    v_n bigint := 0;
BEGIN
    IF a.object = 'users' THEN
        RETURN recalc.attach_users_sync(a);
    END IF;
    PERFORM recalc.attach_sandbox_check();
    IF to_regclass(v_view) IS NULL THEN
        PERFORM recalc.attach_source_install(a.object);
    END IF;
    IF v_keys IS NULL THEN
        SELECT coalesce(array_agg(x.id), '{}') INTO v_keys
        FROM unnest(recalc.attach_sandboxed(v_view, format(
            'SELECT DISTINCT (s.%1$I)::text, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::text[] FROM %2$s s WHERE s.%1$I IS NOT NULL',
            a.id_col, v_view), NULL)) x;
        EXECUTE 'DELETE FROM recalc.record d WHERE d.object = $1
                 AND NOT EXISTS (SELECT 1 FROM unnest($2::text[]) k WHERE $1 || '':'' || k = d.id)' USING a.object, v_keys;
    END IF;
    -- Each slice built once (a slice of a large array walks it whole).
    FOR v_slice IN SELECT array_agg(u.k ORDER BY u.n) FROM unnest(v_keys) WITH ORDINALITY u(k, n)
                   GROUP BY (u.n - 1) / 5000 ORDER BY (u.n - 1) / 5000 LOOP
        v_n := v_n + recalc.attach_sync_slice(a, v_view, v_rows, v_slice);
    END LOOP;
    RETURN v_n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync(recalc.attachment, text[]) FROM PUBLIC;

-- attach_remove as before; removing the users attachment also forgets its
-- rows (the users section keeps the users last built from them).
CREATE OR REPLACE FUNCTION recalc.attach_remove(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rows bigint;
    v_xid xid8;
BEGIN
    PERFORM recalc.attach_drop_capture(p_object);
    WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object RETURNING c.xid)
    SELECT min(xid) INTO v_xid FROM gone;
    IF p_object = 'users' THEN
        UPDATE recalc.attached_users_state SET dirty = false, fixes = NULL;
        DELETE FROM recalc.attached_user;
    ELSE
        DELETE FROM recalc.record WHERE object = p_object;
    END IF;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    PERFORM recalc.change_inherit_xid(v_xid);
    DELETE FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_writer_guard();
    RETURN v_rows;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_remove(text) FROM PUBLIC;
