package attach_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/changes"
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
	b, level := setupStub(t, !absorbed)
	if l := level(); l != "read" {
		t.Fatalf("a share naming tim: frank reads account:60 %s, want read (tim a user, or a stub)", l)
	}
	h, done := holdRunBuildingUsers(t, b)
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
