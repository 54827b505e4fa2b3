-- recalc schema, version 28: a users table's row with a type over 1 KiB
-- no longer stops every users change.
--
-- attach_users_sync (version 23) put each row's type in a jsonb: a type
-- over jsonb's 256 MB string limit raised, the users absorb failed at every
-- try, and no user change was applied, a deactivation included. A type
-- stored in over 1 KiB is now read as '(over 1 KiB)', neither internal nor
-- external: that user is inactive (model.AttachUsers), as for any unknown
-- type. The function is as in version 23 but for that.

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
        CASE WHEN v_type IS NULL THEN 'NULL::text'
             ELSE format('CASE WHEN pg_column_size(s.%1$I) > 1024 THEN ''(over 1 KiB)'' ELSE (s.%1$I)::text END', v_type) END,
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
