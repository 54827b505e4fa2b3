package attach_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestWritesBetweenAbsorbsKeepTheirEffects: a row of an attached table
// deleted, or its owner changed, counts as such although the row is back as
// it was before recalc absorbs the writes, as the same writes to
// recalc.record would: a record deleted loses its shares, and an owner
// change wipes the manual ones (version 54). Before, the absorb mirrored
// only the rows it found, so such writes read as an update of nothing, and
// the record kept frank's manual share. An update of another column,
// changed back, keeps it.
func TestWritesBetweenAbsorbsKeepTheirEffects(t *testing.T) {
	t.Parallel()
	const restore = `INSERT INTO support."case" VALUES (2, 2, 'bob', 1, 'Closed')`
	for _, tc := range []struct {
		name  string
		txs   [][]string // each a transaction, in order, with no absorb between
		level string     // frank's access to case:2 after the next run
	}{
		{"delete and insert again, one transaction", [][]string{{`DELETE FROM support."case" WHERE id = 2`, restore}}, "none"},
		{"delete, then insert again", [][]string{{`DELETE FROM support."case" WHERE id = 2`}, {restore}}, "none"},
		{"owner changed and back", [][]string{{`UPDATE support."case" SET owner_id = 'carol' WHERE id = 2`,
			`UPDATE support."case" SET owner_id = 'bob' WHERE id = 2`}}, "none"},
		{"id changed and back", [][]string{{`UPDATE support."case" SET id = 20 WHERE id = 2`}, {`UPDATE support."case" SET id = 2 WHERE id = 20`}}, "none"},
		{"truncate and refill", [][]string{{`TRUNCATE support."case"`, restore, `INSERT INTO support."case" VALUES (1, 1, 'erin', 4, 'New')`}}, "none"},
		{"another column changed and back", [][]string{{`UPDATE support."case" SET priority = 5 WHERE id = 2`},
			{`UPDATE support."case" SET priority = 1 WHERE id = 2`}}, "edit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t)
			b.mustAttach(t, crmSpec)
			b.run(t)
			if _, err := testkit.ImportString(ctx, b.engine, `{"shares": [{"object": "case", "record": "case:2", "grantee": "user:frank", "access": "edit", "cause": "manual"}]}`); err != nil {
				t.Fatal(err)
			}
			b.run(t)
			if got := levelOf(t, b, "frank", "case:2"); got != "edit" {
				t.Fatalf("premise: frank has %s on case:2, want edit (the manual share)", got)
			}
			for _, stmts := range tc.txs {
				if err := pgx.BeginFunc(ctx, b.app, func(tx pgx.Tx) error {
					for _, s := range stmts {
						if _, err := tx.Exec(ctx, s); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			b.run(t)
			if got := levelOf(t, b, "frank", "case:2"); got != tc.level {
				t.Fatalf("after the writes and a run: frank has %s on case:2, want %s", got, tc.level)
			}
			b.checkMirror(t, "after the writes and a run")
		})
	}
}
