-- recalc schema, version 13: notifications that are not missed.
--
-- The completion payload names the database and the server it came from,
-- counts the job's chunks, and has one shape for NOTIFY, the webhook, the
-- email, `recalc wait` and `recalc run`'s report: units in the field names
-- (duration_ms), no null fields. It never carries a record's field values.
CREATE OR REPLACE FUNCTION recalc.job_payload(p_job bigint) RETURNS jsonb LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'job', id, 'kind', kind, 'trigger', trigger,
        'status', CASE WHEN status = 'running' AND NOT recalc.job_alive(id) THEN 'interrupted' ELSE status END,
        'chunks', chunks, 'records', records, 'invalid_records', invalid_records,
        'share_rows_added', rows_added, 'share_rows_removed', rows_removed,
        'share_rows_updated', rows_updated, 'closure_added', closure_added, 'closure_removed', closure_removed,
        'drift_fixed', coalesce(drift_fixed, 0), 'error', error, 'created_at', created_at, 'finished_at', finished_at,
        'duration_ms', round(extract(epoch FROM coalesce(finished_at, now()) - created_at) * 1000)::bigint,
        'database', current_database(),
        'host', coalesce(host(inet_server_addr()), 'localhost')))
    FROM recalc.job WHERE id = p_job
$$;
REVOKE EXECUTE ON FUNCTION recalc.job_payload(bigint) FROM PUBLIC;

-- notification: the outbox. A completion notification that could not be
-- delivered to a webhook or by email is kept here, and the next `recalc
-- run`, `recalc resume` or `recalc watch` configured with the same target
-- delivers it again, with backoff, until it is delivered (the row is
-- deleted) or gives up (attempts reaches the cap; the row stays visible in
-- `recalc status` for a week).
CREATE TABLE IF NOT EXISTS recalc.notification (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint NOT NULL REFERENCES recalc.job ON DELETE CASCADE,
    channel    text NOT NULL CHECK (channel IN ('webhook', 'email')),
    target_key text NOT NULL CHECK (length(target_key) = 64),     -- sha256 of the full destination
    target     text NOT NULL CHECK (length(target) <= 300),       -- the destination without credentials or query
    payload    jsonb NOT NULL CHECK (octet_length(payload::text) <= 65536),
    attempts   integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '' CHECK (length(last_error) <= 1000),
    created_at timestamptz NOT NULL DEFAULT now(),
    next_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, target_key)
);
CREATE INDEX IF NOT EXISTS notification_due ON recalc.notification (target_key, next_at);
REVOKE ALL ON recalc.notification FROM PUBLIC;
