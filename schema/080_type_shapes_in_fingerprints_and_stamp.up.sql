-- recalc schema, version 80: five catalog changes an application's role
-- can make to a type of its own or a column of its table, found by
-- attacking version 79 as that role, change what an attached source shows
-- while no row is written; now each changes the source's fingerprint, so
-- the next absorb reads it again whole and recalc.wait_fresh waits for it,
-- and the catalog stamp, so `recalc watch` sees it within --catalog-poll.
--
-- 1. A composite type altered: ALTER TYPE ... ADD ATTRIBUTE or DROP
--    ATTRIBUTE (allowed while a table's column has the type) makes every
--    value's text form read (tech,1,) or (tech) for (tech,1). A view
--    reading such a column as text (`tag::text = '(tech,1)'`) showed other
--    values; neither a fingerprint nor the stamp moved: `recalc run` kept
--    the rule's read, wait_fresh had nothing to wait for, and only `recalc
--    run --full` revoked it (TestSourceDriftWithoutWrites). An attribute
--    added whose type is an existing enum changed the fingerprint (its
--    labels newly reached) but not the stamp: the watch saw it at its
--    --poll (10 s), and wait_fresh waited that long
--    (TestCompositeAlteredMovesStamp).
-- 2. The same for a composite type that only an attached view's rule
--    names (a cast, `ROW(a.industry)::crm.kind::text`), no column's type.
-- 3. An enum that only an attached view's rule names (a cast of a text
--    column, `a.industry::crm.sector = 'tech'`, whose constant the rule
--    keeps as the label's oid): its labels swapped made the view match
--    other rows. The stamp moved (its digest of every label) but no
--    fingerprint, which followed the columns' types only.
-- 4, 5. A column of a captured table renamed or dropped while an attached
--    view reads its row whole (`to_jsonb(a) ->> 'industry'`, `a::text`):
--    only that column's pg_attribute row changes, and the fingerprint and
--    the stamp held only the columns the view reads by name
--    (TestTypeChangesSeenByFingerprints, 2 to 5).
--
-- attach_type_prints, which both read, follows the types of the source's
-- and the captured table's columns and, for a view, the types its rule
-- depends on (pg_depend), to any depth through an array's elements, a
-- domain's base type, a range's subtype and a composite type's attributes,
-- and gives for each capture the labels of the enums reached (as versions
-- 45 and 48 did) and the attributes of the composite types reached, a
-- table's row type among them (number and xmin of each pg_attribute row,
-- dropped ones included: a drop updates the row, an add inserts one). At
-- every level it follows only types of the database's own objects (oid
-- 16384 and above, FirstNormalObjectId): a type initdb made (pg_catalog's,
-- information_schema's) reaches only types initdb made, which no role but
-- a superuser can alter, so nothing another role can change is left out,
-- and the built-in types of a CRM's hundreds of columns and of a rule's
-- every constant cost no lookup. Both also hold every column of a captured
-- table when the view's rule has a whole-row Var (`:varattno 0 ` in its
-- stored tree), of any of the tables it reads.
--
-- Each term is absent, adding nothing, where it finds nothing: with the
-- upgrade only the fingerprints of a source whose columns reach a
-- composite type, a view whose rule names an enum or a composite type (or
-- a type that reaches one) that its columns do not reach, and a view that
-- reads a row whole change, once; the first absorb after it reads those
-- sources again.
--
-- A read of the stamp, in server processor time (/proc/PID/schedstat of
-- the backend, 300 reads, 18 rounds, on a loaded machine), with the test
-- CRM's four objects and five captured tables: 1.05 to 1.63 ms, against
-- 0.33 to 0.60 ms at version 79 and 0.88 to 1.46 ms with the composite
-- types' term alone; with 50 enums of 6 labels, a composite column and
-- the contact's view reading a row whole and casting to an enum, 1.34 to
-- 1.93 ms (0.47 to 1.04, and 1.12 to 1.66). The rule's types and the
-- whole-row term add about 0.25 ms (0.15 to 0.38 in rounds side by side):
-- about 0.6% of a core at the default --catalog-poll (250 ms).

CREATE OR REPLACE FUNCTION recalc.attach_type_prints() RETURNS TABLE (object text, relid oid, labels text, composites text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
    RETURN QUERY
    WITH RECURSIVE cols AS (
        SELECT c.object, c.relid, b.atttypid AS t
        FROM recalc.attach_capture c JOIN recalc.attachment o ON o.object = c.object,
             LATERAL (SELECT b.atttypid FROM pg_attribute b
                      WHERE b.attrelid IN (c.relid, o.relid) AND b.attnum > 0 AND NOT b.attisdropped OFFSET 0) b
        WHERE b.atttypid >= 16384::oid
        UNION
        -- The types an attached view's rule names besides its columns' (a
        -- cast, a constant).
        SELECT c.object, c.relid, d.refobjid
        FROM recalc.attach_capture c JOIN recalc.attachment o ON o.object = c.object,
             LATERAL (SELECT r.oid FROM pg_rewrite r WHERE o.is_view AND r.ev_class = o.relid OFFSET 0) r,
             LATERAL (SELECT d.refobjid FROM pg_depend d
                      WHERE d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_type'::regclass OFFSET 0) d
        WHERE d.refobjid >= 16384::oid),
    -- The types each type of a column or of the rule reaches (itself
    -- included), each looked up once whatever the columns that have it.
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
-- composite types reached (attach_type_prints) and every column of a
-- table whose row the view reads whole.
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
        -- captured table's columns and those a view's rule names (version
        -- 80), followed to any depth through an array's elements, a
        -- domain's base type, a range's subtype (a multirange's too) and a
        -- composite type's attributes.
        e.labels,
        -- A child table, whose rows a read of the table shows and whose
        -- writes fire no capture (version 77): absent, nothing, so that the
        -- fingerprints of tables without children stay as they were.
        (SELECT 'inherited' WHERE EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = c.relid)),
        -- The attributes of the composite types among them (version 80):
        -- absent, nothing, so that the fingerprints of sources that reach
        -- none stay as they were.
        'composites ' || e.composites,
        -- Every column of the captured table when the attached view reads
        -- a row whole (a whole-row Var: to_jsonb(a), a::text; version 80),
        -- whose value a column renamed or dropped changes: nothing else.
        'columns ' || (SELECT string_agg(b.attnum || ':' || b.xmin, ',' ORDER BY b.attnum)
                       FROM pg_attribute b WHERE w.whole AND b.attrelid = c.relid AND b.attnum > 0))
    FROM recalc.attach_capture c
    JOIN recalc.attachment o ON o.object = c.object
    LEFT JOIN LATERAL (SELECT k.relfilenode, k.xmin FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
    LEFT JOIN LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p ON true
    LEFT JOIN recalc.attach_type_prints() e ON e.object = c.object AND e.relid = c.relid
    LEFT JOIN LATERAL (SELECT bool_or(strpos(r.ev_action::text, ':varattno 0 ') > 0) AS whole
                       FROM pg_rewrite r WHERE o.is_view AND r.ev_class = o.relid OFFSET 0) w ON true;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints() FROM PUBLIC;

-- attach_catalog_stamp: as in version 77, and the same two terms as the
-- fingerprints.
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
        'composites ' || e.composites,
        'columns ' || (SELECT string_agg(b.attnum || ':' || b.xmin, ',' ORDER BY b.attnum)
                       FROM pg_attribute b WHERE w.whole AND b.attrelid = c.relid AND b.attnum > 0)),
        '/' ORDER BY c.object, c.relid)
        FROM recalc.attach_capture c
        JOIN recalc.attachment o ON o.object = c.object
        LEFT JOIN LATERAL (SELECT k.relfilenode, k.xmin FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
        LEFT JOIN LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p ON true
        LEFT JOIN recalc.attach_type_prints() e ON e.object = c.object AND e.relid = c.relid
        LEFT JOIN LATERAL (SELECT bool_or(strpos(r.ev_action::text, ':varattno 0 ') > 0) AS whole
                           FROM pg_rewrite r WHERE o.is_view AND r.ev_class = o.relid OFFSET 0) w ON true)
        -- Each enum's schema looked up once, whatever its labels.
        || '/' || (SELECT coalesce(sum(e.n), 0) || ':' || coalesce(sum(e.x), 0)
                   FROM (SELECT n.enumtypid, count(*) AS n, sum(n.xmin::text::bigint) AS x FROM pg_enum n GROUP BY n.enumtypid) e,
                        LATERAL (SELECT y.typnamespace FROM pg_type y WHERE y.oid = e.enumtypid OFFSET 0) y
                   WHERE y.typnamespace <> pg_my_temp_schema() AND NOT pg_is_other_temp_schema(y.typnamespace)));
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_catalog_stamp() FROM PUBLIC;
