package attach_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/dburl"
)

// guardWrites are single-row writes of the application to the attached
// crm.account, each run in a transaction rolled back after it.
var guardWrites = []string{
	`INSERT INTO crm.account (id, name, owner_id) VALUES (900, 'Guard', 'bob')`,
	`UPDATE crm.account SET amount = 7 WHERE id = 1`,
	`UPDATE crm.account SET owner_id = 'carol' WHERE id = 1`,
}

// triggerReadsSQL reads how many rows of pg_trigger the session read.
const triggerReadsSQL = `SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
	FROM pg_stat_xact_sys_tables WHERE relid = 'pg_catalog.pg_trigger'::regclass`

// triggerReads is how many rows of pg_trigger each of guardWrites reads,
// its capture included, in a new session of the application's role whose
// caches a first run of each write has filled.
func triggerReads(t *testing.T, b *bundle) []int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dburl.WithUser(b.url, b.appRole))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	reads := make([]int64, len(guardWrites))
	for range 2 { // the second run, caches filled by the first
		for i, w := range guardWrites {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The backend's counts not yet reported, which a transaction
			// only adds to.
			var from int64
			if err := tx.QueryRow(ctx, triggerReadsSQL).Scan(&from); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, w); err != nil {
				t.Fatalf("%s: %v", w, err)
			}
			if err := tx.QueryRow(ctx, triggerReadsSQL).Scan(&reads[i]); err != nil {
				t.Fatal(err)
			}
			reads[i] -= from
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	return reads
}

// TestCaptureGuardOneQuery: the checks the capture makes at every statement
// the application writes to an attached table (migration 75: one query,
// planned once per session) read the capture's own five triggers, however
// many triggers the table has. Before, they counted the capture triggers
// among every trigger of the table: a table that 300 foreign keys
// reference has 600 more, all read at every single-row write. A renamed
// capture trigger is still one of them, as before; a disabled one makes
// the capture incomplete.
func TestCaptureGuardOneQuery(t *testing.T) {
	t.Parallel()
	b := setupAttached(t)
	before := triggerReads(t, b)
	b.exec(t, b.app, grownCatalog)
	after := triggerReads(t, b)
	for i, w := range guardWrites {
		if after[i] > before[i]+5 {
			t.Errorf("%s read %d rows of pg_trigger, %d before 300 foreign keys referenced the table: the capture's checks read every trigger of it",
				w, after[i], before[i])
		}
	}

	var trig string
	if err := b.admin.QueryRow(context.Background(), `SELECT c.func || '_update' FROM recalc.attach_capture c
		WHERE c.object = 'account' AND c.relid = 'crm.account'::regclass`).Scan(&trig); err != nil {
		t.Fatal(err)
	}
	b.exec(t, b.app, `ALTER TRIGGER `+ident(trig)+` ON crm.account RENAME TO renamed_by_the_owner`)
	if err := tx(context.Background(), b.app, guardWrites[1]); err != nil {
		t.Fatalf("a write beside a renamed capture trigger: %v", err)
	}
	b.exec(t, b.app, `ALTER TABLE crm.account DISABLE TRIGGER renamed_by_the_owner`)
	err := tx(context.Background(), b.app, guardWrites[0])
	if err == nil || !strings.Contains(err.Error(), "the capture of object account is incomplete") {
		t.Fatalf("a write beside a disabled capture trigger: %v, want the capture incomplete", err)
	}
}
