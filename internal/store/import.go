package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/locks"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/schema"
)

// analyzeAbove is how many rows of a table an import writes before it
// refreshes the table's statistics itself.
const analyzeAbove = 10000

// Result says what an import stored.
type Result struct {
	Sections []string // sections present in the file, now replaced
	Records  int64
	Shares   int64
	Teams    int64
	Changes  int64 // records changed (inserted, updated or deleted)
	// ManualSharesWiped counts manual shares deleted because their record's owner changed.
	ManualSharesWiped int64
	// ClosureEstimate bounds the closure entries the stored configuration
	// makes (sharing.Org.ClosureEstimate), for the caller's warning.
	ClosureEstimate int64
}

// InvalidError is a model the import rejected. Nothing was stored.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return "invalid model: " + e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// BusyError is an import refused because a recalculation job is unfinished.
type BusyError struct {
	Job    int64
	Status queue.Status
}

func (e *BusyError) Error() string {
	switch e.Status {
	case queue.Interrupted:
		return fmt.Sprintf("recalculation job %d was interrupted and is unfinished: run `recalc run` to resume it, then import again", e.Job)
	case queue.Failed:
		return fmt.Sprintf("recalculation job %d failed and is unfinished: run `recalc run` to resume it, then import again", e.Job)
	case queue.Paused:
		return fmt.Sprintf("recalculation job %d is paused, unfinished, since calculation of share rows was deferred while it ran: "+
			"`recalc resume` finishes it, and so does `recalc import` before it imports", e.Job)
	}
	return fmt.Sprintf("recalculation job %d is running (or its process stopped less than 10 s ago): wait for it "+
		"(`recalc run` joins it, or resumes it, and returns when it is done), then import again", e.Job)
}

// stageKind says what a row of the staging table holds.
type stageKind int16

// Staging kinds.
const (
	stageRecord stageKind = 1 // a record
	stageShare  stageKind = 2 // a manual or Apex share on record
	stageTeam   stageKind = 3 // a team entry on record
)

// stageTable is the staging table: one row per record, share or team
// entry of the file, each kind filling its own columns.
const stageTable = `CREATE TEMP TABLE stage (
	kind smallint,    -- a stageKind
	record text,      -- the record's id, or the id of the record the share or team entry is on
	object text,      -- records and shares
	owner text,       -- records
	parent text,      -- records
	fields jsonb,     -- records
	territories text[], -- records
	grantee text,     -- shares
	cause text,       -- shares
	user_id text,     -- team entries
	access smallint,  -- shares and team entries
	contact_access smallint, opportunity_access smallint, case_access smallint, -- team entries
	child_given boolean -- team entries: a child access was named, even none
	) ON COMMIT DROP`

var stageCols = []string{"kind", "record", "object", "owner", "parent", "fields", "territories", "grantee", "cause", "user_id",
	"access", "contact_access", "opportunity_access", "case_access", "child_given"}

// recordRow, shareRow and teamRow are the staging rows, in stageCols order.
func recordRow(rec *model.Record) []any {
	fields, _ := rec.Fields.MarshalJSON()
	terr := rec.Territories
	if terr == nil {
		terr = []string{}
	}
	return []any{stageRecord, rec.ID, rec.Object, rec.Owner, rec.Parent, string(fields), terr, nil, nil, nil, nil, nil, nil, nil, nil}
}

func shareRow(s *model.Share) []any {
	return []any{stageShare, s.Record, s.Object, nil, nil, nil, nil, s.Grantee.String(), s.Cause, nil, int16(s.Access), nil, nil, nil, nil}
}

func teamRow(t *model.Team) []any {
	return []any{stageTeam, t.Record, nil, nil, nil, nil, nil, nil, nil, t.User, int16(t.Access),
		int16(t.Child.Contact), int16(t.Child.Opportunity), int16(t.Child.Case), t.ChildGiven}
}

// Import validates the model file read from r, within lim, and stores it in one
// transaction: each section present replaces the stored one. On any error the
// database is unchanged. check, when not nil, runs last inside the
// transaction (the blast-radius guard); its error rolls the import back.
func Import(ctx context.Context, pool *pgxpool.Pool, r io.Reader, lim model.Limits, log zerolog.Logger, check func(context.Context, pgx.Tx) error) (*Result, error) {
	return ImportWith(ctx, pool, r, lim, log, check, Options{})
}

