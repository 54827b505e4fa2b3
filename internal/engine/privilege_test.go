package engine_test

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
	"github.com/recalc-dev/recalc/internal/testdb"
	"github.com/recalc-dev/recalc/internal/testkit"
	"github.com/recalc-dev/recalc/schema"
)

// TestLeastPrivilegeRole runs init, import and a full run as the role the
// README documents: no superuser, no CREATEDB, owner of the recalc schema only.
func TestLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.New(t)
	var b [4]byte
	_, _ = crand.Read(b[:])
	role := "recalc_engine_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	q := pgx.Identifier{role}.Sanitize()
	for _, sql := range []string{
		`CREATE ROLE ` + q + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT`,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		`CREATE SCHEMA recalc AUTHORIZATION ` + q,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP OWNED BY `+q+`; DROP ROLE `+q); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})
	pool, err := pgxpool.New(ctx, dburl.WithUser(url, role))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var super bool
	if err := pool.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		t.Fatalf("test must run as a non-superuser (super=%v, err=%v)", super, err)
	}
	if _, err := schema.Migrate(ctx, pool); err != nil {
		t.Fatalf("init as %s: %v", role, err)
	}
	m := oracle.RandomModel(rand.New(rand.NewPCG(7, 7)), 40)
	testkit.ImportModel(t, ctx, pool, m, nil)
	for i := 0; i < 2; i++ { // twice: the second full run swaps out tables the first created
		if _, err := engine.Full(ctx, pool, engine.Options{Workers: 2, ChunkSize: 10}, zerolog.Nop()); err != nil {
			t.Fatalf("full run as %s: %v", role, err)
		}
	}
	testkit.CheckOracle(t, ctx, pool, m, "as "+role)

	// An application role with privileges on recalc.record only changes an
	// owner with plain SQL; the capture trigger runs with its owner's rights.
	app := role + "_app"
	qa := pgx.Identifier{app}.Sanitize()
	if _, err := admin.Exec(ctx, `CREATE ROLE `+qa+` LOGIN NOSUPERUSER`); err != nil {
		t.Fatal(err)
	}
	// The engine role owns the schema, so it grants (`recalc grant writer`).
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return access.Grant(ctx, tx, access.Writer, app) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, url)
		if err == nil {
			_, _ = c.Exec(ctx, `DROP OWNED BY `+qa+`; DROP ROLE `+qa)
			c.Close(ctx)
		}
	})
	appConn, err := pgx.Connect(ctx, dburl.WithUser(url, app))
	if err != nil {
		t.Fatal(err)
	}
	defer appConn.Close(ctx)
	rec := &m.Records[0]
	var newOwner string
	for _, u := range m.Users {
		if u.ID != rec.Owner {
			newOwner = u.ID
			break
		}
	}
	if _, err := appConn.Exec(ctx, `UPDATE recalc.record SET owner = $1 WHERE id = $2`, newOwner, rec.ID); err != nil {
		t.Fatalf("application update as %s: %v", app, err)
	}
	m.Records[0].Owner = newOwner
	var kept []model.Share
	for _, sh := range m.Shares {
		if !(sh.Record == rec.ID && sh.Cause == "manual") {
			kept = append(kept, sh)
		}
	}
	m.Shares = kept
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("run as %s: %v", role, err)
	}
	testkit.CheckOracle(t, ctx, pool, m, "after the application's update")

	// verify counts a stray family root, and --repair fixes it, as the
	// engine role: a leaf's root set to its own id, as a root fix writes.
	var leaf, root string
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('recalc.fixing_roots', 'on', true)`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `UPDATE recalc.record t SET root_id = t.id FROM recalc.record o
			WHERE o.rid = t.rid AND t.rid = (SELECT rid FROM recalc.record c
			    WHERE c.parent IN (SELECT id FROM recalc.record) AND c.id NOT IN (SELECT parent FROM recalc.record WHERE parent IS NOT NULL)
			    ORDER BY rid LIMIT 1)
			RETURNING t.id, o.root_id`).Scan(&leaf, &root)
	})
	if err != nil {
		t.Fatalf("write a stray root: %v", err)
	}
	for _, opt := range []engine.VerifyOptions{{}, {Repair: true}} {
		if rep, err := engine.Verify(ctx, pool, opt, zerolog.Nop()); err != nil || rep.StrayRoots != 1 {
			t.Fatalf("verify (repair %v) as %s: %+v, %v; want 1 stray root", opt.Repair, role, rep, err)
		}
	}
	var fixed string
	if err := pool.QueryRow(ctx, `SELECT root_id FROM recalc.record WHERE id = $1`, leaf).Scan(&fixed); err != nil || fixed != root {
		t.Fatalf("after verify --repair as %s, %s has root %q (%v), want %q", role, leaf, fixed, err, root)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{}, zerolog.Nop()); err != nil {
		t.Fatalf("run as %s: %v", role, err)
	}
	testkit.CheckOracle(t, ctx, pool, m, "after verify repaired a stray root")

	// A superuser's full run swaps in tables the engine role owns: else the
	// engine could not read them. It also gives back a table an older
	// recalc's swap as a superuser left to it.
	if _, err := admin.Exec(ctx, `ALTER TABLE recalc.acl_member OWNER TO CURRENT_USER`); err != nil {
		t.Fatal(err)
	}
	superPool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer superPool.Close()
	if _, err := engine.Full(ctx, superPool, engine.Options{Workers: 2, ChunkSize: 10}, zerolog.Nop()); err != nil {
		t.Fatalf("full run as a superuser: %v", err)
	}
	var strays []string
	if err := admin.QueryRow(ctx, `SELECT coalesce(array_agg(tablename::text), '{}') FROM pg_tables WHERE schemaname = 'recalc' AND tableowner <> $1`, role).Scan(&strays); err != nil || len(strays) > 0 {
		t.Fatalf("after a superuser's full run, tables owned by another role than %s: %v (%v)", role, strays, err)
	}
	if _, err := engine.Run(ctx, pool, engine.Options{Full: true}, zerolog.Nop()); err != nil {
		t.Fatalf("full run in place as %s after a superuser's swap: %v", role, err)
	}
	testkit.CheckOracle(t, ctx, pool, m, "after a superuser's swap")
}
