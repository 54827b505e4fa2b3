package attach_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Values no view reads, failing with an error of class 54 (program limit
// exceeded), not 22. deepJSON nests deeper than max_stack_depth lets
// PostgreSQL's JSON parser go: 54001 (statement_too_complex, "stack depth
// limit exceeded"), valid JSON or not; 100 kB. deepArray, read as an array
// literal within braces ('{' || tags || '}')::text[], has 7 dimensions:
// 54000 ("number of array dimensions (7) exceeds the maximum allowed (6)").
const (
	deepJSON  = `repeat('[', 100000)`
	deepArray = `'{{{{{{a}}}}}}'`
)

// TestDeepValueFailsClosedAlone: a view that reads a text column as JSON
// (`(props)::jsonb ->> 'vip'`) or as an array literal (`('{' || tags ||
// '}')::text[]`) cannot read a row whose value nests too deep (deepJSON,
// deepArray): the read fails in class 54, whatever else the row holds.
// That is a row's value, which the application writes (from its own
// users' input): it must fail closed alone, as a value the view's cast
// does not fit does (class 22, migration 039). But only class 22 was read
// apart (class 54 was raised at one id, or at once for the users): one
// such account made every absorb of the object fail (stuck with the
// SQLSTATE), so that dave, whose account 2 was given to erin beside it,
// kept all access to it; one such user made every absorb of the users
// fail, so that carol, deactivated beside it, stayed active. Found by an
// attack helper.
func TestDeepValueFailsClosedAlone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T) *bundle
		writes []string // as the application: the deep value, and a revocation beside it
		check  func(t *testing.T, b *bundle) string
	}{
		{"an account's JSON", deepAccounts, []string{`UPDATE crm.account SET props = ` + deepJSON + ` WHERE id = 1`,
			`UPDATE crm.account SET owner_id = 'erin' WHERE id = 2`}, accountClosedAlone},
		{"an account's array", deepAccounts, []string{`UPDATE crm.account SET tags = ` + deepArray + ` WHERE id = 1`,
			`UPDATE crm.account SET owner_id = 'erin' WHERE id = 2`}, accountClosedAlone},
		{"a user's JSON", deepUsers, []string{`UPDATE crm.app_user SET flag = ` + deepJSON + ` WHERE id = 'zed'`,
			`UPDATE crm.app_user SET flag = 'false' WHERE id = 'carol'`}, userClosedAlone},
		{"a user's array", deepUsers, []string{`UPDATE crm.app_user SET name = ` + deepArray + ` WHERE id = 'zed'`,
			`UPDATE crm.app_user SET flag = 'false' WHERE id = 'carol'`}, userClosedAlone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := tc.setup(t)
			b.run(t)
			if l := levelOf(t, b, "dave", "account:2"); l != "all" {
				t.Fatalf("premise: dave has %s to his account:2, want all", l)
			}
			if !storedActive(t, b, "carol") && strings.HasPrefix(tc.name, "a user") {
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

// deepAccounts attaches the accounts through a view that reads a text
// column as JSON and another as an array literal.
func deepAccounts(t *testing.T) *bundle {
	t.Helper()
	b := setup(t)
	b.exec(t, b.app, `ALTER TABLE crm.account ADD COLUMN props text NOT NULL DEFAULT '{}', ADD COLUMN tags text NOT NULL DEFAULT 'x'`)
	b.exec(t, b.engine, `CREATE VIEW crm_recalc.account_p AS
		SELECT a.id, a.owner_id, a.industry, ((a.props)::jsonb ->> 'vip')::boolean AS vip, (('{' || a.tags || '}')::text[])[1] AS tag
		FROM crm.account a`)
	b.mustAttach(t, `{"objects": [{"object": "account", "table": "crm_recalc.account_p", "id": "id", "owner": "owner_id",
		"fields": ["industry", "vip", "tag"], "capture": [{"table": "crm.account", "id": "id"}]}]}`)
	return b
}

// accountClosedAlone says what is wrong unless account 1 is closed alone
// and dave lost all access to account 2, which erin owns now.
func accountClosedAlone(t *testing.T, b *bundle) string {
	t.Helper()
	invalid, _ := b.uaState(t, "account")
	if l := levelOf(t, b, "dave", "account:2"); l == "all" || invalid != "account:1 values out of bounds or unreadable" {
		return "dave has " + l + " to account:2, which erin owns now; invalid records " + invalid
	}
	return ""
}

// deepUsers attaches the users through a view that reads their flag as
// JSON and their name as an array literal.
func deepUsers(t *testing.T) *bundle {
	t.Helper()
	return setupFlagUsers(t, `SELECT u.id, u.role_id,
		((u.flag)::jsonb #>> '{}')::boolean AND (('{' || u.name || '}')::text[])[1] IS NOT NULL AS active FROM crm.app_user u`)
}

// userClosedAlone says what is wrong unless carol (deactivated) and zed
// (unreadable) are inactive.
func userClosedAlone(t *testing.T, b *bundle) string {
	t.Helper()
	if storedActive(t, b, "carol") || storedActive(t, b, "zed") {
		return "carol (deactivated) or zed (unreadable) is still active"
	}
	return ""
}

// TestDeepValueProbeSkipped: when no id of a read reads a row, the absorb
// asks whether the view is to blame by reading a few other stored records
// alone (attach_blames_view); a probe whose row nests too deep fails in
// class 54 and must be passed over, as a class 22 failure is, not raised.
// Account 3's deep value is written past the capture (a superuser's
// session_replication_role = replica, docs/attach.md), so its record stays
// open and unabsorbed: the probe of it comes first (account 2's record was
// rewritten since), then account 2's reads. Account 1, given to erin with
// a deep value, is the only id read. Before (a probe's class 54 raised),
// the absorb failed with 54001 and bob's loss of account 1 waited.
func TestDeepValueProbeSkipped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := deepAccounts(t)
	b.run(t)
	appTx(t, b, `UPDATE crm.account SET industry = 'retail' WHERE id = 2`)
	b.run(t)
	var probes []string
	if err := b.admin.QueryRow(ctx, `SELECT array_agg(p) FROM (SELECT r.id p FROM recalc.record r
		WHERE r.object = 'account' AND r.territories IS DISTINCT FROM '{""}' AND r.id <> 'account:1' LIMIT 3) x`).Scan(&probes); err != nil {
		t.Fatal(err)
	}
	if len(probes) != 2 || probes[0] != "account:3" {
		t.Fatalf("premise: the probes are read in the order %v, want account:3 first of two", probes)
	}
	if err := pgx.BeginFunc(ctx, b.admin, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica; UPDATE crm.account SET props = `+deepJSON+` WHERE id = 3`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	appTx(t, b, `UPDATE crm.account SET props = `+deepJSON+`, owner_id = 'erin' WHERE id = 1`)
	b.run(t)
	invalid, stuck := b.uaState(t, "account")
	if l := levelOf(t, b, "bob", "account:1"); l == "all" || stuck != "" || invalid != "account:1 values out of bounds or unreadable" {
		t.Errorf("after account 1's deep value and owner change beside account 3's unabsorbed one: bob has %s to account:1; stuck %q, want none; invalid records %q",
			l, stuck, invalid)
	}
}
