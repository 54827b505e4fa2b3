-- recalc schema, version 31: the feed tells a full job's swap (kind swap),
-- and an OWD change names the objects controlled by their parent.
--
-- A consumer resyncs by reading recalc.access_changes_head() and the access
-- it mirrors in one REPEATABLE READ transaction. A full job that swaps new
-- share tables in while that transaction is open makes its later reads see
-- the new tables, whose rows committed after its snapshot: empty. The swap
-- now publishes an entry of kind swap, in the transaction that swaps, so a
-- resync whose head is below it knows to start again (docs/feed.md). The
-- owd entries are written by the engine (internal/feed), not here.
ALTER TABLE recalc.feed DROP CONSTRAINT IF EXISTS feed_kind_check,
    ADD CONSTRAINT feed_kind_check CHECK (kind IN ('record', 'grantee', 'user', 'owd', 'swap'));
