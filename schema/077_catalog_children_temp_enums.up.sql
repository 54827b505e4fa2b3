-- recalc schema, version 77: two catalog changes an application's role can
-- make, found by attacking version 76 as that role.
--
-- A child table hid rows from the fingerprints. Once a captured table has
-- had a child (CREATE TABLE kid () INHERITS (t); DROP TABLE kid), its
-- pg_class row keeps relhassubclass, so a new child (CREATE TABLE ...
-- INHERITS, ALTER TABLE ... INHERIT) changes no catalog row the
-- fingerprints or the stamp read. Rows written to the child then show in
-- every read of the table, fire no capture, and nothing noticed: the object
-- looked intact, and its source differed from what recalc mirrors until a
-- write to the table itself failed the capture's check
-- (TestChildTableSeenByFingerprints). Now a table's fingerprint, and the
-- stamp, say whether it has children; the next absorb finds the capture
-- not intact (attach_intact, version 20), `recalc attach --list` says so and
-- wait_fresh raises RC002. Nothing is added while a table has none, so no
-- fingerprint changes with the upgrade.
--
-- Any role moved the stamp. Its digest of pg_enum counted the enums of
-- every session's temporary schema, which any role that may connect can
-- create (CREATE TYPE pg_temp.e AS ENUM ...): a loop of them made every
-- `recalc watch` step each --catalog-poll, each step computing the
-- fingerprints (TestCatalogStampIgnoresOtherRoles). The stamp now leaves
-- those enums out. A column of a permanent table or view can still have a
-- temporary enum type (PostgreSQL 15 accepts it): a label of such an enum
-- renamed reaches the watch at its --poll, and wait_fresh, which compares
-- the fingerprints themselves, still waits for it. It
-- looks each enum's schema up once: with 50 enums of 6 labels, a read of the
-- stamp took 0.59 to 0.69 ms of server processor time, 0.42 to 0.56 ms
-- before (/proc/PID/schedstat of the backend, 300 reads, on a loaded
-- machine); one lookup per label took 0.80 to 1.06 ms.

