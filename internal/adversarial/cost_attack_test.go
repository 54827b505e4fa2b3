package adversarial

import (
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// Cost and size attacks through the writer and reader roles: what one
// untrusted input makes the next run, the watch's step, or one call of the
// SQL access API cost.

// peakHeap runs f and returns the most heap held above what was live
// before it, sampled every 2 ms. The tests that use it are not parallel, so
// the heap is the engine's own. A soft memory limit of 48 MiB (as the CLI
// sets its own) makes the collector keep garbage down however loaded the
// machine, so what stays above it is memory the engine holds.
func peakHeap(f func()) uint64 {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(48 << 20))
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	base := m.HeapAlloc
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		peak := base
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var s runtime.MemStats
		for {
			select {
			case <-stop:
				runtime.ReadMemStats(&s)
				done <- max(peak, s.HeapAlloc)
				return
			case <-tick.C:
				runtime.ReadMemStats(&s)
				peak = max(peak, s.HeapAlloc)
			}
		}
	}()
	f()
	close(stop)
	return <-done - base
}

// measuredRun runs incrementally as the engine, returning its report, its
// duration and its peak heap.
func (b *bundle) measuredRun(t *testing.T) (*engine.Report, time.Duration, uint64) {
	t.Helper()
	var rep *engine.Report
	var err error
	start := time.Now()
	peak := peakHeap(func() {
		rep, err = engine.Run(context.Background(), b.engine, engine.Options{}, zerolog.Nop())
	})
	if err != nil {
		t.Fatalf("run as the engine: %v", err)
	}
	return rep, time.Since(start), peak
}

// TestCostTerritoryElementLength: the writer could store territory names
// of any length before migration 070 (record_refs_bounded bounded their
// number only, up to PostgreSQL's 1 GB a value; it refuses names over
// 1,024 bytes now, NOT VALID: such rows stored earlier stay, as here with
// the constraint dropped), but a run reads a record naming a territory the
// model lacks without its names (sharetable.loadFamilies): one record with
// 50 MB of made-up names is invalid and costs the run no memory.
func TestCostTerritoryElementLength(t *testing.T) {
	b := setup(t)
	exec(t, b.engine, `ALTER TABLE recalc.record DROP CONSTRAINT record_refs_bounded`)
	// 1,000 territories of 50,000 bytes: 50 MB, stored compressed.
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, territories)
		VALUES ('fat_territories', 'account', 'u1', array_fill(repeat('t', 50000), ARRAY[1000]))`)
	rep, d, peak := b.measuredRun(t)
	if rep.InvalidRecords != 1 {
		t.Errorf("run counted %d invalid records, want 1 (fat_territories: unknown territory)", rep.InvalidRecords)
	}
	if peak > 32<<20 {
		t.Errorf("one record with 50 MB of territories made the run hold %d MiB of heap (%v): the writer sets the engine's memory", peak>>20, d)
	}
}

// TestCostFieldsHeldPerChunk: a record's fields may be 1 MiB
// (record_fields_scalar), and 1 MiB of many small keys parses into a map of
// about 9 MiB. A run matches each record's criteria as it reads it and keeps
// only the rules matched (sharing.Org.MatchCriteria): before, a chunk held
// every record's fields until it was computed, so 5,000 such accounts (a
// few MB, stored compressed) made a chunk hold some 45 GB, times the workers.
func TestCostFieldsHeldPerChunk(t *testing.T) {
	b := setup(t)
	// 100 accounts of one 1 MB string and 8 of 80,000 small keys (960 KB as
	// text), all under the 1 MiB bound; account has the criteria rule "hot".
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, fields)
		SELECT 'bs' || g, 'account', 'u1', jsonb_build_object('priority', 5, 'pad', repeat('x', 1000000)) FROM generate_series(1, 100) g`)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, fields)
		SELECT 'mk' || g, 'account', 'u1', (SELECT jsonb_object_agg('k' || i, 1) FROM generate_series(1, 80000) i) FROM generate_series(1, 8) g`)
	rep, d, peak := b.measuredRun(t)
	if rep.InvalidRecords != 0 {
		t.Errorf("run counted %d invalid records, want 0: the fields are within the bounds", rep.InvalidRecords)
	}
	b.wantAccess(t, map[string]string{"u4 bs1": "read", "u4 mk1": "none", "u1 mk8": "all"})
	// Matching a criteria rule needs one record's fields at a time.
	if peak > 64<<20 {
		t.Errorf("108 records of ~1 MiB fields made the run hold %d MiB of heap (%v): a 5,000-record chunk of them would hold ~%d GiB",
			peak>>20, d, peak*5000/108>>30)
	}
}

// TestCostVisibleRecordsHugeAfter: no id is over 1,024 bytes, so a longer
// `after` is refused (22023, migration 038). Before, a reader could pass up
// to 1 GB, compared with every candidate of the page (each comparison
// copying it, under a non-C collation): an 8 MiB `after` cost 0.3-0.9 s of
// server time against 20-50 ms, and 1 GB would cost minutes.
func TestCostVisibleRecordsHugeAfter(t *testing.T) {
	b := setup(t)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner)
		SELECT 'x' || lpad(g::text, 5, '0'), 'project__c', 'u2' FROM generate_series(1, 999) g`)
	b.run(t)
	ctx := context.Background()
	call := func(after string) (time.Duration, int, error) {
		start := time.Now()
		var n int
		err := b.reader.QueryRow(ctx, `SELECT count(*) FROM recalc.visible_ids('u2', 'project__c', 'read', $1::text, 10000)`, after).Scan(&n)
		return time.Since(start), n, err
	}
	base, n, err := call("")
	if err != nil || n != 1000 {
		t.Fatalf("visible_ids from the start: %d rows, %v; want 1000 (p1 and the 999)", n, err)
	}
	huge := strings.Repeat("a", 8<<20)
	d, _, err := call(huge)
	switch {
	case sqlState(err) == "22023":
		if strings.Contains(err.Error(), "aaaa") || strings.Contains(err.Error(), "\n") {
			t.Errorf("refusal of a long after quotes it or spans lines: %.200v", err)
		}
	case err != nil:
		t.Errorf("visible_ids with an 8 MiB after: %v, want SQLSTATE 22023", err)
	default:
		// No id is longer than 1,024 bytes, so no such after is needed.
		t.Errorf("visible_ids with an 8 MiB after answered in %v (%v with none), its cost growing with the after's length up to 1 GB: want SQLSTATE 22023 for an after over 1,024 bytes", d, base)
	}
}

