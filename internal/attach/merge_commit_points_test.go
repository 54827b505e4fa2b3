package attach_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// mergeFile is what `recalc import --merge` brings in the histories of
// TestMergeCommitPoints: manual shares on attached records, a changed
// criteria rule, a new user.
const mergeFile = `{"version": 1,
  "shares": [{"object": "account", "record": "account:2", "grantee": "user:frank", "access": "edit", "cause": "manual"},
             {"object": "opportunity", "record": "opportunity:00000000-0000-0000-0000-000000000003", "grantee": "user:erin", "access": "read", "cause": "manual"}],
  "rules": [{"id": "hot_case", "object": "case", "type": "criteria", "target": "role:west", "access": "edit",
             "criteria": {"conditions": [{"field": "priority", "op": "ge", "value": 2}]}}],
  "users": [{"id": "gina", "role": "east"}]}`

// mergeWrites are the application's writes committed before one statement
// of the merge, the k-th history the k-th modulo their number: owner
// changes and a row gone on the records the merge shares, a field the
// changed rule reads.
var mergeWrites = [][]string{
	{`UPDATE crm.account SET owner_id = 'dave' WHERE id = 2`},
	{`DELETE FROM crm.opportunity WHERE id = ` + opp3},
	{`UPDATE support."case" SET priority = 2 WHERE id = 2`, `UPDATE crm.account SET industry = 'tech' WHERE id = 3`},
	{`UPDATE crm.opportunity SET owner_id = 'erin', amount = 2000 WHERE id = ` + opp3},
	{`UPDATE crm.account SET owner_id = 'alice' WHERE id = 2`, `INSERT INTO support."case" VALUES (4, 2, 'bob', 3, 'New')`},
}

// TestMergeCommitPoints: with the four objects attached, `recalc import
// --merge` (mergeFile) runs while an application transaction commits a
// write (mergeWrites) before one of its statements, each in turn in its
// own history. Once a run follows, nothing is logged, recalc.record
// mirrors the rows, and access is the oracle's for the stored model (the
// rows as records) and a full run's. 12 histories, at statements spread
// from the first to the last; MERGE_POINTS=N runs N, MERGE_POINTS=all (or
// RECALC_COMMIT_POINTS=all) every one.
func TestMergeCommitPoints(t *testing.T) {
	t.Parallel()
	n := mergeStatements(t)
	t.Logf("the merge sends %d statements", n)
	for _, k := range spread(n, os.Getenv("MERGE_POINTS"), 12) {
		t.Run(fmt.Sprintf("statement %d", k), func(t *testing.T) {
			t.Parallel()
			mergeCommitPoint(t, int64(k), mergeWrites[k%len(mergeWrites)])
		})
	}
}

// mergeStatements counts the statements of the merge with nothing beside.
func mergeStatements(t *testing.T) int {
	t.Helper()
	return int(mergeCommitPoint(t, -1, nil).n.Load())
}

// mergeCommitPoint is one history of TestMergeCommitPoints.
func mergeCommitPoint(t *testing.T, at int64, write []string) *commitBefore {
	ctx := context.Background()
	b := setupAttached(t, raceOpps)
	c := &commitBefore{at: at, done: make(chan error, 1), write: func() error { return tx(ctx, b.app, write...) }}
	cfg, err := pgxpool.ParseConfig(dburl.WithUser(b.url, b.engineRole))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = c
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = store.ImportWith(ctx, pool, strings.NewReader(mergeFile), model.DefaultLimits(), zerolog.Nop(), nil, store.Options{Merge: true})
	// An opportunity deleted before the merge reads the records makes
	// its share invalid: the merge is refused, storing nothing.
	if err != nil && !(strings.HasPrefix(write[0], "DELETE") && strings.Contains(err.Error(), "record does not exist")) {
		t.Fatalf("merge: %v", err)
	}
	t.Logf("merge: %v", err)
	if at >= 0 {
		if c.n.Load() <= at {
			t.Fatalf("the merge sent %d statements, none at %d", c.n.Load(), at)
		}
		if err := <-c.done; err != nil {
			t.Fatalf("the application's write: %v", err)
		}
	}
	b.raceCheckFull(t, "after the merge and a run")
	b.checkMirror(t, "after the merge and a run")
	b.checkStoredOracle(t, "after the merge and a run")
	return c
}

// checkStoredOracle fails unless the materialized access is the oracle's
// for the stored model (exported: its configuration, shares and team
// entries) with the application's rows as its records.
func (b *bundle) checkStoredOracle(t *testing.T, after string) {
	t.Helper()
	ctx := context.Background()
	var buf bytes.Buffer
	if _, err := store.Export(ctx, b.engine, &buf, append(append([]string{}, model.ConfigSections...), "shares", "teams")); err != nil {
		t.Fatalf("export: %v", err)
	}
	var file map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &file); err != nil {
		t.Fatalf("read the export: %v", err)
	}
	var records string
	if err := b.admin.QueryRow(ctx, expectedRecords).Scan(&records); err != nil {
		t.Fatal(err)
	}
	file["records"] = json.RawMessage(records)
	doc, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := model.Parse(bytes.NewReader(doc))
	if err != nil {
		t.Fatalf("expected model: %v", err)
	}
	if got, want := testkit.AccessCSV(t, ctx, b.engine), oracle.CSV(oracle.Access(m)); got != want {
		t.Fatalf("%s, access differs from the oracle\n%s", after, oracle.Diff(want, got))
	}
}
