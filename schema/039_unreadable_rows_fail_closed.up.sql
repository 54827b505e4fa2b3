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
-- failed). Now a slice whose read fails so is read apart (by halves, then
-- id by id), and the records of the ids whose read still fails alone are
-- mirrored closed, as rows whose values are out of bounds (version 27): the
-- stored owner kept (the moment of failure is no owner change, so the
-- record's manual shares stay), no parent or fields, the territory list
-- {""}; a new record gets the empty owner too. The users attachment, read
-- whole, isolates such rows the same way: each becomes an inactive user
-- with no role.
--
-- A read may fail whatever ids it asks for: a view that aggregates or
-- sorts is computed whole before the ids are picked, and one that joins a
-- summary, or holds a scalar subquery, computes it for any row it returns;
-- one bad row then fails every read of it, or every read of the ids past
-- it in the view's order (a merge join may stop before it). So the records
-- are closed only on evidence that the failure is the rows': a read, with
-- hash joins only (the view computed whole, whatever the id), of an id of
-- the slice that read a row alone, or of one of a few other records of
-- the object that are not closed, returns its row (attach_blames_view). Otherwise the view is at
-- fault, not a row, and the absorb fails as before (the object's writes
-- wait: correct the row or the view), rather than close every record. A
-- cast in the view's filter, or in the branches of a UNION ALL, evaluated
-- on every row such a read's scans meet, makes the view blamed.

-- attach_read_one reads p_sql for the one id p_key as attach_sandboxed
-- does, with hash joins only: a merge or nested-loop join may stop before
-- it computes the part of a view that fails (the groups of ids above
-- p_key, say), so that whether a read fails would depend on the id's
-- place in the view's order, not on its row. It reads the view's tables
-- whole: attach_blames_view's few reads use it, not every id's.
CREATE OR REPLACE FUNCTION recalc.attach_read_one(p_view text, p_sql text, p_key text) RETURNS recalc.attach_row[]
LANGUAGE sql SET search_path = pg_catalog, pg_temp SET enable_mergejoin = off SET enable_nestloop = off AS $$
    SELECT recalc.attach_sandboxed(p_view, p_sql, ARRAY[p_key])
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_read_one(text, text, text) FROM PUBLIC;

-- attach_blames_view says whether attachment a's read p_sql of its read
-- view p_view fails whatever the ids: it reads p_good (an id of p_keys
-- that read a row alone, or NULL) and up to three ids of records of a
-- other than p_keys that are not closed (their rows read at their last
-- absorb), each one's row with hash joins only; the view is cleared by the
-- first that reads a row, and blamed when none does.
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
        EXCEPTION WHEN data_exception THEN
            NULL;
        END;
    END LOOP;
    RETURN true;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_blames_view(recalc.attachment, text, text, text[], text) FROM PUBLIC;

-- attach_sync_part reads and writes the rows of the ids p_keys, as
-- attach_sync_slice did in version 21 (halving a slice whose rows do not
-- fit one array), but a read that fails on the rows' values is done apart:
-- more than 8 ids by halves, each a part of its own, fewer id by id, the
-- ids whose read fails alone mirrored closed (attach_unreadable). It
-- returns the records written (n), an id that read a row alone (good), the
-- ids closed (closed), and the SQLSTATE of the first read that failed
-- (code).
CREATE OR REPLACE FUNCTION recalc.attach_sync_part(a recalc.attachment, p_view text, p_rows text, p_keys text[],
    OUT n bigint, OUT good text, OUT closed bigint, OUT code text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_half int := cardinality(p_keys) / 2;
    v_rows recalc.attach_row[];
    v_read recalc.attach_row[];
    v_bad text[];
    r record;
BEGIN
    BEGIN
        v_rows := recalc.attach_sandboxed(p_view, p_rows, p_keys);
        n := recalc.attach_apply(a, p_keys, v_rows); closed := 0;
        RETURN;
    EXCEPTION
        WHEN program_limit_exceeded THEN
            IF v_half = 0 THEN
                RAISE;
            END IF;
        WHEN data_exception THEN
            code := SQLSTATE;
    END;
    n := 0; closed := 0;
    IF v_half > 0 AND (code IS NULL OR cardinality(p_keys) > 8) THEN
        FOR r IN SELECT * FROM recalc.attach_sync_part(a, p_view, p_rows, p_keys[1:v_half])
                 UNION ALL SELECT * FROM recalc.attach_sync_part(a, p_view, p_rows, p_keys[v_half + 1:]) LOOP
            n := n + r.n; good := coalesce(good, r.good); closed := closed + r.closed; code := coalesce(code, r.code);
        END LOOP;
        RETURN;
    END IF;
    SELECT * INTO v_read, v_bad, good FROM recalc.attach_read_apart(p_view, p_rows, p_keys); -- id by id
    n := recalc.attach_apply(a, ARRAY(SELECT x FROM unnest(p_keys) x WHERE x <> ALL (v_bad)), v_read) + recalc.attach_unreadable(a, v_bad);
    closed := cardinality(v_bad);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync_part(recalc.attachment, text, text, text[]) FROM PUBLIC;

-- attach_sync_slice keeps its version 21 signature, which attach_sync
-- calls: it writes a slice by parts, and when it closed ids, asks
-- attach_blames_view whether to fail instead (which undoes the slice's
-- writes with the absorb).
CREATE OR REPLACE FUNCTION recalc.attach_sync_slice(a recalc.attachment, p_view text, p_rows text, p_keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM recalc.attach_sync_part(a, p_view, p_rows, p_keys);
    IF r.closed > 0 AND recalc.attach_blames_view(a, p_view, p_rows, p_keys, r.good) THEN
        RAISE EXCEPTION 'the read view of attached object % fails whatever the ids: correct the row or the view', a.object
            USING ERRCODE = r.code;
    END IF;
    RETURN r.n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync_slice(recalc.attachment, text, text, text[]) FROM PUBLIC;

-- attach_unreadable mirrors closed the records of attachment a whose ids
-- (the source's, as text) are p_keys, whose rows could not be read. A
-- record of another object holding such an id is never taken over, and an
-- id over 1 KiB as a key is not mirrored (as attach_rows_sql).
CREATE OR REPLACE FUNCTION recalc.attach_unreadable(a recalc.attachment, p_keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_n bigint;
BEGIN
    INSERT INTO recalc.record AS r (id, object, owner, parent, fields, territories)
    SELECT DISTINCT a.object || ':' || k, a.object, '', NULL::text, '{}'::jsonb, '{""}'::text[] FROM unnest(p_keys) k
    WHERE octet_length(a.object || ':' || k) <= 1024
    ON CONFLICT (id) DO UPDATE SET parent = NULL, fields = '{}', territories = '{""}'
    WHERE r.object = a.object AND (r.parent, r.fields, r.territories) IS DISTINCT FROM (NULL::text, '{}'::jsonb, '{""}'::text[]);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_unreadable(recalc.attachment, text[]) FROM PUBLIC;

-- attach_read_apart reads p_sql for p_keys as attach_sandboxed does, but
-- by parts (for the users attachment, whose rows are written together, and
-- for attach_sync_part's last few ids): it
-- returns the rows it could read, the ids whose read fails with a class 22
-- error alone, and an id that read a row alone. More than 8 ids are
-- halved; fewer read id by id.
CREATE OR REPLACE FUNCTION recalc.attach_read_apart(p_view text, p_sql text, p_keys text[], OUT o_rows recalc.attach_row[], OUT o_bad text[], OUT o_good text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_half int := cardinality(p_keys) / 2;
    v_rows recalc.attach_row[];
    v_bad text[];
    v_good text;
    v_one recalc.attach_row[];
    k text;
BEGIN
    o_rows := '{}'; o_bad := '{}';
    IF cardinality(p_keys) > 8 THEN
        BEGIN
            o_rows := recalc.attach_sandboxed(p_view, p_sql, p_keys);
            RETURN;
        EXCEPTION WHEN data_exception THEN
            NULL;
        END;
        SELECT * INTO v_rows, v_bad, v_good FROM recalc.attach_read_apart(p_view, p_sql, p_keys[1:v_half]);
        SELECT v_rows || r.o_rows, v_bad || r.o_bad, coalesce(v_good, r.o_good) INTO o_rows, o_bad, o_good
        FROM recalc.attach_read_apart(p_view, p_sql, p_keys[v_half + 1:]) r;
        RETURN;
    END IF;
    FOREACH k IN ARRAY p_keys LOOP
        BEGIN
            v_one := recalc.attach_sandboxed(p_view, p_sql, ARRAY[k]);
            o_rows := o_rows || v_one;
            IF cardinality(v_one) > 0 THEN
                o_good := coalesce(o_good, k);
            END IF;
        EXCEPTION WHEN data_exception THEN
            o_bad := o_bad || k;
        END;
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_read_apart(text, text, text[]) FROM PUBLIC;

-- attach_users_sync as in version 28, but a users row that the view cannot
-- read because of its values no longer fails every absorb of the users:
-- the ids are read alone, then the rows apart, and a row that fails alone
-- is an inactive user with no role (a NULL active, model.AttachUsers), so
-- that it reaches nothing; unless no row reads at all (the view is blamed).
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
        v_sql := v_sql || format(' AND s.%I IN (SELECT k::%s FROM unnest($1::text[]) k)', a.id_col, a.id_type);
        SELECT coalesce(array_agg(x.id), '{}') INTO v_keys
        FROM unnest(recalc.attach_sandboxed(v_view, format(
            'SELECT DISTINCT (s.%1$I)::text, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::text[] FROM %2$s s WHERE s.%1$I IS NOT NULL',
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
