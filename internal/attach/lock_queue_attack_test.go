package attach_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/attach"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestOpenWriterTransactionQueuesNoWritesBehindAttach: the writer role
// keeps a transaction open that wrote a record, and the operator attaches
// another object, whose attach locks recalc.record against writes. The
// attach waited for that lock as long as the writer's transaction stayed
// open, and PostgreSQL queues every later write behind a waiting LOCK
// TABLE: every other write of the application to recalc.record waited too
// (and every run and recalc watch, behind the model lock the attach held).
// Now each try waits 100 ms at most, the other writes go through between
// the tries, and the attach fails, naming the writer's session, when the
// lock is not had in time; once the writer's transaction ends it goes
// through.
func TestOpenWriterTransactionQueuesNoWritesBehindAttach(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	w, writer := b.writerPool(t)
	b.mustAttach(t, crmSpec[:strings.LastIndex(crmSpec, ",\n  {\"object\": \"case\"")]+"\n]}")
	b.exec(t, w, `INSERT INTO recalc.record (id, object, owner, parent) VALUES ('case:900', 'case', 'bob', 'account:1')`)

	hostile, err := w.Begin(ctx)
	if err != nil {
		t.Fatalf("begin as the writer: %v", err)
	}
	defer hostile.Rollback(ctx)
	if _, err := hostile.Exec(ctx, `UPDATE recalc.record SET owner = owner WHERE id = 'case:900'`); err != nil {
		t.Fatalf("write a record as the writer: %v", err)
	}
	spec, err := attach.Parse(strings.NewReader(crmSpec))
	if err != nil {
		t.Fatalf("parse the spec: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := attach.Apply(ctx, b.engine, spec); done <- err }()

	// Hold point: the attach waits for its lock on recalc.record.
	for waiting := false; !waiting; {
		if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = 'recalc.record'::regclass
			AND mode = 'ShareRowExclusiveLock' AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatalf("look for the attach's lock wait: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("the attach ended before it waited for the writer's transaction: %v", err)
		default:
		}
	}
	// Another write of the application's, while the attach tries.
	other, err := w.Begin(ctx)
	if err != nil {
		t.Fatalf("begin as the writer: %v", err)
	}
	_, err = other.Exec(ctx, `SET LOCAL statement_timeout = '3s';
		INSERT INTO recalc.record (id, object, owner, parent) VALUES ('case:901', 'case', 'bob', 'account:1')`)
	if err == nil {
		err = other.Commit(ctx)
	}
	_ = other.Rollback(ctx)
	if err != nil {
		t.Errorf("a write to recalc.record while the attach waits for the writer's open transaction: %v, want it through", err)
	}

	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "nothing was attached") || !strings.Contains(err.Error(), "(role "+writer+")") {
			t.Errorf("attach while the writer's transaction stays open: %v, want a refusal naming the writer's session", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("the attach still waits for the writer's open transaction after a minute")
		_ = hostile.Rollback(ctx)
		<-done
	}
	if err := hostile.Rollback(ctx); err != nil {
		t.Fatalf("roll back the writer's transaction: %v", err)
	}
	if _, err := attach.Apply(ctx, b.engine, spec); err != nil {
		t.Fatalf("attach once the writer's transaction ended: %v", err)
	}
	var attached bool
	if err := b.admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.attachment WHERE object = 'case')`).Scan(&attached); err != nil || !attached {
		t.Errorf("case attached once the writer's transaction ended: %v (err %v), want attached", attached, err)
	}
}

// writerPool creates a login role given recalc's writer access, named
// after the engine role and the test (tests of one process share the
// engine role, and two that ran at once collided on one writer name), and
// returns a pool of its sessions and its name.
func (b *bundle) writerPool(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	writer := "attach_writer_" + strings.TrimPrefix(b.engineRole, "attach_engine_") + "_" + hex.EncodeToString(tok[:])
	testdb.DropRoles(t, b.url, writer)
	b.exec(t, b.admin, `CREATE ROLE `+ident(writer)+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`,
		`GRANT CONNECT ON DATABASE `+ident(dbName(t, b.url))+` TO `+ident(writer))
	if err := pgx.BeginFunc(ctx, b.engine, func(tx pgx.Tx) error { return access.Grant(ctx, tx, access.Writer, writer) }); err != nil {
		t.Fatalf("grant writer: %v", err)
	}
	return openPool(t, dburl.WithUser(b.url, writer)), writer
}
