package engine_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/store"
)

// stopOneChunk plans a job of owner changes to a001 and a005, one chunk
// of both families, and stops its run inside it: the job is left running,
// its chunk pending, no process working on it.
func stopOneChunk(t *testing.T, b *bundle) {
	t.Helper()
	stopChunk(t, b, 6, []string{"c001_0", "c005_0"},
		`UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`, `UPDATE recalc.record SET owner = 'u1' WHERE id = 'a005'`)
}

// stopChunk runs writes, then a job of chunks of chunkSize records, which
// must have one chunk, and stops its run inside it, waiting for an
// application's lock on the materialized rows of the records held: the job
// is left running, its chunk pending, no process working on it.
func stopChunk(t *testing.T, b *bundle, chunkSize int, held []string, writes ...string) {
	t.Helper()
	b.exec(t, writes...)
	obs := connect(t, b.pool)
	holder, pid := holdWith(t, b, `SELECT FROM recalc.acl_record WHERE id IN ('`+strings.Join(held, "', '")+`') FOR UPDATE`)
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = engine.Run(ctx, b.pool, engine.Options{Workers: 1, ChunkSize: chunkSize, LockTimeout: 20 * time.Second}, zerolog.Nop())
	}()
	waitBlockedBy(t, obs, pid, done, "the chunk to wait for the application's lock")
	cancel()
	<-done
	rollback(t, holder, "the application's lock")
	var chunks, pending int
	if err := b.pool.QueryRow(b.ctx, `SELECT j.chunks, (SELECT count(*) FROM recalc.chunk c WHERE c.job_id = j.id AND c.status = 'pending')
		FROM recalc.job j WHERE j.status = 'running'`).Scan(&chunks, &pending); err != nil || chunks != 1 || pending != 1 {
		t.Fatalf("the stopped job: %v, %d chunks, %d pending, want one, pending", err, chunks, pending)
	}
}

// importInBackground imports, merged, a file of one record in a goroutine;
// its error comes on the channel.
func importInBackground(t *testing.T, b *bundle, env *cli.Env) chan error {
	t.Helper()
	done := make(chan error, 1)
	file := filepath.Join(t.TempDir(), "records.json")
	if err := os.WriteFile(file, []byte(`{"records":[{"object":"account","id":"a100","owner":"u2"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- cli.ImportWith(b.ctx, env, file, -1, model.DefaultLimits(), store.Options{Merge: true}, time.Minute)
	}()
	return done
}

// TestFinishBesideDeferralReadsChangesAgain: share rows are deferred beside
// a job whose one chunk holds two families, a001 and a005, and a write
// given a001's case a new owner; an import finishes the job. Its chunk
// leaves a001 out at once, and waits for an application's lock on a005's
// materialized row: a write committed then gives a005's case a new owner,
// which the chunk's read of a005's records shows. The chunk must read the
// change log again after that read, and leave a005 out too: neither owner
// has access until `recalc resume`, each written case's access is what it
// was when defer returned; after the resume the owners have theirs, the
// tables are a full run's and the access the oracle's. Deferring both
// sides or the share rows alone.
func TestFinishBesideDeferralReadsChangesAgain(t *testing.T) {
	t.Parallel()
	for _, sides := range [][]string{{store.SideRules}, {store.SideClosure, store.SideRules}} {
		t.Run(strings.Join(sides, "+"), func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			stopOneChunk(t, b)
			env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
			if err := cli.DeferCmd(b.ctx, env, sides); err != nil {
				t.Fatal(err)
			}
			pre := snapshotPreDefer(t, b, "c001_1", "c005_1")
			owners := map[string]string{"c001_1": "u2", "c005_1": "u3"}
			b.exec(t, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'c001_1'`)
			obs := connect(t, b.pool)
			holder, pid := holdWith(t, b, `SELECT FROM recalc.acl_record WHERE id = 'c005_0' FOR UPDATE`)
			imported := importInBackground(t, b, env)
			waitBlockedBy(t, obs, pid, nil, "the import's chunk to wait for a005's row")
			b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'c005_1'`)
			rollback(t, holder, "a005's row")
			if err := <-imported; err != nil {
				t.Fatalf("the import beside the paused job: %v", err)
			}
			var unfinished int
			if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.job WHERE status <> 'done'`).Scan(&unfinished); err != nil || unfinished != 0 {
				t.Errorf("%d jobs unfinished after the import (%v), want the paused one finished", unfinished, err)
			}
			checkNoAccess(t, b, owners, "after the import finished the job")
			pre.check(t, b, "after the import finished the job")
			if err := cli.ResumeCmd(b.ctx, env, sides, engine.Options{}); err != nil {
				t.Fatal(err)
			}
			for id, user := range owners {
				if l := b.level(t, user, id); l == "none" {
					t.Errorf("%s on %s after the resume: none, want the owner's access", user, id)
				}
			}
			checkDeferRace(t, b, "after the resume")
		})
	}
}

