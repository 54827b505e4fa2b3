-- recalc schema, version 69: a row of an attached table deleted (or its id
-- changed away, or the table truncated) in a transaction that commits while
-- an import runs no longer drops the shares and team entries the import
-- adds to the record that is back under its id.
--
-- Version 58 ordered an owner change committed while an import runs by
-- commit: the import absorbs once more, last before it commits, the objects
-- with an owner change logged, and that absorb's wipe spares the manual
-- shares the import wrote. The other mark of version 54, a row gone (a
-- DELETE, an id changed away, a TRUNCATE), was left to the next absorb:
-- a row deleted and inserted again, or whose id changed away and back, or
-- whose id another row took, in a transaction that committed after the
-- import's first absorb and before the import, dropped at the next absorb
-- the shares and team entries the import had added to that record, as if
-- the write had committed after the import (TestImportBesideAGoneRow).
--
-- The import's last absorb now takes the objects with a row gone too
-- (changes.AbsorbMarked), and attach_effects spares the shares and team
-- entries its own transaction wrote whatever the mark, as it spared the
-- manual shares an owner change would wipe. A transaction's own rows are
-- those whose xmin is its top-level id (version 58: the import writes them
-- outside any savepoint). Only an import writes shares or team entries in
-- a transaction that absorbs after writing them, so no other absorb spares
-- anything. A row whose id is gone for good loses its record at the re-read
-- that follows, and the import's shares and team entries with it, through
-- recalc.record's delete. A write that commits after that last absorb (as
-- the import commits) drops them at the next absorb, as had it committed
-- after the import.

-- attach_effects as in version 58, sparing its transaction's own shares and
-- team entries for every mark.
CREATE OR REPLACE FUNCTION recalc.attach_effects(a recalc.attachment, p_all_gone boolean, p_gone text[], p_reowned text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_gone text[] := ARRAY(SELECT a.object || ':' || k FROM unnest(p_gone) k);
    v_reowned text[] := ARRAY(SELECT a.object || ':' || k FROM unnest(p_reowned) k);
BEGIN
    WITH s AS (DELETE FROM recalc.share_input s
               WHERE s.object = a.object AND s.xmin <> pg_current_xact_id()::xid
                 AND (p_all_gone OR s.record IN (SELECT unnest(v_gone))
                      OR s.cause = 'manual' AND s.record IN (SELECT unnest(v_reowned)))
               RETURNING s.record),
         t AS (DELETE FROM recalc.team t
               WHERE t.xmin <> pg_current_xact_id()::xid
                 AND t.record IN (SELECT r.id FROM recalc.record r WHERE r.object = a.object
                                  AND (p_all_gone OR r.id IN (SELECT unnest(v_gone))))
               RETURNING t.record)
    INSERT INTO recalc.change (kind, keys)
    SELECT 'record', array_agg(DISTINCT x.record) FROM (SELECT record FROM s UNION ALL SELECT record FROM t) x HAVING count(*) > 0;
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_effects(recalc.attachment, boolean, text[], text[]) FROM PUBLIC;
