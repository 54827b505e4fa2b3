package attach_test

import (
	"testing"
)

// deepJSON is a value that no JSON parser of PostgreSQL reads: nested
// deeper than max_stack_depth allows, it fails with SQLSTATE 54001
// (statement_too_complex, "stack depth limit exceeded"), not a class 22
// error, whether or not it is valid JSON. 100 kB.
const deepJSON = `repeat('[', 100000)`

// TestDeepValueFailsClosedAlone: a view that reads a text column as JSON
// (`(props)::jsonb ->> 'vip'`, `(flag)::jsonb #>> '{}'`) cannot read a row
// whose value nests deeper than the server's stack allows: the read fails
// with 54001, whatever else the row holds. That is a row's value, which
// the application writes (from its own users' input): it must fail closed
// alone, as a value the view's cast does not fit does (migration 039). But
// only class 22 errors were read apart: one such account made every absorb
// of the object fail (stuck with 54001), so that dave, whose account 2 was
// given to erin beside it, kept all access to it; one such user made every
// absorb of the users fail, so that carol, deactivated beside it, stayed
// active. Found by an attack helper.
func TestDeepValueFailsClosedAlone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T) *bundle
		writes []string // as the application: the deep value, and a revocation beside it
		check  func(t *testing.T, b *bundle) string
	}{
		{"an account", func(t *testing.T) *bundle {
			b := setup(t)
			b.exec(t, b.app, `ALTER TABLE crm.account ADD COLUMN props text NOT NULL DEFAULT '{}'`)
			b.exec(t, b.engine, `CREATE VIEW crm_recalc.account_p AS
				SELECT a.id, a.owner_id, a.industry, ((a.props)::jsonb ->> 'vip')::boolean AS vip FROM crm.account a`)
			b.mustAttach(t, `{"objects": [{"object": "account", "table": "crm_recalc.account_p", "id": "id", "owner": "owner_id",
				"fields": ["industry", "vip"], "capture": [{"table": "crm.account", "id": "id"}]}]}`)
			return b
		}, []string{`UPDATE crm.account SET props = ` + deepJSON + ` WHERE id = 1`,
			`UPDATE crm.account SET owner_id = 'erin' WHERE id = 2`},
			func(t *testing.T, b *bundle) string {
				invalid, _ := b.uaState(t, "account")
				if l := levelOf(t, b, "dave", "account:2"); l == "all" || invalid != "account:1 values out of bounds or unreadable" {
					return "dave has " + l + " to account:2, which erin owns now; invalid records " + invalid
				}
				return ""
			}},
		{"a user", func(t *testing.T) *bundle {
			return setupFlagUsers(t, `SELECT u.id, u.role_id, ((u.flag)::jsonb #>> '{}')::boolean AS active FROM crm.app_user u`)
		}, []string{`UPDATE crm.app_user SET flag = ` + deepJSON + ` WHERE id = 'zed'`,
			`UPDATE crm.app_user SET flag = 'false' WHERE id = 'carol'`},
			func(t *testing.T, b *bundle) string {
				if storedActive(t, b, "carol") || storedActive(t, b, "zed") {
					return "carol (deactivated) or zed (unreadable) is still active"
				}
				return ""
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := tc.setup(t)
			b.run(t)
			if l := levelOf(t, b, "dave", "account:2"); l != "all" {
				t.Fatalf("premise: dave has %s to his account:2, want all", l)
			}
			if !storedActive(t, b, "carol") && tc.name == "a user" {
				t.Fatal("premise: carol is not active")
			}
			appTx(t, b, tc.writes...)
			b.run(t)
			_, stuck := b.uaState(t, "account")
			if msg := tc.check(t, b); msg != "" || stuck != "" {
				t.Errorf("after one row's deep value and a revocation beside it: %s; stuck %q, want none", msg, stuck)
			}
		})
	}
}
