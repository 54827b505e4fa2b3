package adversarial

import (
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestGrantRefusesTheSandbox: the sandbox role runs the code of attached
// tables' owners (an index expression, a view's function) inside recalc's
// reads, and the checks before each read look at its attributes and
// memberships, not at its grants. The attack: `recalc grant reader` (or
// writer) to the sandbox, after which such code could ask the access API
// about any user, or write recalc.record. Both are refused, naming the
// role, and the role gains nothing.
func TestGrantRefusesTheSandbox(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sandbox := b.engineRole + "_sandbox"
	testdb.DropRoles(t, b.url, sandbox)
	exec(t, b.admin, `CREATE ROLE `+ident(sandbox)+` NOLOGIN`)
	for _, kind := range []string{"reader", "writer"} {
		_, err := b.recalcErr("grant", kind, sandbox)
		if err == nil || !strings.Contains(err.Error(), "is recalc's sandbox role") {
			t.Errorf("grant %s to the sandbox: %v, want a refusal naming the sandbox", kind, err)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM pg_proc p, aclexplode(p.proacl) a
		WHERE p.pronamespace = 'recalc'::regnamespace AND a.grantee = $1::regrole`, sandbox); n != 0 {
		t.Errorf("the sandbox may execute %d of recalc's functions", n)
	}
	if n := b.count(t, `SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
		WHERE c.relnamespace = 'recalc'::regnamespace AND a.grantee = $1::regrole`, sandbox); n != 0 {
		t.Errorf("the sandbox holds %d grants on recalc's tables", n)
	}
}
