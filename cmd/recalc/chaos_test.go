package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestCLIChaos is a random process-level chaos campaign: per seed, a fresh
// database and a random model, then rounds that each start 2 to 5 real
// recalc processes at random small offsets (imports of random mutation files
// of the current model, run, run --full with and without --in-place, run
// with small chunks, defer, resume, access --format csv, and a watch
// stopped by SIGTERM). Every process exits 0, except an import that the
// oracle finds invalid in the order the imports committed, which fails
// with one message (never a panic, a raw SQL error or a hang). The import
// outcomes and the model `recalc export` reads back must match one commit
// order of the imports; an access printed mid-round holds only rows of
// some state the round went through. At each quiescent checkpoint a
// deferred `run` changes nothing and says so, and after resume and run,
// access equals the oracle's for the stored model. At the end a
// `run --full` changes nothing. CLI_CHAOS_SEEDS=N (and CLI_CHAOS_SEED_START)
// runs more seeds; a failure names its seed and round.
func TestCLIChaos(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs recalc processes")
	}
	bin := buildRecalc(t)
	start, n := chaosEnv(t, "CLI_CHAOS_SEED_START", 1), chaosEnv(t, "CLI_CHAOS_SEEDS", 2)
	rounds := 6
	for seed := start; seed < start+n; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			c := &chaos{t: t, bin: bin, url: testdb.New(t), dir: t.TempDir(),
				rng: rand.New(rand.NewPCG(uint64(seed), 90)), stats: map[string]int{}}
			c.campaign(seed, rounds)
			t.Logf("%d rounds: %v", rounds, c.stats)
		})
	}
}

// chaosEnv reads a non-negative integer environment variable, def when unset.
func chaosEnv(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, s)
	}
	return n
}

// chaos is one seed's campaign against one database.
type chaos struct {
	t        *testing.T
	bin, url string
	dir      string
	rng      *rand.Rand
	where    string       // seed and round, for failure messages
	cur      *model.Model // the model the database holds
	access   string       // access at the last checkpoint
	stats    map[string]int
}

// chaosProc is one process of a round and what became of it.
type chaosProc struct {
	args     []string
	file     int // the candidate file an import imports, else -1
	delay    time.Duration
	watchFor time.Duration // a watch: SIGTERM this long after it logs that it watches
	stdout   bytes.Buffer
	stderr   syncBuffer
	err      error
}

