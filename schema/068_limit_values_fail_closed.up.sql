-- recalc schema, version 68: a row whose value exceeds a limit of the
-- server's as it is read (SQLSTATE class 54) fails closed alone, as a value
-- a cast does not fit (class 22) does.
--
-- Reading a row's value can fail in class 54 rather than 22. A view that
-- reads a text column as JSON (`(props)::jsonb ->> 'vip'`, as a
-- HubSpot-style properties column is read) cannot read a value nested
-- deeper than max_stack_depth lets the parser recurse (100 kB of '[' at
-- the default 2 MB): 54001, "stack depth limit exceeded", valid JSON or
-- not. One that reads a text as an array literal (`('{' || tags ||
-- '}')::text[]`, as docs/attach.md's example) cannot read '{{{{{{a}}}}}}':
-- 54000, "number of array dimensions (7) exceeds the maximum allowed (6)".
-- Those are rows' values, which the application writes from its users'
-- input, but the reads apart (versions 39, 64 and 66) took only class 22
-- for a row's: attach_read_apart halved a records read failing in class
-- 54 (as rows that do not fit one array) and raised it at one id, and the
-- users' read raised it at once, so one such row made every absorb of its
-- object, or of the users, fail, stuck with the SQLSTATE: every write to
-- it, a revocation included, waited until someone corrected the row
-- (TestDeepValueFailsClosedAlone: an account given to another owner beside
-- it, a user deactivated beside it). Found by an attack helper.
--
-- attach_read_apart, attach_blames_view and attach_users_sync now take
-- class 54 as they take class 22: read apart (a read whose rows do not fit
-- one array is halved, as before), an id that fails alone closed, and a
-- view that fails whatever the ids blamed (the absorb fails with the
-- SQLSTATE, as before). A users read whose rows do not fit one array still
-- fails: their parts make one array again.

-- attach_read_apart as in version 66, class 54 as class 22 (a row's value).
CREATE OR REPLACE FUNCTION recalc.attach_read_apart(p_view text, p_sql text, p_keys text[], p_reads integer, p_write recalc.attachment,
    OUT o_rows recalc.attach_row[], OUT o_bad text[], OUT o_good text, OUT o_left integer, OUT o_n bigint, OUT o_code text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_half int := cardinality(p_keys) / 2;
    v_rows recalc.attach_row[];
    r record;
BEGIN
    o_rows := '{}'; o_bad := '{}'; o_left := p_reads; o_n := 0;
    IF p_write.object = 'users' THEN
        RAISE EXCEPTION 'recalc.attach_read_apart writes the records of an object, not the users';
    END IF;
    IF coalesce(cardinality(p_keys), 0) = 0 THEN
        RETURN;
    END IF;
    IF o_left <= 0 THEN
        o_bad := p_keys; -- no read left: fail closed
        RETURN;
    END IF;
    o_left := o_left - 1;
    BEGIN
        v_rows := recalc.attach_sandboxed(p_view, p_sql, p_keys);
        IF p_write IS NULL THEN
            o_rows := v_rows; o_good := (v_rows[1]).id;
        ELSE -- a record's id is its object's name, a colon and the key
            o_n := recalc.attach_apply(p_write, p_keys, v_rows); o_good := substr((v_rows[1]).id, length(p_write.object) + 2);
        END IF;
        RETURN;
    EXCEPTION
        WHEN data_exception OR program_limit_exceeded THEN -- class 54: a row's value, or rows that do not fit one array
            o_code := SQLSTATE;
    END;
    IF v_half = 0 THEN
        o_bad := p_keys;
        RETURN;
    END IF;
    SELECT * INTO r FROM recalc.attach_read_apart(p_view, p_sql, p_keys[1:v_half], o_left, p_write);
    o_rows := r.o_rows; o_bad := r.o_bad; o_good := r.o_good; o_n := r.o_n; o_code := coalesce(o_code, r.o_code);
    SELECT * INTO r FROM recalc.attach_read_apart(p_view, p_sql, p_keys[v_half + 1:], r.o_left, p_write);
    o_rows := o_rows || r.o_rows; o_bad := o_bad || r.o_bad; o_good := coalesce(o_good, r.o_good);
    o_n := o_n + r.o_n; o_code := coalesce(o_code, r.o_code); o_left := r.o_left;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_read_apart(text, text, text[], integer, recalc.attachment) FROM PUBLIC;

-- attach_blames_view as in version 39, a probe failing in class 54 no
-- row read.
CREATE OR REPLACE FUNCTION recalc.attach_blames_view(a recalc.attachment, p_view text, p_sql text, p_keys text[], p_good text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_probe text;
BEGIN
    FOR v_probe IN SELECT p_good WHERE p_good IS NOT NULL
            UNION ALL (SELECT substr(r.id, length(a.object) + 2) FROM recalc.record r
                       WHERE r.object = a.object AND r.territories IS DISTINCT FROM '{""}'
                         AND substr(r.id, length(a.object) + 2) <> ALL (p_keys) LIMIT 3) LOOP
        BEGIN
            IF cardinality(recalc.attach_read_one(p_view, p_sql, v_probe)) > 0 THEN
                RETURN false;
            END IF;
        EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
            NULL;
        END;
    END LOOP;
    RETURN true;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_blames_view(recalc.attachment, text, text, text[], text) FROM PUBLIC;

-- attach_users_sync as in version 66, a whole read failing in class 54
-- read apart.
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
    EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
        v_sql := v_sql || format(' AND s.%I IN (SELECT k::%s FROM unnest($1::text[]) k)', a.id_col, a.id_type);
        SELECT coalesce(array_agg(x.id), '{}') INTO v_keys
        FROM unnest(recalc.attach_sandboxed(v_view, format(
            'SELECT DISTINCT (s.%1$I)::text, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::text[] FROM %2$s s '
            'WHERE s.%1$I IS NOT NULL AND octet_length((s.%1$I)::text) <= 1024',
            a.id_col, v_view), NULL)) x;
        SELECT o_rows, o_bad, o_good INTO v_rows, v_bad, v_good
        FROM recalc.attach_read_apart(v_view, v_sql, v_keys, greatest(1000, cardinality(v_keys) / 50), NULL);
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
