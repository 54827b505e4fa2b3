package engine_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
)

// TestMidJobKeyChangesBounded: the bound of
// TestMidJobNoAccessNeitherModelGives for plain SQL writes that change a
// record's id or object in place (its rid kept), which the property
// tests' writes (deletes, inserts, updates of the other columns) never
// make. A record whose parent no longer resolves is invalid, and gets no
// access: the model after leaves it out, which the oracle then reads the
// same (no access, and nothing to its relatives).
//
// Nor may an id be materialized twice at any point. Tasks of two
// families that swapped ids (the step that was under one moving to a
// sibling, so that no record moved between the two families), or a task
// deleted and another inserted under its id in another family, were
// written by one chunk each: between the two, recalc.acl_record held the
// id twice, and u1, who could read each record, got it listed twice by
// visible_records, rls_records and rls_keys; and, for a task and a project
// that swapped ids (the project, k1 now, given to u2), access_level(u1,
// 'proj__c', 'k1'), the form attached applications call, read the task's
// access with the project's: all, where no project k1 was u1's before or
// after. An id that passed from one record to another
// now joins their families as a move does (sharetable.MovedFamilies).
func TestMidJobKeyChangesBounded(t *testing.T) {
	t.Parallel()
	swap := func(a, b, owner string) string {
		return `BEGIN; UPDATE recalc.record SET id = 'tmp' WHERE id = '` + a + `';
			UPDATE recalc.record SET id = '` + a + `' WHERE id = '` + b + `';
			UPDATE recalc.record SET id = '` + b + `', owner = '` + owner + `' WHERE id = 'tmp'`
	}
	for _, tc := range []struct {
		name    string
		sql     string      // one transaction
		replace [][2]string // the records after, from liveMoveBase's, in order ("" deletes the line's record)
	}{
		{name: "task renamed and given away, its step left invalid",
			sql: `UPDATE recalc.record SET id = 'k1x', owner = 'u2' WHERE id = 'k1'`,
			replace: [][2]string{
				{`"id": "k1", "owner": "u1"`, `"id": "k1x", "owner": "u2"`},
				{`{"object": "step__c", "id": "s1", "owner": "u1", "parent": "k1"}`, ``},
			}},
		{name: "task renamed and given away, its step following",
			sql: `BEGIN; UPDATE recalc.record SET id = 'k1x', owner = 'u2' WHERE id = 'k1'; UPDATE recalc.record SET parent = 'k1x' WHERE id = 's1'`,
			replace: [][2]string{
				{`"id": "k1", "owner": "u1"`, `"id": "k1x", "owner": "u2"`},
				{`"parent": "k1"`, `"parent": "k1x"`},
			}},
		{name: "task made a project and given away, its step left invalid",
			sql: `UPDATE recalc.record SET object = 'proj__c', parent = NULL, owner = 'u2' WHERE id = 'k1'`,
			replace: [][2]string{
				{`{"object": "task__c", "id": "k1", "owner": "u1", "parent": "p9"}`, `{"object": "proj__c", "id": "k1", "owner": "u2"}`},
				{`{"object": "step__c", "id": "s1", "owner": "u1", "parent": "k1"}`, ``},
			}},
		{name: "sibling tasks swap ids, one given away, the step staying with its id",
			sql: swap("k1", "k9", "u2"),
			replace: [][2]string{
				{`"id": "k9", "owner": "u1", "parent": "p9"`, `"id": "k9", "owner": "u2", "parent": "p9"`},
			}},
		{name: "tasks of two projects swap ids, one given away, the step moving to a sibling",
			sql: swap("k1", "k2", "u2") + `; UPDATE recalc.record SET parent = 'k9' WHERE id = 's1'`,
			replace: [][2]string{
				{`"id": "k1", "owner": "u1", "parent": "p9"`, `"id": "k2", "owner": "u2", "parent": "p9"`},
				{`"id": "k2", "owner": "u1", "parent": "p1"`, `"id": "k1", "owner": "u1", "parent": "p1"`},
				{`"parent": "k1"`, `"parent": "k9"`},
			}},
		{name: "a task deleted, another inserted under its id in another project, its step moving to a sibling",
			sql: `BEGIN; DELETE FROM recalc.record WHERE id = 'k1';
				INSERT INTO recalc.record (id, object, owner, parent) VALUES ('k1', 'task__c', 'u2', 'p1');
				UPDATE recalc.record SET parent = 'k9' WHERE id = 's1'`,
			replace: [][2]string{
				{`"id": "k1", "owner": "u1", "parent": "p9"`, `"id": "k1", "owner": "u2", "parent": "p1"`},
				{`"parent": "k1"`, `"parent": "k9"`},
			}},
		{name: "a task and a project swap ids, the step moving to a sibling",
			sql: swap("p5", "k1", "u1") + `; UPDATE recalc.record SET owner = 'u2' WHERE id = 'k1';
				UPDATE recalc.record SET parent = 'k1' WHERE id = 'k5'; UPDATE recalc.record SET parent = 'k9' WHERE id = 's1'`,
			replace: [][2]string{
				{`"id": "s1", "owner": "u1", "parent": "k1"`, `"id": "s1", "owner": "u1", "parent": "k9"`},
				{`{"object": "task__c", "id": "k1", "owner": "u1", "parent": "p9"}`, `{"object": "task__c", "id": "p5", "owner": "u1", "parent": "p9"}`},
				{`{"object": "proj__c", "id": "p5", "owner": "u1"}`, `{"object": "proj__c", "id": "k1", "owner": "u2"}`},
				{`"id": "k5", "owner": "u1", "parent": "p5"`, `"id": "k5", "owner": "u1", "parent": "k1"`},
			}},
		{name: "tasks of two projects swap ids, the step staying with its id",
			sql: swap("k1", "k2", "u2"),
			replace: [][2]string{
				{`"id": "k1", "owner": "u1", "parent": "p9"`, `"id": "k2", "owner": "u2", "parent": "p9"`},
				{`"id": "k2", "owner": "u1", "parent": "p1"`, `"id": "k1", "owner": "u1", "parent": "p1"`},
			}},
	} {
		for _, inPlace := range []bool{false, true} {
			name := tc.name
			if inPlace {
				name += ", recomputed in place"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := setupOrg(t, liveMoveBase, engine.Options{})
				old := b.cur
				sql := tc.sql
				if strings.HasPrefix(sql, "BEGIN") {
					sql += "; COMMIT"
				}
				b.exec(t, sql)
				recs := liveMoveRecords()
				for _, r := range tc.replace {
					from, to := r[0], r[1]
					if !strings.Contains(recs, from) {
						t.Fatalf("the base has no %s", from)
					}
					recs = strings.Replace(recs, from, to, 1)
				}
				recs = strings.NewReplacer(",\n    ,", ",", "[,", "[", ",\n    ]", "]").Replace(recs)
				m, _, err := model.Parse(strings.NewReader(`{"version": 1, "records": [` + strings.Trim(strings.TrimSpace(recs), ",") + `]}`))
				if err != nil {
					t.Fatal(err)
				}
				cur := *old
				cur.Records = m.Records
				b.cur = &cur
				chk := &boundCheck{t: t, ctx: b.ctx, pool: b.pool}
				bound3 := objectBound(old, b.cur)
				pool := tracedPool(t, b.pool, &midJobTracer{check: func(point string) {
					chk.check(point)
					checkObjectLevels(t, b, name, point, bound3)
					var twice []string
					if err := b.pool.QueryRow(b.ctx, `SELECT ARRAY(SELECT id FROM recalc.acl_record GROUP BY id HAVING count(*) > 1 ORDER BY id)`).Scan(&twice); err != nil {
						t.Errorf("read acl_record: %v", err)
					} else if len(twice) > 0 {
						t.Errorf("%s, before %q: ids materialized twice: %v", name, point, twice)
					}
				}})
				chk.arm(name, old, b.cur)
				opt := engine.Options{Workers: 1, ChunkSize: 1, Full: inPlace, InPlace: inPlace}
				if _, err := engine.Run(b.ctx, pool, opt, zerolog.Nop()); err != nil {
					t.Fatalf("run: %v", err)
				}
				chk.disarm()
				b.checkOracle(t, "after the run")
			})
		}
	}
}

