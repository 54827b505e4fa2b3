-- recalc schema, version 49: the write guard refuses a write to a table
-- attached as more than one object.
--
-- recalc.rls_guard(relid) returns the attachment of the table the write
-- guard fired on. A table attached as two objects (which `recalc attach`
-- accepted until this version) has two, and the function returned the
-- first: with the other object's columns and parent (none, say), the guard
-- let an end user move a record under a parent they may not read, and so
-- gain read access to it. `recalc attach` now refuses to attach a table or
-- view as more than one object; a database attached before fails closed
-- here until it is attached again. The signature and result are those of
-- version 34, so the grants to reader roles stay. Found by an attack
-- helper.

CREATE OR REPLACE FUNCTION recalc.rls_guard(p_relid oid,
    OUT object text, OUT id_col text, OUT owner_col text, OUT parent_col text, OUT parent_object text,
    OUT parent_table text, OUT parent_id_col text, OUT parent_id_type text, OUT parent_owner_col text)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_attached bigint;
BEGIN
    -- One statement a written row: the attachment, and how many there are.
    SELECT a.object, a.id_col, a.owner_col, a.parent_col, a.parent_object,
           p.relid::regclass::text, p.id_col, p.id_type, p.owner_col, count(*) OVER ()
    INTO object, id_col, owner_col, parent_col, parent_object, parent_table, parent_id_col, parent_id_type, parent_owner_col, v_attached
    FROM recalc.attachment a LEFT JOIN recalc.attachment p ON p.object = a.parent_object AND NOT p.is_view
    WHERE a.relid = p_relid AND NOT a.is_view AND a.object <> 'users';
    IF v_attached > 1 THEN
        RAISE EXCEPTION 'table % is attached as more than one object, so recalc''s write guard cannot tell which one to check: attach it as one object (recalc attach), then run recalc rls enable again',
            p_relid::regclass USING ERRCODE = '42501';
    END IF;
END
$$;
