-- recalc schema, version 7: the share tables are an authorization source, and
-- every role that can reach this schema is untrusted (SECURITY.md).

-- No function of the schema is executable by PUBLIC. Roles that need one get
-- EXECUTE by name (`recalc grant`). Every later migration that creates a
-- function revokes it from PUBLIC too; internal/adversarial's
-- TestSchemaFunctionsHardened checks them all.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA recalc FROM PUBLIC;

-- What the application may store in a record row, checked as it writes:
-- short references, at most 1,000 territories, and fields that are a JSON
-- object of scalars (strings, numbers within float64's range, booleans,
-- null) of at most 1 MiB as text. NOT VALID: rows stored before this version
-- are not re-checked here; a run gives any that are still invalid no access.
ALTER TABLE recalc.record
    ADD CONSTRAINT record_refs_bounded CHECK (
        octet_length(id) BETWEEN 1 AND 1024 AND octet_length(object) <= 1024 AND octet_length(owner) <= 1024
        AND coalesce(octet_length(parent), 0) <= 1024 AND coalesce(octet_length(root_id), 0) <= 1024
        AND cardinality(territories) <= 1000) NOT VALID,
    ADD CONSTRAINT record_fields_scalar CHECK (
        jsonb_typeof(fields) = 'object'
        AND NOT jsonb_path_exists(fields, 'strict $.* ? (@.type() == "object" || @.type() == "array"
            || (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308)))')
        AND octet_length(fields::text) <= 1048576) NOT VALID;

-- A record the last run could not give access to (unknown object, owner,
-- parent or territory, or fields it cannot read) keeps a record row with the
-- reason, and no share row: it fails closed.
ALTER TABLE recalc.acl_record ADD COLUMN invalid text;

-- The records the share tables give no access because they are invalid, as of
-- the last run. A function reads acl_record, so that full runs can swap that
-- table without dropping the view.
CREATE FUNCTION recalc.invalid_records() RETURNS TABLE (record text, object text, reason text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT id, object, invalid FROM recalc.acl_record WHERE invalid IS NOT NULL ORDER BY id
$$;
REVOKE EXECUTE ON FUNCTION recalc.invalid_records() FROM PUBLIC;
CREATE VIEW recalc.invalid_record AS SELECT record, object, reason FROM recalc.invalid_records();

-- Jobs count the invalid records they met, and consume exactly the change
-- rows they planned from: a change that commits with a lower seq while a
-- job runs stays in the log for the next run.
ALTER TABLE recalc.job
    ADD COLUMN invalid_records bigint NOT NULL DEFAULT 0,
    ADD COLUMN consumes bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE recalc.chunk ADD COLUMN invalid bigint NOT NULL DEFAULT 0;

-- kind 'truncate': recalc.record was truncated; the next run is a full one.
ALTER TABLE recalc.change ADD CONSTRAINT change_kind CHECK (kind IN ('section', 'record', 'truncate')) NOT VALID;

-- Capture of every write to recalc.record, by imports and by the
-- application's own SQL, in the writing transaction:
--   * the changed ids go to the change log, one row per statement;
--   * a record that changes owner loses its manual shares (docs/semantics.md,
--     changes between imports); one that is deleted, or changes id or object, loses its
--     shares and team entries, so nothing carries over to a record that
--     later takes its id;
--   * TRUNCATE clears the shares and team entries and logs a 'truncate';
--   * `recalc watch` is woken with a NOTIFY that carries the operation only.
-- It runs with its owner's rights, so it refuses to run for any table but
-- recalc.record, and only the engine's own sessions may mark their changes
-- as rooted (family roots already right) or as root fixes (not logged: the
-- planner that fixes them recomputes those records itself).
CREATE OR REPLACE FUNCTION recalc.log_record_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_engine boolean := session_user = current_user;
    v_rooted boolean := v_engine AND coalesce(current_setting('recalc.rooted', true), '') = 'on';
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
            SELECT 'record', array_agg(id), v_rooted FROM (SELECT id FROM old_rows UNION SELECT id FROM new_rows) ids HAVING count(*) > 0;
        END IF;
        DELETE FROM recalc.share_input s
        USING old_rows o JOIN new_rows n ON n.rid = o.rid
        WHERE (o.id <> n.id OR o.object <> n.object) AND s.record IN (o.id, n.id)
           OR o.owner <> n.owner AND s.record = o.id AND s.cause = 'manual';
        DELETE FROM recalc.team t
        USING old_rows o JOIN new_rows n ON n.rid = o.rid
        WHERE (o.id <> n.id OR o.object <> n.object) AND t.record IN (o.id, n.id);
    ELSE
        INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', array_agg(id), v_rooted FROM old_rows HAVING count(*) > 0;
        DELETE FROM recalc.share_input s USING old_rows o WHERE s.record = o.id;
        DELETE FROM recalc.team t USING old_rows o WHERE t.record = o.id;
    END IF;
    PERFORM pg_notify('recalc_changes', TG_OP);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.log_record_change() FROM PUBLIC;

CREATE TRIGGER record_truncate_log AFTER TRUNCATE ON recalc.record
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change();

-- Shares and team entries left behind by records deleted before this version,
-- or naming another object than their record's. Their records are logged as
-- changed, so the next run removes the share rows built from them.
WITH gone AS (
    DELETE FROM recalc.share_input s
    WHERE NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = s.record AND r.object = s.object)
    RETURNING s.record
), gone_team AS (
    DELETE FROM recalc.team t WHERE NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = t.record)
    RETURNING t.record
)
INSERT INTO recalc.change (kind, keys)
SELECT 'record', array_agg(DISTINCT record) FROM (SELECT record FROM gone UNION ALL SELECT record FROM gone_team) x
HAVING count(*) > 0;

-- The payload of a job's completion notification carries counts and the
-- error, never a record's field values (errors name record ids only).
CREATE OR REPLACE FUNCTION recalc.job_payload(p_job bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'job', id, 'kind', kind, 'trigger', trigger, 'status', status,
        'records', records, 'invalid_records', invalid_records,
        'share_rows_added', rows_added, 'share_rows_removed', rows_removed,
        'share_rows_updated', rows_updated, 'closure_added', closure_added, 'closure_removed', closure_removed,
        'drift_fixed', drift_fixed, 'error', error, 'created_at', created_at, 'finished_at', finished_at,
        'duration_ms', round(extract(epoch FROM coalesce(finished_at, now()) - created_at) * 1000))
    FROM recalc.job WHERE id = p_job
$$;
REVOKE EXECUTE ON FUNCTION recalc.job_payload(bigint) FROM PUBLIC;
