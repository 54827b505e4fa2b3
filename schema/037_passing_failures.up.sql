-- recalc schema, version 37: two passing failures are told as passing.
--
-- The capture's guard reads the catalog through the writing transaction's
-- snapshot. A REPEATABLE READ or SERIALIZABLE transaction whose snapshot
-- was taken before `recalc attach` committed, and which writes the table
-- after it, saw no capture registered (a first attach) or the trigger rows
-- of the functions the attach replaced (a changed spec), and failed with
-- P0001 as if the capture were broken, though it was whole. Outside READ
-- COMMITTED the guard now fails with 40001, serialization_failure, which
-- such applications already retry: the retry's snapshot sees the capture
-- (and a capture that is really broken fails the retry too, with 40001
-- again: one that retries without end needs a bound). READ UNCOMMITTED runs
-- as READ COMMITTED, and keeps P0001. The guard is
-- built into each capture function at attach, so this applies to the
-- captures installed from now on, which are the ones a transaction can
-- see change under it.
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
        SELECT 1 FROM pg_class k WHERE k.oid = TG_RELID AND k.relkind = 'r' AND NOT k.relhassubclass AND NOT k.relispartition
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

-- An absorb cancelled (57014: pg_cancel_backend, or its own statement
-- timeout) is passing, like a lock not granted in time: wait_fresh waits for
-- the next try instead of failing at once with RC002, which says someone
-- must repair the capture.
CREATE OR REPLACE FUNCTION recalc.wait_fresh(token bigint, timeout interval DEFAULT '5 s') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_token    xid8;
    v_own      xid8 := pg_current_xact_id_if_assigned();
    v_deadline timestamptz;
    v_sleep    float8 := 0.001;
    v_stuck    boolean; -- writes of objects that cannot be absorbed are left below the token
    v_other    boolean; -- anything else is
BEGIN
    IF token IS NULL OR token < 1 OR token > pg_snapshot_xmax(pg_current_snapshot())::text::bigint THEN
        RAISE EXCEPTION 'recalc.wait_fresh: % is not a token of recalc.fresh_token(): pass the value it returned', token
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout IS NULL OR timeout < interval '0' OR timeout > interval '10 min' THEN
        RAISE EXCEPTION 'recalc.wait_fresh: the timeout must be between 0 and 10 minutes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.wait_fresh needs READ COMMITTED: its transaction''s snapshot would never see the changes materialized'
            USING ERRCODE = 'invalid_transaction_state', HINT = 'Call it in its own statement outside a REPEATABLE READ or SERIALIZABLE transaction.';
    END IF;
    IF v_own IS NOT NULL AND EXISTS (SELECT FROM recalc.change WHERE xid = v_own) THEN
        RAISE EXCEPTION 'recalc.wait_fresh: this transaction wrote changes that are not committed yet, so they cannot be materialized'
            USING ERRCODE = 'invalid_transaction_state', HINT = 'Commit the write first, then take the token and wait in a new transaction.';
    END IF;
    v_token := token::text::xid8;
    v_deadline := clock_timestamp() + timeout;
    LOOP
        -- One statement, one snapshot: what is left, and whether all of it is stuck.
        WITH stuck AS (SELECT s.object FROM recalc.attach_stuck s WHERE coalesce(s.error_code, '') NOT IN ('55P03', '40P01', '40001', '57014'))
        SELECT EXISTS (SELECT FROM recalc.change c WHERE c.xid < v_token AND c.object IN (SELECT object FROM stuck)),
               EXISTS (SELECT FROM recalc.change c WHERE c.xid < v_token AND (c.object IS NULL OR c.object NOT IN (SELECT object FROM stuck)))
        INTO v_stuck, v_other;
        EXIT WHEN NOT v_stuck AND NOT v_other;
        IF NOT v_other THEN
            RAISE EXCEPTION 'recalc: every change committed before the token is materialized but writes to an attached table that recalc cannot absorb until someone repairs its capture'
                USING ERRCODE = 'RC002',
                      HINT = '`recalc attach --list` shows the object and why (absorb_error); run `recalc attach FILE` again, or grant recalc''s role what it lacks.';
        END IF;
        IF clock_timestamp() >= v_deadline THEN
            RAISE EXCEPTION 'recalc: changes committed before the token are still not materialized after %', timeout
                USING ERRCODE = 'RC001',
                      HINT = 'Is `recalc watch` running? Is calculation deferred (`recalc status`, `recalc resume`)? Retry with a longer timeout.';
        END IF;
        PERFORM pg_sleep(v_sleep);
        v_sleep := least(v_sleep * 2, 0.01);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.wait_fresh(bigint, interval) FROM PUBLIC;