// ImportWith is Import as opt says: a merge, a revision check.
func ImportWith(ctx context.Context, pool *pgxpool.Pool, r io.Reader, lim model.Limits, log zerolog.Logger, check func(context.Context, pgx.Tx) error, opt Options) (*Result, error) {
	var res *Result
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		if res, err = ImportTxWith(ctx, tx, r, lim, log, opt); err != nil {
			return err
		}
		if check != nil {
			if err := check(ctx, tx); err != nil {
				return lockedOut(err, opt)
			}
		}
		if err := analyze(ctx, tx, res); err != nil {
			return lockedOut(err, opt)
		}
		return lockedOut(absorbLast(ctx, tx, res), opt)
	})
	if locked := new(LockedError); errors.As(err, &locked) {
		// The import's last absorb waits for the application's transactions
		// that wrote an attached table with an owner change or a row gone
		// (migration 072): they hold the change log.
		locked.Holders = locks.Holders(ctx, pool, locks.WriteLock, []string{"recalc.record", "recalc.share_input", "recalc.team", "recalc.change"})
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// DefaultLockTimeout is how long an import waits, by default, for each lock
// another transaction holds once it holds the model lock (Options).
const DefaultLockTimeout = 5 * time.Second

// LockedError is an import that waited past its lock timeout for a lock
// another transaction held: a record, a share or a team entry that an
// application transaction kept locked (SELECT ... FOR UPDATE), or wrote and
// had not committed. Nothing was stored, and the model lock, which every
// run and `recalc watch` wait for, is released: without the bound, one
// transaction left open by the application's role stalled the import, and
// behind it every recalculation, for as long as it stayed open.
type LockedError struct {
	Timeout time.Duration
	Holders []string // "pid N (role R)": the other sessions holding locks on the tables the import writes, when read
	// DryRun is set by `recalc plan FILE`, whose import is rolled back
	// anyway, and which takes no --lock-timeout: the error says so.
	DryRun bool
	Err    error
}

func (e *LockedError) Error() string {
	held := "another transaction"
	if len(e.Holders) > 0 {
		held = "another transaction (sessions holding locks on records, shares, team entries or the change log of attached tables: " + strings.Join(e.Holders, ", ") + ")"
	}
	if e.DryRun {
		return fmt.Sprintf("the dry run waited more than %s for a lock that %s held: "+
			"run `recalc plan` again once that transaction ends: %v", e.Timeout, held, e.Err)
	}
	return fmt.Sprintf("the import waited more than %s for a lock that %s held, and stored nothing: "+
		"import again once that transaction ends, or raise --lock-timeout: %v", e.Timeout, held, e.Err)
}

func (e *LockedError) Unwrap() error { return e.Err }

// lockedOut turns err into a LockedError when it is a lock wait past the
// import's lock timeout.
func lockedOut(err error, opt Options) error {
	if locked := new(LockedError); !pg.IsLockNotAvailable(err) || errors.As(err, &locked) {
		return err
	}
	return &LockedError{Timeout: opt.lockTimeout(), Err: err}
}

// LockHolders names the sessions but q's that hold a lock on
// recalc.record, recalc.share_input or recalc.team of a kind that a row
// lock or a write takes (locks.Holders).
func LockHolders(ctx context.Context, q pg.Querier) []string {
	return locks.Holders(ctx, q, locks.WriteLock, []string{"recalc.record", "recalc.share_input", "recalc.team"})
}

// absorbLast absorbs, just before an import with shares or team entries
// commits, the writes to attached tables with an owner change or a row gone
// logged since its first absorb: their wipe of manual shares, and their
// drop of shares and team entries, come before the import's own, which it
// spares, as in the commit order (changes.AbsorbMarked, migrations 058 and
// 069). Shares and team entries on the records of an object whose writes it
// could not absorb are refused, as at the first absorb.
//
// First it takes the effects lock, which the capture of such a write holds
// until it commits (migration 072): it waits for those not committed yet,
// whose change rows the absorb then reads, and those that come later wait
// for the import's commit. Without it a write committing between the
// absorb and the import's commit was absorbed at the next run, after the
// import, and wiped the manual shares the import wrote though it committed
// first (TestImportBesideAnOwnerChange).
func absorbLast(ctx context.Context, tx pgx.Tx, res *Result) error {
	if res.Shares == 0 && res.Teams == 0 {
		return nil
	}
	if err := locks.XactLock(ctx, tx, locks.Effects); err != nil {
		return err
	}
	absorbed, err := changes.AbsorbMarked(ctx, tx)
	if err != nil {
		return err
	}
	return onWaitingRecords(ctx, tx, absorbed)
}

// analyze refreshes the statistics of the tables a bulk import rewrote. They
// would stay stale until autovacuum comes by, and the next run plans its
// family lookups with them: a million records analyzed as none get
// whole-table scans per chunk. ANALYZE is not undone by a rollback, so only
// an import that commits runs it.
func analyze(ctx context.Context, tx pgx.Tx, res *Result) error {
	var tables []string
	for _, t := range []struct {
		name string
		rows int64
	}{{"recalc.record", res.Changes}, {"recalc.share_input", res.Shares}, {"recalc.team", res.Teams}} {
		if t.rows >= analyzeAbove {
			tables = append(tables, t.name)
		}
	}
	if len(tables) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `ANALYZE `+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("analyze the imported tables: %w", err)
	}
	return nil
}

// ImportTx is Import inside the caller's transaction; `recalc plan FILE`
// rolls it back.
func ImportTx(ctx context.Context, tx pgx.Tx, r io.Reader, lim model.Limits, log zerolog.Logger) (*Result, error) {
	return ImportTxWith(ctx, tx, r, lim, log, Options{})
}

// lockModel takes the model lock, logging a long wait (LockModelSaid), and
// refuses an import while a recalculation job is unfinished, as Salesforce
// refuses sharing changes during one: the job computes from the
// configuration it planned.
func lockModel(ctx context.Context, tx pgx.Tx, log zerolog.Logger) error {
	if err := schema.LockModelSaid(ctx, tx, log); err != nil {
		return err
	}
	job, err := queue.Unfinished(ctx, tx)
	if err != nil {
		return err
	}
	if job != nil {
		status := job.Status
		switch {
		case job.Paused:
			status = queue.Paused
		case job.Interrupted:
			status = queue.Interrupted
		}
		return &BusyError{Job: job.ID, Status: status}
	}
	return nil
}

