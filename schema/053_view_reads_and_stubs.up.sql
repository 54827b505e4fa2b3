-- recalc schema, version 53: the columns an attached view reads are
-- recorded again when the view is redefined; a user stub's last name going
-- wakes `recalc watch`.
--
-- Version 50 records the base-table columns an attached view reads, by
-- number and name, when the object is attached, so that a column swapped
-- under its name leaves the capture not intact. An attached view may be
-- redefined in place (CREATE OR REPLACE VIEW, docs/attach.md) without
-- attaching again: a column it read only from then on was never recorded,
-- so a later swap of that column went unnoticed (the view read the old
-- column by number: a soft delete or an owner change was lost, and the old
-- owner kept access). Each absorb that checks fingerprints now records the
-- columns again when the view's rule is not the one recorded (read_rule).
-- A column swapped between the redefinition and that absorb (milliseconds
-- under `recalc watch`) is taken as the one the view was defined over.
--
-- Version 51 marks the users section for rebuilding when a team entry or
-- share goes, so that a deleted user's stub goes with the last thing
-- naming it; but only a job rebuilds it, and `recalc watch`'s fast path,
-- seeing only record changes, never started one: the deleted user's
-- records kept granting access through rules. Removing a team entry or
-- share that names a user the users table lacks (a stub) now also logs a
-- change of the users section, which hands the step to a job. Both found by
-- an attack helper.

ALTER TABLE recalc.attach_capture ADD COLUMN IF NOT EXISTS read_rule text;

-- attach_view_rule: the identity of view p_view's definition (its rules'
-- row versions), which CREATE OR REPLACE VIEW changes.
CREATE OR REPLACE FUNCTION recalc.attach_view_rule(p_view oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(string_agg(r.oid || ':' || r.xmin, ',' ORDER BY r.oid), '') FROM pg_rewrite r WHERE r.ev_class = p_view
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_view_rule(oid) FROM PUBLIC;

-- Views attached before: the columns recorded are kept (a swap of one of
-- them before this upgrade is still found), and those the view reads now
-- and were not recorded (read since a redefinition) are added under the
-- names they have now.
UPDATE recalc.attach_capture c SET read_rule = recalc.attach_view_rule(a.relid),
    (read_nums, read_names) = (
        SELECT coalesce(array_agg(u.num ORDER BY u.num), '{}'), coalesce(array_agg(u.name ORDER BY u.num), '{}')
        FROM (SELECT x.num, x.name FROM unnest(c.read_nums, c.read_names) x(num, name)
              UNION ALL
              SELECT y.num, y.name FROM recalc.attach_view_reads(a.relid, c.relid) r, unnest(r.nums, r.names) y(num, name)
              WHERE y.num <> ALL (coalesce(c.read_nums, '{}'))) u)
FROM recalc.attachment a WHERE a.object = c.object AND a.is_view AND c.read_rule IS NULL;

CREATE OR REPLACE FUNCTION recalc.attach_absorb_begin(p_retry interval DEFAULT NULL)
RETURNS TABLE (object text, keys bigint, whole boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'recalc.attach_absorb needs READ COMMITTED: each of its statements must see what committed before it';
    END IF;
    -- An attached view redefined since its columns were recorded reads
    -- the columns of the names it was defined with: record them.
    UPDATE recalc.attach_capture c SET (read_nums, read_names, read_rule) = (
        SELECT r.nums, r.names, recalc.attach_view_rule(a.relid) FROM recalc.attach_view_reads(a.relid, c.relid) r)
    FROM recalc.attachment a
    WHERE a.object = c.object AND a.is_view AND c.read_rule IS DISTINCT FROM recalc.attach_view_rule(a.relid);
    -- A captured table written without its capture (see attach_fingerprints)
    -- is read again whole. Under the model lock, as every absorb.
    WITH changed AS (
        UPDATE recalc.attach_capture c SET fingerprint = f.fingerprint FROM recalc.attach_fingerprints() f
        WHERE f.object = c.object AND f.relid = c.relid AND c.fingerprint IS DISTINCT FROM f.fingerprint RETURNING c.object)
    INSERT INTO recalc.change (kind, object, keys) SELECT DISTINCT 'attached_all', x.object, '{}'::text[] FROM changed x;
    RETURN QUERY SELECT c.object, sum(cardinality(c.keys))::bigint, bool_or(c.kind = 'attached_all') FROM recalc.change c
                 WHERE c.kind IN ('attached', 'attached_all')
                   AND NOT EXISTS (SELECT 1 FROM recalc.attach_stuck s WHERE s.object = c.object AND s.checked_at > now() - p_retry)
                 GROUP BY c.object ORDER BY 1;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_absorb_begin(interval) FROM PUBLIC;

-- attached_users_named as in version 51, but a team entry or share removed
-- that named a user the users table lacks also logs a change of the users
-- section, once a statement (a TRUNCATE always does).
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
    UPDATE recalc.attached_users_state SET dirty = true WHERE NOT dirty;
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

-- Transition tables need a trigger for each event.
DROP TRIGGER IF EXISTS team_names_users ON recalc.team;
CREATE TRIGGER team_names_users AFTER TRUNCATE ON recalc.team
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.attached_users_named();
DROP TRIGGER IF EXISTS team_names_users_deleted ON recalc.team;
CREATE TRIGGER team_names_users_deleted AFTER DELETE ON recalc.team REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.attached_users_named();
DROP TRIGGER IF EXISTS team_names_users_updated ON recalc.team;
CREATE TRIGGER team_names_users_updated AFTER UPDATE ON recalc.team REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.attached_users_named();
DROP TRIGGER IF EXISTS share_input_names_users ON recalc.share_input;
CREATE TRIGGER share_input_names_users AFTER TRUNCATE ON recalc.share_input
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.attached_users_named();
DROP TRIGGER IF EXISTS share_input_names_users_deleted ON recalc.share_input;
CREATE TRIGGER share_input_names_users_deleted AFTER DELETE ON recalc.share_input REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.attached_users_named();
DROP TRIGGER IF EXISTS share_input_names_users_updated ON recalc.share_input;
CREATE TRIGGER share_input_names_users_updated AFTER UPDATE ON recalc.share_input REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recalc.attached_users_named();

-- A stub left unnamed before this version goes at the next step.
INSERT INTO recalc.change (kind, keys) SELECT 'section', ARRAY['users'] WHERE EXISTS (SELECT 1 FROM recalc.attachment WHERE object = 'users');
UPDATE recalc.attached_users_state SET dirty = true WHERE EXISTS (SELECT 1 FROM recalc.attachment WHERE object = 'users');
