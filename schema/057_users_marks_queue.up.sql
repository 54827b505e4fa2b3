-- recalc schema, version 57: a team entry or share removed beside a run's
-- plan marks the users section for rebuilding, whatever the plan has read.
--
-- Version 51 marks the users section built from an attached users table
-- for rebuilding when a team entry or share goes (a stub goes with the
-- last thing naming it), with the flag recalc.attached_users_state.dirty,
-- set by the trigger only when not set already (so that the application's
-- deletes do not queue on that row). A plan reads the flag, reads the
-- names the team entries and shares hold, and clears the flag. A delete
-- that committed after the plan read the names, while the flag was set
-- already (by an earlier delete, or a re-read of the users table), left
-- it alone; the plan then cleared it: the removed name was never read,
-- no later run built the section again, the stub stayed for good, and the
-- records it owned kept granting access through rules (and the section
-- change the delete logged went with the plan's job). Found by an attack
-- helper (TestStubGoesBesideAPlan).
--
-- The trigger now adds a row to recalc.attached_users_mark instead, which
-- never waits, for a statement that removed or changed a row (one that
-- touched none, as a record's update fires, marks nothing). A plan (store.SyncAttachedUsers) first locks the state row,
-- so that a re-read of the users table that set the flag and has not
-- committed is waited for, then deletes the marks committed, and only then
-- reads the rows and names: a mark committed later stays for the next run.
-- `recalc watch` is not idle while a mark is left (a plan that had read
-- the names may have consumed the section change the delete logged): its
-- fast path hands the step to a run.

CREATE TABLE IF NOT EXISTS recalc.attached_users_mark (
    at timestamptz NOT NULL DEFAULT now()
);

-- attached_users_named as in version 53, marking the section with a row.
CREATE OR REPLACE FUNCTION recalc.attached_users_named() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_stub boolean;
BEGIN
    IF TG_RELID NOT IN ('recalc.team'::regclass, 'recalc.share_input'::regclass) OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.attached_users_named runs only as a statement trigger of recalc.team and recalc.share_input' USING ERRCODE = '42501';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM recalc.attachment WHERE object = 'users') THEN
        RETURN NULL;
    END IF;
    -- A statement that removed no row (a record's update deletes its
    -- team entries when its id changes, and fires this when it did not)
    -- marks nothing: the watch's fast path would give way to a job. A
    -- TRUNCATE has no old_rows: the test is nested, since one expression
    -- naming old_rows fails to parse in a TRUNCATE trigger.
    IF TG_OP <> 'TRUNCATE' THEN
        IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO recalc.attached_users_mark DEFAULT VALUES;
    -- Each branch is planned for the table it reads (old_rows' columns).
    IF TG_OP = 'TRUNCATE' THEN
        v_stub := true;
    ELSIF TG_RELID = 'recalc.team'::regclass THEN
        v_stub := EXISTS (SELECT 1 FROM old_rows o WHERE NOT EXISTS (SELECT 1 FROM recalc.attached_user u WHERE u.id = o.user_id));
    ELSE
        v_stub := EXISTS (SELECT 1 FROM old_rows o WHERE o.grantee LIKE 'user:%'
                          AND NOT EXISTS (SELECT 1 FROM recalc.attached_user u WHERE u.id = substr(o.grantee, 6)));
    END IF;
    IF v_stub THEN
        INSERT INTO recalc.change (kind, keys) VALUES ('section', ARRAY['users']);
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attached_users_named() FROM PUBLIC;

-- A stub a lost mark left goes at the next run.
UPDATE recalc.attached_users_state SET dirty = true WHERE EXISTS (SELECT 1 FROM recalc.attachment WHERE object = 'users');