// onWaitingRecords refuses shares and team entries on the records of an
// attached object whose logged writes the import's absorb left waiting
// (its capture not intact, or its absorb failed): those records may have
// been deleted, re-keyed or re-owned since, and what the import put on
// them would go with the old record once the writes are absorbed.
func onWaitingRecords(ctx context.Context, tx pgx.Tx, absorbed []changes.Absorbed) error {
	var waiting []string
	for _, a := range absorbed {
		if !a.Absorbed && a.Object != model.UsersAttachment {
			waiting = append(waiting, a.Object)
		}
	}
	if len(waiting) == 0 {
		return nil
	}
	var object string
	err := tx.QueryRow(ctx, `SELECT o FROM unnest($1::text[]) o
		WHERE EXISTS (SELECT 1 FROM stage s WHERE s.kind IN ($2, $3) AND left(s.record, length(o) + 1) = o || ':') ORDER BY o LIMIT 1`,
		waiting, stageShare, stageTeam).Scan(&object)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("look for shares on records whose writes wait: %w", err)
	}
	return fmt.Errorf("the file has shares or team entries on records of attached object %s, whose writes wait unabsorbed "+
		"(`recalc attach --list` says why): fix that and run `recalc run`, then import again", object)
}

// ImportTxWith is ImportTx as opt says.
func ImportTxWith(ctx context.Context, tx pgx.Tx, r io.Reader, lim model.Limits, log zerolog.Logger, opt Options) (*Result, error) {
	if err := lockModel(ctx, tx, log); err != nil {
		return nil, err
	}
	// The model lock waits for recalculation, however long; what the
	// import then waits for, another transaction may hold for ever.
	if err := locks.SetTimeout(ctx, tx, opt.lockTimeout()); err != nil {
		return nil, err
	}
	res, err := importLocked(ctx, tx, r, lim, log, opt)
	return res, lockedOut(err, opt)
}

