package attach_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestVisibleIDsLookalikeTypesNeverCast: visible_ids (SECURITY DEFINER)
// takes its `after` as anyelement and casts it to text, so a reader whose
// own type passed its check would have its own cast run as the engine. The
// reader names temporary types after the id types (pg_temp comes last on
// the function's pinned search_path, and pg_catalog has no type named
// "bigint" or "integer": int8 and int4), each with a cast to text through a
// function that raises the role it runs as. The check compares the type's
// name as regtype prints it, which quotes a type that is not PostgreSQL's
// own bigint or integer ("bigint") and schema-qualifies one pg_catalog
// shadows (pg_temp_3.uuid), so every call is refused with 22023 before the
// cast, and the function never runs as the engine.
func TestVisibleIDsLookalikeTypesNeverCast(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttached(t)
	if out, err := b.recalc("grant", "reader", b.appRole); err != nil {
		t.Fatalf("grant reader: %v\n%s", err, out)
	}
	conn, err := b.app.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for _, tc := range []struct{ object, typ string }{
		{"account", `"bigint"`}, {"account", `"integer"`}, {"account", "text"}, {"contact", "uuid"}, {"case", "int8"},
	} {
		typ := "pg_temp." + tc.typ
		for _, sql := range []string{
			`CREATE TYPE ` + typ + ` AS (x pg_catalog.text)`,
			`CREATE FUNCTION pg_temp.cast_` + strings.Trim(tc.typ, `"`) + `(` + typ + `) RETURNS pg_catalog.text LANGUAGE plpgsql AS $$
			 BEGIN RAISE EXCEPTION 'cast ran as %', current_user; END $$`,
			`CREATE CAST (` + typ + ` AS pg_catalog.text) WITH FUNCTION pg_temp.cast_` + strings.Trim(tc.typ, `"`) + `(` + typ + `)`,
		} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		// The bait: the reader's own cast runs, as the reader.
		_, err := conn.Exec(ctx, `SELECT row('1')::`+typ+`::pg_catalog.text`)
		if err == nil || !strings.Contains(err.Error(), "cast ran as "+b.appRole) {
			t.Fatalf("the reader's cast of %s to text: %v, want it to run as %s", typ, err, b.appRole)
		}
		_, err = conn.Exec(ctx, `SELECT * FROM recalc.visible_ids('erin', $1, 'read', row('1')::`+typ+`, 10)`, tc.object)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22023" || strings.Contains(pgErr.Message, "cast ran") {
			t.Errorf("visible_ids of %s after a %s: %v, want 22023 before any cast (the reader's cast must never run as the engine)", tc.object, typ, err)
		}
	}
}
