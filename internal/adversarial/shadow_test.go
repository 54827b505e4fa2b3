package adversarial

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shadows are functions, an aggregate and operators that a role allowed to
// create in schema public defines as closer matches than pg_catalog's
// polymorphic ones, each counting its calls in public.shadow_hits. Found by
// an attack helper: recalc's sessions resolved unqualified calls through
// the default search_path, so `recalc run` ran such a public.unnest(text[])
// with the engine's rights, and `recalc rls enable` a
// public.cardinality(int2[]) with the superuser's.
const shadows = `
CREATE SEQUENCE public.shadow_hits;
GRANT USAGE ON SEQUENCE public.shadow_hits TO PUBLIC;
CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.nextval('public.shadow_hits'); RETURN QUERY SELECT pg_catalog.unnest(a); END $f$;
CREATE FUNCTION public.unnest(a bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.nextval('public.shadow_hits'); RETURN QUERY SELECT pg_catalog.unnest(a); END $f$;
CREATE FUNCTION public.cardinality(a text[]) RETURNS integer LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.nextval('public.shadow_hits'); RETURN pg_catalog.cardinality(a); END $f$;
CREATE FUNCTION public.cardinality(a smallint[]) RETURNS integer LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.nextval('public.shadow_hits'); RETURN pg_catalog.cardinality(a); END $f$;
CREATE FUNCTION public.array_length(a text[], d integer) RETURNS integer LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.nextval('public.shadow_hits'); RETURN pg_catalog.array_length(a, d); END $f$;
CREATE FUNCTION public.shadow_append(s text[], v text) RETURNS text[] LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.nextval('public.shadow_hits'); RETURN pg_catalog.array_append(s, v); END $f$;
CREATE AGGREGATE public.array_agg(text) (sfunc = public.shadow_append, stype = text[]);
CREATE FUNCTION public.shadow_contains(a text[], b text[]) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.nextval('public.shadow_hits'); RETURN a OPERATOR(pg_catalog.@>) b; END $f$;
CREATE OPERATOR public.@> (leftarg = text[], rightarg = text[], function = public.shadow_contains);
CREATE FUNCTION public.shadow_overlaps(a text[], b text[]) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.nextval('public.shadow_hits'); RETURN a OPERATOR(pg_catalog.&&) b; END $f$;
CREATE OPERATOR public.&& (leftarg = text[], rightarg = text[], function = public.shadow_overlaps);
CREATE TABLE public.app (id text PRIMARY KEY, owner text NOT NULL, parent text);
INSERT INTO public.app SELECT id, 'u1', NULL FROM (VALUES ('a1'), ('a2'), ('a3')) v (id);`

// TestShadowingFunctionsNeverRun: the writer may create in schema public
// and defines shadows there. Each is what an unqualified call resolves to
// under the default search_path (checked first, as the engine with a
// session of its own). Then every command that reads or writes recalc's
// tables runs, as the engine, and `recalc rls enable` and `rls disable` as
// the superuser, while the writer's changes wait to be recalculated: none
// of them calls a shadow, as each session of the command line pins its
// search_path.
func TestShadowingFunctionsNeverRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, err := b.admin.Exec(ctx, `GRANT CREATE ON SCHEMA public TO `+ident(b.writerRole)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.writer.Exec(ctx, shadows); err != nil {
		t.Fatalf("create the shadows as the writer: %v", err)
	}
	hits := func() int64 {
		t.Helper()
		var n int64
		if err := b.admin.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.shadow_hits`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, sql := range []string{
		`SELECT count(*) FROM unnest('{a}'::text[])`,
		`SELECT count(*) FROM unnest('{1}'::bigint[])`,
		`SELECT cardinality('{a}'::text[])`,
		`SELECT cardinality('{1}'::int2[])`,
		`SELECT array_length('{a}'::text[], 1)`,
		`SELECT array_agg(x) FROM (VALUES ('a')) v (x)`,
		`SELECT '{a}'::text[] @> '{a}'::text[]`,
		`SELECT '{a}'::text[] && '{a}'::text[]`,
	} {
		before := hits()
		if _, err := b.engine.Exec(ctx, sql); err != nil {
			t.Fatalf("premise %s: %v", sql, err)
		}
		if hits() == before {
			t.Fatalf("premise: %s as the engine, on the default search_path, called no shadow", sql)
		}
	}
	if _, err := b.admin.Exec(ctx, `SELECT setval('public.shadow_hits', 1, false)`); err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "model.json")
	if err := os.WriteFile(file, []byte(strings.Replace(baseModel, `{"id": "u4"}]`, `{"id": "u4"}, {"id": "u5"}]`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	writes := []string{
		`UPDATE recalc.record SET owner = 'u2' WHERE id = 'a3'`,
		`UPDATE recalc.record SET fields = '{"priority": 1}' WHERE id = 'hot1'`,
	}
	engineCmds := [][]string{
		{"plan", file}, {"import", file}, {"run"}, {"status"}, {"explain", "--user", "u2", "--record", "a3"},
		{"access", "--format", "csv"}, {"access", "--user", "u2", "--object", "account"}, {"verify"},
		{"defer"}, {"resume"}, {"run", "--full"}, {"stats"},
	}
	for _, args := range engineCmds {
		if args[0] == "run" && len(args) == 1 { // after the import, which replaces the records
			for _, w := range writes {
				if _, err := b.writer.Exec(ctx, w); err != nil {
					t.Fatalf("write as the writer: %v", err)
				}
			}
		}
		if _, err := b.recalcErr(args...); err != nil {
			t.Fatalf("recalc %s: %v", strings.Join(args, " "), err)
		}
		if n := hits(); n > 0 {
			t.Fatalf("recalc %s as the engine called a shadow %d times", strings.Join(args, " "), n)
		}
	}
	for _, args := range [][]string{
		{"rls", "enable", "--table", "app", "--object", "account", "--user-setting", "app.user_id", "--write", "--owner-column", "owner"},
		{"rls", "enable", "--table", "public.app", "--object", "account", "--user-setting", "app.user_id", "--per-user-plans"},
		{"rls", "disable", "--table", "app"},
	} {
		if _, err := b.recalcAs(b.url, args...); err != nil {
			t.Fatalf("recalc %s as the superuser: %v", strings.Join(args, " "), err)
		}
		if n := hits(); n > 0 {
			t.Fatalf("recalc %s as the superuser called a shadow %d times", strings.Join(args, " "), n)
		}
	}
	b.wantAccess(t, map[string]string{"u2 a3": "all", "u4 hot1": "none"})
}
