-- recalc schema, version 74: a write to a table an object is attached
-- through a view of, committed just before an import with shares or team
-- entries, no longer wipes what the import wrote.
--
-- Version 72 ordered an import with shares or team entries after the
-- writes to attached tables that mark an owner change or a row gone. A
-- capture of a view's base table marks none: the view makes the owner and
-- the rows, so any write to any of its base tables (an owner column, a join
-- table, a row deleted) may change a record's owner or take it away, which
-- only the absorb that reads the view tells. So the import's last absorb
-- (AbsorbMarked) left such writes alone, and one that committed after the
-- import's first absorb, before the import, was absorbed at the next run:
-- its owner change wiped the manual share the import added, though it
-- committed first (TestImportBesideAViewOwnerChange; found by attacking
-- version 72 as the application's role).
--
-- Now every statement a view's capture logs takes row 4 of
-- recalc.engine_lock FOR KEY SHARE, as a marked write to a table does (its
-- change row stays unmarked: the absorb reads the view as before), and the
-- import's last absorb also takes the writes logged for objects attached
-- through views (internal/changes.AbsorbMarked). The import so waits, at
-- its last absorb, for the open transactions that wrote a view's base
-- table, --lock-timeout at most, as for an open owner change in a table.
-- The users' capture takes no lock: an import never carries users while
-- they are attached.

-- attach_capture_body as in version 72, but a view's capture (not the
-- users') locks row 4 whenever it logs a change row.
CREATE OR REPLACE FUNCTION recalc.attach_capture_body(c recalc.attach_capture) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a recalc.attachment;
    v_records boolean; -- the captured table holds the object's records
    v_updated text;
    v_view boolean; -- a view's capture, not the users': every logged statement takes the lock (version 74)
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment t WHERE t.object = c.object;
    v_view := a.is_view AND a.object <> 'users';
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
DECLARE
    v_logged boolean;         -- a change row was logged
    v_marked boolean := false; -- one of them marks an effect (gone, reowned)
BEGIN%6$s
%1$s
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, object, keys) SELECT 'attached', %2$L, array_agg((s.%3$I)::text) FROM new_rows s HAVING count(*) > 0;
        v_logged := FOUND;
    ELSIF TG_OP = 'UPDATE' THEN
        WITH logged AS (INSERT INTO recalc.change (kind, object, keys, effect)
                        SELECT 'attached', %2$L, array_agg(x.k), x.e FROM (%4$s) x(k, e) GROUP BY x.e RETURNING effect)
        SELECT count(*) > 0, coalesce(bool_or(effect IS NOT NULL), false) INTO v_logged, v_marked FROM logged;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO recalc.change (kind, object, keys, effect) SELECT 'attached', %2$L, array_agg((s.%3$I)::text), %5$L FROM old_rows s HAVING count(*) > 0;
        v_logged := FOUND;
        v_marked := FOUND AND %5$L IS NOT NULL;
    ELSE
        INSERT INTO recalc.change (kind, object, keys, effect) VALUES ('attached_all', %2$L, '{}', %5$L);
        v_logged := true;
        v_marked := %5$L IS NOT NULL;
    END IF;
    IF v_marked OR (%7$L AND v_logged) THEN -- held to the commit: an import with shares or team entries waits for it (versions 72, 74)
        PERFORM FROM recalc.engine_lock WHERE scope = 4 FOR KEY SHARE;
    END IF;
    IF v_logged AND coalesce(current_setting('recalc.notify', true), '') <> 'off' THEN
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
        PERFORM FROM recalc.engine_lock WHERE scope = 4 FOR KEY SHARE;
        RETURN NULL;
    END IF;$r$, c.relid, c.object, c.func, c.func || '_pin', c.source, c.key_col) ELSE '' END, v_view);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_capture_body(recalc.attach_capture) FROM PUBLIC;

-- The captures installed now get the new body in place, as in version 72: their functions
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
