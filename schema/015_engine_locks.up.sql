-- recalc schema, version 15: the engine's locks are row locks.
--
-- The model lock (imports, job creation, the watch fast path, attach,
-- verify --repair) and the staging lock were advisory locks, which every
-- role that can connect may take: any of them could hold one and stall
-- every run and import. They are now row locks on this table, which only its
-- owner can take (locking a row needs UPDATE on its table, granted to no
-- role). The schema lock of `recalc init` stays advisory: it is taken before
-- this table exists.
CREATE TABLE IF NOT EXISTS recalc.engine_lock (
    scope integer PRIMARY KEY,
    name  text NOT NULL UNIQUE
);
INSERT INTO recalc.engine_lock (scope, name) VALUES (2, 'model'), (3, 'staging') ON CONFLICT DO NOTHING;
REVOKE ALL ON recalc.engine_lock FROM PUBLIC;
