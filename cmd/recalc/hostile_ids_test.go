package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// hostileForms turn a generated id (letters and digits) into one that an
// attack or a careless export would write: blanks, CSV's separators and
// quotes, line breaks, a grantee's colon and kind, SQL, COPY's end marker,
// case, and characters that collations sort apart from byte order or that
// Unicode normalisation would merge (é precomposed and decomposed, Å and
// the Ångström sign). Each form keeps distinct ids distinct.
var hostileForms = []func(string) string{
	func(s string) string { return s },
	strings.ToUpper,
	func(s string) string { return s + " " },
	func(s string) string { return " " + s },
	func(s string) string { return s + ",x" },
	func(s string) string { return s + `"q` },
	func(s string) string { return s + "\n2" },
	func(s string) string { return s + "\r" },
	func(s string) string { return s + "\t" },
	func(s string) string { return s + ":z" },
	func(s string) string { return "role:" + s },
	func(s string) string { return "\u00e9" + s },
	func(s string) string { return "e\u0301" + s },
	func(s string) string { return "\u00c5" + s },
	func(s string) string { return "\u212b" + s },
	func(s string) string { return "\u00a0" + s },
	func(s string) string { return "\U0001F600" + s },
	func(s string) string { return `\.` + s },
	func(s string) string { return "_" + s },
	func(s string) string { return "Z" + s },
	func(s string) string { return s + "'); DROP TABLE recalc.record; --" },
}

// hostileIDs renames every id of a model, the same id always to the same
// hostile form (object names, which have a fixed syntax, stay).
type hostileIDs map[string]string

func (h hostileIDs) id(s string) string {
	if s == "" {
		return s
	}
	if v, ok := h[s]; ok {
		return v
	}
	v := hostileForms[len(h)%len(hostileForms)](s)
	h[s] = v
	return v
}

func (h hostileIDs) grantee(g model.Grantee) model.Grantee { g.ID = h.id(g.ID); return g }

func (h hostileIDs) ids(ss []string) []string {
	var out []string
	for _, s := range ss {
		out = append(out, h.id(s))
	}
	return out
}

// model returns a copy of m with every id renamed.
func (h hostileIDs) model(m *model.Model) *model.Model {
	out := &model.Model{Config: model.Config{Objects: m.Objects}}
	for _, x := range m.Roles {
		x.ID, x.Parent = h.id(x.ID), h.id(x.Parent)
		out.Roles = append(out.Roles, x)
	}
	for _, x := range m.Users {
		x.ID, x.Role = h.id(x.ID), h.id(x.Role)
		out.Users = append(out.Users, x)
	}
	for _, x := range m.Groups {
		members := x.Members
		x.ID, x.Members = h.id(x.ID), nil
		for _, g := range members {
			x.Members = append(x.Members, h.grantee(g))
		}
		out.Groups = append(out.Groups, x)
	}
	for _, x := range m.Territories {
		x.ID, x.Parent, x.Users = h.id(x.ID), h.id(x.Parent), h.ids(x.Users)
		out.Territories = append(out.Territories, x)
	}
	for _, x := range m.Records {
		x.ID, x.Owner, x.Parent, x.Territories = h.id(x.ID), h.id(x.Owner), h.id(x.Parent), h.ids(x.Territories)
		out.Records = append(out.Records, x)
	}
	for _, x := range m.Rules {
		x.ID, x.Source, x.Target = h.id(x.ID), h.grantee(x.Source), h.grantee(x.Target)
		out.Rules = append(out.Rules, x)
	}
	for _, x := range m.Shares {
		x.Record, x.Grantee = h.id(x.Record), h.grantee(x.Grantee)
		out.Shares = append(out.Shares, x)
	}
	for _, x := range m.Teams {
		x.Record, x.User = h.id(x.Record), h.id(x.User)
		out.Teams = append(out.Teams, x)
	}
	return out
}

