-- recalc schema, version 10: attached application tables (docs/attach.md).
--
-- An object may be attached to a table (or a view) of the application: its
-- records are then that table's rows, mirrored into recalc.record by capture
-- triggers in the writing transaction, under the key object || ':' || id.
-- recalc.record's own trigger logs the change as for any other write, so the
-- engine recalculates as it always has. `recalc attach FILE` validates the
-- spec (internal/attach) and fills these tables; the functions below generate
-- the capture functions and triggers with format(%I, %L) only.

-- One row per attached object.
CREATE TABLE recalc.attachment (
    object          text PRIMARY KEY,
    source          text NOT NULL,            -- schema.name of the table or view, quoted
    relid           oid NOT NULL,             -- its pg_class oid when attached
    is_view         boolean NOT NULL,
    id_col          text NOT NULL,
    id_type         text NOT NULL CHECK (id_type IN ('text', 'bigint', 'integer', 'uuid')),
    owner_col       text NOT NULL,
    parent_col      text,
    parent_object   text,
    fields          text[] NOT NULL DEFAULT '{}',
    territories_col text,
    spec            jsonb NOT NULL,           -- the spec entry as applied
    attached_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((parent_col IS NULL) = (parent_object IS NULL))
);

-- The tables whose writes are captured for an object: the attached table
-- itself, or each base table of an attached view. cols and types are the
-- columns the capture function reads from the rows written, their types and
-- collations when attached: the function refuses to run if they changed
-- since.
CREATE TABLE recalc.attach_capture (
    object  text NOT NULL REFERENCES recalc.attachment ON DELETE CASCADE,
    relid   oid NOT NULL,
    source  text NOT NULL,                    -- schema.name, quoted
    key_col text NOT NULL,                    -- the column holding the view's id (the id column for a table)
    func    text NOT NULL UNIQUE,             -- the capture function, in schema recalc
    cols    text[] NOT NULL,
    types   oid[] NOT NULL,
    colls   oid[] NOT NULL,                   -- each column's attcollation (0: none)
    PRIMARY KEY (object, relid)
);

-- attach_rows_sql returns a SELECT of the mirrored rows (id, object, owner,
-- parent, fields, territories) of attachment a, read from p_from (a relation
-- with alias s) where p_where holds. A row recalc.record's constraints would
-- refuse (owner missing or too long, a fields value out of range, ...) is
-- written with owner '' (never a user: ids are required) and no parent,
-- fields or territories: it fails closed, an invalid record that blocks no
-- write and no run. A row whose id is too long for a record is not mirrored.
-- Rows of a view sharing an id fail closed too.
CREATE FUNCTION recalc.attach_rows_sql(a recalc.attachment, p_from text, p_where text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fields text := '''{}''::jsonb';
    v_part text;
    i int;
BEGIN
    -- jsonb_build_object takes at most 100 arguments: 50 fields a call.
    FOR i IN 0 .. cardinality(a.fields) - 1 BY 50 LOOP
        SELECT string_agg(format('%L, to_jsonb(s.%I)', f, f), ', ') INTO v_part FROM unnest(a.fields[i + 1:i + 50]) f;
        v_fields := v_fields || format(' || jsonb_build_object(%s)', v_part);
    END LOOP;
    RETURN format($f$
        SELECT %7$s m.id, %1$L::text AS object,
               CASE WHEN m.ok THEN m.owner ELSE '' END AS owner,
               CASE WHEN m.ok THEN m.parent END AS parent,
               CASE WHEN m.ok THEN m.fields ELSE '{}'::jsonb END AS fields,
               CASE WHEN m.ok THEN m.territories ELSE '{}'::text[] END AS territories
        FROM (SELECT r.*, coalesce(octet_length(r.owner) BETWEEN 1 AND 1024
                  AND coalesce(octet_length(r.parent), 0) <= 1024
                  AND cardinality(r.territories) <= 1000 AND array_position(r.territories, NULL) IS NULL
                  AND octet_length(r.fields::text) <= 1048576
                  AND NOT jsonb_path_exists(r.fields, 'strict $.* ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))')
                  %8$s, false) AS ok
              FROM (SELECT %2$L || (s.%3$I)::text AS id, (s.%4$I)::text AS owner, %5$s AS parent, %6$s AS fields,
                           %9$s AS territories
                    FROM %10$s s WHERE %11$s) r) m
        WHERE octet_length(m.id) <= 1024 %12$s$f$,
        a.object, a.object || ':', a.id_col, a.owner_col,
        CASE WHEN a.parent_col IS NULL THEN 'NULL::text' ELSE format('%L || (s.%I)::text', a.parent_object || ':', a.parent_col) END,
        v_fields,
        CASE WHEN a.is_view THEN 'DISTINCT ON (m.id)' ELSE '' END,
        CASE WHEN a.is_view THEN 'AND count(*) OVER (PARTITION BY r.id) = 1' ELSE '' END,
        CASE WHEN a.territories_col IS NULL THEN '''{}''::text[]' ELSE format('coalesce(s.%I, ''{}'')', a.territories_col) END,
        p_from, p_where,
        CASE WHEN a.is_view THEN 'ORDER BY m.id' ELSE '' END);
