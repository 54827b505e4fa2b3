package attach_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/pg"
)

// TestGuardPathsAttackOwnerChange (regression, passes): frank may edit
// dave's opportunity b (big_opp) and nothing more; under the write
// policies (forced on the table's owner too) he tries to make it his by
// every path a statement of the application may take to the row: UPDATE
// ... FROM, MERGE, an upsert, a writable CTE, an auto-updatable view the
// application owns (security_invoker or not) and a rule on it, the
// application's own BEFORE and AFTER row triggers, and its SECURITY
// DEFINER function. The write guard, a row trigger that sees the row as
// written, refuses each with 42501 (the function runs as the table's
// owner, under the forced policies, whose functions it may not call: it is
// refused before the guard); a field edit still goes through.
func TestGuardPathsAttackOwnerChange(t *testing.T) {
	t.Parallel()
	b, role := setupWritePolicies(t)
	for _, tb := range protectedTables {
		b.enablePolicies(t, tb, access.RLS{Write: true, Force: true, OwnerColumn: "owner_id"})
	}
	const opp = `'` + guardOppB + `'`
	w := ident(role)
	b.exec(t, b.app, `CREATE VIEW crm.opp_v AS SELECT * FROM crm.opportunity`, `GRANT ALL ON crm.opp_v TO `+w,
		`CREATE VIEW crm.opp_vi WITH (security_invoker = true) AS SELECT * FROM crm.opportunity`, `GRANT ALL ON crm.opp_vi TO `+w,
		`CREATE RULE take AS ON UPDATE TO crm.opp_v WHERE NEW.stage = 'rule' DO ALSO UPDATE crm.opportunity SET owner_id = 'frank' WHERE id = NEW.id`,
		`CREATE FUNCTION crm.take_after() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
			IF NEW.stage = 'after' AND OLD.stage <> 'after' THEN UPDATE crm.opportunity SET owner_id = 'frank' WHERE id = NEW.id; END IF;
			RETURN NULL; END $$`,
		`CREATE TRIGGER zz_take_after AFTER UPDATE ON crm.opportunity FOR EACH ROW EXECUTE FUNCTION crm.take_after()`,
		`CREATE FUNCTION crm.take_before() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
			IF NEW.stage = 'before' THEN NEW.owner_id := 'frank'; END IF; RETURN NEW; END $$`,
		`CREATE TRIGGER zz_take_before BEFORE UPDATE ON crm.opportunity FOR EACH ROW EXECUTE FUNCTION crm.take_before()`,
		`CREATE FUNCTION crm.take_definer(p uuid) RETURNS void LANGUAGE sql SECURITY DEFINER AS $$
			UPDATE crm.opportunity SET owner_id = 'frank' WHERE id = p $$`,
		`GRANT EXECUTE ON FUNCTION crm.take_definer(uuid) TO `+w)
	for _, stmt := range []string{
		`UPDATE crm.opportunity o SET owner_id = 'frank' FROM (SELECT 1) s WHERE o.id = ` + opp,
		`MERGE INTO crm.opportunity o USING (SELECT ` + opp + `::uuid id) s ON o.id = s.id WHEN MATCHED THEN UPDATE SET owner_id = 'frank'`,
		`INSERT INTO crm.opportunity VALUES (` + opp + `, 2, 'frank', 'won', 5000, NULL) ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id`,
		`WITH u AS (UPDATE crm.opportunity SET owner_id = 'frank' WHERE id = ` + opp + ` RETURNING 1) SELECT count(*) FROM u`,
		`UPDATE crm.opp_v SET owner_id = 'frank' WHERE id = ` + opp,
		`UPDATE crm.opp_vi SET owner_id = 'frank' WHERE id = ` + opp,
		`UPDATE crm.opp_v SET stage = 'rule' WHERE id = ` + opp,
		`UPDATE crm.opportunity SET stage = 'after' WHERE id = ` + opp,
		`UPDATE crm.opportunity SET stage = 'before' WHERE id = ` + opp,
		`SELECT crm.take_definer(` + opp + `)`,
	} {
		err := b.writeAs(t, role, "frank", stmt)
		if errors.Is(err, errRolledBack) || pg.Code(err) != pg.InsufficientPrivilege {
			t.Errorf("frank (edit) takes dave's opportunity: %s: %v, want refused with 42501", stmt, err)
		}
		if err != nil && strings.Contains(err.Error(), "frank") {
			t.Errorf("%s: the refusal quotes a value: %v", stmt, err)
		}
	}
	if err := b.writeAs(t, role, "frank", `UPDATE crm.opp_v SET stage = 'negotiation' WHERE id = `+opp); !errors.Is(err, errRolledBack) {
		t.Errorf("frank (edit) edits a field through the view: %v, want it to go through", err)
	}
}