// TestHostileIDHistories drives random multi-step histories (oracle.RandomModel,
// then oracle.Mutate) whose ids all take hostile forms through the recalc
// binary, as the conformance cases do: per step, import, run (or, every
// third step, run --full), and access --format csv, which must equal the
// oracle's byte for byte: rows sorted in byte order, fields quoted only
// where RFC 4180 needs it. It does so on a database of the server's default
// collation and on one whose default collation is ICU's en-US, where byte
// order and the collation's order differ for nearly every pair of these
// ids. Midway, a file that lists a user twice under a hostile id is
// refused with one line naming the entry, and access stays as it was.
func TestHostileIDHistories(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs recalc processes")
	}
	bin := buildRecalc(t)
	for _, db := range []struct {
		name string
		url  func(*testing.T) string
	}{
		{"default collation", func(t *testing.T) string { return testdb.New(t) }},
		{"ICU en-US collation", func(t *testing.T) string { return testdb.NewICU(t, "en-US") }},
	} {
		for seed := 1; seed <= 3; seed++ {
			t.Run(fmt.Sprintf("%s, seed %d", db.name, seed), func(t *testing.T) {
				t.Parallel()
				hostileHistory(t, caseRecalcOn(t, bin, db.url(t)), seed)
			})
		}
	}
}

// hostileHistory runs one seed's history through recalc.
func hostileHistory(t *testing.T, recalc func(args ...string) (string, error), seed int) {
	rng := rand.New(rand.NewPCG(uint64(seed), 228))
	h := hostileIDs{}
	dir := t.TempDir()
	if _, err := recalc("init"); err != nil {
		t.Fatalf("init: %v", err)
	}
	cur := oracle.RandomModel(rng, 30+rng.IntN(20))
	step, present := cur, []string(nil)
	want := ""
	for n := 0; n < 7; n++ {
		if n > 0 {
			var file *model.File
			step, file = oracle.Mutate(rng, cur)
			cur, present = oracle.Merge(cur, step, file), file.Present()
		}
		path := writeHostile(t, dir, n, h.model(step), present)
		if _, err := recalc("import", path); err != nil {
			t.Fatalf("seed %d step %d: import: %v", seed, n, err)
		}
		run := []string{"run"}
		if n%3 == 2 {
			run = append(run, "--full")
		}
		if _, err := recalc(run...); err != nil {
			t.Fatalf("seed %d step %d: %s: %v", seed, n, shortArgs(run), err)
		}
		want = oracle.CSV(oracle.Access(h.model(cur)))
		if got, err := recalc("access", "--format", "csv"); err != nil || got != want {
			t.Fatalf("seed %d step %d: access (%v) differs from the oracle's (< oracle, > recalc)\n%s", seed, n, err, oracle.Diff(want, got))
		}
		if n == 3 {
			refuseTwice(t, recalc, dir, h.model(cur), want)
		}
	}
}

// refuseTwice imports m's users with one listed twice: the import must fail
// with one line naming that user, and after a run access must still be
// want.
func refuseTwice(t *testing.T, recalc func(args ...string) (string, error), dir string, m *model.Model, want string) {
	t.Helper()
	dup := m.Users[len(m.Users)/2]
	m.Users = append(m.Users, dup)
	path := writeHostile(t, dir, 99, m, []string{"users"})
	_, err := recalc("import", path)
	msg := ""
	if ce, ok := err.(*cmdError); ok {
		msg = strings.TrimSpace(ce.stderr)
	}
	quoted := fmt.Sprintf("%q", dup.ID)
	if err == nil || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, quoted) {
		t.Fatalf("a users section listing user %s twice: %v; want a failure of one line naming it", quoted, err)
	}
	if _, err := recalc("run"); err != nil {
		t.Fatalf("run after the refused import: %v", err)
	}
	if got, err := recalc("access", "--format", "csv"); err != nil || got != want {
		t.Fatalf("access after the refused import (%v) changed (< before, > after)\n%s", err, oracle.Diff(want, got))
	}
}

// writeHostile writes step n's file, the sections present of m (all when
// present is nil), and returns its path.
func writeHostile(t *testing.T, dir string, n int, m *model.Model, present []string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := model.Encode(&buf, m, present); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%02d.json", n))
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
