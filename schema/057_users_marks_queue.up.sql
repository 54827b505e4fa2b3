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
-- never waits, naming the users the statement's removed or changed rows
-- named (a statement that touched none, as a record's update fires, or
-- only shares with groups, marks nothing; a TRUNCATE marks with NULL, any
-- user). A plan (store.SyncAttachedUsers) first locks the state row, so
-- that a re-read of the users table that set the flag and has not
-- committed is waited for, then deletes the marks committed, and only then
-- reads the rows and names: a mark committed later stays for the next run.
-- `recalc watch`'s fast path, under the model lock, drops the marks whose
-- users are all still attached (none of them can be a stub, and a user's
-- removal, absorbed later, finds the name gone), and hands the step to a
-- run while any other is left (a plan that had read the names may have
-- consumed the section change the delete logged); it is not idle while a
-- mark is left.

CREATE TABLE IF NOT EXISTS recalc.attached_users_mark (
    at    timestamptz NOT NULL DEFAULT now(),
    users text[] -- the users the removed rows named; NULL for a TRUNCATE (any user)
);

-- attached_users_named as in version 53, marking the section with a row
-- that names the users the removed rows named.
CREATE OR REPLACE FUNCTION recalc.attached_users_named() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_users text[];
BEGIN
    IF TG_RELID NOT IN ('recalc.team'::regclass, 'recalc.share_input'::regclass) OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.attached_users_named runs only as a statement trigger of recalc.team and recalc.share_input' USING ERRCODE = '42501';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM recalc.attachment WHERE object = 'users') THEN
        RETURN NULL;
    END IF;
    -- Each branch is planned for the table it reads (old_rows' columns; a
    -- TRUNCATE has none, so no statement it runs may name them). A
    -- statement that removed no row naming a user (a record's update
    -- deletes its team entries when its id changes, and fires this when it
    -- did not; a share with a group) marks nothing.
    IF TG_OP <> 'TRUNCATE' THEN
        IF TG_RELID = 'recalc.team'::regclass THEN
            SELECT array_agg(DISTINCT o.user_id) INTO v_users FROM old_rows o;
        ELSE
            SELECT array_agg(DISTINCT substr(o.grantee, 6)) INTO v_users FROM old_rows o WHERE o.grantee LIKE 'user:%';
        END IF;
        IF v_users IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO recalc.attached_users_mark (users) VALUES (v_users);
    IF v_users IS NULL OR EXISTS (SELECT 1 FROM unnest(v_users) n (id) WHERE NOT EXISTS (SELECT 1 FROM recalc.attached_user u WHERE u.id = n.id)) THEN
        INSERT INTO recalc.change (kind, keys) VALUES ('section', ARRAY['users']);
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attached_users_named() FROM PUBLIC;

-- A stub a lost mark left goes at the next run.
UPDATE recalc.attached_users_state SET dirty = true WHERE EXISTS (SELECT 1 FROM recalc.attachment WHERE object = 'users');
