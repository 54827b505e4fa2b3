-- recalc schema, version 19: the capture of an attached table logs keys only
-- (docs/attach.md, "How capture works").
--
-- Version 10's capture mirrored every row written into recalc.record in the
-- writing transaction: a COPY of 100,000 rows into an attached table took
-- 24 times as long as into the same table unattached (0.15 s against 3.7 s:
-- building each row's fields, checking them, upserting recalc.record with its
-- indexes and constraints, and that table's own triggers), and a single-row
-- INSERT 0.8 ms more. Now a capture writes one change row per statement,
-- kind 'attached', holding the ids the statement wrote (as text) and the
-- object, and wakes `recalc watch`; a TRUNCATE writes kind 'attached_all'.
-- The engine absorbs those rows (recalc.attach_absorb) first thing in every
-- job's planning transaction and in each fast batch of `recalc watch`: under
-- a lock per object it deletes the object's rows, re-reads the source for
-- their ids in a new statement, and mirrors what it finds exactly as the
-- capture did (recalc.attach_sync_sql). The records it changes are logged by
-- recalc.record's trigger as any write is; those change rows take the
-- oldest transaction id of the rows absorbed, so a freshness token taken
-- after the application's write still waits for them (recalc.wait_fresh).
--
-- Why nothing is lost: a row absorbed was committed before the statement
-- that deleted it, and the source is read by a later statement, whose
-- snapshot sees that commit; a write committing later logs its own row,
-- which stays for the next absorb. Absorbs of one object never overlap (the
-- lock), so a later one never writes an older picture of a record. The same
-- holds for views, so writes to a view's base tables no longer need READ
-- COMMITTED.
--
-- Security: the capture reads only its key column from the transition
-- tables, after checking that the columns it was attached with keep their
-- types (the key's cast to text is then PostgreSQL's own) and that its own
-- table is still captured whole (recalc.attach_guard_sql). The absorb reads the source with
-- the engine's rights only while the object's capture is intact
-- (recalc.attach_intact: complete, and every column it reads of the type it
-- was attached with), after locking every captured table; an object whose
-- capture is not intact keeps its change rows, and the engine says so.
-- Every statement is safe to run again on an upgraded database.

ALTER TABLE recalc.change ADD COLUMN IF NOT EXISTS object text;
ALTER TABLE recalc.change DROP CONSTRAINT IF EXISTS change_kind;
ALTER TABLE recalc.change ADD CONSTRAINT change_kind
    CHECK (kind IN ('section', 'record', 'truncate', 'attached', 'attached_all')
           AND (object IS NOT NULL) = (kind IN ('attached', 'attached_all'))) NOT VALID;

-- attach_guard_sql: the checks every capture function makes first, with the
-- engine's rights: it is the AFTER statement trigger of the one table it was
-- made for, registered for its object; the columns it was attached with
-- still have their types and collations (it reads only the key column now,
-- whose cast to text is then PostgreSQL's own); and its own table is still
-- captured whole: a plain table with neither parent nor children, its four
-- capture triggers enabled, and (an attached table) its unique index on the
-- id column alone. A write to a table whose owner broke any of these fails.
-- The rest of the object's capture (the other base tables of a view, what
-- the view reads) is checked by every absorb before it reads the source:
-- these checks are single-row catalog lookups, version 10's whole-object
-- check (recalc.attach_check) cost 0.2 ms a statement.
CREATE OR REPLACE FUNCTION recalc.attach_guard_sql(c recalc.attach_capture) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
    IF TG_RELID IS DISTINCT FROM %1$s::oid OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER'
       OR NOT EXISTS (SELECT 1 FROM recalc.attach_capture WHERE object = %2$L AND relid = TG_RELID AND func = %3$L) THEN
        RAISE EXCEPTION 'recalc.%% runs only as the capture trigger of %%', %3$L, %4$L;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(%5$L::text[], %6$L::oid[], %7$L::oid[]) c(n, t, l)
               WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = TG_RELID AND a.attname = c.n
                                 AND a.atttypid = c.t AND a.attcollation = c.l AND NOT a.attisdropped)) THEN
        RAISE EXCEPTION 'columns of %% read by the capture of object %% changed since it was attached: run `recalc attach` again', %4$L, %2$L;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_class k WHERE k.oid = TG_RELID AND k.relkind = 'r' AND NOT k.relhassubclass AND NOT k.relispartition
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = k.oid)
          AND (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = k.oid AND t.tgenabled IN ('O', 'A') AND t.tgfoid = to_regprocedure(%8$L)) = 4
          AND (%9$L::boolean OR EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0]
                WHERE i.indrelid = k.oid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1
                  AND i.indpred IS NULL AND i.indexprs IS NULL AND t.attname = %10$L))) THEN
        RAISE EXCEPTION 'the capture of object %% is incomplete: a capture trigger is missing or disabled, %% is no longer a plain table without parent or children, or its id column lost its unique index', %2$L, %4$L
            USING HINT = 'run `recalc attach` again (`recalc attach --list` shows which object)';
    END IF;$f$, c.relid, c.object, c.func, c.source, c.cols, c.types, c.colls, format('recalc.%I()', c.func),
        (SELECT a.is_view FROM recalc.attachment a WHERE a.object = c.object), c.key_col)
