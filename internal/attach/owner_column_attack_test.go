package attach_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/pg"
)

// TestOwnerColumnChangeNeedsAll: `rls enable --owner-column created_by` on
// a table attached with another owner column (owner_id) lets the user a
// row's created_by names read, update and delete it, recalculated or not.
// The write guard checked a change of owner_id alone: frank, who may only
// edit opportunity b (the rule big_opp), set its created_by to himself and
// kept it once recalc gave him nothing. Now a change of the policy's owner
// column needs all, as an owner change does, while its owner may make it
// and frank may still edit the other fields; a guard enabled before (one
// argument) makes recalc init name the table.
func TestOwnerColumnChangeNeedsAll(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	ctx := context.Background()
	b.exec(t, b.app, `ALTER TABLE crm.opportunity ADD COLUMN created_by text`, `UPDATE crm.opportunity SET created_by = owner_id`)
	b.enablePolicies(t, protectedTables[1], access.RLS{Write: true, Force: true, OwnerColumn: "created_by"})
	write := func(user, set string) error {
		return pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(role)); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', $1, true)`, user); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `UPDATE crm.opportunity SET `+set+` WHERE id = '00000000-0000-0000-0000-00000000000b'`)
			if err == nil && tag.RowsAffected() != 1 {
				err = errors.New("no row updated")
			}
			if err == nil {
				err = errRolledBack
			}
			return err
		})
	}
	if err := write("frank", `created_by = 'frank'`); pg.Code(err) != pg.InsufficientPrivilege {
		t.Errorf("frank (edit) makes himself opportunity b's created_by: %v, want refused (42501)", err)
	}
	if err := write("frank", `created_by = 'frank', stage = 'lost'`); pg.Code(err) != pg.InsufficientPrivilege {
		t.Errorf("frank (edit) makes himself created_by beside a field edit: %v, want refused (42501)", err)
	}
	if err := write("frank", `stage = 'lost'`); !errors.Is(err, errRolledBack) {
		t.Errorf("frank (edit) edits opportunity b's stage: %v, want it through", err)
	}
	if err := write("dave", `created_by = 'frank'`); !errors.Is(err, errRolledBack) {
		t.Errorf("dave (the owner) gives opportunity b's created_by to frank: %v, want it through", err)
	}
	if got, err := access.OutdatedPolicies(ctx, b.admin); err != nil || slices.Contains(got, "crm.opportunity") {
		t.Errorf("outdated policies after rls enable: %v (err %v), want crm.opportunity up to date", got, err)
	}
	// The guard as rls enable installed it before version 82.
	b.exec(t, b.admin, `DROP TRIGGER recalc_write_guard ON crm.opportunity`,
		`CREATE TRIGGER recalc_write_guard AFTER INSERT OR UPDATE ON crm.opportunity FOR EACH ROW EXECUTE FUNCTION recalc.rls_write_guard('app.user_id')`)
	if got, err := access.OutdatedPolicies(ctx, b.admin); err != nil || !slices.Contains(got, "crm.opportunity") {
		t.Errorf("outdated policies with a guard of one argument: %v (err %v), want crm.opportunity named", got, err)
	}
}
