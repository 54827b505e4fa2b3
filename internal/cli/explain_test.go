package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestExplainSaysTheLevelInASentence: `recalc explain` printed "u4 has
// none access to account a1.", which reads wrong. Each level makes a
// sentence: no access, or read, edit or all access.
func TestExplainSaysTheLevelInASentence(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Migrated(t)
	url := pool.Config().ConnString()
	if _, err := testkit.ImportString(ctx, pool, `{"objects": [{"name": "account", "internal_owd": "private"}],
		"users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}, {"id": "u4"}],
		"records": [{"id": "a1", "object": "account", "owner": "u1"}],
		"shares": [{"object": "account", "record": "a1", "grantee": "user:u2", "access": "read", "cause": "manual"},
			{"object": "account", "record": "a1", "grantee": "user:u3", "access": "edit", "cause": "manual"}]}`); err != nil {
		t.Fatal(err)
	}
	if out, code := recalc(ctx, url, "run"); code != 0 {
		t.Fatalf("run: exit %d: %s", code, out)
	}
	for user, want := range map[string]string{
		"u1": "u1 has all access to account a1.\n",
		"u2": "u2 has read access to account a1.\n",
		"u3": "u3 has edit access to account a1.\n",
		"u4": "u4 has no access to account a1.\n",
	} {
		out, code := recalc(ctx, url, "explain", "--user", user, "--record", "a1")
		if code != 0 || !strings.HasPrefix(out, want) {
			t.Errorf("explain --user %s: exit %d, printed %q; want a first line %q", user, code, out, want)
		}
	}
}
