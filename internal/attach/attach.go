package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/schema"
)

// Status says what Apply or Detach did to an object.
type Status string

// Statuses.
const (
	Attached  Status = "attached"  // newly attached, existing rows backfilled
	Updated   Status = "updated"   // capture rebuilt, records resynchronized
	Unchanged Status = "unchanged" // same spec, capture in place: nothing done
	Detached  Status = "detached"  // capture dropped, records deleted
)

// Change is what Apply or Detach did to one object.
type Change struct {
	Object  string `json:"object"`
	Table   string `json:"table"`
	Status  Status `json:"status"`
	Records int64  `json:"records"` // records written (attach, update) or deleted (detach)
}

// Apply makes the attachments equal spec, in one transaction: it attaches
// the objects it names (capture installed, existing rows backfilled),
// rebuilds those whose entry or table changed, leaves the others alone, and
// detaches the stored ones it does not name. On any error nothing changes.
// Installing a table's triggers waits for the transactions writing it,
// 100 ms a try (the session's lock_timeout when set), all the locks it
// takes within captureLockWait (onCaptured, inModelLock).
func Apply(ctx context.Context, pool *pgxpool.Pool, spec *Spec) ([]Change, error) {
	var out []Change
	err := inModelLock(ctx, pool, func(tx pgx.Tx, have map[string]stored, budget *locks.Budget) error {
		targets, err := resolveAll(ctx, tx, spec)
		if err != nil {
			return err
		}
		var gone []string
		for object := range have {
			if _, keep := targets[object]; !keep {
				gone = append(gone, object)
			}
		}
		slices.Sort(gone)
		if out, err = removeAll(ctx, tx, budget, gone, have); err != nil {
			return err
		}
		for _, o := range spec.Objects {
			c, err := install(ctx, tx, budget, targets[o.Object], have)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		if t, ok := targets[model.UsersAttachment]; ok {
			c, err := install(ctx, tx, budget, t, have)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// inModelLock runs fn in a transaction that holds the model lock (imports
// and job creation wait for it), with the stored attachments and the
// budget of the waits for the locks fn takes on the application's tables
// and recalc.record, all of them together (locks.Budget): captureLockWait,
// or the session's lock_timeout when that is longer. Each lock had a wait
// of its own, so an attach of several objects, or the three attempts of a
// users detach (lastUsers), could wait several times as long. Dropping a
// capture while the table's owner alters its triggers in an open
// transaction fails once that commits (pg.IsConcurrentCatalogUpdate): it
// tries again, twice at most, within what is left of the same budget.
func inModelLock(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx, have map[string]stored, budget *locks.Budget) error) error {
	var budget *locks.Budget
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := asSchemaOwner(ctx, tx); err != nil {
				return err
			}
			if err := schema.LockModel(ctx, tx); err != nil {
				return err
			}
			have, err := storedFingerprints(ctx, tx)
			if err != nil {
				return err
			}
			if budget == nil {
				if budget, err = locks.NewBudget(ctx, tx, captureLockWait); err != nil {
					return err
				}
			}
			return fn(tx, have, budget)
		})
		if err == nil || !pg.IsConcurrentCatalogUpdate(err) || attempt == 2 {
			return err
		}
	}
}

// asSchemaOwner refuses a session whose role does not own schema recalc:
// the capture functions, the read views and the sandbox are that role's,
// and an attach by another one (a superuser, say) failed later with a
// read error that said nothing of the role.
func asSchemaOwner(ctx context.Context, q pg.Querier) error {
	owner, me, mine, err := schemaOwner(ctx, q)
	if err == nil && !mine {
		err = fmt.Errorf("schema recalc is owned by %s, recalc's engine role: run recalc attach and detach as it (--database-url), not as %s; the capture functions, read views and sandbox role are that role's",
			owner, me)
	}
	return err
}

// RecalculatesAsOwner refuses to recalculate (cmd: run, watch), once
// objects or users are attached, as a role that does not own schema
// recalc: the absorb's record writes are the owner's alone
// (recalc.record_attached_guard), so a run or watch as a superuser failed,
// over and over, with a hint to write the application table instead.
func RecalculatesAsOwner(ctx context.Context, q pg.Querier, cmd string) error {
	owner, me, mine, err := schemaOwner(ctx, q)
	if err != nil || mine {
		return err
	}
	var attached bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.attachment)`).Scan(&attached); err != nil {
		return fmt.Errorf("read the attachments: %w", err)
	}
	if attached {
		return fmt.Errorf("application tables are attached, and only schema recalc's owner, %s (recalc's engine role), may mirror their rows: run recalc %s as it (--database-url), not as %s", owner, cmd, me)
	}
	return nil
}

// schemaOwner reads the role that owns schema recalc, the session's role,
// and whether they are one.
func schemaOwner(ctx context.Context, q pg.Querier) (owner, me string, mine bool, err error) {
	err = q.QueryRow(ctx, `SELECT n.nspowner::regrole::text, current_user::text, n.nspowner = r.oid
		FROM pg_catalog.pg_namespace n, pg_catalog.pg_roles r WHERE n.nspname = 'recalc' AND r.rolname = current_user`).Scan(&owner, &me, &mine)
	switch {
	case err == pgx.ErrNoRows:
		err = fmt.Errorf("schema recalc does not exist: run recalc init first, as recalc's engine role")
	case err != nil:
		err = fmt.Errorf("read the owner of schema recalc: %w", err)
	}
	return owner, me, mine, err
}

// removeAll detaches objects, which must be attached, their locks waited
// for within budget.
func removeAll(ctx context.Context, tx pgx.Tx, budget *locks.Budget, objects []string, have map[string]stored) ([]Change, error) {
	var out []Change
	for _, o := range objects {
		st, ok := have[o]
		if !ok {
			return nil, fmt.Errorf("object %q is not attached (`recalc attach --list` shows what is)", o)
		}
		c := Change{Object: o, Table: st.source, Status: Detached}
		if o == model.UsersAttachment {
			if err := lastUsers(ctx, tx, budget); err != nil {
				return nil, err
			}
		}
		if err := onCaptured(ctx, tx, budget, o, "drop the capture", `SELECT recalc.attach_drop_capture($1)`); err != nil {
			return nil, fmt.Errorf("detach %s: %w", o, err)
		}
		if err := tx.QueryRow(ctx, `SELECT recalc.attach_remove($1)`, o).Scan(&c.Records); err != nil {
			return nil, fmt.Errorf("detach %s: %w", o, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// lastUsers builds the users section, which stays as last built once the
// users are detached, from what the users table holds now: the writes its
// capture logged are absorbed first, and the section is rebuilt if they,
// or a team entry or share removed, changed it (store.SyncAttachedUsers),
// under the model lock tx holds. attach_remove drops the change rows of
// those writes: unread, a user deactivated or moved to another role before
// the detach kept the access the table no longer gave them, for good, and
// recalc.wait_fresh with a token taken after the write returned.
//
// It then drops the capture, which waits for the writes under way: one
// that committed after the absorb logged a change row it did not read, and
// it starts again (its savepoint rolled back), three times at most, the
// drops' lock waits within the command's budget (onCaptured): a write
// left open for most of it each time no longer kept the detach, under the
// model lock, three times as long, nor each later drop's first try a whole
// session lock_timeout. Writes that
// cannot be read because the capture is not intact (the table dropped or
// changed) are dropped, as before; writes whose read failed otherwise (a
// lock not granted in time, the sandbox role, a right revoked) refuse the
// detach, which can be run again once they read.
func lastUsers(ctx context.Context, tx pgx.Tx, budget *locks.Budget) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		late, err := absorbUsersAndDrop(ctx, sp, budget)
		if err == nil && !late {
			return sp.Commit(ctx)
		}
		if rerr := sp.Rollback(ctx); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		if attempt == 3 || budget.Spent() {
			return fmt.Errorf("detach users: writes to the users table kept committing while it was being detached, for %s "+
				"(sessions writing it: %s): nothing was changed; detach again once they end",
				time.Since(start).Round(100*time.Millisecond), locks.Named(captureHolders(ctx, tx, model.UsersAttachment, locks.WriteLock)))
		}
	}
}

// absorbUsersAndDrop is one attempt of lastUsers: it reports late when a
// write to the users table committed after the absorb, before the drop,
// which waits for its locks within budget.
func absorbUsersAndDrop(ctx context.Context, tx pgx.Tx, budget *locks.Budget) (late bool, err error) {
	pending := `SELECT EXISTS (SELECT FROM recalc.change WHERE kind IN ('attached', 'attached_all') AND object = $1)`
	var logged bool
	if err := tx.QueryRow(ctx, pending, model.UsersAttachment).Scan(&logged); err != nil {
		return false, fmt.Errorf("detach users: read the change log: %w", err)
	}
	if logged { // else the absorb's lock would only wait for a comparison's (verify --sources)
		a, found, err := changes.AbsorbObject(ctx, tx, model.UsersAttachment)
		switch {
		case err != nil:
			return false, fmt.Errorf("detach users: absorb the writes logged for the users table: %w", err)
		case found && !a.Absorbed && a.Code != "":
			return false, fmt.Errorf("detach users: the writes logged for the users table could not be read (SQLSTATE %s), and detaching would drop them: "+
				"`recalc attach --list` says why; fix that, or wait for the lock, and detach again", a.Code)
		}
	}
	// A capture that is not intact logged writes no absorb can read: they
	// go with it, those committed after the absorb too (docs/attach.md).
	var intact bool
	if err := tx.QueryRow(ctx, `SELECT recalc.attach_intact($1)`, model.UsersAttachment).Scan(&intact); err != nil {
		return false, fmt.Errorf("detach users: check the capture: %w", err)
	}
	if _, err := store.SyncAttachedUsers(ctx, tx); err != nil {
		return false, fmt.Errorf("detach users: build the users section from the users table: %w", err)
	}
	if err := onCaptured(ctx, tx, budget, model.UsersAttachment, "drop the capture", `SELECT recalc.attach_drop_capture($1)`); err != nil {
		return false, fmt.Errorf("detach users: %w", err)
	}
	if !intact {
		return false, nil
	}
	if err := tx.QueryRow(ctx, pending, model.UsersAttachment).Scan(&late); err != nil {
		return false, fmt.Errorf("detach users: read the change log: %w", err)
	}
	return late, nil
}

// resolveAll checks every entry of spec.
func resolveAll(ctx context.Context, tx pgx.Tx, spec *Spec) (map[string]*target, error) {
	objs, err := modelObjects(ctx, tx)
	if err != nil {
		return nil, err
	}
	attached := map[string]bool{}
	for _, o := range spec.Objects {
		attached[o.Object] = true
	}
	targets := map[string]*target{}
	for _, o := range spec.Objects {
		t, err := resolve(ctx, tx, o, objs, attached)
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", o.Object, err)
		}
		targets[o.Object] = t
	}
	if u := spec.Users; u != nil {
		t, err := resolve(ctx, tx, u.object(), objs, attached)
		if err == nil {
			err = t.resolveUsers(u)
		}
		if err != nil {
			return nil, fmt.Errorf("attach users: %w", err)
		}
		targets[model.UsersAttachment] = t
	}
	return targets, oneObjectEach(spec, targets)
}

// oneObjectEach refuses a table or view attached as more than one object:
// what recalc keys by relation (the write guard of `recalc rls enable`)
// could not tell which object a row is.
func oneObjectEach(spec *Spec, targets map[string]*target) error {
	names := make([]string, 0, len(spec.Objects)+1)
	for _, o := range spec.Objects {
		names = append(names, o.Object)
	}
	if spec.Users != nil {
		names = append(names, model.UsersAttachment)
	}
	seen := map[uint32]string{}
	for _, n := range names {
		t := targets[n]
		if first, ok := seen[t.relid]; ok {
			return fmt.Errorf("attach %s: %s is already attached as %s: a table or view holds one object's records; "+
				"attach each object through a view of its own (docs/attach.md)", n, t.source, first)
		}
		seen[t.relid] = n
	}
	return nil
}

// stored is an attachment as registered, and whether its triggers are all
// in place and enabled.
type stored struct {
	source      string
	fingerprint []byte
	complete    bool
}

// storedFingerprints reads the registered attachments.
func storedFingerprints(ctx context.Context, tx pgx.Tx) (map[string]stored, error) {
	rows, err := tx.Query(ctx, `
		SELECT a.object, a.source, a.spec::text, recalc.attach_intact(a.object) FROM recalc.attachment a`)
	if err != nil {
		return nil, fmt.Errorf("read attachments: %w", err)
	}
	out := map[string]stored{}
	var object, fp string
	var st stored
	_, err = pgx.ForEachRow(rows, []any{&object, &st.source, &fp, &st.complete}, func() error {
		st.fingerprint = []byte(fp)
		out[object] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read attachments: %w", err)
	}
	return out, nil
}

// install registers t and (re)builds its capture and records, unless the
// same is in place already, its locks waited for within budget.
func install(ctx context.Context, tx pgx.Tx, budget *locks.Budget, t *target, have map[string]stored) (Change, error) {
	c := Change{Object: t.Object.Object, Table: t.source, Status: Attached}
	if st, ok := have[c.Object]; ok {
		if st.complete && jsonEqual(st.fingerprint, t.fingerprint) {
			c.Status = Unchanged
			// Applying the spec again is how an operator says a cause is fixed
			// (a grant, BYPASSRLS, the sandbox role): the next absorb tries the
			// object at once.
			if _, err := tx.Exec(ctx, `SELECT recalc.attach_ready($1)`, c.Object); err != nil {
				return c, fmt.Errorf("prepare reads of %s: %w", c.Object, err)
			}
			// It also wakes recalc watch, which otherwise leaves the object
			// alone until its next poll.
			if _, err := tx.Exec(ctx, `
				WITH gone AS (DELETE FROM recalc.attach_stuck WHERE object = $1 RETURNING 1)
				SELECT pg_notify($2, 'attach') FROM gone`, c.Object, changes.Channel); err != nil {
				return c, fmt.Errorf("retry absorbing %s: %w", c.Object, err)
			}
			return c, nil
		}
		c.Status = Updated
	}
	if err := onCaptured(ctx, tx, budget, c.Object, "drop the capture", `SELECT recalc.attach_drop_capture($1)`); err != nil {
		return c, err
	}
	if c.Object != model.UsersAttachment { // the users table has no records
		if err := keysFree(ctx, tx, budget, c.Object, t.source); err != nil {
			return c, err
		}
	}
	var parentCol, parentObject, territories *string
	if t.Parent != nil {
		parentCol, parentObject = t.Parent, &t.parentObject
	}
	territories = t.Territories
	fields := t.Fields
	if fields == nil {
		fields = []string{}
	}
	if _, err := tx.Exec(ctx, `SELECT recalc.attach_drop_capture($1)`, c.Object); err != nil {
		return c, fmt.Errorf("drop capture of %s: %w", c.Object, err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO recalc.attachment (object, source, relid, is_view, id_col, id_type, owner_col, parent_col, parent_object, fields, territories_col, spec)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb)
		ON CONFLICT (object) DO UPDATE SET source = excluded.source, relid = excluded.relid, is_view = excluded.is_view,
		    id_col = excluded.id_col, id_type = excluded.id_type, owner_col = excluded.owner_col, parent_col = excluded.parent_col,
		    parent_object = excluded.parent_object, fields = excluded.fields, territories_col = excluded.territories_col,
		    spec = excluded.spec, attached_at = now()`,
		c.Object, t.source, t.relid, t.isView, t.ID, t.idType, t.Owner, parentCol, parentObject, fields, territories, string(t.fingerprint)); err != nil {
		return c, fmt.Errorf("register attachment of %s: %w", c.Object, err)
	}
	for _, k := range t.captures {
		// nums: each column's number, which the read view reads it by;
		// read_nums and read_names: the columns an attached view reads
		// (migration 050), as of the view's definition read_rule (053).
		if _, err := tx.Exec(ctx, `INSERT INTO recalc.attach_capture (object, relid, source, key_col, func, cols, types, colls, nums, read_nums, read_names, read_rule)
			SELECT $1, $2, $3, $4, $5, $6, $7, $8, ARRAY(SELECT a.attnum FROM unnest($6::text[]) WITH ORDINALITY x(n, i)
				JOIN pg_attribute a ON a.attrelid = $2 AND a.attname = x.n AND NOT a.attisdropped ORDER BY x.i), r.nums, r.names,
				CASE WHEN $10 THEN recalc.attach_view_rule($9) END
			FROM (SELECT 1) one LEFT JOIN recalc.attach_view_reads($9, $2) r ON $10`,
			c.Object, k.Relid, k.Source, k.KeyCol, k.Func, k.Cols, k.Types, k.Colls, t.relid, t.isView); err != nil {
			return c, fmt.Errorf("register capture of %s on %s: %w", c.Object, k.Source, err)
		}
	}
	if err := onCaptured(ctx, tx, budget, c.Object, "install the capture", `SELECT recalc.attach_install_begin($1)`); err != nil {
		return c, err
	}
	if err := tx.QueryRow(ctx, `SELECT recalc.attach_install_rows($1)`, c.Object).Scan(&c.Records); err != nil {
		// A failed backfill names its SQLSTATE, not the server's message,
		// which may quote a row's value (migration 036).
		return c, fmt.Errorf("install capture of %s: %w", c.Object, err)
	}
	return c, nil
}

