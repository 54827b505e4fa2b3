-- recalc schema, version 11: freshness.
--
--   * config_version counts the writes to the configuration sections, the
--     applied sections and the deferral, so that `recalc watch` keeps the
--     decoded configuration in memory and reloads it only when the counter
--     moved: one row read per change batch instead of the whole model.
--   * Each change row records the transaction that wrote it (xid), so that
--     an application can wait until everything committed before a point is
--     materialized: recalc.fresh_token() and recalc.wait_fresh(...).
-- Every statement is safe to run again on an upgraded database.

CREATE TABLE IF NOT EXISTS recalc.config_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO recalc.config_version DEFAULT VALUES ON CONFLICT DO NOTHING;

-- It runs with the writer's rights (only the engine writes these tables),
-- and only as the statement trigger of the three tables it counts.
CREATE OR REPLACE FUNCTION recalc.bump_config_version() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_RELID NOT IN ('recalc.model_section'::regclass, 'recalc.applied_section'::regclass, 'recalc.deferral'::regclass)
       OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.bump_config_version() runs only as the AFTER statement trigger of the configuration tables';
    END IF;
    UPDATE recalc.config_version SET version = version + 1;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.bump_config_version() FROM PUBLIC;

DROP TRIGGER IF EXISTS model_section_version ON recalc.model_section;
CREATE TRIGGER model_section_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON recalc.model_section
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.bump_config_version();
DROP TRIGGER IF EXISTS applied_section_version ON recalc.applied_section;
CREATE TRIGGER applied_section_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON recalc.applied_section
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.bump_config_version();
DROP TRIGGER IF EXISTS deferral_version ON recalc.deferral;
CREATE TRIGGER deferral_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON recalc.deferral
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.bump_config_version();

-- The writing transaction of each change row. Change seqs are taken before
-- commit, so they are not in commit order; transaction ids against a
-- snapshot are: every transaction that committed before a snapshot was
-- taken has an id below the snapshot's xmax. Rows logged before this
-- version get the upgrade's id, so tokens taken after it wait for them too.
ALTER TABLE recalc.change ADD COLUMN IF NOT EXISTS xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS change_xid_idx ON recalc.change (xid);

-- fresh_token returns a token that covers every transaction committed
-- before it is called: take it after the write's COMMIT.
CREATE OR REPLACE FUNCTION recalc.fresh_token() RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint
$$;
REVOKE EXECUTE ON FUNCTION recalc.fresh_token() FROM PUBLIC;

-- wait_fresh waits until no change row written by a transaction below the
-- token is left in the change log, that is until every change committed
-- before the token was taken is materialized (a job or `recalc watch`
-- consumes a change row in the transaction that writes its share rows, or
-- after). Each poll is a new statement, so it sees what committed since; it
-- sleeps 1 ms, doubling up to 10 ms. It reveals to its caller only whether
-- changes are pending, never which. Past the timeout it raises SQLSTATE
-- RC001 (recalc_not_fresh).
CREATE OR REPLACE FUNCTION recalc.wait_fresh(token bigint, timeout interval DEFAULT '5 s') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_token    xid8;
    v_own      xid8 := pg_current_xact_id_if_assigned();
    v_deadline timestamptz;
    v_sleep    float8 := 0.001;
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
        EXIT WHEN NOT EXISTS (SELECT FROM recalc.change WHERE xid < v_token);
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

-- wait_fresh(timeout) waits until everything committed before the call is
-- materialized. Pass the timeout typed (interval '2 s'): a bare literal
-- matches both forms.
CREATE OR REPLACE FUNCTION recalc.wait_fresh(timeout interval DEFAULT '5 s') RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT recalc.wait_fresh(recalc.fresh_token(), timeout)
$$;
REVOKE EXECUTE ON FUNCTION recalc.wait_fresh(interval) FROM PUBLIC;
