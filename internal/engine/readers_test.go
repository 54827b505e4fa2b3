package engine_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
)

// TestJobsLeaveReadersAlone: a reader's transaction open across a job that
// changes the closure (a group's members, a user's role) and an OWD neither
// holds the job up nor sees the users or objects vanish from its snapshot.
// The job's finish rewrote acl_user and acl_object with TRUNCATE, which
// waited for every open reader, made every new one wait behind it, and
// left a reader whose snapshot predated it with empty tables: `none` for
// everyone, or a deadlock between a reader and the job.
func TestJobsLeaveReadersAlone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, change string
	}{
		{"a group's members", `{"groups":[{"id":"g1","members":["user:u4","user:u5"]},{"id":"g2","members":["role:rep"]},{"id":"g3","members":["user:u5"]}]}`},
		{"an OWD", `{"objects":[{"name":"account","internal_owd":"public_read_only"},{"name":"case","parent":"account","internal_owd":"private"}]}`},
		{"a user's role", `{"users":[{"id":"u1","role":"vp"},{"id":"u2","role":"ops"},{"id":"u3","role":"rep"},{"id":"u4","role":"ops"},{"id":"u5","role":"ops"},{"id":"boss","role":"ceo"}]}`},
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
				_, err := engine.Run(ctx, b.pool, engine.Options{}, zerolog.Nop())
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
