package adversarial

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// TestMixedStateAttackClosureRemovedAfterShares: one import takes u4 out of
// group crit and shares a3 with crit. Before it, u4 reads nothing of a3
// (crit has no share on it); after it, neither (u4 is no member). An
// incremental job commits its chunks' share rows one transaction each and
// rewrote the closure only when it finished, so meanwhile the new share row
// met the old membership: a reader asking for u4 (or a policy filtering
// u4's rows) read a3, which no configuration ever gave u4, for as long as
// the job was unfinished (an interrupted job: until the next run resumed
// it). The closure's removals now commit with the job's creation, before
// any chunk, and its additions with the finish.
//
// The test holds the job's finish with a lock on recalc.acl_object (which
// only the finish writes) while the reader asks.
func TestMixedStateAttackClosureRemovedAfterShares(t *testing.T) {
	t.Parallel() // its database and roles are its own: run first and alone, it held the others back 13 s
	b := setup(t)
	ctx := context.Background()
	b.wantAccess(t, map[string]string{"u4 a3": "none", "u4 hot1": "read", "u1 a3": "all"})

	var m map[string]any
	if err := json.Unmarshal([]byte(baseModel), &m); err != nil {
		t.Fatal(err)
	}
	m["groups"] = []any{map[string]any{"id": "crit", "members": []any{"user:u1"}}}
	m["shares"] = append(m["shares"].([]any), map[string]any{
		"object": "account", "record": "a3", "grantee": "group:crit", "access": "read", "cause": "manual"})
	doc, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b.importJSON(t, string(doc))

	hold, err := b.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	exec(t, hold, `LOCK TABLE recalc.acl_object IN SHARE MODE`)

	done := make(chan error, 1)
	go func() {
		_, err := engine.Run(ctx, b.engine, engine.Options{}, zerolog.Nop())
		done <- err
	}()
	// Every chunk is committed once the finish waits for the lock.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var waiting bool
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE NOT l.granted AND l.relation = 'recalc.acl_object'::regclass AND a.usename = $1)`, b.engineRole).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the job ended before its finish waited for recalc.acl_object: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the job's finish never waited for recalc.acl_object")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := b.count(t, `SELECT count(*) FROM recalc.chunk c JOIN recalc.job j ON j.id = c.job_id
		WHERE j.status = 'running' AND c.status <> 'done'`); n != 0 {
		t.Fatalf("%d chunks of the running job are not done while its finish waits", n)
	}
	// Neither the configuration before nor the one after gives u4 a3.
	if got := b.access(t, "u4", "a3"); got != "none" {
		t.Errorf("while the job finishes, access_level(u4, a3) = %s, want none: the new share met the old membership", got)
	}
	var can bool
	if err := b.reader.QueryRow(ctx, `SELECT recalc.can_access('u4', 'account', 'a3', 'read')`).Scan(&can); err != nil {
		t.Fatal(err)
	}
	if can {
		t.Error("while the job finishes, can_access(u4, account, a3, read) is true")
	}

	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	b.wantAccess(t, map[string]string{"u4 a3": "none", "u4 hot1": "none", "u1 a3": "all", "u1 hot1": "all"})
	var removed int64
	if err := b.admin.QueryRow(ctx, `SELECT closure_removed FROM recalc.job ORDER BY id DESC LIMIT 1`).Scan(&removed); err != nil {
		t.Fatal(err)
	}
	if removed != 1 {
		t.Errorf("the job reports %d closure entries removed, want 1 (u4 from crit)", removed)
	}
	b.sameAsFull(t)
}
