-- recalc schema, version 80: a composite type altered changes the
-- fingerprints, and the catalog stamp, of the sources whose columns reach
-- it.
--
-- A composite type's text form lists its attributes: (tech,1). `ALTER TYPE
-- ... ADD ATTRIBUTE` makes every value read (tech,1,), `DROP ATTRIBUTE`
-- (tech), with no row written (PostgreSQL allows both while a table's
-- column has the type; not ALTER ATTRIBUTE ... TYPE). An attached view
-- reading such a column as text (a criteria field, an owner or a parent)
-- then showed other values, and nothing noticed: the fingerprints of
-- versions 45 and 48 followed a composite type's attributes only for the
-- labels of the enums they reach, and the stamp of versions 76 and 77
-- followed no type at all. Measured on a view reading
-- CASE WHEN tag::text = '(a,1)' THEN 'tech' END as a rule's field: after
-- ADD ATTRIBUTE, neither the stamp nor any fingerprint moved, `recalc run`
-- had nothing to do and kept the rule's read, `recalc.wait_fresh`, which
-- compares the fingerprints, had nothing to wait for, and only `recalc run
-- --full` revoked it. An attribute added
-- whose type is an enum already in the database changed the fingerprint
-- (its labels newly reached) but not the stamp: `recalc watch` saw it at
-- its --poll (10 s), and wait_fresh waited that long (TestSourceDriftWithoutWrites,
-- TestCompositeAlteredMovesStamp).
--
-- attach_type_prints follows the types of the source's and the captured
-- table's columns, as version 48 did, and gives for each capture the
-- labels of the enums reached (as before) and the attributes of the
-- composite types reached, a table's row type among them: the number and
-- xmin of each pg_attribute row, the dropped ones included (a drop updates
-- the row; an add inserts one). Only types of the database's own objects
-- are followed (oid 16384 and above, FirstNormalObjectId): a type initdb
-- made reaches no other, so nothing of what the fingerprints covered is
-- left out, and a CRM's hundreds of columns of built-in types cost no
-- lookup beyond their pg_attribute rows. The fingerprint of a source that
-- reaches no composite type is as it was; one that does changes once with
-- the upgrade, and the first absorb after it reads the source again.
--
-- The stamp now reads attach_type_prints' composites too: a few index
-- lookups per type of the database's own that a captured column has.

CREATE OR REPLACE FUNCTION recalc.attach_type_prints() RETURNS TABLE (object text, relid oid, labels text, composites text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
    RETURN QUERY
    WITH RECURSIVE cols AS (
        SELECT DISTINCT c.object, c.relid, b.atttypid AS t
        FROM recalc.attach_capture c JOIN recalc.attachment o ON o.object = c.object,
             LATERAL (SELECT b.atttypid FROM pg_attribute b
                      WHERE b.attrelid IN (c.relid, o.relid) AND b.attnum > 0 AND NOT b.attisdropped OFFSET 0) b
        WHERE b.atttypid >= 16384::oid),
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
        WHERE x.t >= 16384::oid),
    reached AS (SELECT DISTINCT cols.object, cols.relid, ty.t, ty.typtype, ty.typrelid FROM cols JOIN ty ON ty.root = cols.t),
    -- Only an enum has labels.
    labels AS (
        SELECT l.object, l.relid, string_agg(n.oid || ':' || n.xmin, ',' ORDER BY n.oid) AS fp
        FROM (SELECT reached.object, reached.relid, reached.t FROM reached WHERE reached.typtype = 'e') l,
             LATERAL (SELECT n.oid, n.xmin FROM pg_enum n WHERE n.enumtypid = l.t OFFSET 0) n
        GROUP BY l.object, l.relid),
    -- A composite type's attributes, as its text form lists them.
    comps AS (
        SELECT l.object, l.relid, string_agg(l.typrelid || ':' || d.attnum || ':' || d.xmin, ',' ORDER BY l.typrelid, d.attnum) AS fp
        FROM (SELECT DISTINCT reached.object, reached.relid, reached.typrelid FROM reached WHERE reached.typrelid <> 0) l,
             LATERAL (SELECT d.attnum, d.xmin FROM pg_attribute d WHERE d.attrelid = l.typrelid AND d.attnum > 0 OFFSET 0) d
        GROUP BY l.object, l.relid)
    SELECT c.object, c.relid, e.fp, m.fp
    FROM recalc.attach_capture c
    LEFT JOIN labels e ON e.object = c.object AND e.relid = c.relid
    LEFT JOIN comps m ON m.object = c.object AND m.relid = c.relid
    WHERE e.fp IS NOT NULL OR m.fp IS NOT NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_type_prints() FROM PUBLIC;

-- attach_fingerprints: as in version 77, and the attributes of the
-- composite types the columns reach (attach_type_prints).
CREATE OR REPLACE FUNCTION recalc.attach_fingerprints() RETURNS TABLE (object text, relid oid, fingerprint text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
    RETURN QUERY
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
        e.labels,
        -- A child table, whose rows a read of the table shows and whose
        -- writes fire no capture (version 77): absent, nothing, so that the
        -- fingerprints of tables without children stay as they were.
        (SELECT 'inherited' WHERE EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = c.relid)),
        -- The attributes of the composite types among them (version 80):
        -- absent, nothing, so that the fingerprints of sources that reach
        -- none stay as they were.
        'composites ' || e.composites)
    FROM recalc.attach_capture c
    JOIN recalc.attachment o ON o.object = c.object
    LEFT JOIN LATERAL (SELECT k.relfilenode, k.xmin FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
    LEFT JOIN LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p ON true
    LEFT JOIN recalc.attach_type_prints() e ON e.object = c.object AND e.relid = c.relid;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints() FROM PUBLIC;

-- attach_catalog_stamp: as in version 77, and the attributes of the
-- composite types each captured table's and source's columns reach.
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
        (SELECT 'inherited' WHERE EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = c.relid)),
        'composites ' || e.composites),
        '/' ORDER BY c.object, c.relid)
        FROM recalc.attach_capture c
        JOIN recalc.attachment o ON o.object = c.object
        LEFT JOIN LATERAL (SELECT k.relfilenode, k.xmin FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
        LEFT JOIN LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p ON true
        LEFT JOIN recalc.attach_type_prints() e ON e.object = c.object AND e.relid = c.relid)
        -- Each enum's schema looked up once, whatever its labels.
        || '/' || (SELECT coalesce(sum(e.n), 0) || ':' || coalesce(sum(e.x), 0)
                   FROM (SELECT n.enumtypid, count(*) AS n, sum(n.xmin::text::bigint) AS x FROM pg_enum n GROUP BY n.enumtypid) e,
                        LATERAL (SELECT y.typnamespace FROM pg_type y WHERE y.oid = e.enumtypid OFFSET 0) y
                   WHERE y.typnamespace <> pg_my_temp_schema() AND NOT pg_is_other_temp_schema(y.typnamespace)));
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_catalog_stamp() FROM PUBLIC;