// Bounded: parent cycles (self, two, three records, and across objects)
// and a 5,000-deep parent chain end, through Run and through the watch's
// step, and fail closed.
func TestCostParentCyclesAndChains(t *testing.T) {
	b := setup(t)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, parent) VALUES
		('cy_self', 'project__c', 'u1', 'cy_self'),
		('cy_a', 'project__c', 'u1', 'cy_b'), ('cy_b', 'project__c', 'u1', 'cy_a'),
		('cy_x', 'project__c', 'u1', 'cy_y'), ('cy_y', 'project__c', 'u1', 'cy_z'), ('cy_z', 'project__c', 'u1', 'cy_x'),
		('cy_acct', 'account', 'u1', 'cy_k'), ('cy_k', 'contact', 'u1', 'cy_acct'),
		('cy_kk', 'contact', 'u1', 'cy_k')`)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, parent)
		SELECT 'chain' || g, 'contact', 'u1', CASE WHEN g > 1 THEN 'chain' || (g - 1) ELSE 'a1' END FROM generate_series(1, 5000) g`)
	live := engine.NewLive(engine.Options{LockTimeout: 2 * time.Second, Retries: 2}, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // it ends: seconds, not minutes
	defer cancel()
	if _, err := live.Step(ctx, b.engine, zerolog.Nop()); err != nil {
		t.Fatalf("watch step: %v", err)
	}
	got := b.invalidRecords(t)
	cyclic := []string{"cy_self", "cy_a", "cy_b", "cy_x", "cy_y", "cy_z", "cy_acct", "cy_k", "cy_kk", "chain2", "chain4999", "chain5000"}
	for _, id := range cyclic {
		if !strings.HasSuffix(got[id], sharing.InvalidParent) {
			t.Errorf("%s: listed as %q, want invalid (%s)", id, got[id], sharing.InvalidParent)
		}
		for _, u := range []string{"u1", "u2"} {
			if l := b.access(t, u, id); l != "none" {
				t.Errorf("access_level(%s, %s) = %s, want none", u, id, l)
			}
		}
	}
	if _, ok := got["chain1"]; ok || b.access(t, "u1", "chain1") != "all" {
		t.Errorf("chain1, a contact of a1, is invalid (%q) or not its owner's", got["chain1"])
	}
	// The chain splits into families of at most 100 links: no root is
	// farther than that.
	if n := b.count(t, `SELECT count(*) FROM recalc.record WHERE id LIKE 'chain%' AND root_id IS NULL`); n != 0 {
		t.Errorf("%d chain records left without a root", n)
	}
	if rep, _, _ := b.measuredRun(t); !rep.Nothing && rep.Kind == "" {
		t.Errorf("run after the step: %+v", rep)
	}
	b.sameAsFull(t)
}