END $$;

-- attach_upsert_sql wraps a rows query: insert the rows, or update the
-- records whose values differ (an unchanged row writes nothing). A record
-- of another object holding the key is never taken over: the row is then
-- not mirrored (fails closed; imports refuse such keys, internal/store).
CREATE FUNCTION recalc.attach_upsert_sql(p_rows text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
        INSERT INTO recalc.record AS r (id, object, owner, parent, fields, territories)
        SELECT * FROM (%s) x
        ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, parent = excluded.parent,
            fields = excluded.fields, territories = excluded.territories
        WHERE r.object = excluded.object AND (r.object, r.owner, r.parent, r.fields, r.territories)
              IS DISTINCT FROM (excluded.object, excluded.owner, excluded.parent, excluded.fields, excluded.territories)$f$, p_rows)
$$;

-- attach_sync_sql returns the statement that makes the records of
-- attachment a equal its source's rows: all of them, or (p_keyed) those
-- whose id is in the text array $1. Records of the object that the source
-- no longer holds are deleted through recalc.record's delete path, so their
-- shares and team entries go with them.
CREATE FUNCTION recalc.attach_sync_sql(a recalc.attachment, p_keyed boolean) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_where text := CASE WHEN p_keyed THEN format('s.%I = ANY($1::%s[])', a.id_col, a.id_type) ELSE 'true' END;
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

-- attach_guard_sql: the checks every capture function makes first. It runs
-- with the engine's rights, so it refuses to run but as the AFTER statement
-- trigger of the one table it was made for, registered for its object, and
-- while the columns it reads still have the types and collations they had
-- when attached (a changed type could bring a cast that runs the table
-- owner's code; a nondeterministic collation makes ids equal that differ),
-- and while the object's capture is complete (recalc.attach_check).
CREATE FUNCTION recalc.attach_guard_sql(c recalc.attach_capture) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
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
    PERFORM recalc.attach_check(%2$L);$f$, c.relid, c.object, c.func, c.source, c.cols, c.types, c.colls)
$$;

