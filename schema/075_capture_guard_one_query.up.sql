-- recalc schema, version 75: the capture's checks, run at every statement
-- the application writes to an attached table, are one query planned once
-- per session, whose reads do not grow with the table's triggers.
--
-- The guard of a capture function (attach_guard_sql, version 55) checked,
-- before logging a statement's ids, that it runs as its own table's
-- capture and is still registered, that the columns it reads kept their
-- types and collations, and that the table is still captured whole. That
-- was three queries naming the table by TG_RELID, a parameter: PostgreSQL
-- planned each of them anew at each of the first five statements of every
-- session (custom plans), about 2 ms of processor time per statement.
-- The third counted the capture triggers among every trigger of the table,
-- calling to_regprocedure for each one: a table that many foreign keys
-- reference has two triggers for each, all read at every statement the
-- application writes to it.
--
-- Now, once the trigger's own variables say it is its table's statement
-- trigger (TG_RELID, TG_LEVEL, TG_WHEN, as before), one query makes the
-- same checks with the table's oid and the function's as constants, so
-- that it is planned once per session; it finds the capture triggers from
-- the function's dependents in pg_depend, as attach_complete does since
-- version 71 (CREATE TRIGGER records a trigger's dependency on its
-- function), each then read by its oid and counted only if it is a trigger
-- of the table, enabled, calling the function: exactly the triggers the
-- count read before (TestCaptureGuardOneQuery). The errors, their codes
-- and hints, and the order in which the checks fail, are as they were
-- (TestCaptureRunsAsDefinerAndCannotBeBorrowed,
-- TestDroppedUniqueIndexStopsCapture, TestPartitionsAndInheritanceAreRefused,
-- TestAttack2WritesThatFireNoCapture).
--
-- Measured side by side (docs/attach.md, "What capture costs the
-- application"), in processor time: a session's second INSERT into an
-- attached table 3.7 ms before, 1.5 ms after (1.4 ms into a plain
-- table); a single-row INSERT into a table with 605 triggers 0.69 ms
-- before, 0.36 ms after (0.03 ms plain). On a table with few triggers a
-- statement costs what it cost.

-- attach_guard_sql: the checks of version 55, in one query.
CREATE OR REPLACE FUNCTION recalc.attach_guard_sql(c recalc.attach_capture) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
    IF TG_RELID IS DISTINCT FROM %1$s::oid OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.%% runs only as the capture trigger of %%', %3$L, %4$L
            USING ERRCODE = CASE WHEN current_setting('transaction_isolation') IN ('read committed', 'read uncommitted') THEN 'P0001' ELSE '40001' END,
                  HINT = 'under REPEATABLE READ or SERIALIZABLE, the capture may have been installed after this transaction''s snapshot: retry the transaction';
    END IF;
    DECLARE
        v_registered boolean; -- this function is the registered capture of this table
        v_columns boolean;    -- the columns read kept their types and collations
        v_complete boolean;   -- the table is still captured whole
    BEGIN
        SELECT EXISTS (SELECT 1 FROM recalc.attach_capture WHERE object = %2$L AND relid = %1$s::oid AND func = %3$L),
               NOT EXISTS (SELECT 1 FROM unnest(%5$L::text[], %6$L::oid[], %7$L::oid[]) c(n, t, l)
                           WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = %1$s::oid AND a.attname = c.n
                                             AND a.atttypid = c.t AND a.attcollation = c.l AND NOT a.attisdropped)),
               EXISTS (
                SELECT 1 FROM pg_class k WHERE k.oid = %1$s::oid AND k.relkind = 'r' AND NOT k.relispartition
                  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = %1$s::oid)
                  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = %1$s::oid)
                  AND (SELECT count(*)
                       FROM (SELECT DISTINCT d.objid FROM pg_depend d
                             WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = %8$L::regprocedure AND d.refobjsubid = 0
                               AND d.classid = 'pg_trigger'::regclass) d,
                            LATERAL (SELECT t.tgrelid, t.tgfoid, t.tgenabled FROM pg_trigger t WHERE t.oid = d.objid OFFSET 0) t
                       WHERE t.tgrelid = %1$s::oid AND t.tgfoid = %8$L::regprocedure AND t.tgenabled IN ('O', 'A')) = 5
                  AND (%9$L::boolean OR EXISTS (
                        SELECT 1 FROM pg_index i JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0]
                        WHERE i.indrelid = %1$s::oid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1
                          AND i.indpred IS NULL AND i.indexprs IS NULL AND t.attname = %10$L)))
          INTO v_registered, v_columns, v_complete;
        IF NOT v_registered THEN
            RAISE EXCEPTION 'recalc.%% runs only as the capture trigger of %%', %3$L, %4$L
                USING ERRCODE = CASE WHEN current_setting('transaction_isolation') IN ('read committed', 'read uncommitted') THEN 'P0001' ELSE '40001' END,
                      HINT = 'under REPEATABLE READ or SERIALIZABLE, the capture may have been installed after this transaction''s snapshot: retry the transaction';
        END IF;
        IF NOT v_columns THEN
            RAISE EXCEPTION 'columns of %% read by the capture of object %% changed since it was attached: run `recalc attach` again', %4$L, %2$L
                USING ERRCODE = CASE WHEN current_setting('transaction_isolation') IN ('read committed', 'read uncommitted') THEN 'P0001' ELSE '40001' END;
        END IF;
        IF NOT v_complete THEN
            RAISE EXCEPTION 'the capture of object %% is incomplete: a capture trigger is missing or disabled, %% is no longer a plain table without parent or children, or its id column lost its unique index', %2$L, %4$L
                USING ERRCODE = CASE WHEN current_setting('transaction_isolation') IN ('read committed', 'read uncommitted') THEN 'P0001' ELSE '40001' END,
                      HINT = 'run `recalc attach` again (`recalc attach --list` shows which object); under REPEATABLE READ or SERIALIZABLE, the capture may have been installed after this transaction''s snapshot: retry the transaction';
        END IF;
    END;$f$, c.relid, c.object, c.func, c.source, c.cols, c.types, c.colls, format('recalc.%I()', c.func),
        (SELECT a.is_view FROM recalc.attachment a WHERE a.object = c.object), c.key_col)
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_guard_sql(recalc.attach_capture) FROM PUBLIC;

-- The captures installed now get the new body in place: their functions
-- keep their oids and their triggers are untouched, so their tables'
-- fingerprints do not change (no whole re-read) and no application table
-- is locked.
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