// keysFree fails when a record of another object is keyed like a row of
// the table attached as object (object:id): it would keep that row from
// being mirrored, and its key would name the other record, since the
// capture never takes over another object's record. It first locks
// recalc.record against writes until the attach commits: other sessions'
// writes check the keys against the guard of before the attach
// (migration 026) until then, within budget.
func keysFree(ctx context.Context, tx pgx.Tx, budget *locks.Budget, object, source string) error {
	if err := lockRecords(ctx, tx, budget, object); err != nil {
		return err
	}
	var taken string
	err := tx.QueryRow(ctx, `SELECT id FROM recalc.record WHERE starts_with(id, $1 || ':') AND object <> $1 ORDER BY id LIMIT 1`, object).Scan(&taken)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("look for records keyed like %s's rows: %w", object, err)
	}
	return fmt.Errorf("record %q is not of object %s but takes the key of a row of %s (%s:id): give it another id or delete it, then attach again",
		taken, object, source, object)
}

// jsonEqual compares two JSON documents by value (jsonb reorders keys).
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// Detach detaches the objects named, or every attached object when objects
// is empty: their capture triggers and functions are dropped and their
// records deleted (so their shares go too), in one transaction. Naming an
// object that is not attached is an error, and nothing changes.
func Detach(ctx context.Context, pool *pgxpool.Pool, objects []string) ([]Change, error) {
	var out []Change
	err := inModelLock(ctx, pool, func(tx pgx.Tx, have map[string]stored, budget *locks.Budget) error {
		if len(objects) == 0 {
			for o := range have {
				objects = append(objects, o)
			}
			slices.Sort(objects)
		}
		var err error
		out, err = removeAll(ctx, tx, budget, objects, have)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Listed is an attached object, as `recalc attach --list` shows it.
type Listed struct {
	Object     string    `json:"object"`
	Table      string    `json:"table"`
	Renamed    string    `json:"renamed_to,omitempty"` // the table's name now, when it is no longer Table: the capture is not intact
	View       bool      `json:"view"`
	Capture    []string  `json:"capture"`  // the tables whose writes are captured
	Records    int64     `json:"records"`  // records mirrored now (for the users, their rows)
	Complete   bool      `json:"complete"` // every capture trigger in place and enabled
	AttachedAt time.Time `json:"attached_at"`
	// AbsorbError says why the engine's last absorb left this object's
	// writes logged: a SQLSTATE, or NotIntact; "" when it did not.
	AbsorbError string `json:"absorb_error,omitempty"`
	// UserFixes is, for the users, what the last rebuild of the model's
	// users from their rows changed (nil before the first).
	UserFixes *model.UserFixes `json:"user_fixes,omitempty"`
}

// SandboxFault says why recalc cannot read the attached tables as its
// sandbox role (migration 021), or "" when it can or nothing is attached.
func SandboxFault(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var fault *string
	err := pool.QueryRow(ctx, `SELECT recalc.attach_sandbox_fault() WHERE EXISTS (SELECT FROM recalc.attachment)`).Scan(&fault)
	if err != nil && err != pgx.ErrNoRows {
		return "", fmt.Errorf("check the sandbox role: %w", err)
	}
	if fault == nil {
		return "", nil
	}
	return *fault, nil
}

// NotIntact is Listed.AbsorbError when the capture was not intact.
const NotIntact = "capture not intact"

// List reads the attached objects, by name.
func List(ctx context.Context, pool *pgxpool.Pool) ([]Listed, error) {
	rows, err := pool.Query(ctx, `
		SELECT a.object, a.source,
		       coalesce((SELECT coalesce(nullif(format('%I.%I', n.nspname, k.relname), a.source), '') FROM pg_class k
		                 JOIN pg_namespace n ON n.oid = k.relnamespace WHERE k.oid = a.relid), '(dropped)'),
		       a.is_view,
		       (SELECT array_agg(c.source ORDER BY c.source) FROM recalc.attach_capture c WHERE c.object = a.object),
		       CASE WHEN a.object = $2 THEN (SELECT count(*) FROM recalc.attached_user)
		            ELSE (SELECT count(*) FROM recalc.record r WHERE r.object = a.object) END,
		       recalc.attach_intact(a.object), a.attached_at,
		       CASE WHEN s.object IS NULL THEN '' ELSE coalesce(s.error_code, $1) END,
		       CASE WHEN a.object = $2 THEN (SELECT fixes FROM recalc.attached_users_state) END
		FROM recalc.attachment a LEFT JOIN recalc.attach_stuck s USING (object) ORDER BY a.object`, NotIntact, model.UsersAttachment)
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Listed, error) {
		var l Listed
		err := r.Scan(&l.Object, &l.Table, &l.Renamed, &l.View, &l.Capture, &l.Records, &l.Complete, &l.AttachedAt, &l.AbsorbError, &l.UserFixes)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	return out, nil
}

// lockRecords locks recalc.record against writes until tx ends. Each try
// waits at most 100 ms (the session's lock_timeout when set), in a savepoint, and the next comes after a pause:
// every write to recalc.record queues behind a waiting LOCK TABLE, so a
// wait as long as the longest open transaction that wrote a record (one
// the writer role keeps open, say) stopped every other write of the
// application to recalc.record, and, behind the model lock the attach
// holds, every run and `recalc watch`, for as long as it stayed open. Past
// budget (the command's, for all its locks) the attach fails,
// naming the sessions seen blocking its waits (locks.Watch; those that
// hold locks on the records when none was seen).
func lockRecords(ctx context.Context, tx pgx.Tx, budget *locks.Budget, object string) error {
	start := time.Now()
	took, blocking, err := budget.Retry(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, `LOCK TABLE recalc.record IN SHARE ROW EXCLUSIVE MODE`)
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("lock the records against writes while %s is attached: %w", object, err)
	case !took:
		return fmt.Errorf("lock the records against writes while %s is attached: other transactions kept writing or locking "+
			"recalc.record for %s (%s): nothing was attached; attach again once they end", object, time.Since(start).Round(100*time.Millisecond),
			locks.Blamed(blocking, "sessions holding locks on records, shares or team entries", func() []string { return store.LockHolders(ctx, tx) }))
	}
	return nil
}

// captureLockWait bounds how long an attach or a detach tries the locks
// that installing or dropping a capture takes on the application's tables
// (onCaptured), and recalc.record's (lockRecords), all together, before it
// fails (inModelLock).
const captureLockWait = 10 * time.Second

// onCaptured runs sql, a statement of the capture's functions on object
// ($1) that installs or drops its triggers, a DDL lock on each of the
// application's tables it captures (SHARE ROW EXCLUSIVE to create a
// trigger, ACCESS EXCLUSIVE to drop one), tried 100 ms at a time (the
// session's lock_timeout when set: locks.Budget): PostgreSQL queues every later write of a table behind a
// waiting trigger statement, so waiting for as long as the application
// kept a transaction open on one of those tables stopped every other write
// of it, and, behind the model lock the attach holds, every run and
// `recalc watch`. Past budget (the command's, for all its locks:
// inModelLock) it fails, naming the sessions seen blocking its waits
// (locks.Watch; those that hold locks on those tables when none was
// seen); the caller's transaction then changes nothing. It tries once at
// least.
func onCaptured(ctx context.Context, tx pgx.Tx, budget *locks.Budget, object, what, sql string) error {
	start := time.Now()
	took, blocking, err := budget.Retry(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, sql, object)
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("%s of %s: %w", what, object, err)
	case !took:
		return fmt.Errorf("%s of %s: other transactions kept its tables locked for %s (%s): "+
			"nothing was changed; run it again once they end", what, object, time.Since(start).Round(100*time.Millisecond),
			locks.Blamed(blocking, "sessions holding locks on them", func() []string { return captureHolders(ctx, tx, object, locks.AnyLock) }))
	}
	return nil
}

// captureHolders names the sessions holding a lock of kind held on the
// tables object's capture and attachment name (locks.Holders); nil when
// they cannot be read.
func captureHolders(ctx context.Context, tx pgx.Tx, object string, held locks.Held) []string {
	var relids []string
	if err := tx.QueryRow(ctx, `SELECT ARRAY(SELECT relid::text FROM recalc.attach_capture WHERE object = $1
		UNION SELECT relid::text FROM recalc.attachment WHERE object = $1)`, object).Scan(&relids); err != nil {
		return nil
	}
	return locks.Holders(ctx, tx, held, relids)
}