// importLocked is ImportTxWith under the model lock.
func importLocked(ctx context.Context, tx pgx.Tx, r io.Reader, lim model.Limits, log zerolog.Logger, opt Options) (*Result, error) {
	res := &Result{}
	start := time.Now()
	// The writes to attached tables committed before this import are
	// mirrored first, the users table's into the users section, as a run
	// does: their effects then come in commit order with the import's own
	// (an owner change wipes the manual shares it finds, not those this
	// import adds), and the import is checked against them. ImportWith
	// absorbs the owner changes and rows gone committed since once more,
	// last (absorbLast).
	absorbed, _, err := changes.Absorb(ctx, tx, 0)
	if err != nil {
		return nil, err
	}
	if _, err := SyncAttachedUsers(ctx, tx); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, stageTable); err != nil {
		return nil, fmt.Errorf("create staging table: %w", err)
	}
	progress := startImportProgress(log)
	defer progress.end()
	f, err := stageFile(ctx, tx, r, lim, res, opt.Merge, &progress.entries)
	if err != nil {
		return nil, err
	}
	progress.phase.Store("store")
	if err := checkRevision(ctx, tx, f.Revision, opt.IfRevision); err != nil {
		return nil, err
	}
	log.Debug().Int64("records", res.Records).Int64("shares", res.Shares).Int64("teams", res.Teams).
		Int64("duration_ms", time.Since(start).Milliseconds()).Msg("file staged")
	// Temporary tables are never auto-analyzed: without statistics the
	// merge's joins over the staged rows can get quadratic plans.
	if _, err := tx.Exec(ctx, `ANALYZE stage`); err != nil {
		return nil, fmt.Errorf("analyze staged rows: %w", err)
	}
	if err := onWaitingRecords(ctx, tx, absorbed); err != nil {
		return nil, err
	}
	res.Sections = f.Present()
	stored, err := StoredConfig(ctx, tx) // the configuration before this import, for checkRefs
	if err != nil {
		return nil, err
	}
	if opt.Merge {
		if err := mergeFileConfig(ctx, tx, f); err != nil {
			return nil, err
		}
	}
	ix, err := mergeConfig(ctx, tx, f, lim)
	if err != nil {
		return nil, err
	}
	if res.ClosureEstimate, err = closureWithin(ix, lim.Closure); err != nil {
		return nil, err
	}
	apply := apply
	if opt.Merge {
		apply = applyMerge
	}
	if err := apply(ctx, tx, f, res); err != nil {
		return nil, err
	}
	if f.HasShares || f.HasTeams {
		if err := lockReferenced(ctx, tx); err != nil {
			return nil, err
		}
	}
	if err := checkRefs(ctx, tx, ix, stored, f.HasRecords && !opt.Merge, opt.Merge, log); err != nil {
		return nil, err
	}
	// Wake `recalc watch`; delivered only if the import commits.
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, 'import')`, changes.Channel); err != nil {
		return nil, err
	}
	return res, nil
}

// storable refuses record i of the file when recalc.record cannot hold it
// (model.CheckStored), naming it by id, or by position when the id is the
// fault.
func storable(rec *model.Record, i int64) error {
	err := model.CheckStored(rec)
	switch {
	case err == nil:
		return nil
	case len(rec.ID) > model.MaxStoredIDBytes:
		return fmt.Errorf("records[%d]: %w", i, err)
	}
	return fmt.Errorf("record %q: %w", rec.ID, err)
}

// stageFile streams the file into the staging table with one COPY, and
// returns the configuration sections it held.
// staged counts the entries as they are read, for the progress reports.
func stageFile(ctx context.Context, tx pgx.Tx, r io.Reader, lim model.Limits, res *Result, merge bool, staged *atomic.Int64) (*model.File, error) {
	var file *model.File
	var decodeErr error
	rows := func(yield func([]any) bool) {
		stop := fmt.Errorf("stopped")
		sink := model.Sink{
			Record: func(rec *model.Record) error {
				res.Records++
				staged.Add(1)
				if err := storable(rec, res.Records-1); err != nil {
					return err
				}
				if !yield(recordRow(rec)) {
					return stop
				}
				return nil
			},
			Share: func(s *model.Share) error {
				res.Shares++
				staged.Add(1)
				if !yield(shareRow(s)) {
					return stop
				}
				return nil
			},
			Team: func(t *model.Team) error {
				res.Teams++
				staged.Add(1)
				if !yield(teamRow(t)) {
					return stop
				}
				return nil
			},
		}
		if merge {
			deleteSink(&sink, func(row []any) error {
				if !yield(row) {
					return stop
				}
				return nil
			})
		}
		file, decodeErr = model.DecodeLimited(r, sink, lim)
	}
	next, stopPull := iter.Pull(iter.Seq[[]any](rows))
	defer stopPull()
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"stage"}, stageCols, pgx.CopyFromFunc(func() ([]any, error) {
		row, ok := next()
		if !ok {
			// pgx reports a source error as a failed COPY; the caller
			// returns decodeErr itself.
			return nil, decodeErr
		}
		return row, nil
	}))
	if decodeErr != nil {
		return nil, &InvalidError{decodeErr}
	}
	if err != nil {
		return nil, fmt.Errorf("stage model file: %w", err)
	}
	return file, nil
}

// mergeConfig overlays the file's configuration sections on the stored ones,
// validates the result and stores the sections that changed.
func mergeConfig(ctx context.Context, tx pgx.Tx, f *model.File, lim model.Limits) (*model.Index, error) {
	cfg, err := LoadConfig(ctx, tx)
	if err != nil {
		return nil, err
	}
	_, hasUsers := f.Raw["users"]
	_, deletesUsers := f.Delete["users"]
	known, queues := map[string]bool{}, map[string]bool{}
	for _, u := range cfg.Users {
		known[u.ID] = true
	}
	for _, g := range cfg.Groups {
		queues[g.ID] = g.Queue
	}
	fileUsers := slices.Clone(f.Config.Users)
	cfg.Overlay(&f.Config, &f.Config)
	// Attached users are the users table's rows as last absorbed, fitted to
	// the merged configuration (its roles, and the users it names).
	attached, fx, err := attachUsers(ctx, tx, cfg, lim)
	switch {
	case err != nil:
		return nil, err
	case attached && (deletesUsers || hasUsers && !sameUsers(fileUsers, cfg.Users)):
		// A users section equal to the attached users (the one recalc
		// export wrote) changes nothing: importing an export is a no-op.
		return nil, &InvalidError{fmt.Errorf(`the users are attached to an application table (recalc attach --list): write them there, and leave the "users" section out of the file (or detach them first: recalc detach users)`)}
	}
	for _, id := range fx.QueueIDs {
		if !queues[id] { // the table may not make a queue's id a user, nor an import a user's id a queue
			return nil, &InvalidError{fmt.Errorf("group %q: a queue cannot share its id with a user of the attached users table", id)}
		}
	}
	for _, id := range fx.StubIDs {
		if !known[id] { // a stub stands for a user the table lost, never for a new name
			return nil, &InvalidError{fmt.Errorf("user %q does not exist: the users are attached, so add it to their table (recalc attach --list), then import again", id)}
		}
	}
	ix, err := cfg.ValidateLimited(lim)
	if err != nil {
		return nil, &InvalidError{err}
	}
	sections := f.Raw
	if attached {
		doc, err := model.UsersJSON(cfg.Users)
		if err != nil {
			return nil, fmt.Errorf("encode the attached users: %w", err)
		}
		sections = maps.Clone(f.Raw)
		sections["users"] = doc
	}
	for name, raw := range sections {
		if _, err := storeSection(ctx, tx, name, raw); err != nil {
			return nil, err
		}
	}
	return ix, nil
}

// closureWithin returns how many closure entries the configuration of ix
// may make, as sharing.Org.ClosureEstimate bounds them in time linear in
// the configuration, and fails when that is more than max (0: no limit): a
// few kilobytes of groups that each hold a role and its subordinates make
// groups times users entries, whose run takes time and memory in their
// number.
func closureWithin(ix *model.Index, max int64) (int64, error) {
	est := sharing.NewOrg(ix).ClosureEstimate()
	if max > 0 && est > max {
		return est, &InvalidError{&model.LimitError{Limit: model.LimitClosure, Max: max, Msg: fmt.Sprintf(
			"the roles, territories and groups may make %d closure entries (acl_member rows), over the limit of %d: "+
				"a group that holds a role and its subordinates, or all internal users, adds an entry for each user it reaches, "+
				"and deep hierarchies add one for each level above a user (docs/limits.md)", est, max)}}
	}
	return est, nil
}

// dupCheck fails naming the first key listed twice, as sql over args
// finds it; what is the message's format, given the two keys.
func dupCheck(ctx context.Context, tx pgx.Tx, what, sql string, args ...any) error {
	var k1, k2 string
	err := tx.QueryRow(ctx, sql, args...).Scan(&k1, &k2)
	switch {
	case err == pgx.ErrNoRows:
		return nil
	case err != nil: // what is a format: its verbs would show unfilled
		return fmt.Errorf("check the file's keys for duplicates and conflicts: %w", err)
	}
	return &InvalidError{fmt.Errorf(what, k1, k2)}
}

// exec runs one statement of an import step, adding the rows it changed
// to counter when it is not nil.
func exec(ctx context.Context, tx pgx.Tx, step string, counter *int64, sql string, args ...any) error {
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	if counter != nil {
		*counter += tag.RowsAffected()
	}
	return nil
}

// apply merges the staged large sections into the stored ones, logs the
// changes, and applies the owner-change wipe of manual shares.
func apply(ctx context.Context, tx pgx.Tx, f *model.File, res *Result) error {
	if f.HasRecords {
		if err := mergeRecords(ctx, tx, res, !f.HasShares, !f.HasTeams); err != nil {
			return err
		}
	}
	if f.HasShares {
		if err := mergeShares(ctx, tx); err != nil {
			return err
		}
	}
	if f.HasRecords {
		if err := wipeManualShares(ctx, tx, res); err != nil {
			return err
		}
	}
	if f.HasTeams {
		return mergeTeams(ctx, tx)
	}
	return nil
}

// mergeRecords replaces the stored records with the staged ones, with
// their family roots, and notes in the temporary table wiped the manual
// shares of the records whose owner changes. Deleting a record, or changing
// its object, deletes its shares and team entries (the trigger on
// recalc.record); the stored sections the file leaves alone (keepShares,
// keepTeams) keep theirs, so that checkRefs refuses those that no longer
// resolve and a team entry stays on a record of another object.
func mergeRecords(ctx context.Context, tx pgx.Tx, res *Result, keepShares, keepTeams bool) error {
	const step = "merge records"
	if err := dupCheck(ctx, tx, "record %q is defined twice%s",
		`SELECT record, '' FROM stage WHERE kind = $1 GROUP BY record HAVING count(*) > 1 LIMIT 1`, stageRecord); err != nil {
		return err
	}
	if err := checkAttached(ctx, tx, stageRecord); err != nil {
		return err
	}
	// Each record's family root, from the staged parent links. Depth is
	// bounded by the object hierarchy; the cap only stops a cycle, which
	// validation then reports as a parent of the wrong object.
	if err := exec(ctx, tx, step, nil, `
		CREATE TEMP TABLE staged_record ON COMMIT DROP AS
		WITH RECURSIVE fam (id, root, depth) AS (
		    SELECT record, record, 0 FROM stage WHERE kind = $1 AND parent = ''
		    UNION ALL
		    SELECT c.record, f.root, f.depth + 1 FROM stage c JOIN fam f ON c.kind = $1 AND c.parent = f.id
		    WHERE f.depth < 100)
		SELECT n.record AS id, n.object, n.owner, nullif(n.parent, '') AS parent, coalesce(fam.root, n.record) AS root_id,
		       n.fields, n.territories
		FROM stage n LEFT JOIN fam ON fam.id = n.record WHERE n.kind = $1`, stageRecord); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, nil, `ANALYZE staged_record`); err != nil {
		return err
	}
	if err := noteWiped(ctx, tx); err != nil {
		return err
	}
	// Triggers on recalc.record log every row these statements change,
	// marked rooted: staged_record's roots are right (see FixRoots). Only
	// these statements: the mark is off again once they are done, before
	// anything else in the transaction writes records (an absorb's writes
	// to attached records, as ImportWith's last absorb makes, carry no
	// root, and marked rooted they would never get one).
	if err := exec(ctx, tx, step, nil, `SELECT set_config('recalc.rooted', 'on', true)`); err != nil {
		return err
	}
	// Attached objects' records come from their tables, never from a file.
	// They are excluded by a parameter: a subquery here made the planner
	// estimate one row and rescan staged_record for each stored record.
	var attached []string
	if err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(object), '{}') FROM recalc.attachment`).Scan(&attached); err != nil {
		return fmt.Errorf("%s: read attached objects: %w", step, err)
	}
	if err := keepReferences(ctx, tx, attached, keepShares, keepTeams); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, &res.Changes, `DELETE FROM recalc.record r
		WHERE NOT EXISTS (SELECT 1 FROM staged_record n WHERE n.id = r.id) AND r.object <> ALL ($1::text[])`, attached); err != nil {
		return err
	}
	for _, sql := range []string{
		`UPDATE recalc.record r SET object = n.object, owner = n.owner, parent = n.parent, root_id = n.root_id,
		        fields = n.fields, territories = n.territories
		 FROM staged_record n WHERE n.id = r.id
		   AND (r.object, r.owner, r.parent, r.root_id, r.fields, r.territories)
		       IS DISTINCT FROM (n.object, n.owner, n.parent, n.root_id, n.fields, n.territories)`,
		`INSERT INTO recalc.record (id, object, owner, parent, root_id, fields, territories)
		 SELECT n.id, n.object, n.owner, n.parent, n.root_id, n.fields, n.territories FROM staged_record n
		 WHERE NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = n.id)`,
	} {
		if err := exec(ctx, tx, step, &res.Changes, sql); err != nil {
			return err
		}
	}
	if err := exec(ctx, tx, step, nil, `SELECT set_config('recalc.rooted', '', true)`); err != nil {
		return err
	}
	return restoreReferences(ctx, tx, keepShares, keepTeams)
}

