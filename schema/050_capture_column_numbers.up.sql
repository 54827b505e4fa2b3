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
-- capture whose column of that name has another number is no longer intact:
-- its writes are not absorbed (`recalc status` says so), and `recalc
-- attach FILE` rebuilds it. Rows registered before keep the numbers their
-- columns have now.
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

ALTER TABLE recalc.attach_capture ADD COLUMN IF NOT EXISTS nums int2[];

UPDATE recalc.attach_capture c
SET nums = ARRAY(SELECT a.attnum FROM unnest(c.cols) WITH ORDINALITY x(n, i)
                 LEFT JOIN pg_attribute a ON a.attrelid = c.relid AND a.attname = x.n AND NOT a.attisdropped ORDER BY x.i)
WHERE c.nums IS NULL;

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
              AND (c.nums IS NULL OR a.attnum = x.num))
    ) AND NOT EXISTS (
        SELECT 1 FROM recalc.attach_capture c JOIN pg_subscription_rel s ON s.srrelid = c.relid WHERE c.object = p_object
    ) AND recalc.attach_foreign_code(p_object) IS NULL;
END $$;
