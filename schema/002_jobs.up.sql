-- recalc schema, version 2: persistent jobs and chunks, incremental state,
-- and capture of record changes made with plain SQL.

-- The family a materialized record belonged to when last computed, so a
-- record that moves or disappears can have its old family recomputed.
ALTER TABLE recalc.acl_record ADD COLUMN root_id text COLLATE "C";
CREATE INDEX acl_record_root_idx ON recalc.acl_record (root_id);

-- A recalculation. At most one is unfinished at a time (running, or failed
-- and waiting to be resumed); `recalc run` resumes or joins it.
CREATE TABLE recalc.job (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('full', 'incremental')),
    trigger         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'failed', 'done')),
    change_seq      bigint NOT NULL,   -- changes up to this seq are covered by the job
    config          jsonb NOT NULL,    -- the configuration sections it computes from
    plan            jsonb NOT NULL,
    chunks          integer NOT NULL,
    records         bigint NOT NULL DEFAULT 0,
    rows_added      bigint NOT NULL DEFAULT 0,
    rows_removed    bigint NOT NULL DEFAULT 0,
    rows_updated    bigint NOT NULL DEFAULT 0,
    closure_added   bigint NOT NULL DEFAULT 0,
    closure_removed bigint NOT NULL DEFAULT 0,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE UNIQUE INDEX job_one_unfinished ON recalc.job ((true)) WHERE status <> 'done';

-- A job's unit of work: whole record families, given as a root id range
-- (full jobs) or a list of root ids (incremental jobs). A worker claims a
-- chunk with FOR UPDATE SKIP LOCKED in the same transaction that writes its
-- rows and marks it done, so a crash leaves it pending, never half done.
CREATE TABLE recalc.chunk (
    job_id       bigint NOT NULL REFERENCES recalc.job ON DELETE CASCADE,
    n            integer NOT NULL,
    lo           text COLLATE "C",
    hi           text COLLATE "C",
    roots        text[],
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
    records      bigint NOT NULL DEFAULT 0,
    rows_added   bigint NOT NULL DEFAULT 0,
    rows_removed bigint NOT NULL DEFAULT 0,
    rows_updated bigint NOT NULL DEFAULT 0,
    done_by      text,
    done_at      timestamptz,
    PRIMARY KEY (job_id, n)
);
CREATE INDEX chunk_pending_idx ON recalc.chunk (job_id, n) WHERE status = 'pending';

-- Every insert, update or delete of a record row, by `recalc import` or by
-- the application's own SQL, lands in the change log for the next run.
-- Statement-level triggers with transition tables: one INSERT per statement,
-- so a bulk COPY pays once, not once per row.
CREATE FUNCTION recalc.log_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, key) SELECT DISTINCT 'record', id FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO recalc.change (kind, key) SELECT 'record', id FROM old_rows UNION SELECT 'record', id FROM new_rows;
    ELSE
        INSERT INTO recalc.change (kind, key) SELECT DISTINCT 'record', id FROM old_rows;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER record_insert_log AFTER INSERT ON recalc.record
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change();
CREATE TRIGGER record_update_log AFTER UPDATE ON recalc.record
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change();
CREATE TRIGGER record_delete_log AFTER DELETE ON recalc.record
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION recalc.log_record_change();

-- A record id can be deleted and created again under a new rid; while the
-- two families are recomputed by different chunks both rows may exist.
ALTER TABLE recalc.acl_record DROP CONSTRAINT acl_record_id_key;
CREATE INDEX acl_record_id_idx ON recalc.acl_record (id);
