-- recalc schema, version 21: the engine re-reads attached tables as a
-- sandbox role (SECURITY.md, "The sandbox role").
--
-- PostgreSQL's planner runs constant calls of immutable functions in the
-- index predicates and expressions, and the statistics expressions, of
-- every table a query reads, as the role planning the query. Version 20
-- refuses to read a captured table whose indexes or statistics call code no
-- superuser owns (attach_foreign_code), but the absorb can hold the table
-- only in ACCESS SHARE mode, which CREATE INDEX and CREATE STATISTICS do not
-- wait for: a table owner who added such an index between the absorb's
-- check and the planning of its re-read had its code run with the engine's
-- rights. Now every read of an attached source:
--   * goes through a view the engine owns, recalc.attach_<hash>_src, which
--     selects the attached columns only (so permissions and row-level
--     security are checked as the engine, the view's owner);
--   * is planned and run by recalc.attach_read, a SECURITY DEFINER function
--     owned by the sandbox role (the engine's name followed by _sandbox): a
--     NOLOGIN role with no attribute, member of no role, whose only member is
--     the engine, and whose only rights are USAGE on schema recalc and,
--     during one read, SELECT on that object's view. Inside a SECURITY
--     DEFINER function PostgreSQL refuses SET ROLE and SET SESSION
--     AUTHORIZATION, so code the planner runs there has the sandbox's
--     rights and no way out of them;
--   * runs in a subtransaction that recalc.attach_sandboxed always rolls
--     back, keeping only the rows returned: whatever such code changed (a
--     setting such as search_path, a temporary table, a grant, a NOTIFY, the
--     reader function itself, the grant on the view) is undone before the
--     engine goes on; session advisory locks are released; and the
--     session's prepared statements, which no rollback undoes and pgx runs
--     by name, are compared before and after: a difference fails the read
--     with RC004, after which the engine drops them all
--     (internal/changes.Absorb).
-- Each object's absorb is now a statement of its own (attach_absorb_begin,
-- then attach_absorb_one per object), which the engine runs under a
-- statement_timeout, and which turns any failure, a cancel included, into
-- its SQLSTATE. Reads are made in slices of at most 5,000 ids (a whole
-- re-read reads the ids first), halved while their rows do not fit one
-- array, so that the rows held in memory stay bounded.
-- Every statement is safe to run again on an upgraded database.

DO $$ BEGIN
    CREATE TYPE recalc.attach_row AS (id text, object text, owner text, parent text, fields jsonb, territories text[]);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- attach_sandbox_role: the sandbox role's name, the engine's (schema
-- recalc's owner) followed by _sandbox; an engine name over 55 bytes is
-- replaced by its md5, so that the name fits PostgreSQL's 63 bytes.
CREATE OR REPLACE FUNCTION recalc.attach_sandbox_role() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_engine text;
BEGIN
    SELECT r.rolname INTO v_engine FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'recalc';
    RETURN CASE WHEN octet_length(v_engine) <= 55 THEN v_engine ELSE md5(v_engine) END || '_sandbox';
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sandbox_role() FROM PUBLIC;

-- attach_read_view: the view through which object p_object's source is read.
CREATE OR REPLACE FUNCTION recalc.attach_read_view(p_object text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('recalc.%I', 'attach_' || left(md5(p_object), 16) || '_src')
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_read_view(text) FROM PUBLIC;

-- The reader's body. attach_sandbox_install creates the function as the
-- sandbox role; attach_sandbox_fault compares the installed one with it.
CREATE OR REPLACE FUNCTION recalc.attach_read_body() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT $b$
DECLARE
    v recalc.attach_row[];
BEGIN
    EXECUTE 'SELECT array_agg(x::recalc.attach_row) FROM (' || p_sql || ') x' INTO v USING p_keys;
    RETURN coalesce(v, '{}');
END$b$
$f$;
REVOKE EXECUTE ON FUNCTION recalc.attach_read_body() FROM PUBLIC;

-- attach_sandbox_fault says why reads cannot run in the sandbox, or NULL.
CREATE OR REPLACE FUNCTION recalc.attach_sandbox_fault() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fault text;
BEGIN
    -- PL/pgSQL keeps this statement's plan: it runs before every read.
    SELECT CASE
        WHEN r.oid IS NULL THEN format('role %I does not exist', v.name)
        WHEN r.rolsuper OR r.rolcanlogin OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
            THEN format('role %I must be NOLOGIN with no other attribute', v.name)
        WHEN EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid)
            THEN format('role %I must be a member of no role', v.name)
        WHEN EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = r.oid AND m.member <> v.engine)
            THEN format('role %I must have no member but %I', v.name, v.engine::regrole)
        WHEN NOT pg_has_role(v.engine, r.oid, 'MEMBER') THEN format('role %I must be granted to %I', v.name, v.engine::regrole)
        WHEN NOT EXISTS (SELECT 1 FROM pg_proc p
                         WHERE p.pronamespace = v.nsp AND p.proname = 'attach_read' AND p.proargtypes = '25 1009'::oidvector
                           AND p.proowner = r.oid AND p.prosecdef AND p.prosrc = v.body
                           AND p.proconfig = '{"search_path=pg_catalog, pg_temp",row_security=off,TimeZone=UTC,extra_float_digits=1}'::text[])
            THEN format('recalc.attach_read is missing or is not the one role %I must own', v.name)
    END INTO v_fault
    FROM (SELECT recalc.attach_sandbox_role() AS name, n.nspowner AS engine, n.oid AS nsp, recalc.attach_read_body() AS body
          FROM pg_namespace n WHERE n.nspname = 'recalc') v
    LEFT JOIN pg_roles r ON r.rolname = v.name;
    RETURN v_fault;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sandbox_fault() FROM PUBLIC;

-- attach_sandbox_check raises RC003 unless reads can run in the sandbox.
CREATE OR REPLACE FUNCTION recalc.attach_sandbox_check() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fault text := recalc.attach_sandbox_fault();
BEGIN
    IF v_fault IS NOT NULL THEN
        RAISE EXCEPTION 'recalc cannot read attached tables safely: %', v_fault USING ERRCODE = 'RC003',
            HINT = 'see SECURITY.md, "The sandbox role"; then run `recalc attach` again';
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sandbox_check() FROM PUBLIC;

-- attach_sandbox_install makes the sandbox ready: it creates the role when
-- the engine may (a superuser, or CREATEROLE), else says what an
-- administrator must run, and (re)creates recalc.attach_read as the role.
-- The role gets CREATE on schema recalc only for that statement.
CREATE OR REPLACE FUNCTION recalc.attach_sandbox_install() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_role text := recalc.attach_sandbox_role();
    v_engine text := (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'recalc');
    v_saved text := current_setting('role');
    v_body text := recalc.attach_read_body(); -- read as the engine: the role may not run it
    v_fault text;
BEGIN
    IF recalc.attach_sandbox_fault() IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            RAISE EXCEPTION 'role % does not exist: recalc reads attached tables as that role, and % may not create it', v_role, v_engine
                USING ERRCODE = 'undefined_object',
                      HINT = format('as an administrator run: CREATE ROLE %I NOLOGIN; GRANT %I TO %s; then run `recalc attach` again', v_role, v_role, v_engine);
        END IF;
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- created meanwhile by another database's recalc
        END;
    END IF;
    IF NOT pg_has_role(v_engine, v_role, 'MEMBER')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
        EXECUTE format('GRANT %I TO %s', v_role, v_engine);
    END IF;
    v_fault := recalc.attach_sandbox_fault();
    IF v_fault IS NOT NULL AND v_fault NOT LIKE 'recalc.attach_read %' THEN
        RAISE EXCEPTION 'recalc cannot read attached tables safely: %', v_fault USING ERRCODE = 'RC003',
            HINT = 'as an administrator, fix the role as the message says (SECURITY.md, "The sandbox role"); then run `recalc attach` again';
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA recalc TO %I', v_role);
    PERFORM set_config('role', v_role, true);
    DROP FUNCTION IF EXISTS recalc.attach_read(text, text[]);
    EXECUTE format('CREATE FUNCTION recalc.attach_read(p_sql text, p_keys text[]) RETURNS recalc.attach_row[] '
                   'LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off '
                   'SET TimeZone = ''UTC'' SET extra_float_digits = 1 AS %L', v_body);
    REVOKE EXECUTE ON FUNCTION recalc.attach_read(text, text[]) FROM PUBLIC;
    EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.attach_read(text, text[]) TO %s', v_engine);
    PERFORM set_config('role', v_saved, true);
    EXECUTE format('REVOKE CREATE ON SCHEMA recalc FROM %I', v_role);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sandbox_install() FROM PUBLIC;

-- attach_source_install (re)creates object p_object's read view, over the
-- attached table (ONLY: no child a table's owner adds for a moment is read)
-- or view, with the attached columns only. The sandbox may read it only
-- while attach_sandboxed reads it for this object.
-- The view depends on those columns: PostgreSQL refuses to drop them or
-- change their type, or to drop the table, while the object is attached
-- (docs/attach.md).
CREATE OR REPLACE FUNCTION recalc.attach_source_install(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a recalc.attachment;
    v_view text := recalc.attach_read_view(p_object);
    v_cols text;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
    SELECT string_agg(format('%I', c), ', ' ORDER BY c) INTO v_cols
    FROM (SELECT DISTINCT c FROM unnest(ARRAY[a.id_col, a.owner_col, a.parent_col, a.territories_col] || a.fields) c WHERE c IS NOT NULL) x;
    EXECUTE format('DROP VIEW IF EXISTS %s', v_view);
    EXECUTE format('CREATE VIEW %s AS SELECT %s FROM %s%s', v_view, v_cols, CASE WHEN a.is_view THEN '' ELSE 'ONLY ' END, a.relid::regclass);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_source_install(text) FROM PUBLIC;

-- attach_ready: what reads of object p_object need, made ready.
CREATE OR REPLACE FUNCTION recalc.attach_ready(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM recalc.attach_sandbox_install();
    PERFORM recalc.attach_source_install(p_object);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_ready(text) FROM PUBLIC;

-- attach_session_state sums up the session's prepared statements, which no
-- rollback undoes and the engine relies on: pgx runs its cached statements
-- by name, without parsing them again.
CREATE OR REPLACE FUNCTION recalc.attach_session_state() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT coalesce(string_agg(p.name || ' ' || p.prepare_time, ',' ORDER BY p.name), '') FROM pg_prepared_statements p);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_session_state() FROM PUBLIC;

-- attach_sandboxed runs p_sql (a query of recalc.attach_row's columns that
-- reads the read view p_view and may use the text array $1) as the sandbox
-- role, and rolls back all it did but its result: the grant on p_view
-- that lets the sandbox read it too, so that code running in one object's
-- read can read no other object's view. What no rollback undoes is dealt
-- with: session advisory locks are released (the engine holds none of its
-- own: its locks are row locks and transaction advisory locks), and a read
-- that changed the session's prepared statements fails with RC004,
-- whatever else happened, after which the engine drops them all
-- (internal/changes.Absorb) before it runs another statement. A read that
-- fails, or that raises the rollback's own SQLSTATE itself, fails the
-- caller.
CREATE OR REPLACE FUNCTION recalc.attach_sandboxed(p_view text, p_sql text, p_keys text[]) RETURNS recalc.attach_row[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v recalc.attach_row[];
    v_done boolean := false;
    v_state text;
BEGIN
    PERFORM recalc.attach_sandbox_check();
    v_state := recalc.attach_session_state();
    BEGIN
        EXECUTE format('GRANT SELECT ON %s TO %I', p_view, recalc.attach_sandbox_role());
        v := recalc.attach_read(p_sql, p_keys);
        v_done := true;
        RAISE EXCEPTION 'undo the read' USING ERRCODE = 'RC900';
    EXCEPTION WHEN OTHERS OR query_canceled OR assert_failure THEN
        PERFORM pg_advisory_unlock_all();
        IF recalc.attach_session_state() IS DISTINCT FROM v_state THEN
            RAISE EXCEPTION 'a read of an attached source changed the session''s prepared statements'
                USING ERRCODE = 'RC004';
        END IF;
        IF SQLSTATE <> 'RC900' THEN
            RAISE;
        ELSIF NOT v_done THEN
            RAISE EXCEPTION 'a read of an attached source raised SQLSTATE RC900' USING ERRCODE = 'RC003';
        END IF;
    END;
    RETURN v;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sandboxed(text, text, text[]) FROM PUBLIC;

-- attach_apply makes the records of attachment a whose ids (the source's,
-- as text) are p_keys equal p_rows, the rows read for them: records the
-- rows no longer hold are deleted through recalc.record's delete path, the
-- others inserted or updated when their values differ. A record of another
-- object holding the key is never taken over (fails closed). It returns
-- how many records it inserted or updated.
CREATE OR REPLACE FUNCTION recalc.attach_apply(a recalc.attachment, p_keys text[], p_rows recalc.attach_row[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_n bigint;
BEGIN
    -- EXECUTE: planned for these arrays' sizes each time (a cached generic
    -- plan guessed them and ran the anti-join as a nested loop).
    EXECUTE format($q$
        WITH src AS MATERIALIZED (SELECT * FROM unnest($3::recalc.attach_row[])),
        gone AS (DELETE FROM recalc.record d
                 WHERE d.object = $1 AND d.id IN (SELECT $1 || ':' || k FROM unnest($2::text[]) k)
                   AND NOT EXISTS (SELECT 1 FROM src WHERE src.id = d.id))
        %s$q$, recalc.attach_upsert_sql('SELECT * FROM src'))
    USING a.object, p_keys, p_rows;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_apply(recalc.attachment, text[], recalc.attach_row[]) FROM PUBLIC;

-- attach_sync reads, in the sandbox, the rows of attachment a with the ids
-- p_keys (as text), or with p_keys NULL every id its source holds (records
-- whose id it no longer holds are deleted), and writes them
-- (attach_apply), 5,000 ids at a time, fewer when their rows do not fit
-- one array (attach_sync_slice). It returns how many records it inserted
-- or updated. Its caller has locked and checked the source; a read view
-- that the table's owner dropped (DROP COLUMN ... CASCADE) is made again.
CREATE OR REPLACE FUNCTION recalc.attach_sync(a recalc.attachment, p_keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_view text := recalc.attach_read_view(a.object);
    v_rows text := recalc.attach_rows_sql(a, v_view,
        format('s.%I IN (SELECT k::%s FROM unnest($1::text[]) k)', a.id_col, a.id_type));
    v_keys text[] := p_keys;
    v_slice text[];
    v_n bigint := 0;
BEGIN
    PERFORM recalc.attach_sandbox_check();
    IF to_regclass(v_view) IS NULL THEN
        PERFORM recalc.attach_source_install(a.object);
    END IF;
    IF v_keys IS NULL THEN
        SELECT coalesce(array_agg(x.id), '{}') INTO v_keys
        FROM unnest(recalc.attach_sandboxed(v_view, format(
            'SELECT DISTINCT (s.%1$I)::text, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::text[] FROM %2$s s WHERE s.%1$I IS NOT NULL',
            a.id_col, v_view), NULL)) x;
        EXECUTE 'DELETE FROM recalc.record d WHERE d.object = $1
                 AND NOT EXISTS (SELECT 1 FROM unnest($2::text[]) k WHERE $1 || '':'' || k = d.id)' USING a.object, v_keys;
    END IF;
    -- Each slice built once (a slice of a large array walks it whole).
    FOR v_slice IN SELECT array_agg(u.k ORDER BY u.n) FROM unnest(v_keys) WITH ORDINALITY u(k, n)
                   GROUP BY (u.n - 1) / 5000 ORDER BY (u.n - 1) / 5000 LOOP
        v_n := v_n + recalc.attach_sync_slice(a, v_view, v_rows, v_slice);
    END LOOP;
    RETURN v_n;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync(recalc.attachment, text[]) FROM PUBLIC;

-- attach_sync_slice reads and writes the rows of one slice of ids, in
-- halves when the rows read do not fit one array (1 GB: fields may hold up
-- to 1 MB a row).
CREATE OR REPLACE FUNCTION recalc.attach_sync_slice(a recalc.attachment, p_view text, p_rows text, p_keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_half int := cardinality(p_keys) / 2;
BEGIN
    RETURN recalc.attach_apply(a, p_keys, recalc.attach_sandboxed(p_view, p_rows, p_keys));
EXCEPTION WHEN program_limit_exceeded THEN
    IF v_half = 0 THEN
        RAISE;
    END IF;
    RETURN recalc.attach_sync_slice(a, p_view, p_rows, p_keys[1:v_half])
         + recalc.attach_sync_slice(a, p_view, p_rows, p_keys[v_half + 1:]);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_sync_slice(recalc.attachment, text, text, text[]) FROM PUBLIC;

-- attach_rows_sql as in version 20, but p_from is always a read view: the
-- ONLY a table needs is in the view.
CREATE OR REPLACE FUNCTION recalc.attach_rows_sql(a recalc.attachment, p_from text, p_where text) RETURNS text
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
               CASE WHEN m.owner_ok THEN m.owner ELSE '' END AS owner,
               CASE WHEN m.ok THEN m.parent END AS parent,
               CASE WHEN m.ok THEN m.fields ELSE '{}'::jsonb END AS fields,
               CASE WHEN m.ok THEN m.territories WHEN m.owner_ok THEN '{""}'::text[] ELSE '{}'::text[] END AS territories
        FROM (SELECT o.*, o.owner_ok AND coalesce(coalesce(octet_length(o.parent), 0) <= 1024
                  AND cardinality(o.territories) <= 1000 AND array_position(o.territories, NULL) IS NULL
                  AND octet_length(o.fields::text) <= 1048576
                  AND NOT jsonb_path_exists(o.fields, 'strict $.* ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))')
                  %8$s, false) AS ok
              FROM (SELECT r.*, coalesce(octet_length(r.owner) BETWEEN 1 AND 1024, false) AS owner_ok
                    FROM (SELECT %2$L || (s.%3$I)::text AS id, (s.%4$I)::text AS owner, %5$s AS parent, %6$s AS fields,
                                 %9$s AS territories
                          FROM %10$s s WHERE %11$s) r) o) m
        WHERE octet_length(m.id) <= 1024 %12$s$f$,
        a.object, a.object || ':', a.id_col, a.owner_col,
        CASE WHEN a.parent_col IS NULL THEN 'NULL::text' ELSE format('%L || (s.%I)::text', a.parent_object || ':', a.parent_col) END,
        v_fields,
        CASE WHEN a.is_view THEN 'DISTINCT ON (m.id)' ELSE '' END,
        CASE WHEN a.is_view THEN 'AND count(*) OVER (PARTITION BY o.id) = 1' ELSE '' END,
        CASE WHEN a.territories_col IS NULL THEN '''{}''::text[]' ELSE format('coalesce(s.%I, ''{}'')', a.territories_col) END,
        p_from, p_where,
        CASE WHEN a.is_view THEN 'ORDER BY m.id, m.owner COLLATE "C"' ELSE '' END);
END $$;

-- The version 10 to 20 form read the source directly, as the engine.
DROP FUNCTION IF EXISTS recalc.attach_sync_sql(recalc.attachment, boolean);

-- attach_drop_capture as in version 10, and the object's read view goes.
CREATE OR REPLACE FUNCTION recalc.attach_drop_capture(p_object text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_func text;
BEGIN
    FOR v_func IN SELECT func FROM recalc.attach_capture WHERE object = p_object ORDER BY func LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS recalc.%I() CASCADE', v_func);
    END LOOP;
    DELETE FROM recalc.attach_capture WHERE object = p_object;
    EXECUTE format('DROP VIEW IF EXISTS %s', recalc.attach_read_view(p_object));
END $$;

-- attach_absorb as in version 20, but it reads through attach_sync, and in
-- two steps that internal/changes.Absorb calls one by one, so that each
-- object's absorb is a statement of its own (with its own
-- statement_timeout): attach_absorb_begin re-queues tables written without
-- their capture and lists the objects to absorb; attach_absorb_one absorbs
-- one object, and turns any failure, a cancel included (code in the read
-- may raise query_canceled), into its SQLSTATE. attach_absorb runs both, for
-- SQL callers.
DROP FUNCTION IF EXISTS recalc.attach_absorb(interval);
CREATE OR REPLACE FUNCTION recalc.attach_absorb_begin(p_retry interval DEFAULT NULL)
RETURNS TABLE (object text, keys bigint, whole boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    -- A captured table written without its capture (see attach_fingerprints)
    -- is read again whole. Under the model lock, as every absorb.
    WITH changed AS (
        UPDATE recalc.attach_capture c SET fingerprint = f.fingerprint FROM recalc.attach_fingerprints() f
        WHERE f.object = c.object AND f.relid = c.relid AND c.fingerprint IS DISTINCT FROM f.fingerprint RETURNING c.object)
    INSERT INTO recalc.change (kind, object, keys) SELECT DISTINCT 'attached_all', x.object, '{}'::text[] FROM changed x;
    RETURN QUERY SELECT c.object, sum(cardinality(c.keys))::bigint, bool_or(c.kind = 'attached_all') FROM recalc.change c
                 WHERE c.kind IN ('attached', 'attached_all')
                   AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry)
                 GROUP BY c.object ORDER BY 1;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_absorb_begin(interval) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_absorb_one(p_object text)
RETURNS TABLE (object text, keys bigint, absorbed boolean, error_code text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off SET lock_timeout = '2s'
    SET TimeZone = 'UTC' SET extra_float_digits = 1 AS $$
DECLARE
    v_notify text := current_setting('recalc.notify', true); -- restored at the end (a function's SET clause may not name it)
    a recalc.attachment;
    v_rel regclass;
    v_name text;
    v_keys text[];
    v_all boolean;
    v_xid xid8;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    PERFORM set_config('recalc.notify', 'off', true);
    object := p_object; keys := 0; absorbed := false; error_code := NULL;
    BEGIN
        -- The object's lock is its registry row, which no other role may take.
        SELECT * INTO a FROM recalc.attachment t WHERE t.object = p_object FOR NO KEY UPDATE;
        IF NOT FOUND THEN -- detached since; recalc.attach_remove deleted its records
            DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object;
            PERFORM set_config('recalc.notify', coalesce(v_notify, ''), true);
            RETURN;
        END IF;
        -- Lock what the re-read reads, by oid, before checking it.
        FOR v_rel IN SELECT x.relid::regclass FROM (SELECT c.relid FROM recalc.attach_capture c WHERE c.object = p_object
                                                    UNION SELECT a.relid) x
                     WHERE EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = x.relid) ORDER BY x.relid LOOP
            v_name := v_rel::text;
            EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', v_name);
            IF to_regclass(v_name) IS DISTINCT FROM v_rel THEN -- renamed meanwhile: the name locked is another's
                RAISE EXCEPTION 'a relation captured for object % was renamed while it was locked', p_object
                    USING ERRCODE = 'lock_not_available';
            END IF;
        END LOOP;
        IF recalc.attach_intact(p_object) THEN
            WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object
                          RETURNING c.kind, c.keys, c.xid)
            SELECT bool_or(g.kind = 'attached_all'), min(g.xid),
                   (SELECT array_agg(DISTINCT k) FROM gone, unnest(gone.keys) k)
            INTO v_all, v_xid, v_keys FROM gone g;
            IF v_xid IS NULL THEN -- another absorb took them
                PERFORM set_config('recalc.notify', coalesce(v_notify, ''), true);
                RETURN;
            END IF;
            IF v_all THEN
                PERFORM recalc.attach_sync(a, NULL);
            ELSIF cardinality(v_keys) > 0 THEN
                PERFORM recalc.attach_sync(a, v_keys);
            END IF;
            PERFORM recalc.change_inherit_xid(v_xid);
            keys := coalesce(cardinality(v_keys), 0); absorbed := true;
        END IF;
    EXCEPTION WHEN OTHERS OR query_canceled OR assert_failure THEN -- never the message: it may quote a row's values
        error_code := SQLSTATE;
    END;
    IF absorbed THEN
        DELETE FROM recalc.attach_stuck s WHERE s.object = p_object;
    ELSE
        INSERT INTO recalc.attach_stuck AS s (object, error_code)
        SELECT p_object, error_code WHERE EXISTS (SELECT FROM recalc.attachment t WHERE t.object = p_object)
        ON CONFLICT ON CONSTRAINT attach_stuck_pkey DO UPDATE SET checked_at = excluded.checked_at, error_code = excluded.error_code,
            since = CASE WHEN s.error_code IS NOT DISTINCT FROM excluded.error_code THEN s.since ELSE excluded.since END;
    END IF;
    PERFORM set_config('recalc.notify', coalesce(v_notify, ''), true);
    RETURN NEXT;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_absorb_one(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.attach_absorb(p_retry interval DEFAULT NULL)
RETURNS TABLE (object text, keys bigint, absorbed boolean, error_code text)
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.* FROM recalc.attach_absorb_begin(p_retry) o, LATERAL recalc.attach_absorb_one(o.object) r
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_absorb(interval) FROM PUBLIC;

-- attach_install as in version 20, but it makes the sandbox and the read
-- view ready first, and reads through attach_sync.
CREATE OR REPLACE FUNCTION recalc.attach_install(p_object text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET row_security = off
    SET TimeZone = 'UTC' SET extra_float_digits = 1 AS $$
DECLARE
    a recalc.attachment;
    v_rows bigint;
    v_xid xid8;
    v_code text;
BEGIN
    SELECT * INTO STRICT a FROM recalc.attachment WHERE object = p_object;
    PERFORM recalc.attach_install_capture(p_object); -- locks each captured table SHARE ROW EXCLUSIVE: no index or DDL until commit
    PERFORM recalc.attach_check(p_object);
    v_code := recalc.attach_foreign_code(p_object);
    IF v_code IS NOT NULL THEN
        RAISE EXCEPTION 'cannot attach object %: % , which is not PostgreSQL''s own; PostgreSQL''s planner may run it with recalc''s rights when recalc reads the table', p_object, v_code
            USING HINT = 'drop that index or statistics object, or build it with pg_catalog functions and operators only, then attach again';
    END IF;
    PERFORM recalc.attach_ready(p_object);
    -- Read what was checked, by oid: the name may be another relation's by now.
    EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', a.relid::regclass);
    IF NOT recalc.attach_intact(p_object) THEN
        RAISE EXCEPTION 'the table or view attached for object % changed while it was being attached', p_object
            USING HINT = 'run `recalc attach` again';
    END IF;
    UPDATE recalc.attach_capture c SET fingerprint = f.fingerprint FROM recalc.attach_fingerprints() f
    WHERE f.object = c.object AND f.relid = c.relid AND c.object = p_object;
    PERFORM recalc.attach_writer_guard();
    WITH gone AS (DELETE FROM recalc.change c WHERE c.kind IN ('attached', 'attached_all') AND c.object = p_object RETURNING c.xid)
    SELECT min(xid) INTO v_xid FROM gone;
    DELETE FROM recalc.attach_stuck WHERE object = p_object;
    v_rows := recalc.attach_sync(a, NULL);
    PERFORM recalc.change_inherit_xid(v_xid);
    RETURN v_rows;
END $$;

-- The objects attached now: make their reads ready where the engine can
-- (else their absorbs stop with RC003, saying what to do, until `recalc
-- attach` runs again).
DO $$
DECLARE
    v_object text;
BEGIN
    FOR v_object IN SELECT object FROM recalc.attachment ORDER BY object LOOP
        BEGIN
            PERFORM recalc.attach_ready(v_object);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'recalc: reads of attached object % are not ready: %', v_object, SQLERRM;
        END;
    END LOOP;
END $$;
