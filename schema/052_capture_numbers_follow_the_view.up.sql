-- recalc schema, version 52: a captured column's number follows recalc's
-- read view when the view is made again.
--
-- Version 50 keeps each captured column's number (attach_capture.nums), so
-- that a column swapped under its name is found, and lets a recorded
-- number that no live column holds pass: a column dropped with CASCADE and
-- added again, whose read view went with it and is made again over the new
-- column at the next absorb. The number stayed the dropped one's, so a
-- later swap of the new column (add owner_id2, copy, rename owner_id away
-- and owner_id2 in) passed as well, while the view made again read the old
-- column by its number: the old owner kept all access. Making the read
-- view of an attached table now records the numbers it reads. Found by a
-- review of version 50.

CREATE OR REPLACE FUNCTION recalc.attach_source_install(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a recalc.attachment;
    v_view text := recalc.attach_read_view(p_object);
    v_cols text;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
    SELECT string_agg(format('%I', c), ', ' ORDER BY c) INTO v_cols
    FROM (SELECT DISTINCT c FROM unnest(ARRAY[a.id_col, a.owner_col, a.parent_col, a.territories_col] || a.fields) c WHERE c IS NOT NULL) x;
    EXECUTE format('DROP VIEW IF EXISTS %s', v_view);
    EXECUTE format('CREATE VIEW %s AS SELECT %s FROM %s%s', v_view, v_cols, CASE WHEN a.is_view THEN '' ELSE 'ONLY ' END, a.relid::regclass);
    IF NOT a.is_view THEN
        -- The view reads each column by the number it has now.
        UPDATE recalc.attach_capture c
        SET nums = ARRAY(SELECT t.attnum FROM unnest(c.cols) WITH ORDINALITY x(n, i)
                         LEFT JOIN pg_attribute t ON t.attrelid = c.relid AND t.attname = x.n AND NOT t.attisdropped ORDER BY x.i)
        WHERE c.object = p_object AND c.relid = a.relid;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_source_install(text) FROM PUBLIC;

-- Captures of attached tables whose recorded numbers name a dropped column:
-- each column's number is the one of the column of its name now if the
-- read view reads that one, -1 (not intact) if it reads another, that is,
-- if the new column was swapped before this upgrade. With no read view
-- (not yet made again), the number now.
UPDATE recalc.attach_capture c
SET nums = (SELECT ARRAY(SELECT CASE WHEN t.attnum = ANY (r.nums) OR cardinality(r.nums) = 0 THEN t.attnum ELSE -1 END
                         FROM unnest(c.cols) WITH ORDINALITY x(n, i)
                         LEFT JOIN pg_attribute t ON t.attrelid = c.relid AND t.attname = x.n AND NOT t.attisdropped ORDER BY x.i)
            FROM recalc.attach_view_reads(coalesce(to_regclass(recalc.attach_read_view(a.object)), 0), c.relid) r)
FROM recalc.attachment a
WHERE a.object = c.object AND NOT a.is_view AND c.relid = a.relid AND EXISTS (
    SELECT 1 FROM unnest(c.nums) x(num) WHERE x.num > 0 AND NOT EXISTS (
        SELECT 1 FROM pg_attribute o WHERE o.attrelid = c.relid AND o.attnum = x.num AND NOT o.attisdropped));