$$;

-- attach_capture_body: the capture of an attached table, or of a base table
-- of an attached view, logs the ids its statement wrote, in the key column.
-- An UPDATE of an attached table logs only the rows whose id or a column it
-- reads changed (old and new matched by id, which is unique; values compared
-- as text in the C collation, so that a change a case-insensitive collation
-- calls equal is still seen): updating other columns logs nothing. A view's base table logs the old and new ids
-- of every row updated (its key column need not be unique).
CREATE OR REPLACE FUNCTION recalc.attach_capture_body(c recalc.attach_capture) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_updated text;
BEGIN
    IF (SELECT a.is_view FROM recalc.attachment a WHERE a.object = c.object) THEN
        v_updated := format('SELECT (s.%1$I)::text FROM new_rows s UNION ALL SELECT (s.%1$I)::text FROM old_rows s', c.key_col);
    ELSE
        v_updated := format('SELECT (coalesce(n.%1$I, o.%1$I))::text FROM new_rows n FULL JOIN old_rows o ON o.%1$I = n.%1$I
            WHERE n.%1$I IS NULL OR o.%1$I IS NULL OR (%2$s) IS DISTINCT FROM (%3$s)', c.key_col,
            (SELECT string_agg(format('(n.%I)::text COLLATE "C"', x), ', ') FROM unnest(c.cols) x),
            (SELECT string_agg(format('(o.%I)::text COLLATE "C"', x), ', ') FROM unnest(c.cols) x));
    END IF;
    RETURN format($f$
BEGIN
%1$s
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg((s.%3$I)::text) FROM new_rows s HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg(k) FROM (%4$s) x(k) HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg((s.%3$I)::text) FROM old_rows s HAVING count(*) > 0;
    ELSE
        INSERT INTO recalc.change (kind, object, keys) VALUES ('attached_all', %2$L, '{}');
    END IF;
    IF FOUND AND coalesce(current_setting('recalc.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('recalc_changes', TG_OP);
    END IF;
    RETURN NULL;
END$f$, recalc.attach_guard_sql(c), c.object, c.key_col, v_updated);
END $$;

-- attach_sync_sql, keyed: the ids are matched by a join with the array (a
-- hashed semi-join for a large batch), not by = ANY, which a sequential scan
-- would test row by row against every id.
CREATE OR REPLACE FUNCTION recalc.attach_sync_sql(a recalc.attachment, p_keyed boolean) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_where text := CASE WHEN p_keyed THEN format('s.%I IN (SELECT k::%s FROM unnest($1::text[]) k)', a.id_col, a.id_type) ELSE 'true' END;
    v_rows text := recalc.attach_rows_sql(a, a.source, v_where);
BEGIN
    RETURN format($f$
        WITH src AS MATERIALIZED (%s),
        gone AS (DELETE FROM recalc.record d WHERE d.object = %L %s AND NOT EXISTS (SELECT 1 FROM src WHERE src.id = d.id))
        %s$f$,
        v_rows, a.object,
        CASE WHEN p_keyed THEN format('AND d.id IN (SELECT %L || k FROM unnest($1::text[]) k)', a.object || ':') ELSE '' END,
        recalc.attach_upsert_sql('SELECT * FROM src'));
END $$;

-- change_inherit_xid gives the record change rows this transaction logged
-- the transaction id p_xid when it is older: they carry on the writes of
-- the change rows it consumed, whose writers' tokens must wait for them
-- (recalc.wait_fresh).
CREATE OR REPLACE FUNCTION recalc.change_inherit_xid(p_xid xid8) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE recalc.change SET xid = p_xid
    WHERE p_xid IS NOT NULL AND xid = pg_current_xact_id() AND kind = 'record' AND p_xid < xid
$$;

-- attach_install_capture (re)creates the capture functions and triggers of
-- an attached object. CREATE TRIGGER locks each table SHARE ROW EXCLUSIVE
-- until the transaction commits.
CREATE OR REPLACE FUNCTION recalc.attach_install_capture(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c recalc.attach_capture;
    v_op text;
    v_ref text;
BEGIN
    FOR c IN SELECT * FROM recalc.attach_capture WHERE object = p_object ORDER BY relid LOOP
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
    END LOOP;
END $$;

-- attach_install: the capture, then the backfill, as before; the object's
-- change rows logged until now are covered by the backfill, so they go.
CREATE OR REPLACE FUNCTION recalc.attach_install(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off AS $$
DECLARE
    a recalc.attachment;
    v_rows bigint;
    v_xid xid8;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_install_capture(p_object);
    PERFORM recalc.attach_check(p_object);
    PERFORM recalc.attach_writer_guard();
    WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object RETURNING c.xid)
    SELECT min(xid) INTO v_xid FROM gone;
    EXECUTE recalc.attach_sync_sql(a, false);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    PERFORM recalc.change_inherit_xid(v_xid);
    RETURN v_rows;
END $$;

-- attach_remove also drops the object's change rows not yet absorbed.
CREATE OR REPLACE FUNCTION recalc.attach_remove(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rows bigint;
    v_xid xid8;
BEGIN
    PERFORM recalc.attach_drop_capture(p_object);
    WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object RETURNING c.xid)
    SELECT min(xid) INTO v_xid FROM gone;
    DELETE FROM recalc.record WHERE object = p_object;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    PERFORM recalc.change_inherit_xid(v_xid);
    DELETE FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_writer_guard();
    RETURN v_rows;
END $$;

-- attach_intact: the object's capture is complete (recalc.attach_complete);
-- the attached relation (by its oid) is still a table, or a view owned by
-- the schema's owner (a view dropped and made again by the owner of its
-- schema has another oid); and every column it reads, on every captured
-- table, still has the type and collation it was attached with.
CREATE OR REPLACE FUNCTION recalc.attach_intact(p_object text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN recalc.attach_complete(p_object) AND EXISTS (
        SELECT 1 FROM recalc.attachment a JOIN pg_class k ON k.oid = a.relid
        WHERE a.object = p_object AND k.relkind = CASE WHEN a.is_view THEN 'v' ELSE 'r' END
          AND (NOT a.is_view OR k.relowner = (SELECT nspowner FROM pg_namespace WHERE nspname = 'recalc'))
    ) AND NOT EXISTS (
        SELECT 1 FROM recalc.attach_capture c, unnest(c.cols, c.types, c.colls) x(n, t, l)
        WHERE c.object = p_object AND NOT EXISTS (
            SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.relid AND a.attname = x.n
              AND a.atttypid = x.t AND a.attcollation = x.l AND NOT a.attisdropped));
END $$;

-- attach_absorb mirrors the change rows the captures logged (see the top of
-- this file), object by object, and returns one row per object with rows
-- committed: how many ids it absorbed, or absorbed = false when it left the
-- object's rows in place: its capture is not intact, or absorbing failed
-- (error_code, a SQLSTATE, says why: a lock not granted within lock_timeout, a right
-- revoked, row-level security the engine's role does not bypass, ...). A
-- failure rolls back that object's work only, so one application's table
-- cannot stop the others. It reads each relation by its oid, never by the
-- name it was attached under, which its owner can give to another
-- relation. Run by the engine first thing in a job's planning transaction
-- and in each fast batch, in READ COMMITTED.
DROP FUNCTION IF EXISTS recalc.attach_absorb();
CREATE FUNCTION recalc.attach_absorb()
RETURNS TABLE (object text, keys bigint, absorbed boolean, error_code text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off SET lock_timeout = '2s' AS $$
DECLARE
    a recalc.attachment;
    v_object text;
    v_rel regclass;
    v_name text;
    v_keys text[];
    v_all boolean;
    v_xid xid8;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    FOR v_object IN SELECT DISTINCT c.object FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') ORDER BY 1 LOOP
        object := v_object; keys := 0; absorbed := false; error_code := NULL;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended('recalc.attach_absorb:' || v_object, 0));
            SELECT * INTO a FROM recalc.attachment t WHERE t.object = v_object;
            IF NOT FOUND THEN -- detached since; recalc.attach_remove deleted its records
                DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = v_object;
                CONTINUE;
            END IF;
            -- Lock what the re-read reads, by oid, before checking it.
            FOR v_rel IN SELECT x.relid::regclass FROM (SELECT c.relid FROM recalc.attach_capture c WHERE c.object = v_object
                                                        UNION SELECT a.relid) x
                         WHERE EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = x.relid) ORDER BY x.relid LOOP
                v_name := v_rel::text;
                EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', v_name);
                IF to_regclass(v_name) IS DISTINCT FROM v_rel THEN -- renamed meanwhile: the name locked is another's
                    RAISE EXCEPTION 'a relation captured for object % was renamed while it was locked', v_object
                        USING ERRCODE = 'lock_not_available';
                END IF;
            END LOOP;
            IF recalc.attach_intact(v_object) THEN
                WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = v_object
                              RETURNING c.kind, c.keys, c.xid)
                SELECT bool_or(g.kind = 'attached_all'), min(g.xid),
                       (SELECT array_agg(DISTINCT k) FROM gone, unnest(gone.keys) k)
                INTO v_all, v_xid, v_keys FROM gone g;
                CONTINUE WHEN v_xid IS NULL; -- another absorb took them
                a.source := a.relid::regclass::text; -- schema-qualified: search_path is pg_catalog only
                IF v_all THEN
                    EXECUTE recalc.attach_sync_sql(a, false);
                ELSIF cardinality(v_keys) > 0 THEN
                    EXECUTE recalc.attach_sync_sql(a, true) USING v_keys;
                END IF;
                PERFORM recalc.change_inherit_xid(v_xid);
                keys := coalesce(cardinality(v_keys), 0); absorbed := true;
            END IF;
        EXCEPTION WHEN OTHERS THEN -- never the message: it may quote a row's values
            error_code := SQLSTATE;
        END;
        RETURN NEXT;
    END LOOP;
END $$;

-- log_record_change, unchanged but for its UPDATE branch's deletes. Each
-- joined old_rows with new_rows; PL/pgSQL keeps a statement's plan for the
-- session, planned at its first call, when the transition tables held a
-- row or two, so it was a nested loop, quadratic in the rows updated: the
-- root fix of 20,000 records absorbed at once, one UPDATE, did not finish
-- in 100 s. Now one full join (hashed or merged, never a nested loop) finds
-- the ids, and the deletes look them up in the record index.
CREATE OR REPLACE FUNCTION recalc.log_record_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_engine boolean := session_user = current_user;
    v_rooted boolean := v_engine AND coalesce(current_setting('recalc.rooted', true), '') = 'on';
    v_moved text[];   -- ids, old and new, of the records whose id or object changed
    v_reowned text[]; -- ids of the records whose owner changed
BEGIN
    IF TG_RELID IS DISTINCT FROM 'recalc.record'::regclass OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.log_record_change() runs only as the AFTER statement trigger of recalc.record';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM recalc.share_input;
        DELETE FROM recalc.team;
        INSERT INTO recalc.change (kind, keys) VALUES ('truncate', '{}');
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', array_agg(id), v_rooted FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT (v_engine AND coalesce(current_setting('recalc.fixing_roots', true), '') = 'on') THEN
            INSERT INTO recalc.change (kind, keys, rooted)
            SELECT 'record', array_agg(DISTINCT id), kept OR v_rooted
            FROM (SELECT o.id, n.id, coalesce(o.id = n.id AND o.parent IS NOT DISTINCT FROM n.parent, false)
                  FROM old_rows o FULL JOIN new_rows n ON n.rid = o.rid) m (old_id, new_id, kept),
                 LATERAL unnest(ARRAY[old_id, new_id]) id
            WHERE id IS NOT NULL
            GROUP BY kept;
        END IF;
        WITH j AS MATERIALIZED (
            SELECT o.id AS old_id, n.id AS new_id, o.id <> n.id OR o.object <> n.object AS moved, o.owner <> n.owner AS reowned
            FROM old_rows o FULL JOIN new_rows n ON n.rid = o.rid)
        SELECT coalesce((SELECT array_agg(v) FROM j, unnest(ARRAY[j.old_id, j.new_id]) v WHERE j.moved), '{}'),
               coalesce((SELECT array_agg(j.old_id) FROM j WHERE j.reowned), '{}')
        INTO v_moved, v_reowned;
        IF cardinality(v_moved) > 0 THEN
            DELETE FROM recalc.share_input WHERE record = ANY (v_moved);
            DELETE FROM recalc.team WHERE record = ANY (v_moved);
        END IF;
        IF cardinality(v_reowned) > 0 THEN
            DELETE FROM recalc.share_input WHERE record = ANY (v_reowned) AND cause = 'manual';
        END IF;
    ELSE
        INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', array_agg(id), v_rooted FROM old_rows HAVING count(*) > 0;
        DELETE FROM recalc.share_input s USING old_rows o WHERE s.record = o.id;
        DELETE FROM recalc.team t USING old_rows o WHERE t.record = o.id;
    END IF;
    IF coalesce(current_setting('recalc.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('recalc_changes', TG_OP);
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.log_record_change() FROM PUBLIC;

-- The functions a capture no longer uses.
DROP FUNCTION IF EXISTS recalc.attach_table_body(recalc.attachment, recalc.attach_capture);
DROP FUNCTION IF EXISTS recalc.attach_view_body(recalc.attachment, recalc.attach_capture);

REVOKE EXECUTE ON FUNCTION recalc.attach_capture_body(recalc.attach_capture), recalc.attach_install_capture(text),
    recalc.attach_intact(text), recalc.attach_absorb(), recalc.change_inherit_xid(xid8) FROM PUBLIC;

-- Rebuild the captures of the objects attached now, and have the next
-- absorb re-read each whole source: a capture its table's owner had
-- disabled missed writes that the rebuilt one would not bring back.
SELECT recalc.attach_install_capture(t.object) FROM recalc.attachment t ORDER BY t.object;
INSERT INTO recalc.change (kind, object, keys) SELECT 'attached_all', t.object, '{}' FROM recalc.attachment t ORDER BY t.object;