// Bounded: the reader's size and count arguments outside their bounds are
// refused with 22023 and one line that quotes no long argument, and huge
// ids and objects cost an index probe.
func TestCostReaderArgumentBounds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	long := strings.Repeat("z", 4<<20)
	for _, tc := range []struct {
		name, sql string
		args      []any
	}{
		{"visible_records limit 0", `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'read', NULL, 0)`, nil},
		{"visible_records limit 10001", `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'read', NULL, 10001)`, nil},
		{"visible_records limit NULL", `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'read', NULL, NULL)`, nil},
		{"visible_records limit -2^31", `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'read', NULL, -2147483648)`, nil},
		{"visible_records long level", `SELECT count(*) FROM recalc.visible_records('u1', 'account', $1, NULL, 10)`, []any{long}},
		{"can_access long level", `SELECT recalc.can_access('u1', 'account', 'a1', $1)`, []any{long}},
		{"visible_ids long object", `SELECT count(*) FROM recalc.visible_ids('u1', $1, 'read', 5::bigint, 10)`, []any{long}},
		{"access_changes lim 0", `SELECT count(*) FROM recalc.access_changes(0, 0)`, nil},
		{"access_changes lim 10001", `SELECT count(*) FROM recalc.access_changes(0, 10001)`, nil},
		{"access_changes since -1", `SELECT count(*) FROM recalc.access_changes(-1, 10)`, nil},
		{"wait_fresh token max", `SELECT recalc.wait_fresh(9223372036854775807, interval '1 s')`, nil},
		{"wait_fresh token 0", `SELECT recalc.wait_fresh(0, interval '1 s')`, nil},
		{"wait_fresh 11 minutes", `SELECT recalc.wait_fresh(interval '11 min')`, nil},
		{"wait_fresh 1000 years", `SELECT recalc.wait_fresh(interval '1000 years')`, nil},
		{"wait_fresh negative", `SELECT recalc.wait_fresh(interval '-1 s')`, nil},
	} {
		start := time.Now()
		_, err := b.reader.Exec(ctx, tc.sql, tc.args...)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s took %v", tc.name, d)
		}
		if sqlState(err) != "22023" {
			t.Errorf("%s: got %v, want SQLSTATE 22023", tc.name, err)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, strings.Repeat("z", 100)) || strings.Contains(msg, "\n") || len(msg) > 400 {
			t.Errorf("%s: the error quotes the whole argument or is not one short line: %.300s", tc.name, msg)
		}
	}
	// Huge ids, objects and users are answered as unknown, at once.
	for _, q := range []string{
		`SELECT recalc.access_level($1, $1)::text`,
		`SELECT recalc.access_level('u1', $1, $1)::text`,
		`SELECT recalc.can_access($1, 'account', $1, 'read')::text`,
		`SELECT recalc.record_key($1, 'x')`,
		`SELECT count(*)::text FROM recalc.visible_records($1, 'account', 'read')`,
		`SELECT count(*)::text FROM recalc.visible_records('u1', $1, 'read')`,
	} {
		start := time.Now()
		var out string
		err := b.reader.QueryRow(ctx, q, long).Scan(&out)
		if d := time.Since(start); err != nil || d > 10*time.Second {
			t.Errorf("%s with a 4 MiB argument: %.200v (%v)", q, err, d)
		}
	}
	// Many concurrent wait_fresh calls with nothing pending return at once.
	errs := make(chan error, 16)
	start := time.Now()
	for i := 0; i < cap(errs); i++ {
		go func() {
			_, err := b.reader.Exec(ctx, `SELECT recalc.wait_fresh(interval '10 min')`)
			errs <- err
		}()
	}
	for i := 0; i < cap(errs); i++ {
		if err := <-errs; err != nil {
			t.Errorf("wait_fresh with nothing pending: %v", err)
		}
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("16 wait_fresh calls with nothing pending took %v", d)
	}
}
