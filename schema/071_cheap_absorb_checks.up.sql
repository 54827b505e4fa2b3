-- recalc schema, version 71: the checks of an attached object's absorb
-- (attach_intact, attach_fingerprints) read the catalogs by index and keep
-- their plans, and `recalc watch`'s fast path computes the fingerprints
-- once per absorb, not twice; they check exactly what they checked, and
-- the fingerprints are the same strings, so the upgrade reads no source
-- again (TestFingerprintsKeptByVersion71).
--
-- They were most of an absorb's cost: of one object's absorb of one id on
-- an Odoo-style schema, 25 to 40 ms, about 14 ms checked the capture intact
-- and 8 ms the fingerprints (docs/attach.md). What they read grew with the
-- catalogs: every trigger of an attached table (two for each foreign key
-- that references it), the whole of pg_type at each level of the types
-- followed and the whole of pg_enum for each captured table, a scan of
-- pg_class; and attach_foreign_code, attach_view_reads and
-- attach_view_rule, SQL functions with a SET clause, were planned at each
-- call. Measured side by side (server processor time, medians, a busy
-- 2-CPU machine; docs/attach.md): the checks of an absorb of one id went
-- from 5.9-6.5 ms to 1.7-2.0 ms with one object attached, and from 7.3-9.1
-- to 2.3-3.1 ms with five.

-- How these functions read the catalogs. Their statements are planned
-- once per session for any object (generic plans), from estimates that
-- recalc's registry tables, of a few rows never analyzed, make far too
-- large: the planner then joined whole catalogs by hash or merge (pg_class,
-- pg_type, pg_trigger), or read pg_depend by the wrong index once its
-- statistics changed. Each catalog row is read here by its index key in a
-- lateral subquery behind OFFSET 0, which the planner neither turns into a
-- join nor passes other conditions into: what they read is the rows they
-- check (TestAbsorbChecksReadCatalogsByIndex).
--
-- A captured table's capture triggers are found from its capture function's
-- dependents (pg_depend's index by referenced object: CREATE TRIGGER records
-- the trigger's dependency on its function), each then checked to be a
-- trigger of the table calling the function, as before; not by reading
-- every trigger of the table, of which one that foreign keys reference has
-- two for each.

-- attach_complete: as in version 55.
CREATE OR REPLACE FUNCTION recalc.attach_complete(p_object text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT (SELECT count(*) FROM recalc.attach_capture c,
                LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p,
                LATERAL (SELECT DISTINCT d.objid
                         FROM (SELECT d.classid, d.objid FROM pg_depend d
                               WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid AND d.refobjsubid = 0 OFFSET 0) d
                         WHERE d.classid = 'pg_trigger'::regclass) d,
                LATERAL (SELECT t.tgrelid, t.tgfoid, t.tgenabled FROM pg_trigger t WHERE t.oid = d.objid OFFSET 0) t
                WHERE c.object = p_object AND t.tgfoid = p.oid AND t.tgrelid = c.relid AND t.tgenabled IN ('O', 'A'))
             = 5 * (SELECT count(*) FROM recalc.attach_capture c WHERE c.object = p_object)
           AND NOT EXISTS (
                SELECT 1 FROM (SELECT c.relid FROM recalc.attach_capture c WHERE c.object = p_object
                               UNION
                               SELECT d.refobjid FROM recalc.attachment a
                               JOIN pg_rewrite r ON r.ev_class = a.relid
                               JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> a.relid
                               WHERE a.object = p_object AND a.is_view) x
                LEFT JOIN LATERAL (SELECT k.oid, k.relkind, k.relispartition FROM pg_class k WHERE k.oid = x.relid OFFSET 0) k ON true
                WHERE k.oid IS NULL OR k.relkind <> 'r' OR k.relispartition
                   OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = k.oid)
                   OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = k.oid)
                   OR NOT EXISTS (SELECT 1 FROM recalc.attach_capture c WHERE c.object = p_object AND c.relid = x.relid))
           AND NOT EXISTS (
                SELECT 1 FROM recalc.attachment a WHERE a.object = p_object AND NOT a.is_view AND NOT EXISTS (
                    SELECT 1 FROM pg_index i JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0]
                    WHERE i.indrelid = a.relid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1
                      AND i.indpred IS NULL AND i.indexprs IS NULL AND t.attname = a.id_col))
    );
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_complete(text) FROM PUBLIC;

