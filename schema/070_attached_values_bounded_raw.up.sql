-- recalc schema, version 70: an attached row's values are bounded by their
-- size as written, not as stored, no territory name is over 1 KiB, and a
-- number is out of bounds when it rounds past float64's range.
--
-- Four bounds of attach_rows_sql (version 27) were wrong: the first three
-- let a row cost its absorb far more than its bounds say, or stop it
-- (found by an attack helper); the last closed a row that an import takes.
--   * A field was bounded at 1 MiB as stored (pg_column_size). Storage
--     compresses: repeat('a', 200000000) is stored in 784 kB with lz4 (the
--     application picks the compression of its columns, or sets
--     default_toast_compression), about 90 MB in 1 MiB with pglz. Each read
--     of such a row (the absorb, a re-read, each read apart) converted the
--     whole value with to_jsonb before finding it over 1 MiB as text: 7 s
--     a 200 MB field on a busy 2-CPU machine, so that a few such fields ran
--     an absorb past its timeout, and the object's writes, a revocation
--     beside them included, waited, stuck (TestCompressedFieldsFailClosedCheaply).
--     A field of a string type (text, varchar, char: recalc attaches no
--     other string types) is now bounded by octet_length, which reads the
--     size a value was written with from its header, without
--     decompressing it (8 ms for that field, as against 1.6 s for
--     length()). The other types it attaches are of fixed length, or
--     numeric, which is at most about 64 kB as written whatever it
--     stores: they keep the bound as stored.
--   * A territory name had no bound of length (record_refs_bounded bounds
--     their number only): an attached row could store 1,000 names of up to
--     1 GB in recalc.record, that every run reads. An attached row naming
--     one over 1,024 bytes (as an id) now fails closed (values out of
--     bounds), and recalc.record refuses names over 1,024,000 bytes
--     together (1,000 of 1 KiB; 23514). A constraint can bound only that
--     sum without a function, which every role writing recalc.record would
--     need the right to execute (migrations revoke EXECUTE from PUBLIC on
--     every recalc function, and roles granted before this version would
--     lose their writes); a single name over 1,024 bytes written directly
--     names no territory of the model (an import refuses longer ones), so
--     its record is invalid. The constraint is NOT VALID, as before.
--   * A parent's and a row's id were prefixed with their object's name
--     before their length was checked: a value near PostgreSQL's 1 GB made
--     the concatenation fail (XX000, "invalid memory alloc request size"),
--     which no read apart takes, so the object was stuck. The value's
--     length is now checked first: an id over 1 KiB is no record (as
--     before), a parent over 1 KiB fails the row closed (as before).
--   * A number was out of bounds past 1.7976931348623157e308 as written.
--     A model file's number is read as a float64 (the spec: numbers compare as
--     IEEE-754 doubles): 1.7976931348623158e308, and any decimal below 2^1024 -
--     2^970 (the midpoint between the largest float64 and 2^1024, which rounds
--     to 2^1024 and so overflows), is the largest float64, and an import
--     accepts it. The same number in an attached numeric column, or written
--     with plain SQL into recalc.record, was out of bounds: the attached row
--     failed closed (no access, its owner's included) where the imported
--     record gave access. Found by a differential test of the two feeds
--     (TestTwoFeedsNumberNearFloat64Max). The bound of record_fields_scalar
--     (version 7) and of attach_rows_sql is now that midpoint: a
--     number at or past it is what Go's strconv.ParseFloat, which reads every
--     record's fields, refuses. The constraint stays NOT VALID and uses no
--     function (a writer needs no right beyond its grants); it lets in only
--     more than before.

ALTER TABLE recalc.record DROP CONSTRAINT record_refs_bounded,
    ADD CONSTRAINT record_refs_bounded CHECK (
        octet_length(id) BETWEEN 1 AND 1024 AND octet_length(object) <= 1024 AND octet_length(owner) <= 1024
        AND coalesce(octet_length(parent), 0) <= 1024 AND coalesce(octet_length(root_id), 0) <= 1024
        AND CASE WHEN array_ndims(territories) > 1 THEN false
                 ELSE cardinality(territories) <= 1000 AND array_position(territories, NULL) IS NULL
                      AND octet_length(array_to_string(territories, '')) <= 1024000 END) NOT VALID;

ALTER TABLE recalc.record DROP CONSTRAINT record_fields_scalar,
    ADD CONSTRAINT record_fields_scalar CHECK (
        jsonb_typeof(fields) = 'object'
        AND NOT jsonb_path_exists(fields, 'strict $.* ? (@.type() == "object" || @.type() == "array"
            || (@.type() == "number" && (@ >= 179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792
                || @ <= -179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792)))')
        AND octet_length(fields::text) <= 1048576) NOT VALID;

-- attach_value_over_sql: the condition that field f of the row s read from
-- relation p_rel is over 1 MiB as text, read without decompressing it.
CREATE OR REPLACE FUNCTION recalc.attach_value_over_sql(p_rel oid, f text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN b.base IN ('text'::regtype, 'varchar'::regtype) THEN format('octet_length((s.%I)::text) > 1048576', f)
                WHEN b.base = 'bpchar'::regtype THEN format('octet_length((s.%I)::bpchar) > 1048576', f)
                ELSE format('pg_column_size(s.%I) > 1048576', f) END
    FROM (SELECT NULL) x
    LEFT JOIN LATERAL (SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END AS base
                       FROM pg_attribute c JOIN pg_type t ON t.oid = c.atttypid
                       WHERE c.attrelid = p_rel AND c.attname = f AND c.attnum > 0 AND NOT c.attisdropped) b ON true
$$;
REVOKE EXECUTE ON FUNCTION recalc.attach_value_over_sql(oid, text) FROM PUBLIC;

-- attach_rows_sql as in version 27, each field bounded by its size as
-- written, territory names at 1,024 bytes, ids and parents checked before
-- they are prefixed, and numbers bounded where a float64 overflows.
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
    -- A value over 1 MiB as written fails the row closed before to_jsonb
    -- (or anything else) decompresses it.
    SELECT coalesce(string_agg(recalc.attach_value_over_sql(a.relid, f), ' OR '), 'false') INTO v_big FROM unnest(a.fields) f;
    v_fields := format('CASE WHEN coalesce(%s, false) THEN NULL ELSE %s END', v_big, v_fields);
    RETURN format($f$
        SELECT %7$s m.id, %1$L::text AS object,
               CASE WHEN m.owner_ok THEN m.owner ELSE '' END AS owner,
               CASE WHEN m.ok THEN m.parent END AS parent,
               CASE WHEN m.ok THEN m.fields ELSE '{}'::jsonb END AS fields,
               CASE WHEN m.ok THEN m.territories WHEN m.owner_ok THEN '{""}'::text[] ELSE '{}'::text[] END AS territories
        FROM (SELECT o.*, o.owner_ok AND coalesce(NOT o.parent_big AND coalesce(octet_length(o.parent), 0) <= 1024
                  AND CASE WHEN array_ndims(o.territories) > 1 THEN false
                           ELSE cardinality(o.territories) <= 1000 AND array_position(o.territories, NULL) IS NULL
                                AND (octet_length(array_to_string(o.territories, '')) <= 1024 -- no name is longer
                                     OR NOT EXISTS (SELECT FROM unnest(o.territories) t WHERE octet_length(t) > 1024)) END
                  AND octet_length(o.fields::text) <= 1048576
                  AND NOT jsonb_path_exists(o.fields, 'strict $.* ? (@.type() == "number" && (@ >= 179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792
                      || @ <= -179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792))')
                  %8$s, false) AS ok
              FROM (SELECT r.*, coalesce(octet_length(r.owner) BETWEEN 1 AND 1024, false) AS owner_ok
                    FROM (SELECT CASE WHEN octet_length((s.%3$I)::text) <= 1024 THEN %2$L || (s.%3$I)::text END AS id,
                                 (s.%4$I)::text AS owner, %5$s AS parent, %13$s AS parent_big, %6$s AS fields,
                                 %9$s AS territories
                          FROM %10$s s WHERE %11$s) r) o) m
        WHERE octet_length(m.id) <= 1024 %12$s$f$,
        a.object, a.object || ':', a.id_col, a.owner_col,
        CASE WHEN a.parent_col IS NULL THEN 'NULL::text'
             ELSE format('CASE WHEN octet_length((s.%2$I)::text) <= 1024 THEN %1$L || (s.%2$I)::text END', a.parent_object || ':', a.parent_col) END,
        v_fields,
        CASE WHEN a.is_view THEN 'DISTINCT ON (m.id)' ELSE '' END,
        CASE WHEN a.is_view THEN 'AND count(*) OVER (PARTITION BY o.id) = 1' ELSE '' END,
        CASE WHEN a.territories_col IS NULL THEN '''{}''::text[]' ELSE format('coalesce(s.%I, ''{}'')', a.territories_col) END,
        p_from, p_where,
        CASE WHEN a.is_view THEN 'ORDER BY m.id, m.owner COLLATE "C"' ELSE '' END,
        CASE WHEN a.parent_col IS NULL THEN 'false' ELSE format('coalesce(octet_length((s.%I)::text) > 1024, false)', a.parent_col) END);
END $$;
REVOKE EXECUTE ON FUNCTION recalc.attach_rows_sql(recalc.attachment, text, text) FROM PUBLIC;
