-- recalc schema, version 8: job liveness. Every process working a job
-- heartbeats it here; a running job that no process has heartbeated lately
-- was interrupted (killed, Ctrl-C, a lost connection): `recalc status`, the
-- payload, `recalc wait` and imports say so, and the next `recalc run`
-- resumes it.
CREATE TABLE recalc.job_worker (
    job_id  bigint NOT NULL REFERENCES recalc.job ON DELETE CASCADE,
    worker  text NOT NULL,          -- host:pid
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp(), -- not now(): a planning transaction can be long
    PRIMARY KEY (job_id, worker)
);

-- job_alive: a process heartbeated the job within the last 10 seconds.
CREATE FUNCTION recalc.job_alive(p_job bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM recalc.job_worker WHERE job_id = p_job AND seen_at > now() - interval '10 seconds')
$$;
REVOKE EXECUTE ON FUNCTION recalc.job_alive(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION recalc.job_payload(p_job bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'job', id, 'kind', kind, 'trigger', trigger,
        'status', CASE WHEN status = 'running' AND NOT recalc.job_alive(id) THEN 'interrupted' ELSE status END,
        'records', records, 'invalid_records', invalid_records,
        'share_rows_added', rows_added, 'share_rows_removed', rows_removed,
        'share_rows_updated', rows_updated, 'closure_added', closure_added, 'closure_removed', closure_removed,
        'drift_fixed', drift_fixed, 'error', error, 'created_at', created_at, 'finished_at', finished_at,
        'duration_ms', round(extract(epoch FROM coalesce(finished_at, now()) - created_at) * 1000))
    FROM recalc.job WHERE id = p_job
$$;
REVOKE EXECUTE ON FUNCTION recalc.job_payload(bigint) FROM PUBLIC;
