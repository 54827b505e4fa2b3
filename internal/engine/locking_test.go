package engine_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestUnableToLockRow holds a record's materialized row (recalc.acl_record)
// locked in another transaction, as another writer of its family would: the
// job's chunk times out, retries, and fails naming the chunk. While the job
// is unfinished, imports are refused; once the lock is gone, the next run
// resumes the job and finishes it.
func TestUnableToLockRow(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	ctx, pool := b.ctx, b.pool
	b.exec(t, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'a007'`)
	b.cur.Records[3*7].Owner = "u2" // a007: each account is followed by its two cases

	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, `SELECT 1 FROM recalc.acl_record WHERE id = 'a007' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	opt := engine.Options{LockTimeout: 100 * time.Millisecond, Retries: 2}
	_, err = engine.Run(ctx, pool, opt, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "UNABLE_TO_LOCK_ROW") || !strings.Contains(err.Error(), "chunk 0") {
		t.Fatalf("run under a held row lock: %v, want UNABLE_TO_LOCK_ROW naming chunk 0", err)
	}
	_, err = testkit.ImportString(ctx, pool, `{"users": []}`)
	var busy *store.BusyError
	if !errors.As(err, &busy) || !strings.Contains(err.Error(), "recalc run") {
		t.Fatalf("import during an unfinished job: %v, want a busy error that says to run recalc run", err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := engine.Run(ctx, pool, opt, zerolog.Nop())
	if err != nil {
		t.Fatalf("resume after the lock is gone: %v", err)
	}
	if rep.Kind != "incremental" || rep.Records != 3 {
		t.Errorf("resumed job: %+v, want the incremental job of a007's family (3 records)", rep)
	}
	b.checkOracle(t, "after the resumed job")
	var failed int
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM recalc.job WHERE status <> 'done'`).Scan(&failed)
	if failed != 0 {
		t.Errorf("%d jobs left unfinished", failed)
	}
}
