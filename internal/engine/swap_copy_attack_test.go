package engine_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/engine"
)

// gate is a pgx query tracer that stops a pool's sessions at chosen
// statements: an armed point stops the first statement whose SQL contains
// its text, says so (reached, with the session's pid), and lets it go on
// when released. It is no sleep: each point is an explicit handshake.
type gate struct {
	mu     sync.Mutex
	points []*point
}

type point struct {
	text    string
	armed   bool
	reached chan uint32
	release chan struct{}
}

func (g *gate) arm(text string) *point {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := &point{text: text, armed: true, reached: make(chan uint32, 1), release: make(chan struct{})}
	g.points = append(g.points, p)
	return p
}

func (g *gate) TraceQueryStart(ctx context.Context, c *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	g.mu.Lock()
	var hit *point
	for _, p := range g.points {
		if p.armed && strings.Contains(data.SQL, p.text) {
			p.armed, hit = false, p
			break
		}
	}
	g.mu.Unlock()
	if hit != nil {
		hit.reached <- c.PgConn().PID()
		select {
		case <-hit.release:
		case <-ctx.Done():
		}
	}
	return ctx
}

func (g *gate) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// gatedPool is a pool on pool's database whose sessions stop at g's points.
func gatedPool(t *testing.T, pool *pgxpool.Pool, g *gate) *pgxpool.Pool {
	t.Helper()
	return tracedPool(t, pool, g)
}

// waitReached waits for p's statement to start, failing after a minute.
func waitReached(t *testing.T, p *point, what string) uint32 {
	t.Helper()
	select {
	case pid := <-p.reached:
		return pid
	case <-time.After(60 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return 0
	}
}

// copyPath is the options of a full job whose swap, held up by a reader
// that the test keeps open throughout, takes the copy path after 200 ms of
// tries, not the 10 s a swap waits by default: the path is the same, and
// the three tests here waited 30 s in all for it.
func copyPath() engine.Options { return engine.Options{SwapWait: 200 * time.Millisecond} }

// TestSwapWaitOption: a full job's swap held up by an open reader waits
// Options.SwapWait, not the default 10 s, before it copies the new rows in
// place, within a deadline shorter than the default wait.
func TestSwapWaitOption(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, swapCopyOrg(), engine.Options{})
	b.importFile(t, swapCopyNoRule())
	rtx := begin(t, connect(t, b.pool))
	mustExec(t, rtx, `LOCK TABLE recalc.acl_share IN ACCESS SHARE MODE`)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if _, err := engine.Full(ctx, b.pool, copyPath(), zerolog.Nop()); err != nil {
		t.Fatalf("full run beside an open reader, SwapWait 200 ms, within 5 s: %v", err)
	}
	rollback(t, rtx, "reader")
	if got := b.level(t, "u1", "a003"); got != "none" {
		t.Errorf("after the copy: u1 on a003 is %s, want none", got)
	}
	checkSettled(t, b.ctx, b.pool)
}

// swapCopyOrg is liveOrg(6): accounts of tier 3 or more (a003, a004) are
// shared with group g1 (u1) by rule "tier"; a003 is u3's.
func swapCopyOrg() string { return liveOrg(6) }

// swapCopyNoRule is the same model without the rule: u1 has no access to
// a003 or its cases.
func swapCopyNoRule() string {
	org := swapCopyOrg()
	i := strings.Index(org, `"rules":[`)
	j := strings.Index(org, `"shares":`)
	return org[:i] + `"rules":[],` + org[j:]
}

// ruleRows counts the materialized share rows of g1 on a003.
func ruleRows(t *testing.T, b *bundle) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.acl_share s JOIN recalc.acl_record r USING (rid)
		JOIN recalc.grantee g USING (gid) WHERE r.id = 'a003' AND g.key = 'group:g1'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSwapCopyVerifyRepairDuringCopy: a verify --repair that began before a
