-- recalc schema, version 68: an object's absorb asks once whether its view
-- is to blame, not once a slice.
--
-- When a slice of 5,000 ids has rows that fail to read, attach_sync_part
-- (version 66) closes them, then asks attach_blames_view (version 39)
-- whether the view fails whatever the ids: it reads a row of the slice
-- that read alone, or a few other records, each with hash joins only,
-- which reads the view's tables whole (60 ms at 1,000,000 rows). Once an
-- absorb has spent its reads apart, every later slice with one
-- unreadable row fails its one read, is closed, and asked that again: a
-- whole re-read of N rows, with unreadable rows spread through them,
-- read the tables N / 5,000 times over, quadratic in N (200 reads of
-- 1,000,000 rows, 1,000 of 5,000,000: past the absorb's 5 minutes, the
-- object's writes waiting for good, as before version 66). Found by a
-- review (TestRecordsBlameAskedOnce).
--
-- The answer concerns the view, not the slice: a read with hash joins
-- only computes the view whole whatever the id, so once one returned a
-- row the view does not fail whatever the ids. attach_sync now carries
-- that answer from slice to slice (attach_sync_part's p_cleared and
-- o_cleared): it asks at the first slice that closes ids, and not again
-- in that absorb once the view is cleared. A view blamed still fails the
-- absorb at that slice.

DROP FUNCTION IF EXISTS recalc.attach_sync_part(recalc.attachment, text, text, text[], integer);
DROP FUNCTION IF EXISTS recalc.attach_sync_part(recalc.attachment, text, text, text[], integer, boolean);

-- attach_sync_part as in version 66, but it asks attach_blames_view only
-- when p_cleared is false (the view not yet cleared in this absorb), and
-- returns whether the view is cleared (o_cleared).
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

-- attach_sync as in version 66, carrying whether the view is cleared
-- from slice to slice.
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
