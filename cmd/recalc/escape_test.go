package main

import (
	"context"
	"strings"
	"testing"
)

// TestTextOutputEscapesIDs: ids are the application's (or a model file's)
// choice. The text outputs that print them (`status`'s invalid records,
// `access --object`, `explain`) quote an id holding control characters, so
// it cannot clear the operator's terminal or forge a line.
func TestTextOutputEscapesIDs(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	const hostile = "a\x1b]0;pwned\x07\x1b[2J\nforged: 0"
	var owner string
	if err := o.pool.QueryRow(context.Background(), `SELECT owner FROM recalc.record WHERE object = 'account' ORDER BY id LIMIT 1`).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	o.exec(`INSERT INTO recalc.record (id, object, owner, fields) VALUES ($1, 'account', $2, '{}'), ($1 || 'x', 'account', 'ghost', '{}')`, hostile, owner)
	o.run("run")
	for _, args := range [][]string{
		{"status"},
		{"access", "--user", owner, "--object", "account", "--limit", "10000"},
		{"explain", "--user", owner, "--record", hostile},
	} {
		out := o.run(args...)
		if !strings.Contains(out, `\x1b]0;pwned\a`) {
			t.Errorf("recalc %s does not show the id quoted:\n%s", args[0], out)
		}
		if strings.Contains(out, "\x1b") || strings.Contains(out, "\nforged") {
			t.Errorf("recalc %s writes the id's control characters raw:\n%q", args[0], out)
		}
	}
}