-- attach_table_body: the capture of an attached table reads the rows
-- written from the transition tables, set-based, and writes only the records
-- whose mirrored values changed.
CREATE FUNCTION recalc.attach_table_body(a recalc.attachment, c recalc.attach_capture) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN format($f$
BEGIN
%1$s
    IF TG_OP = 'INSERT' THEN
        %2$s;
    ELSIF TG_OP = 'UPDATE' THEN
        DELETE FROM recalc.record d USING (SELECT %4$L || (s.%5$I)::text AS id FROM old_rows s
                                           EXCEPT SELECT %4$L || (s.%5$I)::text FROM new_rows s) g
        WHERE d.id = g.id AND d.object = %6$L;
        %3$s;
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM recalc.record d USING (SELECT %4$L || (s.%5$I)::text AS id FROM old_rows s) g
        WHERE d.id = g.id AND d.object = %6$L;
    ELSE
        DELETE FROM recalc.record WHERE object = %6$L;
    END IF;
    RETURN NULL;
END$f$,
        recalc.attach_guard_sql(c),
        recalc.attach_upsert_sql(recalc.attach_rows_sql(a, 'new_rows', 'true')),
        recalc.attach_upsert_sql(recalc.attach_rows_sql(a, 'new_rows', 'true') || ' EXCEPT ' || recalc.attach_rows_sql(a, 'old_rows', 'true')),
        a.object || ':', a.id_col, a.object);
END $$;

-- attach_view_body: the capture of a base table of an attached view takes
-- the ids of the rows written (key_col), locks them (a transaction-scoped
-- advisory lock per record), and only then re-reads the view for those ids
-- in a new statement, whose snapshot sees every transaction that wrote them
-- before: two transactions changing one record through two base tables
-- never leave the first one's view of it. That needs READ COMMITTED, where
-- each statement takes a new snapshot; under a stricter isolation level it
-- refuses rather than lose a change. TRUNCATE re-reads the whole view.
CREATE FUNCTION recalc.attach_view_body(a recalc.attachment, c recalc.attach_capture) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN format($f$
DECLARE
    v_keys text[];
BEGIN
%1$s
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'writes to %%, a base table of the view attached for object %%, must run in READ COMMITTED transactions', %5$L, %4$L
            USING HINT = 'a stricter isolation level cannot see the concurrent writes the view combines';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE %3$L;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT (s.%2$I)::text) INTO v_keys FROM new_rows s;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(DISTINCT k) INTO v_keys FROM (SELECT (s.%2$I)::text FROM old_rows s UNION SELECT (s.%2$I)::text FROM new_rows s) x(k);
    ELSE
        SELECT array_agg(DISTINCT (s.%2$I)::text) INTO v_keys FROM old_rows s;
    END IF;
    v_keys := array_remove(v_keys, NULL);
    IF cardinality(v_keys) > 0 THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(%6$L || k, 0)) FROM unnest(v_keys) k ORDER BY k;
        EXECUTE %7$L USING v_keys;
    END IF;
    RETURN NULL;
END$f$,
        recalc.attach_guard_sql(c), c.key_col, recalc.attach_sync_sql(a, false), a.object, c.source,
        'recalc.attach:' || a.object || ':', recalc.attach_sync_sql(a, true));
END $$;

-- attach_install (re)creates the capture functions and triggers of an
-- attached object, as recorded in recalc.attachment and
-- recalc.attach_capture, and backfills its records from the source. Run by
-- the engine (`recalc attach`) in the transaction that registered them:
-- CREATE TRIGGER locks each table SHARE ROW EXCLUSIVE until commit, so no
-- write falls between the backfill, whose statement starts after the locks,
-- and the triggers. Before the backfill it runs recalc.attach_check, as every
-- capture does, and it rewrites recalc.record_attached_guard.
CREATE FUNCTION recalc.attach_install(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off AS $$
DECLARE
    a recalc.attachment;
    c recalc.attach_capture;
    v_op text;
    v_ref text;
    v_rows bigint;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
    FOR c IN SELECT * FROM recalc.attach_capture WHERE object = p_object ORDER BY relid LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS recalc.%I() CASCADE', c.func);
        EXECUTE format('CREATE FUNCTION recalc.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                       'SET search_path = pg_catalog, pg_temp SET row_security = off AS %L', c.func,
                       CASE WHEN a.is_view THEN recalc.attach_view_body(a, c) ELSE recalc.attach_table_body(a, c) END);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION recalc.%I() FROM PUBLIC', c.func);
        FOREACH v_op IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] LOOP
            v_ref := CASE v_op WHEN 'INSERT' THEN 'REFERENCING NEW TABLE AS new_rows'
                               WHEN 'UPDATE' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                               WHEN 'DELETE' THEN 'REFERENCING OLD TABLE AS old_rows' ELSE '' END;
            EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION recalc.%I()',
                           c.func || '_' || lower(v_op), v_op, c.source, v_ref, c.func);
        END LOOP;
    END LOOP;
    PERFORM recalc.attach_check(p_object);
    PERFORM recalc.attach_writer_guard();
    EXECUTE recalc.attach_sync_sql(a, false);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_rows;
