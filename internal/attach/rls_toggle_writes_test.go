package attach_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
)

// TestRLSToggledBesideWrites: `recalc rls enable` and `recalc rls disable`
// (access.EnableRLS, DisableRLS, as the tables' administrator) put
// recalc's policies on two attached tables and take them off again, over
// and over, while the application writes its tables from five connections
// and `recalc watch`'s steps (engine.Live) absorb the writes between the
// toggles. Every lock recalc's statements take on the tables interleaves
// with the writers' commits. Once the writes stop, a step leaves nothing
// logged, recalc.record mirrors the rows, and access is the oracle's and
// a full run's.
func TestRLSToggledBesideWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOwnRoles(t)
	// docs/attach.md: recalc re-reads a table under row-level security only past it.
	b.exec(t, b.admin, `ALTER ROLE `+ident(b.engineRole)+` BYPASSRLS`)
	b.mustAttach(t, crmSpec)
	b.run(t)
	tables := []access.RLS{
		{Table: "crm.account", Object: "account", IDColumn: "id", UserSetting: "app.user_id", Write: true},
		{Table: "support.case", Object: "case", IDColumn: "id", UserSetting: "app.user_id", PerUserPlans: true},
	}
	live := engine.NewLive(engine.Options{Retries: 5}, 1000)
	n, toggles, refused, steps := 0, 0, 0, 0
	step := func() error {
		n++
		switch n % 4 {
		case 1, 3:
			// One table a transaction, as `recalc rls enable --table T`
			// does: holding the first table's lock while trying the
			// second's could wait on a writer that held the second and
			// wanted the first (a case written, whose foreign key check
			// then reads its account) until the bound refused it (CI of
			// 309dcda: 1 toggle of 2, "the test covers nothing").
			for i := range tables {
				err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
					if n%4 == 1 {
						return access.EnableRLS(ctx, tx, &tables[i])
					}
					_, err := access.DisableRLS(ctx, tx, tables[i].Table)
					return err
				})
				// Writers that never leave the table unlocked for 100 ms
				// keep the policies from going on or off: refused, naming
				// them.
				switch {
				case err == nil:
					toggles++
				case strings.Contains(err.Error(), "kept the table locked"):
					refused++
				default:
					return err
				}
			}
			return nil
		default:
			_, err := live.Step(ctx, b.engine, zerolog.Nop())
			return err
		}
	}
	steps = b.writeWhile(t, 23, step, writeAccounts, writeContacts, relinkContacts, writeOpportunities, writeCases,
		rlsTableWriter, rlsTableWriter)
	t.Logf("%d steps and toggles beside the writes, %d toggles, %d refused for the writers' locks", steps, toggles, refused)
	if toggles < 2 {
		t.Fatalf("%d toggles of the policies beside the writes: the test covers nothing", toggles)
	}
	if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"account", "contact", "opportunity", "case"} {
		if b.waiting(t, o) {
			t.Errorf("writes to %s still logged after the last step", o)
		}
	}
	b.checkMirror(t, "after the writes and a step")
	b.checkOracle(t, "after the writes and a step")
	b.raceCheckFull(t, "after the writes and a step")
}

// rlsTableWriter is a writer of TestRLSToggledBesideWrites: 200 short
// transactions on the two tables the policies go on and off, a millisecond
// or two apart: owners changed, accounts and cases upserted, accounts
// deleted (their cases with them).
func rlsTableWriter(ctx context.Context, app *pgxpool.Pool, r *rand.Rand) error {
	for i := 0; i < 200; i++ {
		id, owner := 100+r.IntN(20), owners[r.IntN(len(owners))]
		var stmt string
		switch r.IntN(5) {
		case 0:
			stmt = fmt.Sprintf(`UPDATE crm.account SET owner_id = '%s' WHERE id = %d`, owner, 1+r.IntN(3))
		case 1:
			stmt = fmt.Sprintf(`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (%d, 'A', '%s', 'tech')
				ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id`, id, owner)
		case 2:
			stmt = fmt.Sprintf(`DELETE FROM crm.account WHERE id = %d`, id)
		case 3:
			stmt = fmt.Sprintf(`INSERT INTO support."case" VALUES (%d, %d, '%s', %d, 'New')
				ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id, priority = excluded.priority`, id, 1+r.IntN(3), owner, r.IntN(5))
		default:
			stmt = fmt.Sprintf(`UPDATE support."case" SET priority = %d WHERE id %% 4 = %d`, r.IntN(5), r.IntN(4))
		}
		if err := tx(ctx, app, stmt); err != nil {
			return err
		}
		time.Sleep(time.Duration(1+r.IntN(4)) * time.Millisecond)
	}
	return nil
}