// TestFinishBesideDeferralWriteAfterLastRead: as above, but the write to
// a005's case commits after the chunk's last read of the change log, while
// it waits to write a005's share rows (an application's lock on them): the
// chunk computed a005's family from the records before the write, so it
// writes it, and the write's change row stays pending. The case's new
// owner has no access until the resume, then has it; the tables are then a
// full run's. This is the commit point between a chunk's reads and its
// writes.
func TestFinishBesideDeferralWriteAfterLastRead(t *testing.T) {
	t.Parallel()
	b := drBundle(t)
	stopOneChunk(t, b)
	env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
	if err := cli.DeferCmd(b.ctx, env, []string{store.SideRules}); err != nil {
		t.Fatal(err)
	}
	pre := snapshotPreDefer(t, b, "c001_1")
	owners := map[string]string{"c001_1": "u2", "c005_1": "u3"}
	b.exec(t, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'c001_1'`)
	obs := connect(t, b.pool)
	holder, pid := holdWith(t, b, `SELECT FROM recalc.acl_share WHERE rid IN (SELECT rid FROM recalc.acl_record WHERE root_id = 'a005') FOR UPDATE`)
	imported := importInBackground(t, b, env)
	waitBlockedBy(t, obs, pid, nil, "the import's chunk to wait to write a005's share rows")
	b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'c005_1'`)
	rollback(t, holder, "a005's share rows")
	if err := <-imported; err != nil {
		t.Fatalf("the import beside the paused job: %v", err)
	}
	var pending int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.change WHERE 'c005_1' = ANY(keys)`).Scan(&pending); err != nil || pending == 0 {
		t.Errorf("change rows naming c005_1 after the import: %d (%v), want its write's pending", pending, err)
	}
	checkNoAccess(t, b, owners, "after the import finished the job")
	pre.check(t, b, "after the import finished the job")
	if err := cli.ResumeCmd(b.ctx, env, []string{store.SideRules}, engine.Options{}); err != nil {
		t.Fatal(err)
	}
	for id, user := range owners {
		if l := b.level(t, user, id); l == "none" {
			t.Errorf("%s on %s after the resume: none, want the owner's access", user, id)
		}
	}
	checkDeferRace(t, b, "after the resume")
}

// TestDeferWaitsForImportFinishingJob: an import finishes an interrupted
// job (no deferral), its chunk stopped by an application's lock, when
// `recalc defer` runs: defer waits for the chunk, which read no deferral,
// and a write committed once it returned gets no access from the import's
// chunk (it read the records before) nor until the resume.
func TestDeferWaitsForImportFinishingJob(t *testing.T) {
	t.Parallel()
	b := drBundle(t)
	stopOneChunk(t, b)
	// As if the stopped run's process had died 10 s ago (queue.LiveWithin):
	// the import finds the job interrupted at once, not after waiting out
	// the last heartbeat.
	b.exec(t, `UPDATE recalc.job_worker SET seen_at = now() - interval '1 minute'`)
	env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
	obs := connect(t, b.pool)
	holder, pid := holdWith(t, b, `SELECT FROM recalc.acl_record WHERE id = 'c005_0' FOR UPDATE`)
	imported := importInBackground(t, b, env)
	waitBlockedBy(t, obs, pid, nil, "the import's chunk to wait for a005's row")
	waiting := lockWaiters(t, obs)
	deferred := make(chan error, 1)
	go func() { deferred <- cli.DeferCmd(b.ctx, env, []string{store.SideRules}) }()
	awaitWaiters(t, obs, waiting+1, deferred, "recalc defer to wait for the import's chunk")
	rollback(t, holder, "a005's row")
	if err := <-deferred; err != nil {
		t.Fatal(err)
	}
	owners := map[string]string{"c001_1": "u2", "c005_1": "u3"}
	b.exec(t, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'c001_1'`, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'c005_1'`)
	if err := <-imported; err != nil {
		t.Fatalf("the import beside the interrupted job: %v", err)
	}
	checkNoAccess(t, b, owners, "after the import finished the job")
	if err := cli.ResumeCmd(b.ctx, env, []string{store.SideRules}, engine.Options{}); err != nil {
		t.Fatal(err)
	}
	for id, user := range owners {
		if l := b.level(t, user, id); l == "none" {
			t.Errorf("%s on %s after the resume: none, want the owner's access", user, id)
		}
	}
	checkDeferRace(t, b, "after the resume")
}

// preDefer is the access that records written after `recalc defer`
// returned may show until `recalc resume`, even once an import has finished
// a job that the deferral paused: theirs when defer returned (materialized),
// or what the oracle computes from the records as they were then (a chunk
// that read no deferral, or a full job's chunk done before it, computed it
// from them).
type preDefer struct {
	ids                  []string
	materialized, oracle map[string]string // record: its lines of the access CSV
}

// snapshotPreDefer reads the access to records ids and what the oracle
// computes for them from what is stored now.
func snapshotPreDefer(t *testing.T, b *bundle, ids ...string) *preDefer {
	t.Helper()
	b.syncRecords(t)
	return &preDefer{ids: ids, materialized: accessByRecord(b.access(t), ids), oracle: accessByRecord(oracle.CSV(oracle.Access(b.cur)), ids)}
}

// check requires the access to each record of p to be one of p's two.
func (p *preDefer) check(t *testing.T, b *bundle, when string) {
	t.Helper()
	got := accessByRecord(b.access(t), p.ids)
	for _, id := range p.ids {
		if got[id] != p.materialized[id] && got[id] != p.oracle[id] {
			t.Errorf("access to %s %s:\n%s\nwant it as when `recalc defer` returned:\n%s\nor as the oracle computes it from the records then:\n%s",
				id, when, got[id], p.materialized[id], p.oracle[id])
		}
	}
}

// accessByRecord returns, for each record of ids, its lines of an access
// CSV (object, record, user, access).
func accessByRecord(csv string, ids []string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(csv, "\n") {
		f := strings.Split(line, ",")
		if len(f) < 2 {
			continue
		}
		for _, id := range ids {
			if f[1] == id {
				out[id] += line + "\n"
			}
		}
	}
	return out
}

// TestFinishBesideDeferralLeavesMovedFamiliesTogether: a case moved from
// a003 to a004 before the job was planned puts both families in one chunk
// (a chunk writes the families records moved between together). Share
// rows deferred, a write gives a004's other case a new owner, and an import
// finishes the job: its chunk must leave a003 out with a004, else a003's
// rows are written without the moved case, whose stored rows a004 keeps
// (it would have none). The written and moved cases keep their access as
// when defer returned, or as the oracle computes it from the records then,
// until `recalc resume`; then the tables are a full run's.
func TestFinishBesideDeferralLeavesMovedFamiliesTogether(t *testing.T) {
	t.Parallel()
	b := drBundle(t)
	stopChunk(t, b, 3, []string{"c003_1"}, `UPDATE recalc.record SET parent = 'a004' WHERE id = 'c003_0'`)
	var roots []string
	if err := b.pool.QueryRow(b.ctx, `SELECT roots FROM recalc.chunk c JOIN recalc.job j ON j.id = c.job_id WHERE j.status = 'running'`).Scan(&roots); err != nil ||
		strings.Join(roots, " ") != "a003 a004" {
		t.Fatalf("the job's chunk holds %v (%v), want a003 and a004", roots, err)
	}
	env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
	if err := cli.DeferCmd(b.ctx, env, []string{store.SideRules}); err != nil {
		t.Fatal(err)
	}
	pre := snapshotPreDefer(t, b, "c003_0", "c003_1", "c004_1")
	owners := map[string]string{"c004_1": "u2"}
	b.exec(t, `UPDATE recalc.record SET owner = 'u2' WHERE id = 'c004_1'`)
	if err := <-importInBackground(t, b, env); err != nil {
		t.Fatalf("the import beside the paused job: %v", err)
	}
	checkNoAccess(t, b, owners, "after the import finished the job")
	pre.check(t, b, "after the import finished the job")
	if err := cli.ResumeCmd(b.ctx, env, []string{store.SideRules}, engine.Options{}); err != nil {
		t.Fatal(err)
	}
	if l := b.level(t, "u2", "c004_1"); l == "none" {
		t.Errorf("u2 on c004_1 after the resume: none, want the owner's access")
	}
	checkDeferRace(t, b, "after the resume")
}

// TestFinishBesideDeferralAfterTruncate: recalc.record is truncated while
// share rows are deferred beside a job stopped before any chunk, then an
// import finishes the job. An incremental job's chunks leave every family
// out, the access unchanged; a full job's chunk refuses (its families'
// stored rows cannot be sorted by chunk), so the import fails and leaves
// the job to `recalc resume`. After the resume the tables are a full run's
// and the access the oracle's: none.
func TestFinishBesideDeferralAfterTruncate(t *testing.T) {
	t.Parallel()
	for _, full := range []bool{false, true} {
		t.Run(map[bool]string{false: "incremental", true: "full"}[full], func(t *testing.T) {
			t.Parallel()
			b := drBundle(t)
			b.exec(t, `UPDATE recalc.record SET owner = 'u3' WHERE id = 'a001'`)
			obs := connect(t, b.pool)
			lock, pid := holdDeferralLock(t, b)
			ctx, cancel := context.WithCancel(b.ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = engine.Run(ctx, b.pool, engine.Options{Workers: 1, ChunkSize: 12, Full: full, LockTimeout: 20 * time.Second}, zerolog.Nop())
			}()
			waitBlockedBy(t, obs, pid, done, "the first chunk to wait for the deferral lock")
			cancel()
			<-done
			rollback(t, lock, "the deferral lock")
			env := &cli.Env{Pool: b.pool, Out: &bytes.Buffer{}, Log: zerolog.Nop()}
			if err := cli.DeferCmd(b.ctx, env, []string{store.SideRules}); err != nil {
				t.Fatal(err)
			}
			before := b.access(t)
			b.exec(t, `TRUNCATE recalc.record`)
			err := <-importInBackground(t, b, env)
			switch {
			case full && (err == nil || !strings.Contains(err.Error(), "was truncated since the job was planned")):
				t.Errorf("an import beside the full job after a truncate: %v, want it refused, saying so", err)
			case !full && err != nil:
				t.Errorf("an import beside the incremental job after a truncate: %v", err)
			}
			if got := b.access(t); got != before {
				t.Errorf("the access changed after the import:\n%s", lineDiff(got, before))
			}
			if err := cli.ResumeCmd(b.ctx, env, []string{store.SideRules}, engine.Options{}); err != nil {
				t.Fatal(err)
			}
			checkDeferRace(t, b, "after the resume")
		})
	}
}