// keepReferences copies the share and team entries (those asked for) on
// the stored records that the staged ones drop or give another object,
// but for the manual shares of those whose owner changes (section 5 of
// the contract wipes them), into temporary tables.
func keepReferences(ctx context.Context, tx pgx.Tx, attached []string, shares, teams bool) error {
	const step = "keep the references of dropped or moved records"
	if !shares && !teams {
		return nil
	}
	if err := exec(ctx, tx, step, nil, `CREATE TEMP TABLE moved_record ON COMMIT DROP AS
		SELECT r.id, n.owner IS NOT NULL AND n.owner <> r.owner AS reowned
		FROM recalc.record r LEFT JOIN staged_record n ON n.id = r.id
		WHERE (n.id IS NULL OR n.object <> r.object) AND r.object <> ALL ($1::text[])`, attached); err != nil {
		return err
	}
	return keepMoved(ctx, tx, shares, teams)
}

// keepMovedReferences is keepReferences for a merge, which deletes only
// the records its delete section names, with their shares and team
// entries: it keeps those of the staged records whose object changes.
func keepMovedReferences(ctx context.Context, tx pgx.Tx) error {
	if err := exec(ctx, tx, "keep the references of moved records", nil, `CREATE TEMP TABLE moved_record ON COMMIT DROP AS
		SELECT r.id, n.owner <> r.owner AS reowned
		FROM recalc.record r JOIN staged_record n ON n.id = r.id
		WHERE n.object <> r.object`); err != nil {
		return err
	}
	return keepMoved(ctx, tx, true, true)
}