-- attach_fingerprints: as in version 71, and whether the table has children.
CREATE OR REPLACE FUNCTION recalc.attach_fingerprints() RETURNS TABLE (object text, relid oid, fingerprint text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
    RETURN QUERY
    WITH RECURSIVE cols AS (
        SELECT DISTINCT c.object, c.relid, b.atttypid AS t
        FROM recalc.attach_capture c JOIN recalc.attachment o ON o.object = c.object,
             LATERAL (SELECT b.atttypid FROM pg_attribute b
                      WHERE b.attrelid IN (c.relid, o.relid) AND b.attnum > 0 AND NOT b.attisdropped OFFSET 0) b
        WHERE EXISTS (SELECT 1 FROM pg_enum)),
    -- The types each type of a column reaches (itself included), each
    -- looked up once whatever the columns that have it.
    ty (root, t, typtype, typelem, typbasetype, typrelid) AS (
        SELECT r.t, y.oid, y.typtype, y.typelem, y.typbasetype, y.typrelid
        FROM (SELECT DISTINCT cols.t FROM cols) r,
             LATERAL (SELECT y.oid, y.typtype, y.typelem, y.typbasetype, y.typrelid FROM pg_type y WHERE y.oid = r.t OFFSET 0) y
        UNION
        SELECT ty.root, y.oid, y.typtype, y.typelem, y.typbasetype, y.typrelid
        FROM ty,
             LATERAL (SELECT ty.typelem UNION ALL SELECT ty.typbasetype
                      UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE ty.typtype IN ('r', 'm') AND ty.t IN (r.rngtypid, r.rngmultitypid)
                      UNION ALL SELECT d.atttypid FROM pg_attribute d
                                WHERE ty.typrelid <> 0 AND d.attrelid = ty.typrelid AND d.attnum > 0 AND NOT d.attisdropped) x (t),
             LATERAL (SELECT y.oid, y.typtype, y.typelem, y.typbasetype, y.typrelid FROM pg_type y WHERE y.oid = x.t OFFSET 0) y
        WHERE x.t <> 0),
    -- Only an enum has labels.
    labels AS (
        SELECT l.object, l.relid, string_agg(n.oid || ':' || n.xmin, ',' ORDER BY n.oid) AS fp
        FROM (SELECT DISTINCT cols.object, cols.relid, ty.t FROM cols JOIN ty ON ty.root = cols.t WHERE ty.typtype = 'e') l,
             LATERAL (SELECT n.oid, n.xmin FROM pg_enum n WHERE n.enumtypid = l.t OFFSET 0) n
        GROUP BY l.object, l.relid)
    SELECT c.object, c.relid, concat_ws('|', coalesce(k.relfilenode::text, 'gone'), k.xmin,
        (SELECT string_agg(t.oid || ':' || t.xmin, ',' ORDER BY t.oid)
         FROM (SELECT DISTINCT d.objid
               FROM (SELECT d.classid, d.objid FROM pg_depend d
                     WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid AND d.refobjsubid = 0 OFFSET 0) d
               WHERE d.classid = 'pg_trigger'::regclass) d,
              LATERAL (SELECT t.oid, t.xmin, t.tgrelid, t.tgfoid FROM pg_trigger t WHERE t.oid = d.objid OFFSET 0) t
         WHERE t.tgrelid = c.relid AND t.tgfoid = p.oid),
        (SELECT string_agg(b.attname || ':' || b.attnum || ':' || b.atttypmod || ':' || b.xmin, ',' ORDER BY b.attname)
         FROM pg_attribute b WHERE b.attrelid = c.relid AND b.attname = ANY (c.cols) AND NOT b.attisdropped),
        -- The attached view's rules: its definition.
        (SELECT string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid) FROM pg_rewrite r WHERE o.is_view AND r.ev_class = o.relid),
        -- The labels of the enums among the types of the source's and the
        -- captured table's columns, followed to any depth through an
        -- array's elements, a domain's base type, a range's subtype (a
        -- multirange's too) and a composite type's attributes.
        e.fp,
        -- A child table, whose rows a read of the table shows and whose
        -- writes fire no capture (version 77): absent, nothing, so that the
        -- fingerprints of tables without children stay as they were.
        (SELECT 'inherited' WHERE EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = c.relid)))
    FROM recalc.attach_capture c
    JOIN recalc.attachment o ON o.object = c.object
    LEFT JOIN LATERAL (SELECT k.relfilenode, k.xmin FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
    LEFT JOIN LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p ON true
    LEFT JOIN labels e ON e.object = c.object AND e.relid = c.relid;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints() FROM PUBLIC;

-- attach_catalog_stamp: as in version 76, and whether each captured table
-- has children; the enums of temporary schemas left out.
CREATE OR REPLACE FUNCTION recalc.attach_catalog_stamp() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM recalc.attach_capture) THEN
        RETURN '';
    END IF;
    RETURN md5((SELECT string_agg(concat_ws('|', c.object, c.relid, coalesce(k.relfilenode::text, 'gone'), k.xmin,
        (SELECT string_agg(t.oid || ':' || t.xmin, ',' ORDER BY t.oid)
         FROM (SELECT DISTINCT d.objid
               FROM (SELECT d.classid, d.objid FROM pg_depend d
                     WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid AND d.refobjsubid = 0 OFFSET 0) d
               WHERE d.classid = 'pg_trigger'::regclass) d,
              LATERAL (SELECT t.oid, t.xmin, t.tgrelid, t.tgfoid FROM pg_trigger t WHERE t.oid = d.objid OFFSET 0) t
         WHERE t.tgrelid = c.relid AND t.tgfoid = p.oid),
        (SELECT string_agg(b.attname || ':' || b.attnum || ':' || b.atttypmod || ':' || b.xmin, ',' ORDER BY b.attname)
         FROM pg_attribute b WHERE b.attrelid = c.relid AND b.attname = ANY (c.cols) AND NOT b.attisdropped),
        (SELECT string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid) FROM pg_rewrite r WHERE o.is_view AND r.ev_class = o.relid),
        (SELECT 'inherited' WHERE EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = c.relid))),
        '/' ORDER BY c.object, c.relid)
        FROM recalc.attach_capture c
        JOIN recalc.attachment o ON o.object = c.object
        LEFT JOIN LATERAL (SELECT k.relfilenode, k.xmin FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
        LEFT JOIN LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p ON true)
        -- Each enum's schema looked up once, whatever its labels.
        || '/' || (SELECT coalesce(sum(e.n), 0) || ':' || coalesce(sum(e.x), 0)
                   FROM (SELECT n.enumtypid, count(*) AS n, sum(n.xmin::text::bigint) AS x FROM pg_enum n GROUP BY n.enumtypid) e,
                        LATERAL (SELECT y.typnamespace FROM pg_type y WHERE y.oid = e.enumtypid OFFSET 0) y
                   WHERE y.typnamespace <> pg_my_temp_schema() AND NOT pg_is_other_temp_schema(y.typnamespace)));
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_catalog_stamp() FROM PUBLIC;
