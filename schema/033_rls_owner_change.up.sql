-- recalc schema, version 33: under `recalc rls enable --write`, changing
-- an attached table's owner column needs all access.
--
-- The write policies judge a row before the write (USING) and after it
-- (WITH CHECK), each by the record's access as recalc last materialized
-- it; neither sees both rows. A user with edit access (a rule, a share)
-- could set the owner column to themselves, and once recalc absorbed the
-- write hold all while the owner had nothing. `rls enable --write` on an
-- attached table now adds a restrictive UPDATE policy that calls
-- rls_owner_kept on the new row: true when the row's record keeps the
-- owner recalc has stored for it, when the user has all access to the
-- record, or when recalc has no record of that id yet (a row not yet
-- absorbed, which only the owner policy can admit). Policies enabled
-- before this version get it when `rls enable` runs again (docs/rls.md).
CREATE FUNCTION recalc.rls_owner_kept(p_user text, p_object text, p_key text, p_owner text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = p_key AND r.object = p_object)
        OR EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = p_key AND r.object = p_object
                   AND r.owner = (p_owner COLLATE "C"))
        OR recalc.access_level(p_user, p_key) = 'all'
$$;
REVOKE EXECUTE ON FUNCTION recalc.rls_owner_kept(text, text, text, text) FROM PUBLIC;

-- Roles granted the reader's functions (recalc grant reader) get it too.
DO $$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN
        SELECT DISTINCT quote_ident(r.rolname)
        FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE p.oid = 'recalc.rls_mode(text, text, text)'::regprocedure
          AND a.privilege_type = 'EXECUTE' AND r.oid <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION recalc.rls_owner_kept(text, text, text, text) TO %s', v_role);
    END LOOP;
END
$$;