// keepMoved copies the share and team entries (those asked for) on the
// records of the temporary table moved_record, but the manual shares of
// those it marks reowned, into temporary tables.
func keepMoved(ctx context.Context, tx pgx.Tx, shares, teams bool) error {
	const step = "keep the references of dropped or moved records"
	if shares {
		if err := exec(ctx, tx, step, nil, `CREATE TEMP TABLE kept_share ON COMMIT DROP AS
			SELECT s.record, s.object, s.grantee, s.access, s.cause FROM recalc.share_input s JOIN moved_record m ON m.id = s.record
			WHERE NOT (m.reowned AND s.cause = 'manual')`); err != nil {
			return err
		}
	}
	if teams {
		return exec(ctx, tx, step, nil, `CREATE TEMP TABLE kept_team ON COMMIT DROP AS
			SELECT t.record, t.user_id, t.access, t.contact_access, t.opportunity_access, t.case_access
			FROM recalc.team t JOIN moved_record m ON m.id = t.record`)
	}
	return nil
}

// restoreReferences puts back what keepReferences kept.
func restoreReferences(ctx context.Context, tx pgx.Tx, shares, teams bool) error {
	const step = "restore the references of dropped or moved records"
	if shares {
		if err := exec(ctx, tx, step, nil, `INSERT INTO recalc.share_input (record, object, grantee, access, cause)
			SELECT record, object, grantee, access, cause FROM kept_share`); err != nil {
			return err
		}
	}
	if teams {
		return exec(ctx, tx, step, nil, `INSERT INTO recalc.team (record, user_id, access, contact_access, opportunity_access, case_access)
			SELECT record, user_id, access, contact_access, opportunity_access, case_access FROM kept_team`)
	}
	return nil
}

// mergeShares replaces the stored shares with the staged ones and logs the
// records whose shares changed.
func mergeShares(ctx context.Context, tx pgx.Tx) error {
	const step = "merge shares"
	if err := dupCheck(ctx, tx, "share on record %q for %s is listed twice", `SELECT record, to_json(grantee) || ' with cause ' || to_json(cause) FROM stage
		WHERE kind = $1 GROUP BY record, grantee, cause HAVING count(*) > 1 LIMIT 1`, stageShare); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, nil, `
		INSERT INTO recalc.change (kind, keys, rooted) -- shares move no family root
		SELECT 'record', array_agg(DISTINCT coalesce(n.record, s.record)), true
		FROM recalc.share_input s
		FULL JOIN (SELECT * FROM stage WHERE kind = $1) n ON n.record = s.record AND n.grantee = s.grantee AND n.cause = s.cause
		WHERE s.record IS NULL OR n.record IS NULL OR (s.object, s.access) IS DISTINCT FROM (n.object, n.access)
		HAVING count(*) > 0`, stageShare); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, nil, `DELETE FROM recalc.share_input`); err != nil {
		return err
	}
	return exec(ctx, tx, step, nil, `INSERT INTO recalc.share_input (record, object, grantee, access, cause)
		SELECT record, object, grantee, access, cause FROM stage WHERE kind = $1`, stageShare)
}

// checkAttached refuses staged rows of the kinds given that name a record
// of an attached object: its records are its application table's rows
// (internal/attach), which an import may not add, replace or delete.
func checkAttached(ctx context.Context, tx pgx.Tx, kinds ...stageKind) error {
	k := make([]int16, len(kinds))
	for i, kind := range kinds {
		k[i] = int16(kind)
	}
	return dupCheck(ctx, tx, "record %q is, or would replace or take the key of, a record of object %s: write that table instead, or `recalc detach` the object first",
		`SELECT s.record, a.object || ', which is attached to ' || a.source FROM stage s
		 JOIN recalc.attachment a ON a.object = s.object OR a.object = (SELECT r.object FROM recalc.record r WHERE r.id = s.record)
		      OR (left(s.record, length(a.object) + 1) = a.object || ':' AND a.object <> $2) -- a key a row of the table may take later
		 WHERE s.kind = ANY($1) AND EXISTS (SELECT 1 FROM recalc.attachment) LIMIT 1`, k, model.UsersAttachment)
}

