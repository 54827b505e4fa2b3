package engine

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestPlanDecodesTheStoredConfigurationOnce: once a run has computed the
// stored configuration, a plan finds both sides computed from it, and
// decodes it once, not once for what is stored and again for what each
// side was computed from (decoding and validating a model is a tenth of a
// property test's processor time under -race). After an import that
// changes it, the sides keep the configuration they were computed from.
func TestPlanDecodesTheStoredConfigurationOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Migrated(t)
	loaded := func(what string, check func(pl *Planned, in *inputs)) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			pl, in, err := load(ctx, tx, Options{})
			if err == nil {
				check(pl, in)
			}
			return err
		}); err != nil {
			t.Fatalf("%s: load: %v", what, err)
		}
	}
	for i, doc := range []string{
		`{"objects":[{"name":"doc__c","internal_owd":"private"}],"users":[{"id":"o"},{"id":"s"}],
		  "records":[{"object":"doc__c","id":"d1","owner":"o"}]}`,
		`{"objects":[{"name":"doc__c","internal_owd":"public_read_only"}],"users":[{"id":"o"},{"id":"s"},{"id":"t"}]}`, // both sides change
	} {
		if _, err := testkit.ImportString(ctx, pool, doc); err != nil {
			t.Fatalf("import %d: %v", i, err)
		}
		if i > 0 {
			loaded("after an import", func(pl *Planned, in *inputs) {
				if in.rules == nil || in.rules == pl.org || in.closure != in.rules {
					t.Errorf("after an import: the sides' configuration %p and %p, the stored one %p: want one, not the stored one", in.rules, in.closure, pl.org)
				}
			})
		}
		if _, err := Run(ctx, pool, Options{}, zerolog.Nop()); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		loaded("after a run", func(pl *Planned, in *inputs) {
			if in.rules != pl.org || in.closure != pl.org {
				t.Errorf("after run %d: the sides' configuration %p and %p, the stored one %p: want the stored one, decoded once", i, in.rules, in.closure, pl.org)
			}
		})
	}
}
