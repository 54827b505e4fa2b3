package attach_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestRLSFollowsWatchedWrites puts recalc's policies on three attached
// tables (accounts and cases with bigint ids under the adaptive policy,
// opportunities with uuid ids under the per-user one) while the
// application writes them and its users table from four connections
// (owners changed, records copied in and deleted, users added, deleted,
// deactivated, given other roles and types) and `recalc watch`'s steps
// absorb each write. After every step, in one snapshot, every user (an
// unknown one too) reads through the policies, as a reader role, exactly
// the rows access_level gives it: no row shows that the share tables do not
// give, whatever the writes in flight. After the last step the share tables
// are the oracle's for the data, and the policies still match them.
func TestRLSFollowsWatchedWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOwnRoles(t)
	reader := "attach_reader_" + b.appRole[len("attach_app_"):]
	testdb.DropRoles(t, b.url, reader)
	b.exec(t, b.app,
		`ALTER TABLE crm.app_user ADD COLUMN role_id text, ADD COLUMN kind text, ADD COLUMN active boolean DEFAULT true`,
		`UPDATE crm.app_user SET role_id = CASE id WHEN 'alice' THEN 'ceo' WHEN 'bob' THEN 'east' WHEN 'carol' THEN 'east'
		     WHEN 'dave' THEN 'west' WHEN 'erin' THEN 'west' END`,
		`GRANT SELECT, TRIGGER ON crm.app_user TO `+ident(b.engineRole))
	b.mustAttach(t, usersSpec)
	// docs/attach.md: recalc re-reads a table under row-level security only past it.
	b.exec(t, b.admin, `ALTER ROLE `+ident(b.engineRole)+` BYPASSRLS`,
		`CREATE ROLE `+ident(reader)+` NOLOGIN NOSUPERUSER`,
		`GRANT USAGE ON SCHEMA crm, support TO `+ident(reader),
		`GRANT SELECT ON crm.account, crm.opportunity, support."case" TO `+ident(reader))
	if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
		if err := access.Grant(ctx, tx, access.Reader, reader); err != nil {
			return err
		}
		for _, p := range protected {
			if err := access.EnableRLS(ctx, tx, &access.RLS{Table: p.name, Object: p.object, IDColumn: "id", UserSetting: "app.user_id", PerUserPlans: p.perUser}); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b.run(t)

	live := engine.NewLive(engine.Options{}, 1000)
	steps, filtered := 0, 0
	step := func() error {
		if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
			return err
		}
		steps++
		n, err := b.policiesMatchLevels(ctx, reader)
		filtered += n
		return err
	}
	b.writeWhile(t, 17, step, writeUsers, writeAccounts, writeOpportunities, writeCases)
	if err := step(); err != nil { // the writes that committed after the last step
		t.Fatal(err)
	}
	b.checkUsers(t, "after the watched writes")
	if _, err := b.policiesMatchLevels(ctx, reader); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d watch steps, %d (user, table) reads a strict subset", steps, filtered)
	if steps < 3 || filtered == 0 {
		t.Fatalf("%d watch steps, %d (user, table) reads a strict subset of a table: the test does not exercise the policies under writes", steps, filtered)
	}
}

// protected are the attached tables TestRLSFollowsWatchedWrites puts
// policies on.
var protected = []struct {
	name, table, object string // name as rls enable takes it; table quoted
	perUser             bool
}{
	{"crm.account", "crm.account", "account", false},
	{"crm.opportunity", "crm.opportunity", "opportunity", true},
	{"support.case", `support."case"`, "case", false},
}

// policiesMatchLevels reads, in one REPEATABLE READ snapshot, each
// protected table through its policies as role for every user of crmUsers
// (and one that is none), and fails unless the rows are exactly those
// access_level gives the user. It returns how many reads were a strict,
// non-empty subset of the table.
func (b *bundle) policiesMatchLevels(ctx context.Context, role string) (int, error) {
	filtered := 0
	err := pgx.BeginTxFunc(ctx, b.admin, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		for _, p := range protected {
			var all int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+p.table).Scan(&all); err != nil {
				return err
			}
			for _, u := range append(slices.Clone(crmUsers), "nobody", "n1") {
				var want, got []string
				if err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(id::text ORDER BY id::text), '{}') FROM `+p.table+`
					WHERE recalc.access_level($1, $2, id) <> 'none'`, u, p.object).Scan(&want); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(role)); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, u); err != nil {
					return err
				}
				if err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(id::text ORDER BY id::text), '{}') FROM `+p.table).Scan(&got); err != nil {
					return fmt.Errorf("%s as %s: %w", p.table, u, err)
				}
				if _, err := tx.Exec(ctx, `RESET ROLE`); err != nil {
					return err
				}
				if !slices.Equal(got, want) {
					return fmt.Errorf("%s (per-user %v): %s reads %v through the policy, access_level gives %v", p.table, p.perUser, u, got, want)
				}
				if len(got) > 0 && len(got) < all {
					filtered++
				}
			}
		}
		return nil
	})
	return filtered, err
}
