-- recalc schema, version 50: a captured column is the one attached, not
-- another that took its name; a subscribed table is not captured.
--
-- The capture checked a captured table's columns by name, type and
-- collation, while recalc's read view, as every view, reads a column by its
-- number. Swapping two columns' names (the usual way round a refused ALTER
-- TYPE: add owner_id2, copy, rename owner_id away and owner_id2 in) passed
-- the check: the view went on reading the old column, so every later owner
-- change was ignored, the old owner kept all access, and `recalc attach`
-- with the same spec found nothing to rebuild. attach_capture now keeps
-- each column's number (nums, filled as the capture is registered), and a
-- capture whose column of that name has another number, while the column
-- of the number kept is still there under another name, is no longer
-- intact: its writes are not absorbed (`recalc status` says so), and
-- `recalc attach FILE` rebuilds it. (A column dropped, with CASCADE, and
-- added again under its name is the new one: the read view that read the
-- dropped one went with it, and is made again over the new one.) For an
-- attached view, whose capture reads only the key
-- column of each base table, attach_capture also keeps the columns the view
-- reads of that table, by number and name (read_nums, read_names): a column
-- the view still reads that has another name now was swapped the same way.
--
-- Nor is a capture intact once an attached or captured table no longer has
-- the name it was attached under (renamed, moved to another schema, or
-- swapped for a copy, as pg_repack-like tools do): the capture follows the
-- table, while the application writes the table that now has the name.
-- The names are compared in the catalog (to_regclass would raise for a
-- schema the engine may not use).
--
-- A captured table that a subscription of logical replication writes is
-- not intact either: the apply worker fires row triggers only, never the
-- capture's statement triggers, whatever their ENABLE mode (docs/attach.md
-- said ENABLE ALWAYS would do), so its writes would be missed. `recalc
-- attach` refuses such a table. Both found by an attack helper.

ALTER TABLE recalc.attach_capture ADD COLUMN IF NOT EXISTS nums int2[],
    ADD COLUMN IF NOT EXISTS read_nums int2[], ADD COLUMN IF NOT EXISTS read_names text[];

-- attach_view_reads: the columns of table p_table that view p_view reads,
-- by number, with their names.
CREATE OR REPLACE FUNCTION recalc.attach_view_reads(p_view oid, p_table oid, OUT nums int2[], OUT names text[])
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(a.attnum ORDER BY a.attnum), '{}'), coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
    FROM pg_attribute a
    WHERE a.attrelid = p_table AND NOT a.attisdropped AND a.attnum IN (
        SELECT d.refobjsubid FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
        WHERE r.ev_class = p_view AND d.refclassid = 'pg_class'::regclass AND d.refobjid = p_table AND d.refobjsubid > 0)
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_view_reads(oid, oid) FROM PUBLIC;

-- Captures registered before: each column's number is the one of the
-- column of its name now, if the view reading it (recalc's read view of a
-- table, or the attached view) reads that one; -1 if the view reads another,
-- that is, if the column was swapped before this upgrade. With no read view
-- (dropped by a DROP COLUMN ... CASCADE, made again at the next absorb),
-- the number now.
UPDATE recalc.attach_capture c
SET nums = (SELECT ARRAY(SELECT CASE WHEN t.attnum = ANY (r.nums) OR cardinality(r.nums) = 0 THEN t.attnum ELSE -1 END
                         FROM unnest(c.cols) WITH ORDINALITY x(n, i)
                         LEFT JOIN pg_attribute t ON t.attrelid = c.relid AND t.attname = x.n AND NOT t.attisdropped ORDER BY x.i)
            FROM recalc.attachment a,
                 LATERAL recalc.attach_view_reads(CASE WHEN a.is_view THEN a.relid
                                                       ELSE coalesce(to_regclass(recalc.attach_read_view(a.object)), 0) END, c.relid) r
            WHERE a.object = c.object)
WHERE c.nums IS NULL;

UPDATE recalc.attach_capture c SET (read_nums, read_names) = (SELECT r.nums, r.names FROM recalc.attach_view_reads(a.relid, c.relid) r)
FROM recalc.attachment a
WHERE a.object = c.object AND a.is_view AND c.read_nums IS NULL;

CREATE OR REPLACE FUNCTION recalc.attach_intact(p_object text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN recalc.attach_complete(p_object) AND EXISTS (
        SELECT 1 FROM recalc.attachment a JOIN pg_class k ON k.oid = a.relid
        WHERE a.object = p_object AND k.relkind = CASE WHEN a.is_view THEN 'v' ELSE 'r' END
          AND (NOT a.is_view OR k.relowner = (SELECT nspowner FROM pg_namespace WHERE nspname = 'recalc'))
          AND format('%I.%I', (SELECT n.nspname FROM pg_namespace n WHERE n.oid = k.relnamespace), k.relname) = a.source
    ) AND NOT EXISTS (
        SELECT 1 FROM recalc.attach_capture c LEFT JOIN pg_class k ON k.oid = c.relid
        WHERE c.object = p_object
          AND format('%I.%I', (SELECT n.nspname FROM pg_namespace n WHERE n.oid = k.relnamespace), k.relname) IS DISTINCT FROM c.source
    ) AND NOT EXISTS (
        SELECT 1 FROM recalc.attach_capture c, unnest(c.cols, c.types, c.colls, c.nums) x(n, t, l, num)
        WHERE c.object = p_object AND NOT EXISTS (
            SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.relid AND a.attname = x.n
              AND a.atttypid = x.t AND a.attcollation = x.l AND NOT a.attisdropped
              AND (c.nums IS NULL OR a.attnum = x.num OR x.num > 0 AND NOT EXISTS (
                   SELECT 1 FROM pg_attribute o WHERE o.attrelid = c.relid AND o.attnum = x.num AND NOT o.attisdropped)))
    ) AND NOT EXISTS (
        -- A column an attached view read when attached, and still reads, has
        -- kept its name: the view reads it by number.
        SELECT 1 FROM recalc.attach_capture c JOIN recalc.attachment a ON a.object = c.object,
               unnest(c.read_nums, c.read_names) x(num, n)
        WHERE c.object = p_object AND x.num = ANY ((recalc.attach_view_reads(a.relid, c.relid)).nums)
          AND NOT EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.relid AND t.attnum = x.num AND t.attname = x.n)
    ) AND NOT EXISTS (
        SELECT 1 FROM recalc.attach_capture c JOIN pg_subscription_rel s ON s.srrelid = c.relid WHERE c.object = p_object
    ) AND recalc.attach_foreign_code(p_object) IS NULL;
END $$;
