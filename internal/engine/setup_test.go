package engine_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// bundle is what an engine test works on, as River's testBundle: a
// database of its own, so that tests run in parallel, and the model stored
// in it as the oracle sees it.
type bundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
	cur  *model.Model // the stored model; nil before the first import
}

// setup gives the test a fresh database with recalc's schema.
func setup(t *testing.T) *bundle {
	t.Helper()
	return &bundle{ctx: context.Background(), pool: testdb.Migrated(t)}
}

// setupOrg is setup with the model file org imported and recalculated once
// with opt: a copy of a template made once per org and options
// (orgTemplate). Some 59 tests take it, and the import and run cost each
// about 0.6 s of a setup's 0.75 s under -race.
func setupOrg(t *testing.T, org string, opt engine.Options) *bundle {
	t.Helper()
	m, f, err := model.Parse(strings.NewReader(org))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(testdb.Clone(t, orgTemplate(t, org, opt)))
	if err != nil {
		t.Fatal(err)
	}
	testdb.CloseIdle(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &bundle{ctx: context.Background(), pool: pool, cur: oracle.Merge(nil, m, f)}
}

// orgTemplate is this test process's template of setupOrg's database for
// org and opt, made once by the first test that asks: a database set up,
// org imported and run with opt, its sessions closed, becomes the
// template (dropped by testdb.Main with the others).
func orgTemplate(t *testing.T, org string, opt engine.Options) string {
	t.Helper()
	key := fmt.Sprintf("%+v\x00%s", opt, org)
	orgTemplates.Lock()
	if orgTemplates.made == nil {
		orgTemplates.made = map[string]*madeOrg{}
	}
	m := orgTemplates.made[key]
	if m == nil {
		m = &madeOrg{}
		orgTemplates.made[key] = m
	}
	orgTemplates.Unlock()
	m.once.Do(func() {
		b := setup(t)
		b.importFile(t, org)
		b.run(t, opt)
		b.pool.Close()
		name := b.pool.Config().ConnConfig.Database
		if m.err = testdb.MarkTemplate(context.Background(), name); m.err == nil {
			m.name = name
		}
	})
	if m.err != nil {
		t.Fatalf("make the org template: %v", m.err)
	}
	if m.name == "" {
		t.Fatal("the org template's maker failed: see its test")
	}
	return m.name
}

// madeOrg is a template made once by orgTemplate, or why it could not be.
type madeOrg struct {
	once sync.Once
	name string
	err  error
}

// orgTemplates holds orgTemplate's templates, by options and org.
var orgTemplates struct {
	sync.Mutex
	made map[string]*madeOrg
}

// importFile imports a model file over the stored model.
func (b *bundle) importFile(t *testing.T, file string) {
	t.Helper()
	b.cur = testkit.Import(t, b.ctx, b.pool, b.cur, file)
}

// importModel imports m's sections in present (every one when nil). The
// caller says what the stored model then is, when it tracks it.
func (b *bundle) importModel(t *testing.T, m *model.Model, present []string) {
	t.Helper()
	testkit.ImportModel(t, b.ctx, b.pool, m, present)
}

// run runs engine.Run, failing the test on an error.
func (b *bundle) run(t *testing.T, opt engine.Options) *engine.Report {
	t.Helper()
	rep, err := engine.Run(b.ctx, b.pool, opt, zerolog.Nop())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return rep
}

// step runs one step of live, failing the test on an error.
func (b *bundle) step(t *testing.T, live *engine.Live) *engine.LiveReport {
	t.Helper()
	rep, err := live.Step(b.ctx, b.pool, zerolog.Nop())
	if err != nil {
		t.Fatalf("live step: %v", err)
	}
	return rep
}

// full runs engine.Full, failing the test on an error.
func (b *bundle) full(t *testing.T, opt engine.Options) *engine.Report {
	t.Helper()
	rep, err := engine.Full(b.ctx, b.pool, opt, zerolog.Nop())
	if err != nil {
		t.Fatalf("full run: %v", err)
	}
	return rep
}

// exec runs statements, failing the test on an error.
func (b *bundle) exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, sql := range stmts {
		if _, err := b.pool.Exec(b.ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// begin begins a transaction on b's pool, rolled back at the test's end
// unless committed before.
func (b *bundle) begin(t *testing.T) pgx.Tx {
	t.Helper()
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// access reads the materialized access as CSV.
func (b *bundle) access(t *testing.T) string {
	t.Helper()
	return testkit.AccessCSV(t, b.ctx, b.pool)
}

// level reads user's access to record through recalc.access_level.
func (b *bundle) level(t *testing.T, user, record string) string {
	t.Helper()
	l, err := access.Level(b.ctx, b.pool, user, record)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// checkOracle fails the test when the materialized access is not what the
// oracle computes for the stored model.
func (b *bundle) checkOracle(t *testing.T, after string) {
	t.Helper()
	testkit.CheckOracle(t, b.ctx, b.pool, b.cur, after)
}

// lastPlan returns the plan of the newest job, for failure messages.
func (b *bundle) lastPlan() string {
	var plan string
	_ = b.pool.QueryRow(b.ctx, `SELECT kind || ' ' || plan::text FROM recalc.job ORDER BY id DESC LIMIT 1`).Scan(&plan)
	return plan
}

// TestMain runs four tests at a time by default: they wait on PostgreSQL.
func TestMain(m *testing.M) { os.Exit(testkit.Main(m, 4)) }
