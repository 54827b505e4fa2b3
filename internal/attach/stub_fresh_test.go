package attach_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
)

// TestWaitFreshBesideAPlanBuildingUsers: as in TestStubGoesBesideAPlan,
// the last share naming a stub goes with its record while a run's plan
// builds the users section from names it has already read. The delete's
// change rows (its record and the users section it logs for the stub)
// commit before the plan reads the change log, so the run's job consumes
// them all. A token taken after the delete's commit must not be fresh
// until the stub is gone. The plan used to leave that to the mark, for the
// next run: wait_fresh returned as soon as the first job finished, while
// frank still read the stub's account through the "tech" rule. Now the
// plan, finding a mark left once it has read the change log, builds the
// section again. With absorbed, tim's delete from the users table is absorbed by
// that plan itself, and the share's delete, committed while tim was still
// attached, logs no section change, only its mark: the section changes the
// plan's absorb and build logged, which carry the users delete's
// transaction, went with the job all the same.
func TestWaitFreshBesideAPlanBuildingUsers(t *testing.T) {
	t.Parallel()
	for _, absorbed := range []bool{false, true} {
		t.Run(fmt.Sprintf("absorbed=%v", absorbed), func(t *testing.T) {
			t.Parallel()
			waitFreshBesideAPlanBuildingUsers(t, absorbed)
		})
	}
}

// waitFreshBesideAPlanBuildingUsers is TestWaitFreshBesideAPlanBuildingUsers;
// with absorbed, the held plan absorbs tim's delete from the users table.
func waitFreshBesideAPlanBuildingUsers(t *testing.T, absorbed bool) {
	ctx := context.Background()
	b := setupUsers(t)
	b.exec(t, b.app, `ALTER TABLE crm.account DROP CONSTRAINT account_owner_id_fkey`,
		`INSERT INTO crm.app_user (id, name, role_id) VALUES ('tim', 'Tim', 'east')`,
		`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (60, 'Tim''s', 'tim', 'tech')`)
	merge := func(doc string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "merge.json")
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := b.recalc("import", "--merge", f); err != nil {
			t.Fatalf("import --merge %s: %v\n%s", doc, err, out)
		}
	}
	merge(`{"objects": [{"name": "lead", "internal_owd": "private"}]}`)
	b.exec(t, b.engine, `INSERT INTO recalc.record (id, object, owner) VALUES ('L1', 'lead', 'alice'), ('L2', 'lead', 'alice')`)
	b.run(t)
	merge(`{"shares": [{"object": "lead", "record": "L1", "grantee": "user:tim", "access": "read", "cause": "manual"},
	                   {"object": "lead", "record": "L2", "grantee": "user:bob", "access": "read", "cause": "manual"}]}`)
	b.run(t)
	b.exec(t, b.app, `DELETE FROM crm.app_user WHERE id = 'tim'`)
	if !absorbed {
		b.run(t)
	}
	level := func() string {
		t.Helper()
		var l string
		if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('frank', 'account:60')`).Scan(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	if l := level(); l != "read" {
		t.Fatalf("a share naming tim: frank reads account:60 %s, want read (tim a user, or a stub)", l)
	}
	// A delete marks the users section, so the plan below builds it.
	b.exec(t, b.engine, `DELETE FROM recalc.record WHERE id = 'L2'`)

	h := &holdAt{text: "UPDATE recalc.attached_users_state SET dirty = false", reached: make(chan struct{}), release: make(chan struct{})}
	cfg, err := pgxpool.ParseConfig(dburl.WithUser(b.url, b.engineRole))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = h
	held, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	defer h.free()
	done := make(chan error, 1)
	go func() {
		_, err := engine.Run(ctx, held, engine.Options{}, zerolog.Nop())
		done <- err
	}()
	select {
	case <-h.reached:
	case err := <-done:
		t.Fatalf("the run ended before its plan built the users section: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the run never built the users section")
	}
	// The last share naming tim goes with its record, commits, and the
	// writer takes its token.
	b.exec(t, b.engine, `DELETE FROM recalc.record WHERE id = 'L1'`)
	token, err := changes.FreshToken(ctx, b.engine)
	if err != nil {
		t.Fatal(err)
	}
	h.free()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}

	// Fresh now means tim's stub is gone; not fresh yet is fine.
	switch err := changes.WaitFresh(ctx, b.admin, token, 0); {
	case changes.IsNotFresh(err):
	case err != nil:
		t.Fatalf("wait_fresh: %v", err)
	default:
		if l := level(); l != "none" {
			t.Errorf("wait_fresh returned for a token taken after the last share naming tim went (and tim), but frank reads account:60 %s, want none (tim no user)", l)
		}
	}

	// The next run takes the mark, builds the section without the stub,
	// and the token is fresh.
	b.run(t)
	if err := changes.WaitFresh(ctx, b.admin, token, 5*time.Second); err != nil {
		t.Fatalf("wait_fresh after the next run: %v", err)
	}
	if l := level(); l != "none" {
		t.Errorf("after the next run: frank reads account:60 %s, want none (tim no user)", l)
	}
	b.raceCheckFull(t, "after the run")
}
