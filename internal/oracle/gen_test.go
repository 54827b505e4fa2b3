package oracle

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/cputime"
	"github.com/recalc-dev/recalc/internal/model"
)

func TestRandomModelValid(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 500; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		m := RandomModel(rng, int(seed%120))
		if _, err := m.Validate(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

func TestMutateChainsValid(t *testing.T) {
	t.Parallel()
	wipes := 0
	for seed := uint64(0); seed < 500; seed++ {
		rng := rand.New(rand.NewPCG(seed, 2))
		m := RandomModel(rng, 10+int(seed%60))
		for step := 1; step <= 5; step++ {
			before := deepCopy(m)
			file, present := Mutate(rng, m)
			if len(present.Present()) == 0 || len(present.Present()) > 3 {
				t.Fatalf("seed %d step %d: %d sections changed, want 1 to 3", seed, step, len(present.Present()))
			}
			next := Merge(m, file, present)
			listed := m.Shares
			if present.HasShares {
				listed = file.Shares
			}
			if len(next.Shares) < len(listed) {
				wipes++
			}
			if _, err := next.Validate(); err != nil {
				t.Fatalf("seed %d step %d (sections %v): %v", seed, step, present.Present(), err)
			}
			if !reflect.DeepEqual(m, before) {
				t.Fatalf("seed %d step %d: Mutate or Merge changed the previous model", seed, step)
			}
			m = next
		}
	}
	if wipes == 0 {
		t.Error("no step changed an owner with manual shares on the record")
	}
	t.Logf("%d steps wiped manual shares", wipes)
}

// TestRandomModelCoverage checks that the generator, over many seeds,
// produces every feature the spec describes.
func TestRandomModelCoverage(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for seed := uint64(0); seed < 200; seed++ {
		m := RandomModel(rand.New(rand.NewPCG(seed, 3)), 60)
		for k := range features(m) {
			seen[k] = true
		}
	}
	for _, want := range []string{
		"cbp", "cbp chain", "cbp custom child of custom", "hierarchy false",
		"owd private", "owd public_read_only", "owd public_read_write", "external below internal",
		"role child access", "external user", "inactive user", "user without role",
		"nested group", "include_bosses false", "queue owner", "territory child", "territory users",
		"territory child access", "record parent", "field null", "field number", "field boolean",
		"field string", "account territories", "owner rule", "criteria rule", "logic", "NOT",
		"comma list", "rule child access", "manual share", "apex share", "team", "account team child access",
		"grantee all_internal_users",
	} {
		if !seen[want] {
			t.Errorf("no generated model has %q", want)
		}
	}
}

// features lists what a model exercises, for TestRandomModelCoverage.
func features(m *model.Model) map[string]bool {
	f := map[string]bool{}
	objs := map[string]*model.Object{}
	for i := range m.Objects {
		objs[m.Objects[i].Name] = &m.Objects[i]
	}
	for _, o := range m.Objects {
		f["owd "+o.InternalOWD.String()] = true
		if o.CBP() {
			f["cbp"] = true
			if objs[o.Parent].CBP() {
				f["cbp chain"] = true
			}
			if !model.IsStandard(o.Name) && !model.IsStandard(o.Parent) {
				f["cbp custom child of custom"] = true
			}
		} else if o.ExternalOWD < o.InternalOWD {
			f["external below internal"] = true
		}
		if !o.Hierarchy {
			f["hierarchy false"] = true
		}
	}
	for _, r := range m.Roles {
		if !r.Child.IsZero() {
			f["role child access"] = true
		}
	}
	for _, u := range m.Users {
		f["external user"] = f["external user"] || u.External
		f["inactive user"] = f["inactive user"] || !u.Active
		f["user without role"] = f["user without role"] || u.Role == ""
	}
	queues := map[string]bool{}
	for _, g := range m.Groups {
		queues[g.ID] = g.Queue
		f["include_bosses false"] = f["include_bosses false"] || !g.IncludeBosses
		for _, mem := range g.Members {
			f["nested group"] = f["nested group"] || mem.Kind == model.GGroup
		}
	}
	for _, t := range m.Territories {
		f["territory child"] = f["territory child"] || t.Parent != ""
		f["territory users"] = f["territory users"] || len(t.Users) > 0
		f["territory child access"] = f["territory child access"] || !t.Child.IsZero()
	}
	for _, r := range m.Records {
		f["queue owner"] = f["queue owner"] || queues[r.Owner]
		f["record parent"] = f["record parent"] || r.Parent != ""
		f["account territories"] = f["account territories"] || len(r.Territories) > 0
		for _, v := range r.Fields {
			f["field "+v.Kind.String()] = true
		}
	}
	for _, r := range m.Rules {
		f["grantee "+r.Target.String()] = true
		f["rule child access"] = f["rule child access"] || !r.Child.IsZero()
		if r.Type == model.OwnerRule {
			f["owner rule"] = true
			continue
		}
		f["criteria rule"] = true
		f["logic"] = f["logic"] || r.Criteria.Logic != ""
		for _, c := range r.Criteria.Conditions {
			if c.Value.Kind == model.String && (c.Op == model.OpEquals || c.Op == model.OpNotEquals) {
				f["comma list"] = f["comma list"] || strings.Contains(c.Value.Str, ",")
			}
		}
		f["NOT"] = f["NOT"] || strings.Contains(strings.ToUpper(r.Criteria.Logic), "NOT")
	}
	for _, s := range m.Shares {
		if s.Cause == "manual" {
			f["manual share"] = true
		} else {
			f["apex share"] = true
		}
	}
	for _, t := range m.Teams {
		f["team"] = true
		f["account team child access"] = f["account team child access"] || !t.Child.IsZero()
	}
	return f
}

// TestAccessSpeed keeps the oracle fast enough for differential tests. It
// bounds the processor time Access spends, not the time elapsed, which a
// loaded machine stretches (60 ms idle, 610 ms beside two busy loops, under
// -race): about 35 ms either way, and 640 ms for an Access that computed
// each record's access once per user rather than once.
func TestAccessSpeed(t *testing.T) {
	m := RandomModel(rand.New(rand.NewPCG(7, 7)), 200)
	if len(m.Users) < 25 {
		t.Fatalf("only %d users", len(m.Users))
	}
	var rows []Row
	d := cputime.Of(func() { rows = Access(m) })
	if d > 500*time.Millisecond {
		t.Errorf("Access of %d records x %d users took %v of processor time", len(m.Records), len(m.Users), d)
	}
	t.Logf("%d records, %d users, %d rows", len(m.Records), len(m.Users), len(rows))
}

func BenchmarkAccess200(b *testing.B) {
	m := RandomModel(rand.New(rand.NewPCG(7, 7)), 200)
	for b.Loop() {
		Access(m)
	}
}

// TestEncodeRoundTrip writes random models and steps in the file format and
// reads them back: access must not change. This is how differential tests
// feed the engine.
func TestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 100; seed++ {
		rng := rand.New(rand.NewPCG(seed, 4))
		m := RandomModel(rng, 40)
		back := roundTrip(t, m, nil)
		if got, want := CSV(Access(back)), CSV(Access(m)); got != want {
			t.Fatalf("seed %d: access changed after encoding:\n%s", seed, Diff(want, got))
		}
		step, present := Mutate(rng, m)
		stepBack, presentBack := parseEncoded(t, step, present.Present())
		if got, want := presentBack.Present(), present.Present(); !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: sections %v encoded as %v", seed, want, got)
		}
		if got, want := CSV(Access(Merge(m, stepBack, presentBack))), CSV(Access(Merge(m, step, present))); got != want {
			t.Fatalf("seed %d: step access changed after encoding:\n%s", seed, Diff(want, got))
		}
	}
}

func roundTrip(t *testing.T, m *model.Model, present []string) *model.Model {
	t.Helper()
	back, _ := parseEncoded(t, m, present)
	if _, err := back.Validate(); err != nil {
		t.Fatalf("encoded model does not validate: %v", err)
	}
	return back
}

func parseEncoded(t *testing.T, m *model.Model, present []string) (*model.Model, *model.File) {
	t.Helper()
	var buf bytes.Buffer
	if err := model.Encode(&buf, m, present); err != nil {
		t.Fatal(err)
	}
	back, f, err := model.Parse(&buf)
	if err != nil {
		t.Fatalf("encoded model does not parse: %v", err)
	}
	return back, f
}
