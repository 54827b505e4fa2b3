-- recalc schema, version 51: the users section, built from an attached
-- users table, is built again when a team entry or a share that named a
-- user goes.
--
-- A user the model's teams or shares name and the users table lacks stays
-- in the users section as an inactive stub, so that what names it stays
-- valid. The section was built again only when a row of the users table
-- changed (recalc.attached_users_state.dirty): once the last team entry or
-- share naming a deleted user went (its record deleted, or an import), the
-- stub stayed, the records it owned stayed valid and kept granting access
-- through rules, no run repaired it, and an unrelated import was refused
-- over them. Deleting, updating or truncating recalc.team or
-- recalc.share_input now marks the section for rebuilding when a users
-- table is attached. Found by an attack helper.

CREATE OR REPLACE FUNCTION recalc.attached_users_named() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_RELID NOT IN ('recalc.team'::regclass, 'recalc.share_input'::regclass) OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'recalc.attached_users_named runs only as a statement trigger of recalc.team and recalc.share_input' USING ERRCODE = '42501';
    END IF;
    UPDATE recalc.attached_users_state SET dirty = true
    WHERE NOT dirty AND EXISTS (SELECT 1 FROM recalc.attachment WHERE object = 'users');
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attached_users_named() FROM PUBLIC;

DROP TRIGGER IF EXISTS team_names_users ON recalc.team;
CREATE TRIGGER team_names_users AFTER UPDATE OR DELETE OR TRUNCATE ON recalc.team
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.attached_users_named();
DROP TRIGGER IF EXISTS share_input_names_users ON recalc.share_input;
CREATE TRIGGER share_input_names_users AFTER UPDATE OR DELETE OR TRUNCATE ON recalc.share_input
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.attached_users_named();

-- A stub left over before this version goes at the next run.
UPDATE recalc.attached_users_state SET dirty = true WHERE EXISTS (SELECT 1 FROM recalc.attachment WHERE object = 'users');
