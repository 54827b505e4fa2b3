-- recalc schema, version 64: a users table's unreadable rows cost its
-- absorb a bounded number of reads.
--
-- When the users' source fails to read (a class 22 error: a users view
-- whose cast does not fit a row's value, such as `(flag)::boolean` over
-- 'maybe'), attach_users_sync (version 39) reads the ids, then the rows
-- apart (attach_read_apart): halves while more than 8 ids fail, then id by
-- id, each read a sandboxed one (attach_sandboxed: a subtransaction, a
-- grant, the sandbox's checks, a plan), about 2 ms. One unreadable row in
-- every 8 thus made every absorb of the users read each row alone: 10,000
-- users with 1,250 unreadable rows took 25 s an absorb (a deactivation
-- included), about 2.5 ms a user, so that past some 120,000 such users
-- every absorb of the table ran past its 5 minutes and was canceled, and
-- no user change, a deactivation included, was ever applied again. The
-- application's role, which writes its users table, needs only to write
-- such values. Found by an attack helper (TestUsersUnreadableRowsBoundedReads).
--
-- attach_read_apart_bounded reads apart as attach_read_apart does, halving
-- down to single ids, but makes at most p_reads sandboxed reads: once they
-- are spent, the ids it has not read yet count as unreadable, so that
-- their users are inactive with no role (fail closed: they reach nothing),
-- until the rows are corrected. The users sync gives it 1,000 reads, or one
-- per 50 users in a larger table: some 2.5 s, or 0.05 ms a user (50 s at
-- 1,000,000 users), well within the absorb's 5 minutes. One unreadable row
-- costs about 2 log2(users) reads (40 at 1,000,000), so some 900 rows
-- spread over 1,000,000 users are still found one by one, and some 60 over
-- 10,000.

CREATE OR REPLACE FUNCTION recalc.attach_read_apart_bounded(p_view text, p_sql text, p_keys text[], p_reads integer,
    OUT o_rows recalc.attach_row[], OUT o_bad text[], OUT o_good text, OUT o_left integer)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_half int := cardinality(p_keys) / 2;
    r record;
BEGIN
    o_rows := '{}'; o_bad := '{}'; o_left := p_reads;
    IF coalesce(cardinality(p_keys), 0) = 0 THEN
        RETURN;
    END IF;
    IF o_left <= 0 THEN
        o_bad := p_keys; -- no read left: fail closed
        RETURN;
    END IF;
    o_left := o_left - 1;
    BEGIN
        o_rows := recalc.attach_sandboxed(p_view, p_sql, p_keys);
        o_good := (o_rows[1]).id; -- an id whose row read: attach_blames_view reads it alone
        RETURN;
    EXCEPTION WHEN data_exception THEN
        NULL;
    END;
    IF cardinality(p_keys) = 1 THEN
        o_bad := p_keys;
        RETURN;
    END IF;
    SELECT * INTO r FROM recalc.attach_read_apart_bounded(p_view, p_sql, p_keys[1:v_half], o_left);
    o_rows := r.o_rows; o_bad := r.o_bad; o_good := r.o_good;
    SELECT * INTO r FROM recalc.attach_read_apart_bounded(p_view, p_sql, p_keys[v_half + 1:], r.o_left);
    o_rows := o_rows || r.o_rows; o_bad := o_bad || r.o_bad; o_good := coalesce(o_good, r.o_good); o_left := r.o_left;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_read_apart_bounded(text, text, text[], integer) FROM PUBLIC;

-- attach_users_sync as in version 63, reading apart within that bound.
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
    v_left integer;
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
        SELECT * INTO v_rows, v_bad, v_good, v_left FROM recalc.attach_read_apart_bounded(v_view, v_sql, v_keys, greatest(1000, cardinality(v_keys) / 50));
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