// noteWiped notes in the temporary table wiped the manual shares the
// stored version had on the staged records changing owner: they are wiped,
// whatever the file says (docs/semantics.md, changes between imports).
func noteWiped(ctx context.Context, tx pgx.Tx) error {
	return exec(ctx, tx, "note wiped manual shares", nil, `
		CREATE TEMP TABLE wiped ON COMMIT DROP AS
		SELECT s.record, s.grantee FROM recalc.share_input s
		JOIN recalc.record r ON r.id = s.record
		JOIN staged_record n ON n.id = r.id
		WHERE s.cause = $1 AND n.owner <> r.owner`, model.CauseManual)
}

// wipeManualShares deletes the manual shares mergeRecords noted: the
// record trigger already wiped the stored ones; these are the ones the file
// listed again.
func wipeManualShares(ctx context.Context, tx pgx.Tx, res *Result) error {
	if err := exec(ctx, tx, "wipe manual shares", nil, `
		DELETE FROM recalc.share_input s USING wiped w
		WHERE s.record = w.record AND s.grantee = w.grantee AND s.cause = $1`, model.CauseManual); err != nil {
		return err
	}
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM wiped`).Scan(&res.ManualSharesWiped); err != nil {
		return fmt.Errorf("count wiped manual shares: %w", err)
	}
	return nil
}

// mergeTeams replaces the stored team entries with the staged ones and
// logs the records whose team changed.
func mergeTeams(ctx context.Context, tx pgx.Tx) error {
	const step = "merge teams"
	if err := dupCheck(ctx, tx, "team entry on record %q for user %q is listed twice",
		`SELECT record, user_id FROM stage WHERE kind = $1 GROUP BY record, user_id HAVING count(*) > 1 LIMIT 1`, stageTeam); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, nil, `
		INSERT INTO recalc.change (kind, keys, rooted) -- team entries move no family root
		SELECT 'record', array_agg(DISTINCT coalesce(n.record, t.record)), true
		FROM recalc.team t
		FULL JOIN (SELECT * FROM stage WHERE kind = $1) n ON n.record = t.record AND n.user_id = t.user_id
		WHERE t.record IS NULL OR n.record IS NULL
		   OR (t.access, t.contact_access, t.opportunity_access, t.case_access)
		      IS DISTINCT FROM (n.access, n.contact_access, n.opportunity_access, n.case_access)
		HAVING count(*) > 0`, stageTeam); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, nil, `DELETE FROM recalc.team`); err != nil {
		return err
	}
	return exec(ctx, tx, step, nil, `INSERT INTO recalc.team (record, user_id, access, contact_access, opportunity_access, case_access)
		SELECT record, user_id, access, contact_access, opportunity_access, case_access FROM stage WHERE kind = $1`, stageTeam)
}

// lockReferenced takes a share lock on the records that the file's shares
// and team entries name. An application transaction that deletes one of
// them or changes its id, object or owner meanwhile is waited for, and the
// check that follows sees its outcome (checkRefs refuses the file); one that
// comes after waits for the import to commit, and its capture trigger then
// deletes or wipes the new shares and team entries as it would the stored
// ones. Either way none is left on a record that does not exist or whose
// object changed. Stored entries need no lock: a record deleted meanwhile
// takes them with it in its own transaction.
func lockReferenced(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT FROM recalc.record r
		WHERE r.id IN (SELECT record FROM stage WHERE kind = ANY($1)) ORDER BY r.rid FOR SHARE`,
		[]int16{int16(stageShare), int16(stageTeam)}); err != nil {
		return fmt.Errorf("lock the records shares and team entries name: %w", err)
	}
	return nil
}

// checkRecord checks one stored record's references against ix.
func checkRecord(ix *model.Index, rec *model.Record, parentObject string) error {
	if err := ix.CheckRecordRefs(rec); err != nil {
		return err
	}
	return ix.CheckRecordParent(rec, parentObject)
}