// objectBound is the greater of the models' levels for each (user,
// object, id): a record that changed object counts as another record.
func objectBound(models ...*model.Model) map[[3]string]model.Level {
	out := map[[3]string]model.Level{}
	for _, m := range models {
		objects := map[string]string{}
		for _, r := range m.Records {
			objects[r.ID] = r.Object
		}
		for _, u := range m.Users {
			for id, o := range objects {
				k := [3]string{u.ID, o, id}
				out[k] = max(out[k], model.None)
			}
		}
		for _, r := range oracle.Access(m) {
			k := [3]string{r.User, objects[r.Record], r.Record}
			out[k] = max(out[k], r.Level)
		}
	}
	return out
}

// checkObjectLevels fails the test when access_level(user, object, id),
// which attached applications call, gives more than bound.
func checkObjectLevels(t *testing.T, b *bundle, name, point string, bound map[[3]string]model.Level) {
	t.Helper()
	var users, objects, ids []string
	for k := range bound {
		users, objects, ids = append(users, k[0]), append(objects, k[1]), append(ids, k[2])
	}
	rows, err := b.pool.Query(b.ctx, `SELECT u, o, r, recalc.access_level(u, o, r) FROM unnest($1::text[], $2::text[], $3::text[]) x (u, o, r)`, users, objects, ids)
	if err != nil {
		t.Errorf("read access_level by object: %v", err)
		return
	}
	var u, o, r, level string
	if _, err := pgx.ForEachRow(rows, []any{&u, &o, &r, &level}, func() error {
		if got, at := model.Level(slices.Index(levelNames, level)), bound[[3]string{u, o, r}]; got > at {
			t.Errorf("%s, before %q: access_level(%s, %s, %s) is %s; at most %s", name, point, u, o, r, level, levelNames[at])
		}
		return nil
	}); err != nil {
		t.Errorf("read access_level by object: %v", err)
	}
}
