-- recalc schema, version 3: deferral, per-side applied state, notifications,
-- and plain-SQL record writes that behave like imports.

-- Deferred calculation, as Salesforce's "Defer Sharing Calculations": a row
-- per deferred side. 'closure' defers group membership (the closure and the
-- user table); 'rules' defers share rows (rules, owners, shares, teams,
-- territories, OWDs).
CREATE TABLE recalc.deferral (
    side  text PRIMARY KEY CHECK (side IN ('closure', 'rules')),
    since timestamptz NOT NULL DEFAULT now()
);

-- Each side remembers the configuration it was last computed from.
ALTER TABLE recalc.applied_section ADD COLUMN side text NOT NULL DEFAULT 'rules' CHECK (side IN ('closure', 'rules'));
ALTER TABLE recalc.applied_section DROP CONSTRAINT applied_section_pkey;
ALTER TABLE recalc.applied_section ADD PRIMARY KEY (side, name);
INSERT INTO recalc.applied_section (side, name, doc) SELECT 'closure', name, doc FROM recalc.applied_section;

ALTER TABLE recalc.job
    ADD COLUMN do_rules    boolean NOT NULL DEFAULT true,
    ADD COLUMN do_closure  boolean NOT NULL DEFAULT true,
    ADD COLUMN drift_fixed bigint;

-- An application inserting or re-parenting records with plain SQL need not
-- know family roots: the next run computes them.
ALTER TABLE recalc.record ALTER COLUMN root_id DROP NOT NULL;
CREATE INDEX record_parent_idx ON recalc.record (parent);

-- The change log holds one row per statement, listing the keys it changed:
-- a bulk load of a million records logs one row, not a million.
ALTER TABLE recalc.change ALTER COLUMN key TYPE text[] USING ARRAY[key];
ALTER TABLE recalc.change RENAME COLUMN key TO keys;

-- Record writes by any SQL: log the change, wipe the manual shares of
-- records whose owner changed (docs/semantics.md, changes between imports), and wake
-- `recalc watch` with a NOTIFY on channel recalc_changes. It runs with its
-- owner's rights, so an application role needs privileges on recalc.record
-- only, not on the change log or the shares.
CREATE OR REPLACE FUNCTION recalc.log_record_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, keys) SELECT 'record', array_agg(id) FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO recalc.change (kind, keys)
        SELECT 'record', array_agg(id) FROM (SELECT id FROM old_rows UNION SELECT id FROM new_rows) ids HAVING count(*) > 0;
        DELETE FROM recalc.share_input s
        USING old_rows o JOIN new_rows n ON n.rid = o.rid
        WHERE o.owner <> n.owner AND s.record = o.id AND s.cause = 'manual';
    ELSE
        INSERT INTO recalc.change (kind, keys) SELECT 'record', array_agg(id) FROM old_rows HAVING count(*) > 0;
    END IF;
    PERFORM pg_notify('recalc_changes', TG_OP);
    RETURN NULL;
END $$;

-- The completion notification of a job, as sent with NOTIFY on channel
-- recalc_jobs, POSTed to --notify-url and mailed to --notify-email.
CREATE FUNCTION recalc.job_payload(p_job bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'job', id, 'kind', kind, 'trigger', trigger, 'status', status,
        'records', records, 'share_rows_added', rows_added, 'share_rows_removed', rows_removed,
        'share_rows_updated', rows_updated, 'closure_added', closure_added, 'closure_removed', closure_removed,
        'drift_fixed', drift_fixed, 'error', error, 'created_at', created_at, 'finished_at', finished_at,
        'duration_ms', round(extract(epoch FROM coalesce(finished_at, now()) - created_at) * 1000))
    FROM recalc.job WHERE id = p_job
$$;
