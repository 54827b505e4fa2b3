package attach_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/engine"
)

// holdNth holds the nth query (from 1) whose SQL contains text, at its
// start, until released.
type holdNth struct {
	text             string
	n                int
	mu               sync.Mutex
	seen             int
	reached, release chan struct{}
	freed            sync.Once
}

func (h *holdNth) free() { h.freed.Do(func() { close(h.release) }) }

func (h *holdNth) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !strings.Contains(data.SQL, h.text) {
		return ctx
	}
	h.mu.Lock()
	h.seen++
	hit := h.seen == h.n
	h.mu.Unlock()
	if hit {
		close(h.reached)
		<-h.release
	}
	return ctx
}

func (h *holdNth) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestStubsBesideBothUsersBuilds: two stubs, tim and tom (deleted from the
// users table, each still named by the manual share of one lead), and a
// run's plan that builds the users section twice: the share naming tim
// goes (its lead deleted) after the plan's first build read the names and
// before it reads the change log, so the plan builds the section again
// (plan.go, load); the share naming tom goes while that second build has
// read the names and not yet marked the section built. The job must drop
// tim's stub, and wait_fresh for a token taken after tom's delete must not
// return while tom's stub grants: the next run builds the section again
// from the mark left, and both stubs go; no build loops or fails.
func TestStubsBesideBothUsersBuilds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupUsers(t)
	b.exec(t, b.app, `ALTER TABLE crm.account DROP CONSTRAINT account_owner_id_fkey`,
		`INSERT INTO crm.app_user (id, name, role_id) VALUES ('tim', 'Tim', 'east'), ('tom', 'Tom', 'east')`,
		`INSERT INTO crm.account (id, name, owner_id, industry) VALUES (60, 'Tim''s', 'tim', 'tech'), (61, 'Tom''s', 'tom', 'tech')`)
	merge := func(doc string) {
		t.Helper()
		if out, err := b.recalcFile(t, doc, "import", "--merge"); err != nil {
			t.Fatalf("import --merge %s: %v\n%s", doc, err, out)
		}
	}
	merge(`{"objects": [{"name": "lead", "internal_owd": "private"}]}`)
	b.exec(t, b.engine, `INSERT INTO recalc.record (id, object, owner) VALUES ('L1', 'lead', 'alice'), ('L2', 'lead', 'alice'), ('L3', 'lead', 'alice')`)
	b.run(t)
	merge(`{"shares": [{"object": "lead", "record": "L1", "grantee": "user:tim", "access": "read", "cause": "manual"},
	                   {"object": "lead", "record": "L3", "grantee": "user:tom", "access": "read", "cause": "manual"},
	                   {"object": "lead", "record": "L2", "grantee": "user:bob", "access": "read", "cause": "manual"}]}`)
	b.run(t)
	b.exec(t, b.app, `DELETE FROM crm.app_user WHERE id IN ('tim', 'tom')`)
	b.run(t)
	level := func(acct string) string {
		t.Helper()
		var l string
		if err := b.admin.QueryRow(ctx, `SELECT recalc.access_level('frank', $1)`, acct).Scan(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	if l60, l61 := level("account:60"), level("account:61"); l60 != "read" || l61 != "read" {
		t.Fatalf("tim and tom stubs: frank reads account:60 %s, account:61 %s, want read, read", l60, l61)
	}

	// L2's delete marks the section, so the next plan builds it; hold its
	// first build, then its second, each as it is about to mark it built.
	b.exec(t, b.engine, `DELETE FROM recalc.record WHERE id = 'L2'`)
	h1 := &holdNth{text: "UPDATE recalc.attached_users_state SET dirty = false", n: 1, reached: make(chan struct{}), release: make(chan struct{})}
	h2 := &holdNth{text: "UPDATE recalc.attached_users_state SET dirty = false", n: 2, reached: make(chan struct{}), release: make(chan struct{})}
	held := tracedPool(t, b, multiTracer{h1, h2})
	t.Cleanup(h1.free)
	t.Cleanup(h2.free)
	done := make(chan error, 1)
	go func() {
		_, err := engine.Run(ctx, held, engine.Options{}, zerolog.Nop())
		done <- err
	}()
	wait := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case err := <-done:
			t.Fatalf("the run ended before %s: %v", what, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("never reached %s", what)
		}
	}
	wait(h1.reached, "its first build of the users section")
	b.exec(t, b.engine, `DELETE FROM recalc.record WHERE id = 'L1'`) // tim's last share
	token1, err := changes.FreshToken(ctx, b.engine)
	if err != nil {
		t.Fatal(err)
	}
	h1.free()
	wait(h2.reached, "its second build of the users section")
	b.exec(t, b.engine, `DELETE FROM recalc.record WHERE id = 'L3'`) // tom's last share
	token2, err := changes.FreshToken(ctx, b.engine)
	if err != nil {
		t.Fatal(err)
	}
	h2.free()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if err := changes.WaitFresh(ctx, b.admin, token1, 0); err == nil {
		if l := level("account:60"); l != "none" {
			t.Errorf("wait_fresh returned for a token after tim's last share went, but frank reads account:60 %s, want none", l)
		}
	} else if !changes.IsNotFresh(err) {
		t.Fatal(err)
	}
	if err := changes.WaitFresh(ctx, b.admin, token2, 0); err == nil {
		if l := level("account:61"); l != "none" {
			t.Errorf("wait_fresh returned for a token after tom's last share went, but frank reads account:61 %s, want none", l)
		}
	} else if !changes.IsNotFresh(err) {
		t.Fatal(err)
	}

	rep, err := engine.NewLive(engine.Options{}, 1000).Step(ctx, b.engine, zerolog.Nop())
	if err != nil {
		t.Fatalf("watch step: %v", err)
	}
	_ = rep
	for _, tok := range []int64{token1, token2} {
		if err := changes.WaitFresh(ctx, b.admin, tok, 5*time.Second); err != nil {
			t.Fatalf("wait_fresh after the next step: %v", err)
		}
	}
	if l60, l61 := level("account:60"), level("account:61"); l60 != "none" || l61 != "none" {
		t.Errorf("both stubs' last shares gone: frank reads account:60 %s, account:61 %s, want none, none", l60, l61)
	}
	var users string
	if err := b.admin.QueryRow(ctx, `SELECT doc::text FROM recalc.model_section WHERE name = 'users'`).Scan(&users); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(users, `"tim"`) || strings.Contains(users, `"tom"`) {
		t.Errorf("the users section keeps a stub: %s", users)
	}
	var marks int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM recalc.attached_users_mark`).Scan(&marks); err != nil {
		t.Fatal(err)
	}
	if marks != 0 {
		t.Errorf("%d marks left after the step", marks)
	}
	b.raceCheckFull(t, "after the step")
}

// multiTracer passes each query start to every hold.
type multiTracer []*holdNth

func (m multiTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	for _, h := range m {
		ctx = h.TraceQueryStart(ctx, c, data)
	}
	return ctx
}

func (m multiTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
