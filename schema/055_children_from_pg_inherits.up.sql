-- recalc schema, version 55: a table that had an inheritance child, since
-- dropped, takes writes again at once.
--
-- The capture's guard, `recalc.attach_complete` and `recalc attach` read a
-- table's children from pg_class.relhassubclass. PostgreSQL sets it when a
-- child is added, but clears it only when an ANALYZE of the table
-- finds no child left. So once a child was added to an attached table and
-- dropped again, every write to the table failed ("the capture ... is
-- incomplete"), and `recalc attach` refused it, until someone ran ANALYZE.
-- They now read pg_inherits, which lists the children there are.

-- attach_guard_sql as in version 37, reading the children from pg_inherits.
CREATE OR REPLACE FUNCTION recalc.attach_guard_sql(c recalc.attach_capture) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
    IF TG_RELID IS DISTINCT FROM %1$s::oid OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER'
       OR NOT EXISTS (SELECT 1 FROM recalc.attach_capture WHERE object = %2$L AND relid = TG_RELID AND func = %3$L) THEN
        RAISE EXCEPTION 'recalc.%% runs only as the capture trigger of %%', %3$L, %4$L
            USING ERRCODE = CASE WHEN current_setting('transaction_isolation') IN ('read committed', 'read uncommitted') THEN 'P0001' ELSE '40001' END,
                  HINT = 'under REPEATABLE READ or SERIALIZABLE, the capture may have been installed after this transaction''s snapshot: retry the transaction';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(%5$L::text[], %6$L::oid[], %7$L::oid[]) c(n, t, l)
               WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = TG_RELID AND a.attname = c.n
                                 AND a.atttypid = c.t AND a.attcollation = c.l AND NOT a.attisdropped)) THEN
        RAISE EXCEPTION 'columns of %% read by the capture of object %% changed since it was attached: run `recalc attach` again', %4$L, %2$L
            USING ERRCODE = CASE WHEN current_setting('transaction_isolation') IN ('read committed', 'read uncommitted') THEN 'P0001' ELSE '40001' END;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_class k WHERE k.oid = TG_RELID AND k.relkind = 'r' AND NOT k.relispartition
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = k.oid)
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = k.oid)
          AND (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = k.oid AND t.tgenabled IN ('O', 'A') AND t.tgfoid = to_regprocedure(%8$L)) = 5
          AND (%9$L::boolean OR EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0]
                WHERE i.indrelid = k.oid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1
                  AND i.indpred IS NULL AND i.indexprs IS NULL AND t.attname = %10$L))) THEN
        RAISE EXCEPTION 'the capture of object %% is incomplete: a capture trigger is missing or disabled, %% is no longer a plain table without parent or children, or its id column lost its unique index', %2$L, %4$L
            USING ERRCODE = CASE WHEN current_setting('transaction_isolation') IN ('read committed', 'read uncommitted') THEN 'P0001' ELSE '40001' END,
                  HINT = 'run `recalc attach` again (`recalc attach --list` shows which object); under REPEATABLE READ or SERIALIZABLE, the capture may have been installed after this transaction''s snapshot: retry the transaction';
    END IF;$f$, c.relid, c.object, c.func, c.source, c.cols, c.types, c.colls, format('recalc.%I()', c.func),
        (SELECT a.is_view FROM recalc.attachment a WHERE a.object = c.object), c.key_col)
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_guard_sql(recalc.attach_capture) FROM PUBLIC;

-- attach_complete as in version 20, reading the children from pg_inherits.
CREATE OR REPLACE FUNCTION recalc.attach_complete(p_object text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT (SELECT count(*) FROM recalc.attach_capture c
                JOIN pg_proc p ON p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace
                JOIN pg_trigger t ON t.tgfoid = p.oid AND t.tgrelid = c.relid AND t.tgenabled IN ('O', 'A')
                WHERE c.object = p_object)
             = 5 * (SELECT count(*) FROM recalc.attach_capture c WHERE c.object = p_object)
           AND NOT EXISTS (
                SELECT 1 FROM (SELECT c.relid FROM recalc.attach_capture c WHERE c.object = p_object
                               UNION
                               SELECT d.refobjid FROM recalc.attachment a
                               JOIN pg_rewrite r ON r.ev_class = a.relid
                               JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> a.relid
                               WHERE a.object = p_object AND a.is_view) x
                LEFT JOIN pg_class k ON k.oid = x.relid
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

-- The captures installed now get the new body in place: their functions
-- keep their oids and their triggers are untouched, so their tables'
-- fingerprints do not change (no whole re-read).
DO $$
DECLARE
    c recalc.attach_capture;
BEGIN
    FOR c IN SELECT * FROM recalc.attach_capture ORDER BY object, relid LOOP
        IF EXISTS (SELECT 1 FROM pg_proc p WHERE p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace) THEN
            EXECUTE format('CREATE OR REPLACE FUNCTION recalc.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                           'SET search_path = pg_catalog, pg_temp SET row_security = off AS %L', c.func,
                           recalc.attach_capture_body(c));
        END IF;
    END LOOP;
END $$;
