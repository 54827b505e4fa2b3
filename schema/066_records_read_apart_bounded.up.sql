-- recalc schema, version 66: an attached object's unreadable rows cost its
-- absorb a bounded number of reads too, and one function reads apart.
--
-- When a slice of an attached object's ids fails to read (a class 22
-- error: a view's cast that a row's value does not fit, such as
-- `(status)::integer` over 'n/a'), attach_sync_part (version 39) read it
-- apart, halving while more than 8 ids failed, then id by id, each read a
-- sandboxed one (attach_sandboxed), and without a bound: version 64
-- bounded the users' reads only. One unreadable row in every 8 made the
-- absorb read every row alone: 20,000 cases, 2,500 of them unreadable,
-- took 19,503 reads and 33 s an absorb of their insert, 37 s of an update
-- of them all, 28 s of a whole re-read (a TRUNCATE and refill, `recalc
-- verify --sources --repair`, `recalc run --full`), about 1.7 ms a row, so
-- that past some 170,000 such rows a whole re-read ran past its 5 minutes
-- (and a loaded server's absorb of many writes past its 10 s plus 5 ms an
-- id), failed every try, and the object's writes, a revocation included,
-- waited for good. The application's role, which writes its tables, needs
-- only to write such values. Found by a helper
-- (TestRecordsUnreadableRowsBoundedReads).
--
-- attach_read_apart now takes a number of reads, as version 64's
-- attach_read_apart_bounded did (the two were near copies; the bounded
-- one is dropped): it halves down to single ids, and once the reads are
-- spent, the ids it has not read count as unreadable. attach_sync gives an
-- object's absorb 1,000 reads apart, or one per 50 ids in a larger one
-- (the ids logged, or for a whole re-read every id of the source),
-- shared by its slices of 5,000 ids; the first read of each slice is not
-- counted, so a slice that reads whole is read whatever the reads left
-- and an absorb makes at most that bound plus one read per slice (plus
-- attach_blames_view's few). The ids not read fail closed as unreadable
-- ones do (attach_unreadable): the stored owner kept, no parent or
-- fields, the territory list {""}, so an invalid record with no access,
-- its owner's included, until its row is written again or read again
-- whole. For records, each read's rows are written as they are read
-- (p_write), as attach_sync_part's parts were, so a slice's rows never
-- make one array, and a read whose rows do not fit one array (1 GB) is
-- halved too (it counts as a read, but closes nothing itself). An id
-- logged for a row deleted since, left unread, gets a closed record too
-- (no access) until the object is read again whole. attach_sync_part now
-- reads and writes a slice (attach_sync_slice is dropped). The users' sync
-- is as in version 64, with the same bound, and reads as before.
--
-- Whether the view is to blame concerns the view, not the slice: a read
-- with hash joins only computes the view whole whatever the id (60 ms at
-- 1,000,000 rows), so once one returned a row the view does not fail
-- whatever the ids. attach_sync asks at the first slice that closes ids and
-- carries the answer to the next slices; asked at every such slice, a whole
-- re-read of N rows with unreadable rows spread through them read the
-- tables N / 5,000 times over (200 times at 1,000,000 rows), past the
-- absorb's 5 minutes again (TestRecordsBlameAskedOnce). A view blamed still
-- fails the absorb at that slice.

DROP FUNCTION recalc.attach_read_apart_bounded(text, text, text[], integer);
DROP FUNCTION recalc.attach_read_apart(text, text, text[]);
DROP FUNCTION recalc.attach_sync_slice(recalc.attachment, text, text, text[]);
DROP FUNCTION recalc.attach_sync_part(recalc.attachment, text, text, text[]);

-- attach_read_apart reads p_sql for p_keys as attach_sandboxed does, by
-- halves down to single ids while reads fail with a class 22 error, in at
-- most p_reads reads: once they are spent, the ids not read yet count as
-- unreadable (fail closed). It returns the ids that failed alone or were
-- not read (o_bad), an id whose row was read (o_good: attach_blames_view
-- reads it alone), the reads left (o_left) and the SQLSTATE of the first
-- read that failed (o_code). With p_write NULL (the users) it returns the
-- rows read (o_rows); with p_write, an object's attachment, it writes each
-- read's rows as they come (attach_apply), counts them in o_n, and halves
-- a read whose rows do not fit one array.
CREATE FUNCTION recalc.attach_read_apart(p_view text, p_sql text, p_keys text[], p_reads integer, p_write recalc.attachment,
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
        WHEN data_exception THEN
            o_code := SQLSTATE;
        WHEN program_limit_exceeded THEN
            IF p_write IS NULL OR v_half = 0 THEN
                RAISE;
            END IF;
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

-- attach_sync_part reads and writes one slice of an object's ids, p_keys,
-- reading apart within p_reads reads beyond the slice's first, and closes
-- the ids it could not read (attach_unreadable). Unless p_cleared (the
-- view cleared already in this absorb), it then asks attach_blames_view,
-- and fails when the view is to blame (undoing the slice's writes with the
-- absorb), as attach_sync_slice did in version 39. It returns the records
-- written (n), the reads left (o_left) and whether the view is cleared
-- (o_cleared).
CREATE FUNCTION recalc.attach_sync_part(a recalc.attachment, p_view text, p_rows text, p_keys text[], p_reads integer,
    p_cleared boolean DEFAULT false, OUT n bigint, OUT o_left integer, OUT o_cleared boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    o_cleared := coalesce(p_cleared, false);
    SELECT * INTO r FROM recalc.attach_read_apart(p_view, p_rows, p_keys, greatest(p_reads, 0) + 1, a);
    n := r.o_n; o_left := least(r.o_left, p_reads);
    IF cardinality(r.o_bad) > 0 THEN
        n := n + recalc.attach_unreadable(a, r.o_bad);
        IF NOT o_cleared THEN
            IF recalc.attach_blames_view(a, p_view, p_rows, p_keys, r.o_good) THEN
                RAISE EXCEPTION 'the read view of attached object % fails whatever the ids: correct the row or the view', a.object
                    USING ERRCODE = coalesce(r.o_code, '22000');
            END IF;
            o_cleared := true;
        END IF;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync_part(recalc.attachment, text, text, text[], integer, boolean) FROM PUBLIC;

-- attach_sync as in version 23, but its slices share one bound of reads
-- apart (1,000, or one per 50 ids) and whether the view is cleared.
CREATE OR REPLACE FUNCTION recalc.attach_sync(a recalc.attachment, p_keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_view text := recalc.attach_read_view(a.object);
    v_rows text := recalc.attach_rows_sql(a, v_view,
        format('s.%I IN (SELECT k::%s FROM unnest($1::text[]) k)', a.id_col, a.id_type));
    v_keys text[] := p_keys;
    v_slice text[];
    v_left integer;
    v_cleared boolean := false;
    v_n bigint := 0;
    r record;
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
    v_left := greatest(1000, cardinality(v_keys) / 50);
    -- Each slice built once (a slice of a large array walks it whole).
    FOR v_slice IN SELECT array_agg(u.k ORDER BY u.n) FROM unnest(v_keys) WITH ORDINALITY u(k, n)
                   GROUP BY (u.n - 1) / 5000 ORDER BY (u.n - 1) / 5000 LOOP
        SELECT * INTO r FROM recalc.attach_sync_part(a, v_view, v_rows, v_slice, v_left, v_cleared);
        v_n := v_n + r.n; v_left := r.o_left; v_cleared := r.o_cleared;
    END LOOP;
    RETURN v_n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync(recalc.attachment, text[]) FROM PUBLIC;

-- attach_users_sync as in version 64, reading apart with attach_read_apart
-- within the same bound.
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
