-- recalc schema, version 30: the keys of a change row are compressed with
-- lz4 where the server has it.
--
-- A captured statement writes one change row whose keys array holds every
-- key it wrote: about 12 MB for a COPY of 1,000,000 rows, which PostgreSQL
-- compresses when it stores it. pglz, the default, took about a fifth of
-- what capture adds to such a COPY; lz4 compresses it about as well (4 MB
-- against pglz's 3 MB) in a fraction of the time. A server built without
-- lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE recalc.change ALTER COLUMN keys SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'recalc.change.keys stays compressed with pglz: this server has no lz4';
END
$$;
