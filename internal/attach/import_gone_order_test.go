package attach_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
)

// TestImportBesideAGoneRow is TestImportBesideAnOwnerChange for the writes
// whose effect is that of a deleted record (version 54): application
// transaction A deletes account 1's row and inserts it again, or changes
// its id away and back, or another row's id takes it, or truncates the
// table and refills it, and commits while import T, which merges a manual
// share for erin and a team entry for frank on account:1, runs. Carol's
// share and alice's team entry, older than both, go in every order. Erin's
// share and frank's entry stay when A commits before T's last absorb (in
// commit order, A's row is back under the id when T adds them), and go when
// A commits after T, or deletes the row for good. Before, T's last absorb took only owner changes, and
// A's mark, absorbed after T, dropped what T added although A committed
// first. An import of team entries alone absorbs last too (frank's entry
// stays, carol's share goes): before, only an import with shares did.
func TestImportBesideAGoneRow(t *testing.T) {
	t.Parallel()
	writes := []struct {
		name, stmts string
		kept        bool // the record is back under its id: the import's shares and team entries stay when it commits first
	}{
		{"deleted and inserted again", `DELETE FROM support."case" WHERE account_id = 1; DELETE FROM crm.account WHERE id = 1;
			INSERT INTO crm.account (id, name, owner_id, industry, amount, vip) VALUES (1, 'Acme', 'bob', 'tech', 1000, false)`, true},
		{"id changed away and back", `UPDATE crm.account SET id = 10 WHERE id = 1; UPDATE crm.account SET id = 1 WHERE id = 10`, true},
		{"another row takes the id", `DELETE FROM support."case" WHERE account_id = 1; DELETE FROM crm.account WHERE id = 1;
			UPDATE crm.account SET id = 1 WHERE id = 3`, true},
		{"truncated and refilled", `CREATE TEMP TABLE keep AS SELECT * FROM crm.account; CREATE TEMP TABLE keepc AS SELECT * FROM support."case";
			TRUNCATE crm.account CASCADE; INSERT INTO crm.account SELECT * FROM keep; INSERT INTO support."case" SELECT * FROM keepc`, true},
		{"deleted for good", `DELETE FROM support."case" WHERE account_id = 1; DELETE FROM crm.account WHERE id = 1`, false},
	}
	for _, w := range writes {
		for _, when := range []string{"before the import's last absorb", "after the import"} {
			t.Run(w.name+"/"+when, func(t *testing.T) {
				t.Parallel()
				importBesideGoneRow(t, w.stmts, when == "after the import", w.kept, gonePair)
			})
		}
	}
	t.Run("team entries alone/"+writes[0].name+"/before the import's last absorb", func(t *testing.T) {
		t.Parallel()
		importBesideGoneRow(t, writes[0].stmts, false, true, goneTeamOnly)
	})
}

// goneImport is what import T merges beside A: its file, and what
// account:1 has after A, T and a run when T's additions stay.
type goneImport struct{ file, kept string }

var (
	gonePair = goneImport{`{"shares": [{"object": "account", "record": "account:1", "grantee": "user:erin", "access": "edit", "cause": "manual"}],
		"teams": [{"record": "account:1", "user": "frank", "access": "edit"}]}`, "[share user:erin team frank]"}
	goneTeamOnly = goneImport{`{"teams": [{"record": "account:1", "user": "frank", "access": "edit"}]}`, "[team frank]"}
)

func importBesideGoneRow(t *testing.T, stmts string, after, kept bool, imp goneImport) {
	ctx := context.Background()
	b := setupMerged(t, `{"shares": [{"object": "account", "record": "account:1", "grantee": "user:carol", "access": "edit", "cause": "manual"}],
		"teams": [{"record": "account:1", "user": "alice", "access": "edit"}]}`,
		`ALTER TABLE support."case" DROP CONSTRAINT case_account_id_fkey`,
		`ALTER TABLE support."case" ADD FOREIGN KEY (account_id) REFERENCES crm.account ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED`)
	h := &holdSQL{match: func(sql string) bool { return strings.Contains(sql, "CREATE TEMP TABLE stage (") },
		reached: make(chan struct{}), release: make(chan struct{})}
	pool := tracedPool(t, b, h)
	defer h.free()
	done := make(chan error, 1)
	go func() {
		_, err := store.ImportWith(ctx, pool, strings.NewReader(imp.file), model.DefaultLimits(), zerolog.Nop(), nil, store.Options{Merge: true})
		done <- err
	}()
	select {
	case <-h.reached:
	case err := <-done:
		t.Fatalf("the import ended before its hold: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the import never reached its hold")
	}
	if !after {
		appTx(t, b, stmts)
	}
	h.free()
	if err := <-done; err != nil {
		t.Fatalf("import: %v", err)
	}
	if after {
		appTx(t, b, stmts)
	}
	b.run(t)
	b.checkMirror(t, "after the import and a run")
	var got []string
	if err := b.admin.QueryRow(ctx, `SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM (
		SELECT 'share ' || grantee x FROM recalc.share_input WHERE record = 'account:1'
		UNION ALL SELECT 'team ' || user_id FROM recalc.team WHERE record = 'account:1') s`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	want := imp.kept
	if after || !kept {
		want = "[]"
	}
	if fmt.Sprint(got) != want {
		t.Errorf("account:1's shares and team entries after the run: %v, want %s", got, want)
	}
	if out, err := b.recalc("verify"); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
