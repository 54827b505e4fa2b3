package attach_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
)

// TestImportLastAbsorbLeavesRootsToFix: an import with records and shares
// absorbs, last before it commits, the writes to attached tables with an
// owner change logged since its first absorb (migration 058). Its own
// record writes are logged as rooted (their roots come from the file), and
// that mark (the setting recalc.rooted) stayed on for that last absorb: an
// opportunity moved to another account beside its owner change was logged
// as rooted, so no run fixed its family root. Its family was still its old
// account's, where its parent is not: it failed closed (invalid, "parent
// missing"), erin lost it, account 2's owner and bosses never got it, and
// neither `recalc run --full` nor `recalc verify` could see it, both reading
// families by the stored root. Found by TestLiveCampaign, seed 144027
// (a contact moved beside its owner change).
func TestImportLastAbsorbLeavesRootsToFix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAttachedNotRun(t)
	const opp = "00000000-0000-0000-0000-000000000001"
	b.exec(t, b.app, `INSERT INTO crm.opportunity VALUES ('`+opp+`', 1, 'bob', 'Prospecting', 500, NULL)`)
	b.run(t)
	shares := `"shares": [{"object": "account", "record": "account:3", "grantee": "user:frank", "access": "read", "cause": "manual"}]`
	file := `{"records": [], ` + shares + `}`
	// The application moves the opportunity and gives it to erin, and
	// commits after the import's first absorb: the import's check, last
	// in it but for that absorb, commits it.
	check := func(context.Context, pgx.Tx) error {
		_, err := b.app.Exec(ctx, `UPDATE crm.opportunity SET account_id = 2, owner_id = 'erin' WHERE id = '`+opp+`'`)
		return err
	}
	if _, err := store.ImportWith(ctx, b.engine, strings.NewReader(file), model.DefaultLimits(), zerolog.Nop(), check, store.Options{}); err != nil {
		t.Fatalf("import: %v", err)
	}
	if b.waiting(t, "opportunity") {
		t.Fatal("the import's last absorb left the opportunity's write logged")
	}
	b.run(t)
	var root string
	var invalid []string
	if err := b.admin.QueryRow(ctx, `SELECT (SELECT root_id FROM recalc.record WHERE id = 'opportunity:`+opp+`'),
		(SELECT coalesce(array_agg(record || ': ' || reason), '{}') FROM recalc.invalid_record)`).Scan(&root, &invalid); err != nil {
		t.Fatal(err)
	}
	if root != "account:2" || len(invalid) > 0 {
		t.Errorf("after a run, the opportunity moved to account 2 has family root %s, and invalid records %v; want account:2 and none", root, invalid)
	}
	b.checkMirror(t, "after the import and a run")
	b.checkOracleOf(t, strings.TrimSuffix(strings.TrimSpace(crmModel), "}")+", "+shares+"}", "after the import and a run")
}