END $$;

-- attach_drop_capture drops an object's capture functions (their triggers
-- go with them: DROP ... CASCADE needs no ownership of the application's
-- tables) and unregisters its capture tables; its records stay.
CREATE FUNCTION recalc.attach_drop_capture(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_func text;
BEGIN
    FOR v_func IN SELECT func FROM recalc.attach_capture WHERE object = p_object ORDER BY func LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS recalc.%I() CASCADE', v_func);
    END LOOP;
    DELETE FROM recalc.attach_capture WHERE object = p_object;
END $$;

-- attach_remove detaches an object: drops its capture, deletes its records
-- through the normal delete path, so their shares and team entries go too,
-- and unregisters it. It returns how many records it deleted.
CREATE FUNCTION recalc.attach_remove(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rows bigint;
BEGIN
    PERFORM recalc.attach_drop_capture(p_object);
    DELETE FROM recalc.record WHERE object = p_object;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    DELETE FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_writer_guard();
    RETURN v_rows;
END $$;

-- attach_complete: the capture of the object sees every write of its
-- source. Every capture trigger is in place and enabled (the owner of an
-- application table may drop or disable them); every captured table, and
-- every relation an attached view reads, is a plain table with neither
-- parent nor children (statement triggers are not cloned to partitions or
-- inheritance children, and a table without triggers can be turned into a
-- view that would run its owner's code with the engine's rights); an
-- attached view reads no table its capture does not list; an attached
-- table still has its unique index on the id column alone. `recalc attach`
-- rebuilds what it can; the capture refuses to run until then.
CREATE FUNCTION recalc.attach_complete(p_object text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT count(*) FROM recalc.attach_capture c
            JOIN pg_proc p ON p.proname = c.func AND p.pronamespace = 'recalc'::regnamespace
            JOIN pg_trigger t ON t.tgfoid = p.oid AND t.tgrelid = c.relid AND t.tgenabled IN ('O', 'A')
            WHERE c.object = p_object)
         = 4 * (SELECT count(*) FROM recalc.attach_capture c WHERE c.object = p_object)
       AND NOT EXISTS (
            SELECT 1 FROM (SELECT c.relid FROM recalc.attach_capture c WHERE c.object = p_object
                           UNION
                           SELECT d.refobjid FROM recalc.attachment a
                           JOIN pg_rewrite r ON r.ev_class = a.relid
                           JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> a.relid
                           WHERE a.object = p_object AND a.is_view) x
            LEFT JOIN pg_class k ON k.oid = x.relid
            WHERE k.oid IS NULL OR k.relkind <> 'r' OR k.relhassubclass OR k.relispartition
               OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = k.oid)
               OR NOT EXISTS (SELECT 1 FROM recalc.attach_capture c WHERE c.object = p_object AND c.relid = x.relid))
       AND NOT EXISTS (
            SELECT 1 FROM recalc.attachment a WHERE a.object = p_object AND NOT a.is_view AND NOT EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0]
                WHERE i.indrelid = a.relid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1
                  AND i.indpred IS NULL AND i.indexprs IS NULL AND t.attname = a.id_col))
$$;

