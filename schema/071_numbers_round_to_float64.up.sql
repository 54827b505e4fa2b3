-- recalc schema, version 71: a number is out of bounds when it rounds past
-- float64's range, as a model file's number is, not when it is past
-- 1.7976931348623157e308 as written.
--
-- A model file's number is read as a float64 (the spec: numbers compare as
-- IEEE-754 doubles): 1.7976931348623158e308, and any decimal below 2^1024 -
-- 2^970 (the midpoint between the largest float64 and 2^1024, which rounds
-- to 2^1024 and so overflows), is the largest float64, and an import
-- accepts it. The same number in an attached numeric column, or written
-- with plain SQL into recalc.record, was out of bounds: the attached row
-- failed closed (no access, its owner's included) where the imported
-- record gave access. Found by a differential test of the two feeds
-- (TestTwoFeedsNumberNearFloat64Max). The bound of record_fields_scalar
-- (version 7) and of attach_rows_sql (version 70) is now that midpoint: a
-- number at or past it is what Go's strconv.ParseFloat, which reads every
-- record's fields, refuses. The constraint stays NOT VALID and uses no
-- function (a writer needs no right beyond its grants); it lets in only
-- more than before.

ALTER TABLE recalc.record DROP CONSTRAINT record_fields_scalar,
    ADD CONSTRAINT record_fields_scalar CHECK (
        jsonb_typeof(fields) = 'object'
        AND NOT jsonb_path_exists(fields, 'strict $.* ? (@.type() == "object" || @.type() == "array"
            || (@.type() == "number" && (@ >= 179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792
                || @ <= -179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792)))')
        AND octet_length(fields::text) <= 1048576) NOT VALID;

-- attach_rows_sql as in version 70 but for the bound of numbers.
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