// checkRefs checks every stored record, share and team entry against the
// merged configuration and each other, with the model package's own checks.
//
// Records the application wrote with plain SQL may be invalid already: a
// run gives them no access (recalc.invalid_record). An import without a
// records section tolerates those, and logs how many: it fails only on a
// record that was valid before it and that its configuration change breaks. With
// a records section every stored record came from the file, and all are
// checked, but those of attached objects (internal/attach), which are
// tolerated the same way.
//
// A merge (merge true) checks strictly the records it wrote and those
// naming one of them as parent.
func checkRefs(ctx context.Context, tx pgx.Tx, ix *model.Index, stored []byte, fromFile, merge bool, log zerolog.Logger) error {
	if err := checkRecords(ctx, tx, ix, stored, fromFile, merge, log); err != nil {
		return err
	}
	// keyed is, for a record that does not exist, the key of the attached
	// record the application calls by that id, which the entry meant.
	rows, err := tx.Query(ctx, `
		SELECT s.record, s.object, s.grantee, s.access, s.cause, coalesce(r.object, ''),
		       CASE WHEN r.id IS NULL THEN (SELECT k.id FROM recalc.record k
		           WHERE k.id = recalc.record_key(s.object, s.record) AND k.object = s.object) END
		FROM recalc.share_input s LEFT JOIN recalc.record r ON r.id = s.record`)
	if err != nil {
		return fmt.Errorf("check shares: %w", err)
	}
	var sh model.Share
	var grantee, recordObject string
	var keyed *string
	_, err = pgx.ForEachRow(rows, []any{&sh.Record, &sh.Object, &grantee, &sh.Access, &sh.Cause, &recordObject, &keyed}, func() error {
		g, err := model.ParseGrantee(grantee, false)
		if err != nil {
			return &InvalidError{fmt.Errorf("share on record %q: %w", sh.Record, err)}
		}
		sh.Grantee = g
		if err := ix.CheckShareRefs(&sh, recordObject); err != nil {
			return &InvalidError{keyHint(err, keyed)}
		}
		return nil
	})
	if err != nil {
		return err
	}
	rows, err = tx.Query(ctx, `
		SELECT t.record, t.user_id, t.access, t.contact_access, t.opportunity_access, t.case_access, coalesce(r.object, ''),
		       CASE WHEN r.id IS NULL THEN (SELECT min(k.id) FROM recalc.attachment a JOIN recalc.record k
		           ON k.id = recalc.record_key(a.object, t.record) AND k.object = a.object) END
		FROM recalc.team t LEFT JOIN recalc.record r ON r.id = t.record`)
	if err != nil {
		return fmt.Errorf("check teams: %w", err)
	}
	var tm model.Team
	_, err = pgx.ForEachRow(rows, []any{&tm.Record, &tm.User, &tm.Access, &tm.Child.Contact, &tm.Child.Opportunity, &tm.Child.Case, &recordObject, &keyed}, func() error {
		if err := ix.CheckTeamRefs(&tm, recordObject); err != nil {
			return &InvalidError{keyHint(err, keyed)}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A child access of none is stored as none is: the file's entries say
	// whether they named one.
	rows, err = tx.Query(ctx, `SELECT s.record, s.user_id, r.object FROM stage s JOIN recalc.record r ON r.id = s.record
		WHERE s.kind = $1 AND s.child_given AND r.object <> $2 LIMIT 1`, stageTeam, model.Account)
	if err != nil {
		return fmt.Errorf("check teams: %w", err)
	}
	tm = model.Team{ChildGiven: true}
	_, err = pgx.ForEachRow(rows, []any{&tm.Record, &tm.User, &recordObject}, func() error {
		if err := ix.CheckTeamRefs(&tm, recordObject); err != nil {
			return &InvalidError{err}
		}
		return nil
	})
	return err
}

// keyHint adds to err, a share's or team entry's missing record, the key
// of the attached record the entry named by the application's id (keyed),
// when there is one: the model names attached records by their keys.
func keyHint(err error, keyed *string) error {
	if keyed == nil {
		return err
	}
	return fmt.Errorf("%w: records of attached objects are named by their keys: give %q", err, *keyed)
}

// checkRecords is checkRefs' check of the stored records.
func checkRecords(ctx context.Context, tx pgx.Tx, ix *model.Index, stored []byte, fromFile, merge bool, log zerolog.Logger) error {
	// A merge checks strictly the records it staged and their children:
	// joins, since a large set of staged ids does not fit a hashed subplan.
	strictSQL, stagedSQL, args := "$1::boolean", "", []any{fromFile}
	if merge {
		strictSQL = "$1::boolean OR s.record IS NOT NULL OR sp.record IS NOT NULL"
		stagedSQL = `LEFT JOIN stage s ON s.kind = $2 AND s.record = r.id LEFT JOIN stage sp ON sp.kind = $2 AND sp.record = r.parent`
		args = append(args, stageRecord)
	}
	rows, err := tx.Query(ctx, `
		SELECT r.id, r.object, r.owner, coalesce(r.parent, ''), coalesce(p.object, ''), `+changes.ReadTerritories("r.territories")+`,
		       EXISTS (SELECT 1 FROM recalc.attachment a WHERE a.object = r.object), `+strictSQL+`
		FROM recalc.record r LEFT JOIN recalc.record p ON p.id = r.parent `+stagedSQL, args...)
	if err != nil {
		return fmt.Errorf("check records: %w", err)
	}
	var rec model.Record
	var parentObject string
	var attached, strict bool
	var before *model.Index // stored, decoded at the first invalid record
	var tolerated []string
	_, err = pgx.ForEachRow(rows, []any{&rec.ID, &rec.Object, &rec.Owner, &rec.Parent, &parentObject, &rec.Territories, &attached, &strict}, func() error {
		err := checkRecord(ix, &rec, parentObject)
		if err == nil {
			return nil
		}
		if !strict || attached {
			if before == nil {
				cfg, lerr := model.DecodeConfig(stored)
				if lerr != nil {
					return lerr
				}
				if before, lerr = cfg.Validate(); lerr != nil {
					return fmt.Errorf("stored configuration: %w", lerr)
				}
			}
			if checkRecord(before, &rec, parentObject) != nil {
				tolerated = append(tolerated, rec.ID)
				return nil
			}
		}
		if attached {
			return &InvalidError{fmt.Errorf("%w: the record mirrors a row of an attached table (recalc attach --list), so keep in the model what the row names, or correct the row there first", err)}
		}
		return &InvalidError{err}
	})
	if err != nil {
		return err
	}
	if len(tolerated) > 0 {
		log.Warn().Int("records", len(tolerated)).Strs("first", tolerated[:min(10, len(tolerated))]).
			Msg("records written with plain SQL or through attached tables are invalid and get no access (see recalc.invalid_record): fix their rows, or import")
	}
	return nil
}

// sameUsers reports whether two users sections hold the same users, in any
// order.
func sameUsers(a, b []model.User) bool {
	if len(a) != len(b) {
		return false
	}
	byID := func(x, y model.User) int { return strings.Compare(x.ID, y.ID) }
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, byID)
	slices.SortFunc(b, byID)
	return slices.Equal(a, b)
}