// full job (it saw no unfinished job) reaches its chunk while the job's
// finish, unable to lock the live tables within its wait (a reader holds
// ACCESS SHARE), is about to copy the staged rows in place. The chunk once
// restored the drifted rule row under the configuration verify loaded; its
// uncommitted INSERT escaped the copy's DELETE and survived beside the new
// rows, giving u1 read access to a003 that the applied model (no rule) does
// not give, and no later run removed it. Now the chunk, under the model
// lock, finds the job unfinished and repairs nothing; the run ends with the
// model's rows.
func TestSwapCopyVerifyRepairDuringCopy(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, swapCopyOrg(), engine.Options{})
	if got := b.level(t, "u1", "a003"); got != "read" {
		t.Fatalf("u1 on a003 before: %s, want read", got)
	}
	// Drift: the rule's row of a003 went missing; verify --repair restores it.
	b.exec(t, `DELETE FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a003')
		AND gid = (SELECT gid FROM recalc.grantee WHERE key = 'group:g1')`)
	b.importFile(t, swapCopyNoRule()) // stored, not yet applied

	// verify --repair starts: no job is unfinished; it stops before its
	// chunk takes the model lock.
	vg := &gate{}
	vChunk := vg.arm(`FROM recalc.engine_lock WHERE scope`)
	vPool := gatedPool(t, b.pool, vg)
	type result struct {
		rep *engine.VerifyReport
		err error
	}
	vDone := make(chan result, 1)
	go func() {
		rep, err := engine.Verify(b.ctx, vPool, engine.VerifyOptions{Repair: true}, zerolog.Nop())
		vDone <- result{rep, err}
	}()
	waitReached(t, vChunk, "verify's chunk")

	// A reader holds ACCESS SHARE on acl_share past the swap's wait.
	reader := connect(t, b.pool)
	rtx := begin(t, reader)
	mustExec(t, rtx, `LOCK TABLE recalc.acl_share IN ACCESS SHARE MODE`)

	// The full job (a swap job) runs; its finish stops right before the copy.
	rg := &gate{}
	copyPoint := rg.arm(`DELETE FROM recalc.acl_share; INSERT INTO recalc.acl_share TABLE recalc.acl_share_next`)
	rPool := gatedPool(t, b.pool, rg)
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	runDone := make(chan struct{})
	var runErr error
	go func() {
		defer close(runDone)
		_, runErr = engine.Full(ctx, rPool, copyPath(), zerolog.Nop())
	}()
	waitReached(t, copyPoint, "the finish's copy into the live tables (the copy path)")

	// verify's chunk now runs: under the model lock it finds the job
	// unfinished and repairs nothing.
	close(vChunk.release)
	if r := <-vDone; r.err == nil || !strings.Contains(r.err.Error(), "started while verify ran") {
		t.Errorf("verify --repair beside a job that started after it: %v, want it to stop saying the job started", r.err)
	}
	close(copyPoint.release)
	<-runDone
	if runErr != nil {
		t.Fatalf("full run: %v", runErr)
	}
	rollback(t, rtx, "reader")

	if n := ruleRows(t, b); n != 0 {
		t.Errorf("after the copy: %d share rows of group:g1 on a003 survive; the applied model has no rule", n)
	}
	if got := b.level(t, "u1", "a003"); got != "none" {
		t.Errorf("after the copy: u1 on a003 is %s, want none (leak)", got)
	}
	b.run(t, engine.Options{})
	if got := b.level(t, "u1", "a003"); got != "none" {
		t.Errorf("after a final run: u1 on a003 is %s, want none (leak)", got)
	}
	checkSettled(t, b.ctx, b.pool)
}

