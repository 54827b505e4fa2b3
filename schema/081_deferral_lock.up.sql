-- recalc schema, version 81: a job's chunks pause when share rows are
-- deferred.
--
-- A job planned before `recalc defer` kept working its chunks after it
-- returned, and each chunk reads recalc.record (and the attached tables'
-- mirrored rows) as it runs: a record written after the deferral got its
-- access before `recalc resume`. Every chunk transaction now locks row 5
-- of recalc.engine_lock FOR KEY SHARE (chunks do not wait for each other)
-- and then reads the deferral: deferred, it claims nothing and the job
-- pauses until the resume. `recalc defer` commits the deferral, then takes
-- the row FOR UPDATE and lets it go: it returns once every chunk that read
-- no deferral has ended. Only the schema's owner may lock the row (the
-- table's REVOKE, migration 015): no other role can hold it to stall jobs.
INSERT INTO recalc.engine_lock (scope, name) VALUES (5, 'deferral') ON CONFLICT DO NOTHING;

-- job_paused: the job is running (a failed one reads failed), writes share
-- rows, has chunks left, and share rows are deferred: its chunks claim nothing until the resume.
-- `recalc status`, `recalc wait`, the metrics and the payload read it
-- rather than "interrupted" (no process heartbeats a paused job).
CREATE OR REPLACE FUNCTION recalc.job_paused(p_job bigint) RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT j.status = 'running' AND j.do_rules FROM recalc.job j WHERE j.id = p_job), false)
        AND EXISTS (SELECT FROM recalc.deferral WHERE side = 'rules')
        AND EXISTS (SELECT FROM recalc.chunk c WHERE c.job_id = p_job AND c.status = 'pending')
$$;
REVOKE EXECUTE ON FUNCTION recalc.job_paused(bigint) FROM PUBLIC;

-- job_payload as in version 13, with status paused (job_paused) before
-- interrupted.
CREATE OR REPLACE FUNCTION recalc.job_payload(p_job bigint) RETURNS jsonb LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'job', id, 'kind', kind, 'trigger', trigger,
        'status', CASE WHEN status = 'running' AND recalc.job_paused(id) THEN 'paused'
                       WHEN status = 'running' AND NOT recalc.job_alive(id) THEN 'interrupted' ELSE status END,
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