// syncBuffer is a process's output, written while the test reads it. When
// watching is set, it is closed once the process logs "watching for
// changes": a watch's SIGTERM handler is installed by then (a signal before
// that, on a loaded machine, kills the process as the Go runtime's default
// does).
type syncBuffer struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	watching chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.watching != nil && bytes.Contains(b.buf.Bytes(), []byte(`"watching for changes"`)) {
		close(b.watching)
		b.watching = nil
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (p *chaosProc) String() string {
	return fmt.Sprintf("recalc %s (at +%s): %v\nstdout: %s\nstderr: %s", strings.Join(p.args, " "), p.delay,
		p.err, p.stdout.String(), lastLines(p.stderr.String(), 4))
}

// candidate is a mutation file of the current model.
type candidate struct {
	step *model.Model
	file *model.File
	path string
}

func (c *chaos) campaign(seed, rounds int) {
	c.where = fmt.Sprintf("seed %d setup", seed)
	c.cur = oracle.RandomModel(c.rng, 20+c.rng.IntN(40))
	path := filepath.Join(c.dir, "model.json")
	c.writeModel(path, c.cur, nil)
	for _, args := range [][]string{{"init"}, {"import", path}, {"run"}} {
		c.must(args...)
	}
	c.access = c.checkAccess(c.cur)
	for round := 0; round < rounds; round++ {
		c.where = fmt.Sprintf("seed %d round %d (replay: CLI_CHAOS_SEED_START=%d CLI_CHAOS_SEEDS=1)", seed, round, seed)
		c.round(round)
	}
	c.where = fmt.Sprintf("seed %d end", seed)
	c.must("run", "--full")
	if got := c.must("access", "--format", "csv"); got != c.access {
		c.t.Fatalf("%s: run --full changed access (incremental != full)\n%s", c.where, oracle.Diff(c.access, got))
	}
}

// round writes candidate files, races 2-5 processes, and checks the
// quiescent state they leave.
func (c *chaos) round(round int) {
	cands := make([]candidate, 3)
	for i := range cands {
		step, file := oracle.Mutate(c.rng, c.cur)
		path := filepath.Join(c.dir, fmt.Sprintf("r%d-c%d.json", round, i))
		c.writeModel(path, step, file.Present())
		cands[i] = candidate{step, file, path}
	}
	procs := c.pickProcs(cands)
	c.race(procs)
	var imports []int // the procs that import, in proc order
	var observed []bool
	for i, p := range procs {
		c.checkExit(p)
		c.stats[p.args[0]]++
		if p.stoppedMidJob() {
			c.stats["watch stopped mid-job"]++
		}
		if p.file >= 0 && p.err != nil {
			c.stats["import refused"]++
		}
		if p.file >= 0 {
			imports = append(imports, i)
			observed = append(observed, p.err == nil)
		}
	}
	outs := c.orders(procs, imports, cands)
	outs = slices.DeleteFunc(outs, func(o order) bool { return !slices.Equal(o.ok, observed) })
	if len(outs) == 0 {
		c.t.Fatalf("%s: the imports' exit statuses %v match no commit order\n%s", c.where, observed, procsString(procs))
	}
	c.checkMidRound(procs, outs)
	c.checkpoint(procs, outs)
}

// pickProcs draws 2-5 processes, at most 3 of them imports of distinct
// candidates.
func (c *chaos) pickProcs(cands []candidate) []*chaosProc {
	menu := [][]string{{"import"}, {"import"}, {"import"}, {"run"}, {"run", "--full"},
		{"run", "--full", "--in-place=false", "--chunk-size", ""}, {"run", "--chunk-size", "", "--workers", "2"},
		{"run", "--full", "--chunk-size", "", "--workers", "1", "--nice", "2"},
		{"defer"}, {"defer"}, {"defer", "--closure"}, {"defer", "--rules"}, {"resume"}, {"resume", "--rules"},
		{"resume", "--full"}, {"access", "--format", "csv"}, {"watch"}}
	n, imports := 2+c.rng.IntN(4), c.rng.IntN(4)
	procs := make([]*chaosProc, 0, n)
	next := 0
	for len(procs) < n {
		args := slices.Clone(menu[c.rng.IntN(len(menu))])
		if len(procs) < imports {
			args = menu[0]
		}
		p := &chaosProc{args: args, file: -1, delay: time.Duration(c.rng.IntN(120)) * time.Millisecond}
		switch args[0] {
		case "import":
			if next == len(cands) {
				continue
			}
			p.file, p.args = next, []string{"import", cands[next].path}
			next++
		case "run":
			if i := slices.Index(args, ""); i >= 0 {
				args[i] = strconv.Itoa(1 + c.rng.IntN(8))
			}
		case "watch":
			p.args = []string{"watch", "--debounce", "5ms", "--poll", "1s"}
			if c.rng.IntN(2) == 0 { // slow jobs, so that SIGTERM often lands in one
				p.args = append(p.args, "--chunk-size", "1", "--workers", "1", "--nice", "3")
			}
			p.watchFor = time.Duration(100+c.rng.IntN(400)) * time.Millisecond
		}
		procs = append(procs, p)
	}
	return procs
}

// race starts every process at its offset and waits for all; each has a
// deadline, past which it is killed and the test fails as a hang.
func (c *chaos) race(procs []*chaosProc) {
	done := make(chan struct{}, len(procs))
	began := time.Now()
	for _, p := range procs {
		go func() {
			defer func() { done <- struct{}{} }()
			time.Sleep(time.Until(began.Add(p.delay)))
			p.err = c.runProc(p)
		}()
	}
	for range procs {
		<-done
	}
}

// errHang marks a process killed at its deadline.
var errHang = errors.New("still running after 90s: killed (a hang)")

func (c *chaos) runProc(p *chaosProc) error {
	cmd := c.command(p.args...)
	watching := make(chan struct{})
	if p.watchFor > 0 {
		p.stderr.watching = watching
	}
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if p.watchFor > 0 {
		select {
		case err := <-exited:
			return fmt.Errorf("watch exited before it was watching: %w", err)
		case <-watching:
		case <-time.After(90 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errHang
		}
		select {
		case err := <-exited:
			return fmt.Errorf("watch exited before SIGTERM: %w", err)
		case <-time.After(p.watchFor):
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return err
		}
	}
	select {
	case err := <-exited:
		return err
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return errHang
	}
}

// stoppedMidJob reports whether p is a watch that SIGTERM stopped in the
// middle of a job, which it leaves unfinished (to resume at the next start).
func (p *chaosProc) stoppedMidJob() bool {
	log := p.stderr.String()
	return p.watchFor > 0 && strings.Count(log, `"job planned"`)+strings.Count(log, `"joining unfinished job"`) > strings.Count(log, `"job done"`)
}

// checkExit: every process exits 0, but an import may fail with exit 1 and
// one message that is neither a panic nor a raw SQL error (whether it may
// fail at all is for the commit orders to say). An import is never refused
// for a job a stopped watch left unfinished, or a deferral paused: it
// finishes that job first.
func (c *chaos) checkExit(p *chaosProc) {
	c.t.Helper()
	if strings.Contains(p.stderr.String(), "panic") || strings.Contains(p.stderr.String(), "goroutine ") {
		c.t.Fatalf("%s: a process panicked\n%s", c.where, p)
	}
	if p.err == nil {
		return
	}
	last := lastLine(p.stderr.String())
	if strings.Contains(last, "was interrupted and is unfinished") || strings.Contains(last, "is paused, unfinished") {
		c.t.Fatalf("%s: an import was refused for an interrupted or paused job\n%s", c.where, p)
	}
	var exit *exec.ExitError
	if p.file < 0 || !errors.As(p.err, &exit) || exit.ExitCode() != 1 || last == "" ||
		strings.Contains(last, "SQLSTATE") || strings.HasPrefix(last, "{") {
		c.t.Fatalf("%s: a process failed\n%s", c.where, p)
	}
}

// order is one commit order of a round's imports: which succeed, the
// states it goes through, and the model it ends with.
type order struct {
	perm   []int
	ok     []bool
	states []*model.Model
}

// orders folds the candidates of the imports in every order: an import
// whose merge onto the state before it does not validate must fail and
// store nothing.
func (c *chaos) orders(procs []*chaosProc, imports []int, cands []candidate) []order {
	var out []order
	var permute func(perm, rest []int)
	permute = func(perm, rest []int) {
		if len(rest) == 0 {
			o := order{perm: perm, ok: make([]bool, len(imports)), states: []*model.Model{c.cur}}
			for _, k := range perm {
				cand := cands[procs[imports[k]].file]
				merged := oracle.Merge(o.states[len(o.states)-1], cand.step, cand.file)
				if _, err := merged.Validate(); err == nil {
					o.ok[k] = true
					o.states = append(o.states, merged)
				}
			}
			out = append(out, o)
			return
		}
		for i := range rest {
			permute(append(slices.Clone(perm), rest[i]), slices.Concat(rest[:i], rest[i+1:]))
		}
	}
	all := make([]int, len(imports))
	for i := range all {
		all[i] = i
	}
	permute(nil, all)
	return out
}

// checkMidRound: an access printed during the round holds only rows that
// some state of a matching commit order (or the last checkpoint) has.
func (c *chaos) checkMidRound(procs []*chaosProc, outs []order) {
	known := map[string]bool{}
	addRows := func(csv string) {
		for _, l := range strings.Split(csv, "\n") {
			known[l] = true
		}
	}
	addRows(c.access)
	for _, p := range procs {
		if p.args[0] != "access" {
			continue
		}
		if len(known) == len(strings.Split(c.access, "\n")) {
			for _, o := range outs {
				for _, s := range o.states[1:] {
					addRows(oracle.CSV(oracle.Access(s)))
				}
			}
		}
		got := p.stdout.String()
		if !strings.HasPrefix(got, "object,record,user,access\n") {
			c.t.Fatalf("%s: access printed no header\n%s", c.where, p)
		}
		for _, l := range strings.Split(got, "\n") {
			if !known[l] {
				c.t.Fatalf("%s: access mid-round printed %q, a row of no state the round went through\n%s",
					c.where, l, procsString(procs))
			}
		}
	}
}

// checkpoint: while both sides are deferred, a run changes nothing and says
// so; after resume and run, the stored model matches a commit order and
// access is the oracle's for it.
func (c *chaos) checkpoint(procs []*chaosProc, outs []order) {
	var st struct {
		Deferred map[string]any `json:"deferred"`
	}
	if err := json.Unmarshal([]byte(c.must("status", "--format", "json")), &st); err != nil {
		c.t.Fatalf("%s: status --format json: %v", c.where, err)
	}
	if len(st.Deferred) == 2 { // one side alone recalculates the other
		before := c.must("access", "--format", "csv")
		out := c.must("run")
		if !strings.Contains(strings.ToLower(out), "defer") {
			c.t.Fatalf("%s: a deferred run did not say it is deferred: %q", c.where, out)
		}
		if after := c.must("access", "--format", "csv"); after != before {
			c.t.Fatalf("%s: a deferred run changed access\n%s\n%s", c.where, oracle.Diff(before, after), procsString(procs))
		}
		c.stats["deferred checkpoint"]++
	}
	if len(st.Deferred) > 0 {
		c.must("resume")
	}
	c.must("run")
	stored := c.exported()
	for _, o := range outs {
		final := o.states[len(o.states)-1]
		if canonical(c.t, final) == stored {
			c.access = c.checkAccess(final)
			c.cur = final
			return
		}
	}
	c.t.Fatalf("%s: the exported model matches no commit order of the imports (%d orders fit the exit statuses)\n%s",
		c.where, len(outs), procsString(procs))
}

// checkAccess requires access to equal the oracle's for m, and returns it.
func (c *chaos) checkAccess(m *model.Model) string {
	c.t.Helper()
	got, want := c.must("access", "--format", "csv"), oracle.CSV(oracle.Access(m))
	if got != want {
		c.t.Fatalf("%s: access differs from the oracle's (< oracle, > recalc)\n%s", c.where, oracle.Diff(want, got))
	}
	return got
}

// exported reads the stored model back with recalc export, canonical.
func (c *chaos) exported() string {
	c.t.Helper()
	m, _, err := model.Parse(strings.NewReader(c.must("export")))
	if err != nil {
		c.t.Fatalf("%s: parse the export: %v", c.where, err)
	}
	return canonical(c.t, m)
}

// canonical encodes m with each section's entries sorted, so that two
// models compare equal whatever order they list entries in.
func canonical(t *testing.T, m *model.Model) string {
	t.Helper()
	var buf bytes.Buffer
	if err := model.Encode(&buf, m, nil); err != nil {
		t.Fatal(err)
	}
	// Round-trip once, so that defaults read the same either way.
	back, _, err := model.Parse(&buf)
	if err != nil {
		t.Fatalf("parse an encoded model: %v", err)
	}
	buf.Reset()
	if err := model.Encode(&buf, back, nil); err != nil {
		t.Fatal(err)
	}
	var sections map[string][]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &sections); err != nil {
		t.Fatal(err)
	}
	var out []string
	for name, entries := range sections {
		lines := make([]string, len(entries))
		for i, e := range entries {
			lines[i] = string(e)
		}
		slices.Sort(lines)
		out = append(out, name+":\n"+strings.Join(lines, "\n"))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func (c *chaos) writeModel(path string, m *model.Model, present []string) {
	c.t.Helper()
	var buf bytes.Buffer
	if err := model.Encode(&buf, m, present); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chaos) command(args ...string) *exec.Cmd {
	return recalcCommand(context.Background(), c.bin, c.url, args...)
}

// must runs recalc alone, which must exit 0 within a minute, and returns
// its standard output.
func (c *chaos) must(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := recalcCommand(ctx, c.bin, c.url, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("%s: recalc %s: %v\n%s", c.where, strings.Join(args, " "), err, lastLines(stderr.String(), 4))
	}
	return stdout.String()
}

func procsString(procs []*chaosProc) string {
	var b strings.Builder
	for _, p := range procs {
		b.WriteString(p.String())
		b.WriteString("\n")
	}
	return b.String()
}

// lastLines is the last n non-empty lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
