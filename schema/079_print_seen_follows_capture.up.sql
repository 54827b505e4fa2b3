-- recalc schema, version 79: recalc.attach_print_seen keeps a row only
-- while its captured table is captured.
--
-- Version 78's rows outlived their capture: each detach, and each table
-- dropped, created again and attached again (a new relid), left one
-- behind, so the table grew without bound across such cycles
-- (TestPrintSeenForgetsDetachedCaptures). A row now goes with its
-- recalc.attach_capture row. A capture installed again by `recalc attach`
-- starts with none, which wait_fresh reads as "not known to have seen the
-- token's transactions" until the next absorb stores a fingerprint: it
-- waits for a fingerprint that differs meanwhile, as before version 78.
DELETE FROM recalc.attach_print_seen s
WHERE NOT EXISTS (SELECT FROM recalc.attach_capture c WHERE c.object = s.object AND c.relid = s.relid);
-- Added once: dropping it would lock recalc.attach_capture against every
-- application write to an attached table (its capture reads that table).
-- Adding it takes SHARE ROW EXCLUSIVE there, which those writes' locks do
-- not conflict with.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'recalc.attach_print_seen'::regclass AND conname = 'attach_print_seen_capture_fkey') THEN
        ALTER TABLE recalc.attach_print_seen ADD CONSTRAINT attach_print_seen_capture_fkey
            FOREIGN KEY (object, relid) REFERENCES recalc.attach_capture (object, relid) ON DELETE CASCADE;
    END IF;
END $$;