-- attach_check, run by every capture before it reads or writes anything,
-- and by attach_install before the backfill: it locks every captured table
-- (ACCESS SHARE: no DROP TRIGGER, CREATE RULE or ALTER TABLE until the
-- transaction ends) and only then checks that the capture is complete.
CREATE FUNCTION recalc.attach_check(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel text;
BEGIN
    FOR v_rel IN SELECT format('%I.%I', n.nspname, k.relname) FROM recalc.attach_capture c
                 JOIN pg_class k ON k.oid = c.relid JOIN pg_namespace n ON n.oid = k.relnamespace
                 WHERE c.object = p_object ORDER BY c.relid LOOP
        EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', v_rel);
    END LOOP;
    IF NOT recalc.attach_complete(p_object) THEN
        RAISE EXCEPTION 'the capture of object % is incomplete: a capture trigger is missing or disabled, a table it reads is no longer a plain table without parent or children, or its id column lost its unique index', p_object
            USING HINT = 'run `recalc attach` again (`recalc attach --list` shows which object)';
    END IF;
END $$;

-- record_attached_guard: the records of an attached object are its
-- source's rows; no role but the schema's owner (whose capture functions
-- write them) may insert, update or delete them in recalc.record. It runs
-- with the caller's rights (current_user is the writer, or the owner inside
-- a capture), so it reads no table: attach_writer_guard rewrites it with
-- the attached objects as a literal whenever they change. The owner pays
-- one catalog lookup.
CREATE FUNCTION recalc.record_attached_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NULL; END $$;

CREATE FUNCTION recalc.attach_writer_guard() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_objects text[];
BEGIN
    SELECT coalesce(array_agg(object ORDER BY object), '{}') INTO v_objects FROM recalc.attachment;
    EXECUTE format('CREATE OR REPLACE FUNCTION recalc.record_attached_guard() RETURNS trigger '
                   'LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L', format($f$
DECLARE
    v_hit boolean := false;
BEGIN
    IF TG_RELID IS DISTINCT FROM 'recalc.record'::regclass OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.record_attached_guard() runs only as an AFTER statement trigger of recalc.record';
    END IF;
    IF cardinality(%1$L::text[]) = 0
       OR current_user = (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'recalc') THEN
        RETURN NULL;
    END IF;
    -- (each transition table in its own statement: only those of TG_OP exist)
    IF TG_OP <> 'DELETE' THEN
        v_hit := EXISTS (SELECT 1 FROM new_rows WHERE object = ANY (%1$L::text[]));
    END IF;
    IF TG_OP <> 'INSERT' AND NOT v_hit THEN
        v_hit := EXISTS (SELECT 1 FROM old_rows WHERE object = ANY (%1$L::text[]));
    END IF;
    IF v_hit THEN
        RAISE EXCEPTION 'records of an attached object are written by its table''s capture only'
            USING ERRCODE = '42501', HINT = 'write the application table instead (`recalc attach --list` shows which objects are attached)';
    END IF;
    RETURN NULL;
END$f$, v_objects));
    EXECUTE 'REVOKE EXECUTE ON FUNCTION recalc.record_attached_guard() FROM PUBLIC';
END $$;
SELECT recalc.attach_writer_guard();

CREATE TRIGGER record_attached_guard_insert AFTER INSERT ON recalc.record
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION recalc.record_attached_guard();
CREATE TRIGGER record_attached_guard_update AFTER UPDATE ON recalc.record
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION recalc.record_attached_guard();
CREATE TRIGGER record_attached_guard_delete AFTER DELETE ON recalc.record
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION recalc.record_attached_guard();

REVOKE EXECUTE ON FUNCTION recalc.attach_complete(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION recalc.attach_rows_sql(recalc.attachment, text, text), recalc.attach_upsert_sql(text),
    recalc.attach_sync_sql(recalc.attachment, boolean), recalc.attach_guard_sql(recalc.attach_capture),
    recalc.attach_table_body(recalc.attachment, recalc.attach_capture),
    recalc.attach_view_body(recalc.attachment, recalc.attach_capture),
    recalc.attach_install(text), recalc.attach_drop_capture(text), recalc.attach_remove(text),
    recalc.attach_check(text), recalc.attach_writer_guard() FROM PUBLIC;
