-- recalc schema, version 48: an attached source's fingerprint follows the
-- types of its columns to any depth for the enums whose labels it covers.
--
-- Version 45 covered the labels of an enum that is a column's type, its
-- array's element type or its domain's base type, one level only. An enum
-- deeper (an array of a domain over an enum, a domain over a domain over
-- one, a composite type or a range holding one) was not followed: renaming
-- one of its labels changed what an attached view showed with no row
-- written and no fingerprint changed, so recalc kept the old grants until
-- a full run. Found by an attack helper. The fingerprints of sources with
-- such columns change once, and the first absorb after the upgrade reads
-- them again.
--
-- The statement is now PL/pgSQL's, whose plan a session keeps: planning it
-- took about 1 ms at each absorb's check. JIT is off, as in the engine's
-- sessions: the recursion's estimates would make any other session compile
-- it, for about 600 ms.

CREATE OR REPLACE FUNCTION recalc.attach_fingerprints() RETURNS TABLE (object text, relid oid, fingerprint text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
    RETURN QUERY SELECT c.object, c.relid, concat_ws('|', coalesce(k.relfilenode::text, 'gone'), k.xmin, t.fp, a.fp, v.fp, e.fp)
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
    -- captured table's columns, followed to any depth through an array's
    -- elements, a domain's base type, a range's subtype (a multirange's
    -- too) and a composite type's attributes.
    LEFT JOIN LATERAL (SELECT string_agg(n.oid || ':' || n.xmin, ',' ORDER BY n.oid) AS fp FROM pg_enum n
                       WHERE n.enumtypid IN (
                           WITH RECURSIVE ty (t) AS (
                               SELECT b.atttypid FROM pg_attribute b
                               WHERE b.attrelid IN (c.relid, o.relid) AND b.attnum > 0 AND NOT b.attisdropped
                               UNION
                               SELECT x.t FROM ty JOIN pg_type y ON y.oid = ty.t,
                                    LATERAL (SELECT y.typelem UNION ALL SELECT y.typbasetype
                                             UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE y.oid IN (r.rngtypid, r.rngmultitypid)
                                             UNION ALL SELECT d.atttypid FROM pg_attribute d
                                                       WHERE y.typrelid <> 0 AND d.attrelid = y.typrelid AND d.attnum > 0 AND NOT d.attisdropped) x (t)
                               WHERE x.t <> 0)
                           SELECT ty.t FROM ty)) e ON true;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints() FROM PUBLIC;
