package engine_test

import (
	"crypto/rand"
	"encoding/hex"
	mrand "math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestSQLAccessAPI holds recalc.visible_records and the three-argument
// recalc.access_level to the oracle, for every user and object of random
// models.
func TestSQLAccessAPI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, pool := b.ctx, b.pool
	var m *model.Model // what the imports stored: an owner change drops a record's old manual shares
	for seed := 0; seed < 5; seed++ {
		file := oracle.RandomModel(mrand.New(mrand.NewPCG(uint64(seed), 99)), 60)
		b.importModel(t, file, nil)
		b.full(t, engine.Options{})
		m = oracle.Merge(m, file, testkit.EverySection())
		want := map[[2]string][]string{} // (user, object) -> "record=level"
		for _, r := range oracle.Access(m) {
			k := [2]string{r.User, r.Object}
			want[k] = append(want[k], r.Record+"="+r.Level.String())
		}
		for _, u := range m.Users {
			for _, o := range m.Objects {
				rows, err := pool.Query(ctx, `SELECT record || '=' || level FROM recalc.visible_records($1, $2)`, u.ID, o.Name)
				if err != nil {
					t.Fatal(err)
				}
				got, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				w := want[[2]string{u.ID, o.Name}]
				sort.Strings(w)
				sort.Strings(got)
				if strings.Join(got, " ") != strings.Join(w, " ") {
					t.Fatalf("seed %d: visible_records(%s, %s) = %v, oracle says %v", seed, u.ID, o.Name, got, w)
				}
			}
		}
		for i := 0; i < 20; i++ {
			r := m.Records[i%len(m.Records)]
			u := m.Users[i%len(m.Users)]
			var got, wrong string
			if err := pool.QueryRow(ctx, `SELECT recalc.access_level($1, $2, $3), recalc.access_level($1, 'no_such__c', $3)`, u.ID, r.Object, r.ID).Scan(&got, &wrong); err != nil {
				t.Fatal(err)
			}
			l, _ := access.Level(ctx, pool, u.ID, r.ID)
			if got != l || wrong != "none" {
				t.Fatalf("access_level(%s, %s, %s) = %s (two-argument form %s), wrong object %s", u.ID, r.Object, r.ID, got, l, wrong)
			}
		}
	}
}

// TestRowLevelSecurity installs recalc's policy on a real application table
// and reads it as a non-superuser role under SET ROLE: each user sees exactly
// the rows the oracle says they may read, and a session without a user
// sees nothing.
func TestRowLevelSecurity(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, pool := b.ctx, b.pool
	m := oracle.RandomModel(mrand.New(mrand.NewPCG(5, 5)), 80)
	b.importModel(t, m, nil)
	b.full(t, engine.Options{})
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	role := "rls_reader_" + hex.EncodeToString(tok[:])
	q := pgx.Identifier{role}.Sanitize()
	for _, sql := range []string{
		`CREATE TABLE public.crm_account (id text PRIMARY KEY, name text)`,
		`INSERT INTO public.crm_account SELECT id, 'Account ' || id FROM recalc.record WHERE object = 'account'`,
		`INSERT INTO public.crm_account VALUES ('not-a-record', 'stray row')`,
		`CREATE ROLE ` + q + ` NOLOGIN NOSUPERUSER`,
		`GRANT SELECT ON public.crm_account TO ` + q,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	testdb.DropRoles(t, pool.Config().ConnString(), role)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := access.Grant(ctx, tx, access.Reader, role); err != nil {
			return err
		}
		return access.EnableRLS(ctx, tx, &access.RLS{Table: "public.crm_account", Object: "account", IDColumn: "id", UserSetting: "app.user_id"})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for _, r := range oracle.Access(m) {
		if r.Object == "account" {
			want[r.User] = append(want[r.User], r.Record)
		}
	}
	filtered := 0 // users who see some rows but not all: the policy filters
	for _, u := range m.Users {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+q); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, u.ID); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT id FROM public.crm_account ORDER BY id COLLATE "C"`)
			if err != nil {
				return err
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			w := want[u.ID]
			sort.Strings(w)
			if strings.Join(got, " ") != strings.Join(w, " ") {
				t.Errorf("user %s sees %v through RLS, oracle says %v", u.ID, got, w)
			}
			if len(got) > 0 && len(got) < len(m.Records) {
				filtered++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if filtered == 0 {
		t.Fatal("no user saw a strict subset of the table: the test model does not exercise the policy")
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+q); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM public.crm_account`).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			t.Errorf("a session with no user sees %d rows, want 0", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRowLevelSecurityUserFromRole reads through a policy that takes the
// user from current_user: each login role sees its own readable rows, and
// no setting can make it see another user's.
func TestRowLevelSecurityUserFromRole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, pool := b.ctx, b.pool
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	alice, bob := "rls_alice_"+hex.EncodeToString(tok[:]), "rls_bob_"+hex.EncodeToString(tok[:])
	org := `{"objects": [{"name": "account", "internal_owd": "private"}],
		"users": [{"id": "` + alice + `"}, {"id": "` + bob + `"}],
		"records": [{"object": "account", "id": "a1", "owner": "` + alice + `"}, {"object": "account", "id": "b1", "owner": "` + bob + `"}]}`
	b.importFile(t, org)
	b.full(t, engine.Options{})
	for _, sql := range []string{
		`CREATE TABLE public.crm_account (id text PRIMARY KEY)`,
		`INSERT INTO public.crm_account VALUES ('a1'), ('b1')`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	for _, role := range []string{alice, bob} {
		q := pgx.Identifier{role}.Sanitize()
		if _, err := pool.Exec(ctx, `CREATE ROLE `+q+` NOLOGIN NOSUPERUSER; GRANT SELECT ON public.crm_account TO `+q); err != nil {
			t.Fatal(err)
		}
		testdb.DropRoles(t, pool.Config().ConnString(), role)
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, role := range []string{alice, bob} {
			if err := access.Grant(ctx, tx, access.Reader, role); err != nil {
				return err
			}
		}
		return access.EnableRLS(ctx, tx, &access.RLS{Table: "public.crm_account", Object: "account", IDColumn: "id", UserFromRole: true})
	})
	if err != nil {
		t.Fatal(err)
	}
	for role, want := range map[string]string{alice: "a1", bob: "b1"} {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			// The setting a trusted-application policy would read names the other user.
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+pgx.Identifier{role}.Sanitize()+`; SET LOCAL app.user_id = 'x'`); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT id FROM public.crm_account ORDER BY id`)
			if err != nil {
				return err
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if strings.Join(got, " ") != want {
				t.Errorf("%s sees %v, want [%s]", role, got, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