// TestSwapCopyVerifyRepairAfterJob: the same verify --repair, its repair
// of a chunk (whose a003 lost a share row behind recalc's back)
// run after the job's finish committed. It used to diff the new tables
// against the configuration it loaded before the job and "repair" them back
// to it, restoring the rule the job removed for a003 and a004. Now the
// repair finds the applied configuration changed and stops. Not specific
// to the copy path: it needs no reader.
func TestSwapCopyVerifyRepairAfterJob(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, swapCopyOrg(), engine.Options{})
	b.importFile(t, swapCopyNoRule())
	b.exec(t, `DELETE FROM recalc.acl_share WHERE ctid = (SELECT s.ctid FROM recalc.acl_share s JOIN recalc.acl_record r USING (rid)
		JOIN recalc.grantee g USING (gid) WHERE r.id = 'a003' AND g.key <> 'group:g1' LIMIT 1)`)

	vg := &gate{}
	vChunk := vg.arm(`FROM recalc.engine_lock WHERE scope`)
	vPool := gatedPool(t, b.pool, vg)
	type result struct {
		rep *engine.VerifyReport
		err error
	}
	vDone := make(chan result, 1)
	go func() {
		rep, err := engine.Verify(b.ctx, vPool, engine.VerifyOptions{Repair: true}, zerolog.Nop())
		vDone <- result{rep, err}
	}()
	waitReached(t, vChunk, "verify's chunk")
	b.run(t, engine.Options{})
	if got := b.level(t, "u1", "a003"); got != "none" {
		t.Fatalf("after the job: u1 on a003 is %s, want none", got)
	}
	close(vChunk.release)
	if r := <-vDone; r.err == nil || !strings.Contains(r.err.Error(), "applied a new configuration while verify ran") {
		t.Errorf("verify --repair across a job: %v, want it to stop saying the configuration changed", r.err)
	}
	if got := b.level(t, "u1", "a003"); got != "none" {
		t.Errorf("after verify --repair: u1 on a003 is %s, want none (leak)", got)
	}
	b.run(t, engine.Options{})
	if got := b.level(t, "u1", "a003"); got != "none" {
		t.Errorf("after a final run: u1 on a003 is %s, want none (leak)", got)
	}
	checkSettled(t, b.ctx, b.pool)
}

// TestSwapCopyVerifyRepairSameModel: the interleaving of
// TestSwapCopyVerifyRepairDuringCopy with no model change, as when a
// nightly `run --full --in-place=false` and a `verify --repair` both fix the
// same drift. verify's restored row, uncommitted when the copy's DELETE ran,
// made the copy's INSERT of the same staged row fail on acl_share's primary
// key, and the job with it. Now verify stops (a job started), and the run
// succeeds; the tables end as a from-scratch run.
func TestSwapCopyVerifyRepairSameModel(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, swapCopyOrg(), engine.Options{})
	b.exec(t, `DELETE FROM recalc.acl_share WHERE rid = (SELECT rid FROM recalc.acl_record WHERE id = 'a003')
		AND gid = (SELECT gid FROM recalc.grantee WHERE key = 'group:g1')`)

	vg := &gate{}
	vChunk := vg.arm(`FROM recalc.engine_lock WHERE scope`)
	vPool := gatedPool(t, b.pool, vg)
	vDone := make(chan error, 1)
	go func() {
		_, err := engine.Verify(b.ctx, vPool, engine.VerifyOptions{Repair: true}, zerolog.Nop())
		vDone <- err
	}()
	waitReached(t, vChunk, "verify's chunk")

	reader := connect(t, b.pool)
	rtx := begin(t, reader)
	mustExec(t, rtx, `LOCK TABLE recalc.acl_share IN ACCESS SHARE MODE`)

	rg := &gate{}
	copyPoint := rg.arm(`DELETE FROM recalc.acl_share; INSERT INTO recalc.acl_share TABLE recalc.acl_share_next`)
	rPool := gatedPool(t, b.pool, rg)
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	runDone := make(chan struct{})
	var runErr error
	go func() {
		defer close(runDone)
		_, runErr = engine.Full(ctx, rPool, copyPath(), zerolog.Nop())
	}()
	waitReached(t, copyPoint, "the finish's copy into the live tables (the copy path)")
	close(vChunk.release)
	if err := <-vDone; err == nil || !strings.Contains(err.Error(), "started while verify ran") {
		t.Errorf("verify --repair beside a job that started after it: %v, want it to stop saying the job started", err)
	}
	close(copyPoint.release)
	<-runDone
	rollback(t, rtx, "reader")
	if runErr != nil {
		t.Errorf("full run beside verify --repair failed (the swap used to wait for verify): %v", runErr)
	}
	b.run(t, engine.Options{})
	checkSettled(t, b.ctx, b.pool)
}

