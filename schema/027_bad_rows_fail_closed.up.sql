-- recalc schema, version 27: one bad row never stops recalculation.
--
-- Rows that break the bounds fail closed: they get no access, and every
-- other row goes on being recalculated and mirrored. Three rows did not:
--   * a record written with plain SQL whose territories hold a NULL:
--     record_refs_bounded (version 7) let it in, and every job then failed
--     reading it, until someone deleted it. The constraint now also refuses
--     NULL elements and arrays of more than one dimension (NOT VALID, as
--     before: rows stored earlier are read as records with an unknown
--     territory, so invalid, internal/sharetable);
--   * an attached row whose territories column holds a two-dimensional
--     array: array_position raised, so its object's absorb failed on every
--     try and none of its writes was mirrored, a revocation included;
--   * an attached row with a field over jsonb's 256 MB string limit:
--     to_jsonb raised before the 1 MiB bound was checked, with the same
--     effect.
-- attach_rows_sql is as in version 21 but for the last two.

ALTER TABLE recalc.record DROP CONSTRAINT record_refs_bounded,
    ADD CONSTRAINT record_refs_bounded CHECK (
        octet_length(id) BETWEEN 1 AND 1024 AND octet_length(object) <= 1024 AND octet_length(owner) <= 1024
        AND coalesce(octet_length(parent), 0) <= 1024 AND coalesce(octet_length(root_id), 0) <= 1024
        AND CASE WHEN array_ndims(territories) > 1 THEN false
                 ELSE cardinality(territories) <= 1000 AND array_position(territories, NULL) IS NULL END) NOT VALID;

CREATE OR REPLACE FUNCTION recalc.attach_rows_sql(a recalc.attachment, p_from text, p_where text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fields text := '''{}''::jsonb';
    v_part text;
    v_big text;
    i int;
BEGIN
    -- jsonb_build_object takes at most 100 arguments: 50 fields a call.
    FOR i IN 0 .. cardinality(a.fields) - 1 BY 50 LOOP
        SELECT string_agg(format('%L, to_jsonb(s.%I)', f, f), ', ') INTO v_part FROM unnest(a.fields[i + 1:i + 50]) f;
        v_fields := v_fields || format(' || jsonb_build_object(%s)', v_part);
    END LOOP;
    -- A value stored in over 1 MiB is over it as text too (storage only
    -- compresses): the row fails closed before to_jsonb sees it.
    SELECT coalesce(string_agg(format('pg_column_size(s.%I) > 1048576', f), ' OR '), 'false') INTO v_big FROM unnest(a.fields) f;
    v_fields := format('CASE WHEN coalesce(%s, false) THEN NULL ELSE %s END', v_big, v_fields);
    RETURN format($f$
        SELECT %7$s m.id, %1$L::text AS object,
               CASE WHEN m.owner_ok THEN m.owner ELSE '' END AS owner,
               CASE WHEN m.ok THEN m.parent END AS parent,
               CASE WHEN m.ok THEN m.fields ELSE '{}'::jsonb END AS fields,
               CASE WHEN m.ok THEN m.territories WHEN m.owner_ok THEN '{""}'::text[] ELSE '{}'::text[] END AS territories
        FROM (SELECT o.*, o.owner_ok AND coalesce(coalesce(octet_length(o.parent), 0) <= 1024
                  AND CASE WHEN array_ndims(o.territories) > 1 THEN false
                           ELSE cardinality(o.territories) <= 1000 AND array_position(o.territories, NULL) IS NULL END
                  AND octet_length(o.fields::text) <= 1048576
                  AND NOT jsonb_path_exists(o.fields, 'strict $.* ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))')
                  %8$s, false) AS ok
              FROM (SELECT r.*, coalesce(octet_length(r.owner) BETWEEN 1 AND 1024, false) AS owner_ok
                    FROM (SELECT %2$L || (s.%3$I)::text AS id, (s.%4$I)::text AS owner, %5$s AS parent, %6$s AS fields,
                                 %9$s AS territories
                          FROM %10$s s WHERE %11$s) r) o) m
        WHERE octet_length(m.id) <= 1024 %12$s$f$,
        a.object, a.object || ':', a.id_col, a.owner_col,
        CASE WHEN a.parent_col IS NULL THEN 'NULL::text' ELSE format('%L || (s.%I)::text', a.parent_object || ':', a.parent_col) END,
        v_fields,
        CASE WHEN a.is_view THEN 'DISTINCT ON (m.id)' ELSE '' END,
        CASE WHEN a.is_view THEN 'AND count(*) OVER (PARTITION BY o.id) = 1' ELSE '' END,
        CASE WHEN a.territories_col IS NULL THEN '''{}''::text[]' ELSE format('coalesce(s.%I, ''{}'')', a.territories_col) END,
        p_from, p_where,
        CASE WHEN a.is_view THEN 'ORDER BY m.id, m.owner COLLATE "C"' ELSE '' END);
END $$;

REVOKE EXECUTE ON FUNCTION recalc.attach_rows_sql(recalc.attachment, text, text) FROM PUBLIC;
