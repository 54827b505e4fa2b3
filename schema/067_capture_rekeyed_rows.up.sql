-- recalc schema, version 67: a row of an attached table that one UPDATE
-- moves off its id is gone, even when another row of the same statement
-- takes the id.
--
-- Version 54 marks 'gone' the ids of rows an UPDATE changed away, so that
-- their records' shares and team entries go, as they do for the same UPDATE
-- of recalc.record. The capture of an UPDATE sees only the statement's old
-- and new rows, which it pairs by id: a chain in one statement (cases 2 -> 3
-- and 1 -> 2, `UPDATE ... SET id = id + 1` in the order a sequential scan
-- reads them; a unique index checks each row as it is written, so the chain
-- goes through) read as id 1 deleted, id 3 inserted and id 2 updated in
-- place. The manual shares and team entries of record 2 went to the row
-- that took its id, another case, and when the two rows' attached columns
-- were alike nothing at all was logged for id 2
-- (TestRekeyAttackOneStatementTakesAVacatedID). A cycle (a swap) cannot
-- happen in one statement: its first row would take an id the next still
-- holds.
--
-- The fifth capture trigger of an attached table (a row trigger with a
-- transition table, which keeps the table out of inheritance hierarchies,
-- version 20) was AFTER DELETE ... WHEN (false). On a table holding the
-- object's records it is now AFTER UPDATE ... WHEN (OLD.id IS DISTINCT
-- FROM NEW.id): it fires for the rows whose id changed, only those, and the
-- capture logs their old and new ids as gone (one change row per such row;
-- an UPDATE that changes no id pays one comparison a row). A view's base
-- tables and the users table keep the old form: their rows are no records,
-- and their captures mark nothing.

-- attach_holds_records: whether captured table c holds its object's
-- records (an attached table, not a view's base table, nor the users').
CREATE OR REPLACE FUNCTION recalc.attach_holds_records(c recalc.attach_capture) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT NOT a.is_view AND a.object <> 'users' AND c.relid = a.relid FROM recalc.attachment a WHERE a.object = c.object), false)
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_holds_records(recalc.attach_capture) FROM PUBLIC;

-- attach_capture_body as in version 54; run by the fifth trigger of a
-- records table (a row whose id the UPDATE changed), it logs the row's old
-- and new ids as gone: a change row for each such row (a row trigger has
-- nowhere safe to gather them for the statement's one). It checks only
-- that it runs as that trigger: the statement's capture, which the same
-- UPDATE fires, checks the table.
CREATE OR REPLACE FUNCTION recalc.attach_capture_body(c recalc.attach_capture) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a recalc.attachment;
    v_records boolean; -- the captured table holds the object's records
    v_updated text;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment t WHERE t.object = c.object;
    v_records := recalc.attach_holds_records(c);
    IF a.is_view THEN
        v_updated := format('SELECT (s.%1$I)::text, NULL::text FROM new_rows s UNION ALL SELECT (s.%1$I)::text, NULL FROM old_rows s', c.key_col);
    ELSE
        v_updated := format('SELECT (coalesce(n.%1$I, o.%1$I))::text, %4$s FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
            WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR (%2$s) IS DISTINCT FROM (%3$s)', c.key_col,
            (SELECT string_agg(recalc.attach_compared('n', x, y, l), ', ') FROM unnest(c.cols, c.types, c.colls) u(x, y, l)),
            (SELECT string_agg(recalc.attach_compared('o', x, y, l), ', ') FROM unnest(c.cols, c.types, c.colls) u(x, y, l)),
            CASE WHEN v_records THEN format('CASE WHEN n.%1$I IS NULL THEN ''gone''
                WHEN o.%1$I IS NOT NULL AND (n.%2$I)::text IS DISTINCT FROM (o.%2$I)::text THEN ''reowned'' END', c.key_col, a.owner_col)
                 ELSE 'NULL::text' END);
    END IF;
    RETURN format($f$
BEGIN%6$s
%1$s
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg((s.%3$I)::text) FROM new_rows s HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO recalc.change (kind, object, keys, effect) SELECT 'attached', %2$L, array_agg(x.k), x.e FROM (%4$s) x(k, e) GROUP BY x.e;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO recalc.change (kind, object, keys, effect) SELECT 'attached', %2$L, array_agg((s.%3$I)::text), %5$L FROM old_rows s HAVING count(*) > 0;
    ELSE
        INSERT INTO recalc.change (kind, object, keys, effect) VALUES ('attached_all', %2$L, '{}', %5$L);
    END IF;
    IF FOUND AND coalesce(current_setting('recalc.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('recalc_changes', TG_OP);
    END IF;
    RETURN NULL;
END$f$, recalc.attach_guard_sql(c), c.object, c.key_col, v_updated, CASE WHEN v_records THEN 'gone' END,
    CASE WHEN v_records THEN format($r$
    -- The fifth trigger, for a row whose id this UPDATE changed. The
    -- statement's own capture checks the rest (below) once: the fifth
    -- trigger's condition names the id column, which PostgreSQL then lets
    -- no one drop or retype without dropping the trigger.
    IF TG_LEVEL = 'ROW' THEN
        IF TG_RELID IS DISTINCT FROM %1$s::oid OR TG_WHEN <> 'AFTER' OR TG_OP <> 'UPDATE' OR TG_NAME <> %4$L
           OR NOT EXISTS (SELECT 1 FROM recalc.attach_capture WHERE object = %2$L AND relid = TG_RELID AND func = %3$L) THEN
            RAISE EXCEPTION 'recalc.%% runs only as the capture trigger of %%', %3$L, %5$L;
        END IF;
        INSERT INTO recalc.change (kind, object, keys, effect)
        VALUES ('attached', %2$L, ARRAY[(OLD.%6$I)::text, (NEW.%6$I)::text], 'gone');
        RETURN NULL;
    END IF;$r$, c.relid, c.object, c.func, c.func || '_pin', c.source, c.key_col) ELSE '' END);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_capture_body(recalc.attach_capture) FROM PUBLIC;

-- attach_pin_sql: the statement creating the fifth capture trigger of
-- captured table c.
CREATE OR REPLACE FUNCTION recalc.attach_pin_sql(c recalc.attach_capture) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN recalc.attach_holds_records(c)
        THEN format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH ROW '
                    'WHEN (OLD.%I IS DISTINCT FROM NEW.%I) EXECUTE FUNCTION recalc.%I()',
                    c.func || '_pin', c.relid::regclass, c.key_col, c.key_col, c.func)
        ELSE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH ROW WHEN (false) EXECUTE FUNCTION recalc.%I()',
                    c.func || '_pin', c.relid::regclass, c.func) END
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_pin_sql(recalc.attach_capture) FROM PUBLIC;

-- attach_install_table installs the capture of captured table c: its
-- function, made anew, and its five triggers. Creating a trigger locks the
-- table SHARE ROW EXCLUSIVE until the transaction ends.
CREATE OR REPLACE FUNCTION recalc.attach_install_table(c recalc.attach_capture) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_op text;
    v_ref text;
BEGIN
    EXECUTE format('DROP FUNCTION IF EXISTS recalc.%I() CASCADE', c.func);
    EXECUTE format('CREATE FUNCTION recalc.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp SET row_security = off AS %L', c.func,
                   recalc.attach_capture_body(c));
    EXECUTE format('REVOKE EXECUTE ON FUNCTION recalc.%I() FROM PUBLIC', c.func);
    FOREACH v_op IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] LOOP
        v_ref := CASE v_op WHEN 'INSERT' THEN 'REFERENCING NEW TABLE AS new_rows'
                           WHEN 'UPDATE' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                           WHEN 'DELETE' THEN 'REFERENCING OLD TABLE AS old_rows' ELSE '' END;
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION recalc.%I()',
                       c.func || '_' || lower(v_op), v_op, c.relid::regclass, v_ref, c.func);
    END LOOP;
    -- The fifth: a row trigger with a transition table. PostgreSQL refuses
    -- to make a table with one an inheritance child or a partition, so its
    -- owner cannot write it through a parent, which fires no statement
    -- trigger of the table (nor leaves a trace). On a records table it
    -- fires for the rows whose id an UPDATE changed.
    EXECUTE recalc.attach_pin_sql(c);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_install_table(recalc.attach_capture) FROM PUBLIC;

