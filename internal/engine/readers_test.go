package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
)

// TestJobsLeaveReadersAlone: a reader's transaction open across a job that
// changes the closure (a group's members, a user's role) or an OWD, or
// across a full run in place, neither holds the job up nor sees the users
// or objects vanish from its snapshot.
// The job's finish rewrote acl_user and acl_object with TRUNCATE, which
// waited for every open reader, made every new one wait behind it, and
// left a reader whose snapshot predated it with empty tables: `none` for
// everyone, or a deadlock between a reader and the job.
func TestJobsLeaveReadersAlone(t *testing.T) {
	t.Parallel()
	groups := `{"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`
	for _, tc := range []struct {
		name, change string
		opt          engine.Options
	}{
		{"a group's members", groups, engine.Options{}},
		{"an OWD", `{"objects":[{"name":"account","internal_owd":"public_read_only"},{"name":"case","parent":"account","internal_owd":"private"}]}`, engine.Options{}},
		{"a user's role", `{"users":[{"id":"u1","role":"vp"},{"id":"u2","role":"ops"},{"id":"u3","role":"rep"},{"id":"u4","role":"ops"},{"id":"u5","role":"ops"},{"id":"boss","role":"ceo"}]}`, engine.Options{}},
		{"a full run in place", groups, engine.Options{Full: true, InPlace: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			b.importFile(t, tc.change)
			pairs := [][2]string{{"u1", "a001"}, {"u2", "a002"}, {"u4", "a001"}, {"u5", "c002_0"}, {"boss", "a003"}, {"u3", "a006"}}

			reader := begin(t, connect(t, b.pool))
			if _, err := reader.Exec(b.ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`); err != nil {
				t.Fatal(err)
			}
			before := readLevels(t, reader, pairs)
			if !slices.ContainsFunc(before, func(l string) bool { return !strings.HasSuffix(l, " none") }) {
				t.Fatalf("the reader sees nothing before the job: %v", before)
			}

			ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := engine.Run(ctx, b.pool, tc.opt, zerolog.Nop())
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run: %v", err)
				}
			case <-time.After(5 * time.Second):
				_ = reader.Rollback(b.ctx)
				t.Fatalf("the job waited for a reader's open transaction: %v", <-done)
			}
			if got := readLevels(t, reader, pairs); !slices.Equal(got, before) {
				t.Fatalf("a reader's snapshot read %v after the job, %v before", got, before)
			}
			if err := reader.Commit(b.ctx); err != nil {
				t.Fatal(err)
			}
			b.checkOracle(t, "after the job")
		})
	}
}

// readLevels reads each (user, record) pair's level through recalc.access_level.
func readLevels(t *testing.T, q pgx.Tx, pairs [][2]string) []string {
	t.Helper()
	out := make([]string, len(pairs))
	for i, p := range pairs {
		l, err := access.Level(context.Background(), q, p[0], p[1])
		if err != nil {
			t.Fatal(err)
		}
		out[i] = p[0] + " " + p[1] + " " + l
	}
	return out
}

// TestSwapLeavesReadersAlone: readers looping on access_level, can_access
// and visible_records from three connections while jobs of each kind run
// get no error: a full job's swap takes the live tables all at once, each
// try bounded, so it never deadlocks with a reader, which takes them one
// statement at a time (readers got 40P01 when the swap's DROP and RENAME
// took them one by one). Incremental jobs and full ones in place also keep
// every level the change does not touch; a swap does not (a reader's
// snapshot taken before it reads the new tables as empty: docs/operations.md).
func TestSwapLeavesReadersAlone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		opt    engine.Options
		stable bool // every level the jobs do not change reads the same throughout
	}{
		{"incremental jobs", engine.Options{}, true},
		{"full jobs in place", engine.Options{Full: true, InPlace: true}, true},
		{"full jobs swapping", engine.Options{Full: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupOrg(t, minimalOrg(), engine.Options{})
			// The change, made and undone: u5 joins g1 (accounts of tier 1).
			with := `{"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`
			without := `{"groups":[{"id":"g1","members":["user:u4"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`
			pairs := [][2]string{{"u1", "a001"}, {"u2", "a002"}, {"u4", "a001"}, {"u5", "c002_0"}, {"boss", "a003"}, {"u3", "a006"}, {"u2", "c005_1"}}
			stable := map[[2]string]string{}
			for _, p := range pairs {
				stable[p] = b.level(t, p[0], p[1])
			}
			ctx, cancel := context.WithCancel(b.ctx)
			defer cancel()
			errs := make(chan error, 3)
			var wg sync.WaitGroup
			for w := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- readLoop(ctx, connect(t, b.pool), w, pairs, stable, tc.stable)
				}()
			}
			for i := range 8 {
				b.importFile(t, []string{with, without}[i%2])
				if _, err := engine.Run(b.ctx, b.pool, tc.opt, zerolog.Nop()); err != nil {
					t.Fatalf("job %d: %v", i, err)
				}
			}
			cancel()
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			b.checkOracle(t, "after the jobs")
		})
	}
}

