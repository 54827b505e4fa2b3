-- recalc schema, version 4: the SQL access API, for applications and
-- row-level security policies. The functions run with their owner's rights,
-- so a reader needs only EXECUTE on them.

CREATE INDEX acl_record_object_idx ON recalc.acl_record (object);
CREATE INDEX acl_record_access_root_idx ON recalc.acl_record (access_root);

ALTER FUNCTION recalc.access_level(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- access_level(user, object, record): the user's access to the record, or
-- 'none' when the record is not of that object.
CREATE FUNCTION recalc.access_level(p_user text, p_object text, p_record text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM recalc.acl_record WHERE id = p_record AND object = p_object)
                THEN recalc.access_level(p_user, p_record) ELSE 'none' END
$$;

-- visible_records(user, object, min_level): the records of an object the
-- user can access at min_level or above ('read' by default), with the level.
-- Driven from the user's closure entries through the share index, plus the
-- object's OWD when it grants the user anything.
CREATE FUNCTION recalc.visible_records(p_user text, p_object text, p_min_level text DEFAULT 'read')
RETURNS TABLE (record text, level text)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH u AS (
        SELECT uid, internal FROM recalc.acl_user WHERE id = p_user
    ), direct AS (
        SELECT s.rid, max(s.level) AS l
        FROM u JOIN recalc.acl_member m ON m.uid = u.uid
        JOIN recalc.acl_share s ON s.gid = m.gid AND (s.boss_ok OR NOT m.boss)
        GROUP BY s.rid
    ), owd AS (
        SELECT o.name, CASE WHEN u.internal THEN o.internal_level ELSE o.external_level END AS l
        FROM recalc.acl_object o, u
    ), levels AS (
        SELECT r.id, d.l FROM direct d JOIN recalc.acl_record r ON r.rid = d.rid WHERE r.object = p_object
        UNION ALL
        SELECT c.id, d.l FROM direct d JOIN recalc.acl_record c ON c.access_root = d.rid AND c.rid <> d.rid WHERE c.object = p_object
        UNION ALL
        SELECT r.id, ow.l FROM owd ow
        JOIN recalc.acl_record root ON root.object = ow.name AND ow.l > 0
        JOIN recalc.acl_record r ON r.access_root = root.rid
        WHERE r.object = p_object
    )
    SELECT id, (ARRAY['none', 'read', 'edit', 'all'])[1 + max(l)]
    FROM levels GROUP BY id
    HAVING max(l) >= array_position(ARRAY['none', 'read', 'edit', 'all'], p_min_level) - 1
$$;
