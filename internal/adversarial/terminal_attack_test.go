package adversarial

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/dburl"
)

// TestTextOutputEscapesUntrustedNames: past the ids TestTextOutputEscapesIDs
// (cmd/recalc) puts in front of the operator, three untrusted parties name
// things the text outputs print: the writer role chooses a record's object
// (any text: a record of an object the model lacks is only invalid), a
// model file chooses its groups', users', roles', territories' and rules'
// ids (an attached users table its users' too), and the owner of an
// application table its policies' names. Each held an escape sequence and
// a newline, which `recalc plan` (a record's object, a group's id in the
// changes), `recalc status` (an invalid record's object), `recalc explain`
// (the record's object) and `recalc rls disable` (the table's own
// policies) wrote raw to the operator's terminal: a retitled window, a
// cleared screen, and a forged line. Now each is printed quoted, as the
// ids were.
func TestTextOutputEscapesUntrustedNames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const hostile = "x\x1b]0;pwned\x07\x1b[2J\nforged: 0"
	const quoted = `\x1b]0;pwned\a\x1b[2J\nforged: 0`

	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner) VALUES ('w1', $1, 'u1')`, hostile)
	file := filepath.Join(t.TempDir(), "groups.json")
	if err := os.WriteFile(file, []byte(`{"version": 1, "groups": [{"id": "crit", "members": ["user:u4"]},
		{"id": "g`+strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(hostile, "\x1b", `\u001b`), "\x07", `\u0007`), "\n", `\n`)+
		`", "members": ["user:u1"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	b.recalc(t, "import", "--merge", file)

	// The outsider owns an application table, with a policy of its own.
	exec(t, b.admin, `CREATE SCHEMA app AUTHORIZATION `+ident(b.outsiderRole))
	exec(t, b.outsider, `CREATE TABLE app.account (id text PRIMARY KEY)`)
	exec(t, b.outsider, `CREATE POLICY `+ident(hostile)+` ON app.account AS RESTRICTIVE USING (true)`)
	if _, err := b.recalcAs(b.url, "rls", "enable", "--table", "app.account", "--object", "account", "--user-setting", "app.user_id"); err != nil {
		t.Fatal(err)
	}

	engine, admin := dburl.WithUser(b.url, b.engineRole), b.url
	for _, tc := range []struct {
		name, url string
		args      []string
		runFirst  bool
	}{
		{"plan: the record's object and the group's id", engine, []string{"plan"}, false},
		{"status: the invalid record's object", engine, []string{"status"}, true},
		{"explain: the record's object", engine, []string{"explain", "--user", "u1", "--record", "w1"}, false},
		{"rls disable: the table's own policy", admin, []string{"rls", "disable", "--table", "app.account"}, false},
	} {
		if tc.runFirst {
			b.run(t)
		}
		out, err := b.recalcAs(tc.url, tc.args...)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if strings.Contains(out, "\x1b") || strings.Contains(out, "\nforged") {
			t.Errorf("%s: writes the name's control characters raw:\n%q", tc.name, out)
		}
		if !strings.Contains(out, quoted) {
			t.Errorf("%s: does not show the name quoted:\n%s", tc.name, out)
		}
	}
}