// readLoop reads the pairs' levels in turn through access_level, can_access
// and visible_records until ctx ends, and returns the first error, or the
// first read that differs from stable's levels when checkLevels is set.
func readLoop(ctx context.Context, conn *pgx.Conn, w int, pairs [][2]string, stable map[[2]string]string, checkLevels bool) error {
	for n := w; ctx.Err() == nil; n++ {
		p := pairs[n%len(pairs)]
		object := map[bool]string{true: "case", false: "account"}[strings.HasPrefix(p[1], "c")]
		want := stable[p]
		var got string
		var err error
		switch n % 3 {
		case 0:
			err = conn.QueryRow(ctx, `SELECT recalc.access_level($1, $2)`, p[0], p[1]).Scan(&got)
		case 1: // whether the level is read or more
			err = conn.QueryRow(ctx, `SELECT CASE WHEN recalc.can_access($1, $2, $3, 'read') THEN 'some' ELSE 'none' END`, p[0], object, p[1]).Scan(&got)
			want = map[bool]string{true: "none", false: "some"}[want == "none"]
		default:
			err = conn.QueryRow(ctx, `SELECT coalesce((SELECT level FROM recalc.visible_records($1, $2, 'read', NULL, 10000) WHERE record = $3), 'none')`,
				p[0], object, p[1]).Scan(&got)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("reader %d, %s on %s: %w", w, p[0], p[1], err)
		case checkLevels && got != want:
			return fmt.Errorf("reader %d: %s on %s read %s while jobs ran, %s before and after", w, p[0], p[1], got, want)
		}
	}
	return nil
}

// TestSwapDoesNotStallNewReaders: a full job's swap waits for a reader's
// open transaction (it drops and renames the tables the reader holds), but
// new readers meanwhile go on: each try to lock the tables waits at most
// 100 ms, where a DROP TABLE queued for the lock made every new reader queue
// behind it for as long as the open transaction lasted.
func TestSwapDoesNotStallNewReaders(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	reader := begin(t, connect(t, b.pool))
	if _, err := access.Level(b.ctx, reader, "u1", "a001"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := engine.Run(b.ctx, b.pool, engine.Options{Full: true}, zerolog.Nop())
		done <- err
	}()
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		var staged bool
		_ = b.pool.QueryRow(b.ctx, `SELECT staged FROM recalc.job WHERE status = 'running' AND kind = 'full'`).Scan(&staged)
		if staged {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("the full job never staged its tables")
		}
	}
	other := connect(t, b.pool)
	if _, err := other.Exec(b.ctx, `SET statement_timeout = '1s'`); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if l, err := access.Level(b.ctx, other, "u1", "a001"); err != nil || l != "all" {
			t.Fatalf("a new reader while the swap waits: %q, %v; want all (u1 owns a001) within 1 s", l, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the swap did not wait for the open reader: %v", err)
	default:
	}
	if err := reader.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the swap did not go ahead once the reader was done")
	}
	b.checkOracle(t, "after the swap")
}
