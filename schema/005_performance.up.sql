-- recalc schema, version 5: what the benchmarks (bench/) showed to matter.

-- Records inserted with plain SQL have no family root until the next run
-- sets it; this finds them without scanning every record.
CREATE INDEX record_rootless_idx ON recalc.record (rid) WHERE root_id IS NULL;

-- Share row causes sort in byte order: index builds and lookups on
-- (rid, gid, cause) skip the locale's collation.
ALTER TABLE recalc.acl_share ALTER COLUMN cause TYPE text COLLATE "C";

-- The access checks become PL/pgSQL: a SQL function that cannot be inlined
-- (SECURITY DEFINER, SET search_path) is planned again on every call, which
-- cost about 2 ms; PL/pgSQL keeps each session's plans, so a check costs the
-- index lookups alone. Same results as before.
CREATE OR REPLACE FUNCTION recalc.access_level(p_user text, p_record text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l smallint;
BEGIN
    SELECT max(levels.l) INTO l
    FROM (
        SELECT s.level AS l
        FROM recalc.acl_user u
        JOIN recalc.acl_record r ON r.id = p_record
        JOIN recalc.acl_share s ON s.rid = r.rid OR s.rid = r.access_root
        JOIN recalc.acl_member m ON m.gid = s.gid AND m.uid = u.uid AND (s.boss_ok OR NOT m.boss)
        WHERE u.id = p_user
        UNION ALL
        SELECT CASE WHEN u.internal THEN o.internal_level ELSE o.external_level END
        FROM recalc.acl_user u
        JOIN recalc.acl_record r ON r.id = p_record
        JOIN recalc.acl_record root ON root.rid = r.access_root
        JOIN recalc.acl_object o ON o.name = root.object
        WHERE u.id = p_user
    ) levels;
    RETURN (ARRAY['none', 'read', 'edit', 'all'])[1 + coalesce(l, 0)];
END
$$;

CREATE OR REPLACE FUNCTION recalc.access_level(p_user text, p_object text, p_record text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM recalc.acl_record WHERE id = p_record AND object = p_object) THEN
        RETURN recalc.access_level(p_user, p_record);
    END IF;
    RETURN 'none';
END
$$;

-- A full job's staging tables are indexed, its closure written and its
-- drift counted side by side before the swap; staged says that is done.
ALTER TABLE recalc.job ADD COLUMN staged boolean NOT NULL DEFAULT false;

-- Imports compute every record's family root themselves, so their changes
-- need no root fixing at the next run (which cost seconds per million
-- records). The engine's own sessions mark them: the import sets
-- recalc.rooted for its transaction, and the trigger trusts the mark only
-- from the role that owns it, never from an application's session.
ALTER TABLE recalc.change ADD COLUMN rooted boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION recalc.log_record_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rooted boolean := coalesce(current_setting('recalc.rooted', true), '') = 'on' AND session_user = current_user;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', array_agg(id), v_rooted FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO recalc.change (kind, keys, rooted)
        SELECT 'record', array_agg(id), v_rooted FROM (SELECT id FROM old_rows UNION SELECT id FROM new_rows) ids HAVING count(*) > 0;
        DELETE FROM recalc.share_input s
        USING old_rows o JOIN new_rows n ON n.rid = o.rid
        WHERE o.owner <> n.owner AND s.record = o.id AND s.cause = 'manual';
    ELSE
        INSERT INTO recalc.change (kind, keys, rooted) SELECT 'record', array_agg(id), v_rooted FROM old_rows HAVING count(*) > 0;
    END IF;
    PERFORM pg_notify('recalc_changes', TG_OP);
    RETURN NULL;
END $$;
