package attach_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/schema"
)

// holdRenewCommit is a query tracer that holds the commit of the first
// transaction that renewed a fifth capture trigger (recalc.attach_renew_pin)
// until release is closed, after closing reached.
type holdRenewCommit struct {
	mu               sync.Mutex
	renewed          bool
	reached, release chan struct{}
	once, freed      sync.Once
}

func (h *holdRenewCommit) free() { h.freed.Do(func() { close(h.release) }) }

func (h *holdRenewCommit) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	h.mu.Lock()
	if strings.HasPrefix(strings.TrimSpace(data.SQL), "SELECT recalc.attach_renew_pin(") {
		h.renewed = true
	}
	held := h.renewed && strings.EqualFold(strings.TrimSpace(data.SQL), "commit")
	h.mu.Unlock()
	if held {
		h.once.Do(func() { close(h.reached); <-h.release })
	}
	return ctx
}

func (h *holdRenewCommit) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestRenewPinUnderWrites: `recalc init` gives support.case, attached
// before version 67, its new fifth trigger (schema.Migrate's renewPins)
// while application transaction A writes a chain of ids to the table
// (case 1 onto case 2's id): A writes while the renewal holds the table,
// its old triggers dropped and the new ones created, and commits after it
// (READ COMMITTED, and REPEATABLE READ with a snapshot older than the
// renewal: the capture refuses it with 40001, docs/attach.md, and its retry
// goes through). A's write is never lost, and the new trigger marks it:
// after a run the records mirror the rows, and frank's manual share on case
// 2 is gone. (A that wrote an id change before the renewal and commits
// while it waits for the table, and A that writes after it, held too.)
func TestRenewPinUnderWrites(t *testing.T) {
	t.Parallel()
	chain := []string{`UPDATE support."case" SET owner_id = 'bob' WHERE id = 1`,
		`SET LOCAL enable_indexscan = off`, `SET LOCAL enable_bitmapscan = off`, `UPDATE support."case" SET id = id + 1`}
	for _, rr := range []bool{false, true} {
		name := "read committed"
		if rr {
			name = "repeatable read"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			renewPinUnderWrite(t, rr, chain)
		})
	}
}

func renewPinUnderWrite(t *testing.T, rr bool, stmts []string) {
	ctx := context.Background()
	b := setupSharedCase(t)
	pin := oldCasePin(t, b)
	iso := pgx.ReadCommitted
	if rr {
		iso = pgx.RepeatableRead
	}
	a := beginRR(t, b.app, iso)
	if _, err := a.Exec(ctx, `SELECT count(*) FROM crm.app_user`); err != nil { // the snapshot, support.case not locked
		t.Fatal(err)
	}
	write := func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		return nil
	}
	h := &holdRenewCommit{reached: make(chan struct{}), release: make(chan struct{})}
	pool := tracedPool(t, b, h)
	// Registered after the pool's Close, so it runs before it: Close waits
	// for the renewal's session, which the tracer holds until then.
	t.Cleanup(h.free)
	migrated := make(chan error, 1)
	go func() { _, err := schema.Migrate(ctx, pool); migrated <- err }()
	select {
	case <-h.reached:
	case err := <-migrated:
		t.Fatalf("the upgrade ended before renewing the trigger: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the upgrade never renewed the trigger")
	}
	wrote := make(chan error, 1)
	go func() { wrote <- write(a) }()
	var renewPid uint32
	if err := b.admin.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = 'support.case'::regclass
		AND mode IN ('AccessExclusiveLock', 'ShareRowExclusiveLock') AND granted LIMIT 1`).Scan(&renewPid); err != nil {
		t.Fatalf("the renewal's lock on the table: %v", err)
	}
	waitBlocked(t, b.admin, renewPid, nil, "A to wait for the renewal")
	h.free()
	if err := <-wrote; err != nil {
		if !rr || pg.Code(err) != "40001" {
			t.Fatalf("A's write after the renewal: %v", err)
		}
		a.Rollback(ctx) //nolint:errcheck // retried in a new transaction
		a = beginRR(t, b.app, iso)
		if err := write(a); err != nil {
			t.Fatalf("A's retry: %v", err)
		}
	} else if rr {
		t.Errorf("A's write, its snapshot older than the renewal, went through the capture's check")
	}
	commit(t, a)
	if err := <-migrated; err != nil {
		t.Fatalf("upgrade under A: %v", err)
	}
	if def := pin(); !strings.Contains(def, "AFTER UPDATE") {
		t.Fatalf("after the upgrade, the fifth trigger: %s", def)
	}
	b.checkMirrorAfterRun(t, "after the upgrade and a run")
	if got := levelOf(t, b, "frank", "case:2"); got != "none" {
		t.Errorf("frank has %s on case:2, want none: A took its id from its row", got)
	}
	if out, err := b.recalc("verify"); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
