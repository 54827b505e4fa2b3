-- recalc schema, version 56: an incremental job that changes the closure
-- keeps the entries it adds from its creation to its finish.
--
-- Since version 55's release, such a job deletes the closure entries it
-- removes as it is created, before any chunk (a share row a chunk writes
-- must never meet a membership the job removes), and writes the entries
-- it adds at its finish. Both ends computed the whole difference between
-- the stored closure and the job's configuration: about 0.12 s each at
-- 1,000,000 records, whatever the change. The job now keeps the entries to
-- add, computed once, in these columns until its finish, which inserts
-- them and clears the columns. The job's configuration cannot change
-- meanwhile (imports wait for it), and nothing else writes the closure
-- while a job is unfinished. A job created before this version has NULL
-- here, and its finish computes the difference as before.
ALTER TABLE recalc.job
    ADD COLUMN IF NOT EXISTS closure_add_gid int[],
    ADD COLUMN IF NOT EXISTS closure_add_uid int[],
    ADD COLUMN IF NOT EXISTS closure_add_boss boolean[];
