-- recalc schema, version 45: an attached source's fingerprint also covers
-- what can change the rows it shows without a row being written.
--
-- A captured table's fingerprint (attach_fingerprints, version 20) records
-- the catalog traces of writes that bypass the capture. Two catalog changes
-- alter what an attached source returns while writing no row, and left no
-- trace there:
--   * CREATE OR REPLACE VIEW on an attached view (a filter added, a column
--     computed otherwise): a new xmin on the view's pg_rewrite row;
--   * ALTER TYPE ... RENAME VALUE on an enum that a column of the source or
--     of a captured table has (a view that reads it as text then shows the
--     new label): a new xmin on its pg_enum row (ADD VALUE adds a row).
-- Both now take part in the fingerprint of each of the object's captured
-- tables, through the column's type, the element type of an array and the
-- base type of a domain. On a difference the object's whole source is read
-- again, as for any other change of the fingerprint. The fingerprints
-- stored before this version of a view, or of a table with an enum column,
-- differ from the new ones (concat_ws skips the parts that are NULL for
-- the others): the first absorb after the upgrade reads those once.

CREATE OR REPLACE FUNCTION recalc.attach_fingerprints() RETURNS TABLE (object text, relid oid, fingerprint text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.object, c.relid, concat_ws('|', coalesce(k.relfilenode::text, 'gone'), k.xmin, t.fp, a.fp, v.fp, e.fp)
    FROM recalc.attach_capture c
    JOIN recalc.attachment o ON o.object = c.object
    LEFT JOIN pg_class k ON k.oid = c.relid
    LEFT JOIN pg_proc p ON p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace
    LEFT JOIN LATERAL (SELECT string_agg(g.oid || ':' || g.xmin, ',' ORDER BY g.oid) AS fp FROM pg_trigger g
                       WHERE g.tgrelid = c.relid AND g.tgfoid = p.oid) t ON true
    LEFT JOIN LATERAL (SELECT string_agg(b.attname || ':' || b.attnum || ':' || b.atttypmod || ':' || b.xmin, ',' ORDER BY b.attname) AS fp
                       FROM pg_attribute b WHERE b.attrelid = c.relid AND b.attname = ANY (c.cols) AND NOT b.attisdropped) a ON true
    -- The attached view's rules: its definition.
    LEFT JOIN LATERAL (SELECT string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid) AS fp FROM pg_rewrite r
                       WHERE o.is_view AND r.ev_class = o.relid) v ON true
    -- The labels of the enums among the types of the source's and the
    -- captured table's columns (directly, as an array's elements, or under
    -- a domain).
    LEFT JOIN LATERAL (SELECT string_agg(n.oid || ':' || n.xmin, ',' ORDER BY n.oid) AS fp FROM pg_enum n
                       WHERE n.enumtypid IN (
                           SELECT x.t FROM pg_attribute b JOIN pg_type y ON y.oid = b.atttypid,
                                LATERAL (VALUES (y.oid), (y.typelem), (y.typbasetype)) x (t)
                           WHERE b.attrelid IN (c.relid, o.relid) AND b.attnum > 0 AND NOT b.attisdropped AND x.t <> 0)) e ON true
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints() FROM PUBLIC;
