-- recalc schema, version 84: a writer role reads no record's family root.
--
-- `recalc grant writer` gave SELECT on the whole of recalc.record. Since
-- version 82 a writer reads no record of an attached object, but it still
-- read root_id of its own records, which the engine's root fixing sets to
-- the top of the record's parent chain, walked through every record
-- (migration 014): a writer that gave a record of its own an attached
-- record as parent (case 1, an id it guesses or is told) read, after the
-- next run, the account that case is under, a value of the application's
-- own table (support.case.account_id) that version 82 hides from it (found
-- by an attack helper). root_id is the engine's: a writer now reads, and
-- filters on, the columns it writes and rid, not root_id. `recalc grant
-- writer` grants that (internal/access/roles.go); this migration turns the
-- whole-table SELECT of every role granted one before (the writers; the
-- roles 082 found) into the same column grant. Re-run, it finds no
-- whole-table SELECT left, and changes nothing.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS role
             FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = 'recalc.record'::regclass AND a.privilege_type = 'SELECT'
               AND a.grantee <> c.relowner AND a.grantee <> 0
    LOOP
        EXECUTE format('REVOKE SELECT ON recalc.record FROM %s', r.role);
        EXECUTE format('GRANT SELECT (rid, id, object, owner, parent, fields, territories) ON recalc.record TO %s', r.role);
    END LOOP;
END
$$;