// TestSwapCopyReaderWriterAndFeed: what held. The ACCESS SHARE holder is a
// REPEATABLE READ reader that called recalc.access_level; the full job
// applies a model without the rule, by the copy path; while the finish
// holds the copy uncommitted, the application commits a tier change of
// a001 (to 3, which the removed rule no longer shares). The reader keeps
// its snapshot's answer across the finish, a new read sees the new one; a
// consumer replaying the feed from before the job finds a003 and a004 named
// and a swap entry; a final run settles a001 and the tables equal a
// from-scratch run.
func TestSwapCopyReaderWriterAndFeed(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, swapCopyOrg(), engine.Options{})
	var head int64
	if err := b.pool.QueryRow(b.ctx, `SELECT recalc.access_changes_head()`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	b.importFile(t, swapCopyNoRule())

	reader := connect(t, b.pool)
	rtx, err := reader.BeginTx(b.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	readLevel := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}, user, rec string) string {
		var l string
		if err := q.QueryRow(b.ctx, `SELECT recalc.access_level($1, $2)`, user, rec).Scan(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	if got := readLevel(rtx, "u1", "a003"); got != "read" {
		t.Fatalf("reader before: %s", got)
	}

	rg := &gate{}
	copyPoint := rg.arm(`DELETE FROM recalc.acl_share; INSERT INTO recalc.acl_share TABLE recalc.acl_share_next`)
	after := rg.arm(`recalc.acl_object`) // WriteObjects, the finish's next step after the copy
	rPool := gatedPool(t, b.pool, rg)
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	runDone := make(chan struct{})
	var runErr error
	go func() {
		defer close(runDone)
		_, runErr = engine.Full(ctx, rPool, copyPath(), zerolog.Nop())
	}()
	waitReached(t, copyPoint, "the finish's copy (the copy path)")
	close(copyPoint.release)
	waitReached(t, after, "the finish's step after the copy")
	app := connect(t, b.pool)
	mustExec(t, app, `UPDATE recalc.record SET fields = jsonb_build_object('tier', 3) WHERE id = 'a001'`)
	if got := readLevel(rtx, "u1", "a003"); got != "read" {
		t.Errorf("reader during the finish: %s, want its snapshot's read", got)
	}
	close(after.release)
	<-runDone
	if runErr != nil {
		t.Fatalf("full run: %v", runErr)
	}
	if got := readLevel(rtx, "u1", "a003"); got != "read" {
		t.Errorf("REPEATABLE READ reader after the finish: %s, want its snapshot's read", got)
	}
	rollback(t, rtx, "reader")
	if got := readLevel(b.pool, "u1", "a003"); got != "none" {
		t.Errorf("new read after the finish: %s, want none", got)
	}
	rows, err := b.pool.Query(b.ctx, `SELECT kind, key FROM recalc.access_changes($1, 10000)`, head)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for rows.Next() {
		var kind, key string
		if err := rows.Scan(&kind, &key); err != nil {
			t.Fatal(err)
		}
		seen[kind+":"+key] = true
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	for _, want := range []string{"record:a003", "record:a004", "swap:"} {
		if !seen[want] {
			t.Errorf("feed after the copy lacks %s (has %v)", want, seen)
		}
	}
	b.run(t, engine.Options{})
	checkSettled(t, b.ctx, b.pool)
}