-- attach_foreign_code, attach_view_reads and attach_view_rule: as in
-- versions 20, 50 and 53, in PL/pgSQL, whose plans a session keeps: an SQL
-- function that is not inlined (none with a SET clause is) is planned at
-- every call, which was most of their cost.
CREATE OR REPLACE FUNCTION recalc.attach_foreign_code(p_object text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        WITH objs AS (
            SELECT 'pg_class'::regclass AS classid, i.indexrelid AS objid, c.relid
            FROM recalc.attach_capture c JOIN pg_index i ON i.indrelid = c.relid WHERE c.object = p_object
            UNION ALL
            SELECT 'pg_statistic_ext'::regclass, s.oid, c.relid
            FROM recalc.attach_capture c JOIN pg_statistic_ext s ON s.stxrelid = c.relid WHERE c.object = p_object)
        SELECT format('%s on %s depends on %s', pg_describe_object(d.classid, d.objid, 0), x.relid::regclass,
                      pg_describe_object(d.refclassid, d.refobjid, 0))
        FROM objs x JOIN pg_depend d ON d.classid = x.classid AND d.objid = x.objid
        WHERE NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = CASE d.refclassid
                  WHEN 'pg_proc'::regclass THEN (SELECT p.proowner FROM pg_proc p WHERE p.oid = d.refobjid)
                  WHEN 'pg_operator'::regclass THEN (SELECT o.oprowner FROM pg_operator o WHERE o.oid = d.refobjid)
                  WHEN 'pg_opclass'::regclass THEN (SELECT o.opcowner FROM pg_opclass o WHERE o.oid = d.refobjid)
                  WHEN 'pg_type'::regclass THEN (SELECT t.typowner FROM pg_type t WHERE t.oid = d.refobjid)
              END), d.refclassid NOT IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_opclass'::regclass, 'pg_type'::regclass))
        ORDER BY 1 LIMIT 1);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_foreign_code(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_view_reads(p_view oid, p_table oid, OUT nums int2[], OUT names text[])
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT coalesce(array_agg(a.attnum ORDER BY a.attnum), '{}'), coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
    INTO nums, names
    FROM pg_attribute a
    WHERE a.attrelid = p_table AND NOT a.attisdropped AND a.attnum IN (
        SELECT d.refobjsubid
        FROM (SELECT d.refclassid, d.refobjid, d.refobjsubid FROM pg_rewrite r
              JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
              WHERE r.ev_class = p_view OFFSET 0) d
        WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = p_table AND d.refobjsubid > 0);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_view_reads(oid, oid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_view_rule(p_view oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT coalesce(string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid), '') FROM pg_rewrite r WHERE r.ev_class = p_view);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_view_rule(oid) FROM PUBLIC;

-- attach_intact: as in version 50, each relation and column read by
-- index (a lateral subquery behind OFFSET 0 is not turned into a join,
-- which the planner, taking recalc's registry for far larger than it is,
-- made a scan of pg_class).
CREATE OR REPLACE FUNCTION recalc.attach_intact(p_object text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN recalc.attach_complete(p_object) AND EXISTS (
        SELECT 1 FROM recalc.attachment a,
               LATERAL (SELECT k.relkind, k.relowner, k.relnamespace, k.relname FROM pg_class k WHERE k.oid = a.relid OFFSET 0) k
        WHERE a.object = p_object AND k.relkind = CASE WHEN a.is_view THEN 'v' ELSE 'r' END
          AND (NOT a.is_view OR k.relowner = (SELECT nspowner FROM pg_namespace WHERE nspname = 'recalc'))
          AND format('%I.%I', (SELECT n.nspname FROM pg_namespace n WHERE n.oid = k.relnamespace), k.relname) = a.source
    ) AND NOT EXISTS (
        SELECT 1 FROM recalc.attach_capture c
        LEFT JOIN LATERAL (SELECT k.relnamespace, k.relname FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
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
               LATERAL recalc.attach_view_reads(a.relid, c.relid) v, unnest(c.read_nums, c.read_names) x(num, n)
        WHERE c.object = p_object AND cardinality(c.read_nums) > 0 AND x.num = ANY (v.nums)
          AND NOT EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.relid AND t.attnum = x.num AND t.attname = x.n)
    ) AND NOT EXISTS (
        SELECT 1 FROM recalc.attach_capture c JOIN pg_subscription_rel s ON s.srrelid = c.relid WHERE c.object = p_object
    ) AND recalc.attach_foreign_code(p_object) IS NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_intact(text) FROM PUBLIC;

-- attach_fingerprints: the same fingerprints as version 48's, so that
-- none changes with the upgrade, computed in one statement that reads each
-- catalog row by index: the capture triggers from the function's
-- dependents (as attach_complete), and the types of the columns followed
-- one lookup each (the recursion joined the whole of pg_type at each
-- level, and read the whole of pg_enum, for each captured table). With no
-- enum in the database there is nothing to follow.
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
        e.fp)
    FROM recalc.attach_capture c
    JOIN recalc.attachment o ON o.object = c.object
    LEFT JOIN LATERAL (SELECT k.relfilenode, k.xmin FROM pg_class k WHERE k.oid = c.relid OFFSET 0) k ON true
    LEFT JOIN LATERAL (SELECT p.oid FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace OFFSET 0) p ON true
    LEFT JOIN labels e ON e.object = c.object AND e.relid = c.relid;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints() FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_fingerprints_changed() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN EXISTS (SELECT FROM recalc.attach_fingerprints() f JOIN recalc.attach_capture c ON c.object = f.object AND c.relid = f.relid
                   WHERE c.fingerprint IS DISTINCT FROM f.fingerprint);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_fingerprints_changed() FROM PUBLIC;

-- attach_absorb_begin: as in version 53, the fingerprints computed once.
-- `recalc watch`'s fast path, which reads no source whole and at most
-- p_max ids, checked them once to count what waits and again here. Given
-- p_max, when more waits than that (a source to read whole: logged so, or
-- its fingerprint changed, whether or not its absorb failed lately; or more
-- than p_max ids), it changes nothing, and its rows say what waits: the
-- fast path then hands the step to a job, as it did.
DROP FUNCTION IF EXISTS recalc.attach_absorb_begin(interval);
CREATE OR REPLACE FUNCTION recalc.attach_absorb_begin(p_retry interval DEFAULT NULL, p_max bigint DEFAULT NULL)
RETURNS TABLE (object text, keys bigint, whole boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_objects text[];
    v_relids oid[];
    v_prints text[];
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    -- A captured table written without its capture (see attach_fingerprints)
    -- is read again whole. Under the model lock, as every absorb.
    SELECT array_agg(f.object), array_agg(f.relid), array_agg(f.fingerprint) INTO v_objects, v_relids, v_prints
    FROM recalc.attach_fingerprints() f JOIN recalc.attach_capture c ON c.object = f.object AND c.relid = f.relid
    WHERE c.fingerprint IS DISTINCT FROM f.fingerprint;
    IF p_max IS NOT NULL AND (v_objects IS NOT NULL OR (
            SELECT coalesce(bool_or(c.kind = 'attached_all'), false) OR coalesce(sum(cardinality(c.keys)), 0) > p_max
            FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all')
              AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry))) THEN
        RETURN QUERY SELECT x.object, sum(x.n)::bigint, bool_or(x.whole) FROM (
                         SELECT c.object, cardinality(c.keys) AS n, c.kind = 'attached_all' AS whole FROM recalc.change c
                         WHERE c.kind IN ('attached', 'attached_all')
                           AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry)
                         UNION ALL
                         SELECT u.object, 0, true FROM unnest(v_objects) u (object)) x
                     GROUP BY x.object ORDER BY 1;
        RETURN;
    END IF;
    -- An attached view redefined since its columns were recorded reads
    -- the columns of the names it was defined with: record them. (Its
    -- rule, attach_view_rule's, is read here without the function call.)
    UPDATE recalc.attach_capture c SET (read_nums, read_names, read_rule) = (
        SELECT r.nums, r.names, recalc.attach_view_rule(a.relid) FROM recalc.attach_view_reads(a.relid, c.relid) r)
    FROM recalc.attachment a
    WHERE a.object = c.object AND a.is_view AND c.read_rule IS DISTINCT FROM (
        SELECT coalesce(string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid), '') FROM pg_rewrite r WHERE r.ev_class = a.relid);
    IF v_objects IS NOT NULL THEN
        UPDATE recalc.attach_capture c SET fingerprint = f.print FROM unnest(v_objects, v_relids, v_prints) f (object, relid, print)
        WHERE c.object = f.object AND c.relid = f.relid AND c.fingerprint IS DISTINCT FROM f.print;
        INSERT INTO recalc.change (kind, object, keys) SELECT DISTINCT 'attached_all', u.object, '{}'::text[] FROM unnest(v_objects) u (object);
    END IF;
    RETURN QUERY SELECT c.object, sum(cardinality(c.keys))::bigint, bool_or(c.kind = 'attached_all') FROM recalc.change c
                 WHERE c.kind IN ('attached', 'attached_all')
                   AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry)
                 GROUP BY c.object ORDER BY 1;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_absorb_begin(interval, bigint) FROM PUBLIC;