-- attach_install_capture as in version 20, table by table.
CREATE OR REPLACE FUNCTION recalc.attach_install_capture(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c recalc.attach_capture;
BEGIN
    FOR c IN SELECT * FROM recalc.attach_capture WHERE object = p_object ORDER BY relid LOOP
        PERFORM recalc.attach_install_table(c);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_install_capture(text) FROM PUBLIC;

-- attach_pins_outdated: the captured tables holding records whose fifth
-- trigger is not the one above (installed before version 67).
CREATE OR REPLACE FUNCTION recalc.attach_pins_outdated() RETURNS TABLE (object text, relid oid)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.object, c.relid FROM recalc.attach_capture c
    WHERE recalc.attach_holds_records(c) AND EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = c.relid)
      AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.relid AND t.tgname = c.func || '_pin'
                      AND t.tgtype & 17 = 17) -- FOR EACH ROW, UPDATE
    ORDER BY c.object, c.relid
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_pins_outdated() FROM PUBLIC;

-- attach_renew_pin installs anew the capture of captured table p_relid of
-- object p_object when its fifth trigger is outdated, under the object's
-- lock (its registry row, as an absorb takes it): it then holds that one
-- application table until its transaction ends, which `recalc init` makes
-- short, one table at a time, after the migration has committed. Taking
-- every such table in the migration's one transaction deadlocked with the
-- application's transactions that write two of them (TestUpgradeFrom39UnderWrites).
-- The table's fingerprint changes: its next absorb reads it again whole.
CREATE OR REPLACE FUNCTION recalc.attach_renew_pin(p_object text, p_relid oid) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c recalc.attach_capture;
BEGIN
    PERFORM 1 FROM recalc.attachment a WHERE a.object = p_object FOR NO KEY UPDATE;
    IF NOT EXISTS (SELECT 1 FROM recalc.attach_pins_outdated() o WHERE o.object = p_object AND o.relid = p_relid) THEN
        RETURN false;
    END IF;
    SELECT * INTO STRICT c FROM recalc.attach_capture x WHERE x.object = p_object AND x.relid = p_relid;
    PERFORM recalc.attach_install_table(c);
    RETURN true;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_renew_pin(text, oid) FROM PUBLIC;

-- The captures installed now get the new body in place, in this
-- transaction: their functions keep their oids and their triggers are
-- untouched, so no application table is locked here. `recalc init` then
-- gives each records table its new fifth trigger (attach_renew_pin); until
-- then the old one never fires, and a chain of ids in one UPDATE is not
-- marked there.
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
