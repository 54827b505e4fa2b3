-- recalc schema, version 12: a feed of access changes (docs/feed.md).
--
-- Every write of the materialized tables records what it changed as pending
-- entries, in the writing transaction: the records whose share or record
-- rows changed, the grantees whose closure changed, the users whose
-- acl_user row changed and the objects whose OWD changed. A publisher (a
-- job's finish, or a caller of internal/feed's Publish) moves them to the
-- feed under the feed advisory lock, taking cursors from a sequence, so that
-- cursor order is commit order: a reader that has seen cursor N never later
-- finds an entry at or below N. No entry carries a record's field values:
-- only ids, grantee keys and object names.

CREATE TABLE IF NOT EXISTS recalc.feed_pending (
    kind   text NOT NULL,
    key    text NOT NULL,
    object text
);

CREATE SEQUENCE IF NOT EXISTS recalc.feed_cursor;

CREATE TABLE IF NOT EXISTS recalc.feed (
    cursor bigint PRIMARY KEY,
    kind   text NOT NULL CHECK (kind IN ('record', 'grantee', 'user', 'owd')),
    key    text NOT NULL,  -- record id, grantee key (group:g1), user id or object name
    object text,           -- the record's object; the object, for owd
    job    bigint,         -- the job that published it; NULL outside a job
    at     timestamptz NOT NULL DEFAULT statement_timestamp() -- publishers serialize: in cursor order
);
CREATE INDEX IF NOT EXISTS feed_at_idx ON recalc.feed (at);

-- One row: how long entries are kept, and the highest cursor pruned. A
-- reader whose cursor is below pruned_through has missed entries: it must
-- resync.
CREATE TABLE IF NOT EXISTS recalc.feed_state (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    retention      interval NOT NULL DEFAULT '7 days' CHECK (retention >= interval '1 minute'),
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO recalc.feed_state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- access_changes returns at most lim (1 to 10,000) entries after cursor
-- since, in cursor order. A cursor older than the retention is refused with
-- a message that says how to resync.
CREATE OR REPLACE FUNCTION recalc.access_changes(since bigint, lim integer DEFAULT 1000)
RETURNS TABLE (cursor bigint, kind text, key text, object text, job bigint, at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_pruned bigint;
BEGIN
    IF since IS NULL OR since < 0 THEN
        RAISE EXCEPTION 'access_changes: since must be a cursor of 0 or more (0 reads from the start)' USING ERRCODE = '22023';
    END IF;
    IF lim IS NULL OR lim < 1 OR lim > 10000 THEN
        RAISE EXCEPTION 'access_changes: lim must be between 1 and 10000' USING ERRCODE = '22023';
    END IF;
    SELECT s.pruned_through INTO v_pruned FROM recalc.feed_state s;
    IF since < v_pruned THEN
        RAISE EXCEPTION 'access_changes: cursor % is older than the feed''s retention (entries through % were pruned)', since, v_pruned
            USING ERRCODE = '22023',
                  HINT = 'resync: in one REPEATABLE READ transaction read recalc.access_changes_head() and the access you mirror, then read changes after that head';
    END IF;
    RETURN QUERY SELECT f.cursor, f.kind, f.key, f.object, f.job, f.at
        FROM recalc.feed f WHERE f.cursor > since ORDER BY f.cursor LIMIT lim;
END
$$;
REVOKE EXECUTE ON FUNCTION recalc.access_changes(bigint, integer) FROM PUBLIC;

-- access_changes_head is the last published cursor (the last pruned when
-- the feed is empty): where a consumer that has just resynced resumes.
CREATE OR REPLACE FUNCTION recalc.access_changes_head() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT greatest((SELECT max(cursor) FROM recalc.feed), (SELECT pruned_through FROM recalc.feed_state), 0)
$$;
REVOKE EXECUTE ON FUNCTION recalc.access_changes_head() FROM PUBLIC;
