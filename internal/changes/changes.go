// Package changes reads and consumes the change log (recalc.change), which
// the capture triggers of recalc.record and the imports write: one row per
// statement with the ids it changed. A job plans from the rows committed
// when it plans (Read) and deletes exactly those when it is done (Consume),
// so a change that commits meanwhile, whatever its seq, waits for the next
// job. FixRoots sets the family roots of records the application wrote.
package changes

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
)

// Consume deletes the listed change rows.
func Consume(ctx context.Context, tx pgx.Tx, seqs []int64) error {
	if _, err := tx.Exec(ctx, `DELETE FROM recalc.change WHERE seq = ANY($1)`, seqs); err != nil {
		return fmt.Errorf("clear change log: %w", err)
	}
	return nil
}

// ConsumeSections deletes the section changes among the listed change rows:
// what a job that leaves the share rows alone may consume, since record
// changes wait for the share rows.
func ConsumeSections(ctx context.Context, tx pgx.Tx, seqs []int64) error {
	if _, err := tx.Exec(ctx, `DELETE FROM recalc.change WHERE seq = ANY($1) AND kind = 'section'`, seqs); err != nil {
		return fmt.Errorf("clear change log: %w", err)
	}
	return nil
}

// Touching returns the seqs among seqs of the changes to any of the
// configuration sections named.
func Touching(ctx context.Context, q pg.Querier, seqs []int64, sections []string) ([]int64, error) {
	rows, err := q.Query(ctx, `SELECT seq FROM recalc.change WHERE seq = ANY($1) AND kind = 'section' AND keys && $2`, seqs, sections)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	touching, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	return touching, nil
}

// Channel is the NOTIFY channel that record writes and imports
// signal, so `recalc watch` wakes up.
const Channel = "recalc_changes"

// Log is the change log as one statement saw it.
type Log struct {
	Seqs      []int64 // the rows seen, in order: a job plans from and consumes exactly these
	Truncated bool    // recalc.record was truncated
}

// Last is the highest seq seen, 0 when none.
func (c *Log) Last() int64 {
	if len(c.Seqs) == 0 {
		return 0
	}
	return c.Seqs[len(c.Seqs)-1]
}

// Read reads which change rows are committed now, in one statement:
// rows that commit later, even with lower seqs, are left for the next job.
// The rows of attached tables' captures are not among them: Absorb turns
// them into record changes first.
func Read(ctx context.Context, q pg.Querier) (*Log, error) {
	c := &Log{}
	err := q.QueryRow(ctx, `SELECT coalesce(array_agg(seq ORDER BY seq), '{}'), coalesce(bool_or(kind = 'truncate'), false)
		FROM recalc.change WHERE kind NOT IN ('attached', 'attached_all')`).Scan(&c.Seqs, &c.Truncated)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	return c, nil
}

// Records returns the distinct ids of the records changed by the
// listed change rows.
func Records(ctx context.Context, q pg.Querier, seqs []int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT unnest(keys) FROM recalc.change WHERE kind = 'record' AND seq = ANY($1)`, seqs)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	return ids, nil
}

// Written is what the change log holds besides some rows known already:
// the record changes and truncates committed since, as one statement saw
// them.
type Written struct {
	Seqs      []int64  // the rows read, sorted
	IDs       []string // the distinct ids of the records their record changes name
	Truncated bool     // one of them truncated recalc.record
}

// WrittenSince reads, in one statement, the record and truncate change rows
// that are not among known, sorted: a paused job's chunk, finished beside
// a deferral of share rows, passes those it planned from (and those read
// before) to learn which records were written since. Section changes are
// not among them (a job computes from the configuration it captured), nor
// the rows of attached tables' captures, which change no record until
// absorbed, and an absorb logs record changes of its own in the
// transaction that writes the records.
func WrittenSince(ctx context.Context, q pg.Querier, known []int64) (*Written, error) {
	w := &Written{}
	err := q.QueryRow(ctx, `WITH c AS MATERIALIZED (
			SELECT seq, kind, keys FROM recalc.change
			WHERE kind IN ('record', 'truncate') AND seq NOT IN (SELECT unnest($1::bigint[])))
		SELECT (SELECT coalesce(array_agg(seq ORDER BY seq), '{}') FROM c),
		       (SELECT coalesce(array_agg(DISTINCT k), '{}') FROM c, unnest(c.keys) k WHERE c.kind = 'record'),
		       (SELECT coalesce(bool_or(kind = 'truncate'), false) FROM c)`, known).Scan(&w.Seqs, &w.IDs, &w.Truncated)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	return w, nil
}

// Recompute logs a change of the records ids (the roots of families a
// paused job's chunk left out), so that the next run recomputes their
// families, whatever it finds logged besides. Their roots are set: the
// row is marked rooted.
//
// The row takes the oldest transaction id of planned, the change rows the
// job planned from, which its finish consumes: the families left out keep
// share rows from before those changes, so a token taken after any of
// them must wait for the run that recomputes the families
// (recalc.wait_fresh waits for rows below its token). With the chunk's
// own id, above such a token, wait_fresh said fresh once the job was done,
// with the changes it planned from not materialized until `recalc
// resume`. It is the oldest of all the job's rows, not of those naming the
// families left out: a record moved between families is left out with
// both (moveGroups), and a section change names no record; a token between
// the job's changes waits for the resume too.
func Recompute(ctx context.Context, tx pgx.Tx, ids []string, planned []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.change (kind, keys, rooted, xid)
		SELECT 'record', $1, true, coalesce(min(c.xid), pg_current_xact_id()) FROM recalc.change c WHERE c.seq = ANY($2)`,
		ids, planned); err != nil {
		return fmt.Errorf("log families to recompute: %w", err)
	}
	return nil
}

// KeepMovedWaiting logs a change of the records among invalid (given no
// access by a chunk or a fast batch that consumes the change rows
// consumed) that were computed in a family their parent is not in because
// a write since the step fixed the roots moved the record or an ancestor:
// their roots are fixed only by the next plan or batch, so the step
// computed them in their old family, where the parent is missing, and they
// failed closed. Such access holds neither before nor after the move, so
// the row takes the oldest transaction id of consumed, and
// recalc.wait_fresh, with a token taken after the changes the step
// consumes, waits for the next step, which re-roots and recomputes them
// (the row is not marked rooted).
//
// A record is taken when its stored root differs from the one root fixing
// computes for it now (rootsUp, as StrayRoots walks) and a change row
// written since consumed, not marked rooted, names it or its parent: the
// next step's root fixing, which that row asks for, then moves it. A record
// apart from its parent for good (a parent chain that loops, or is deeper
// than 100), which root fixing leaves where it is, logs nothing, whatever
// is written beside the step (before, a change row naming it or its parent
// was the only test: a record re-parented within its family root was
// logged by every step beside such a write, each row keeping the oldest
// transaction id of the last, so every token waited for as long as such
// writes went on); nor does a record root fixing cannot rewrite
// (validRecord, a root over 1,024 bytes), nor a stray root no change
// names, which `recalc verify` reports and a full run repairs.
//
// The cost is one probe of the invalid records and their parents; then,
// only when a root is not its parent's, one hashed pass over the change
// log, and up to 100 index probes for each such record a change names
// (before, a scan of the change log with seq <> ALL(consumed) for each,
// which a generic plan does not hash: 7.5 s a call with 30,000 rows
// consumed beside 30,000 others, TestKeepMovedWaitingCost).
func KeepMovedWaiting(ctx context.Context, tx pgx.Tx, invalid []string, consumed []int64) error {
	if len(invalid) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `
		WITH RECURSIVE apart AS MATERIALIZED (
		    SELECT t.rid, t.id, t.parent FROM `+strayFrom+` AND t.id = ANY($1)
		), since AS MATERIALIZED (
		    SELECT DISTINCT unnest(keys) AS id FROM recalc.change
		    WHERE kind = 'record' AND NOT rooted AND seq NOT IN (SELECT unnest($2::bigint[]))
		), down (rid, id, parent) AS MATERIALIZED (
		    SELECT rid, id, parent FROM apart WHERE id IN (SELECT id FROM since) OR parent IN (SELECT id FROM since)
		), `+rootsUp+`
		INSERT INTO recalc.change (kind, keys, rooted, xid)
		SELECT 'record', array_agg(t.id ORDER BY t.id), false,
		       (SELECT coalesce(min(c.xid), pg_current_xact_id()) FROM recalc.change c WHERE c.seq = ANY($2))
		FROM recalc.record t, `+rootsDiffer+` AND `+validRecord+`
		HAVING count(*) > 0`, invalid, consumed); err != nil {
		return fmt.Errorf("log the records moved since they were planned: %w", err)
	}
	return nil
}

// validRecord is the condition of recalc.record's constraints
// record_refs_bounded (migration 070) and record_fields_scalar (migration
// 007) on row t.
// They are NOT VALID: rows stored before them are checked only when they are
// written, and a root fix writes them. When that fails, root fixing runs
// again without the rows that would fail: such a row keeps its old root (or
// none), and so gets no access until the application rewrites it.
const validRecord = `octet_length(t.id) BETWEEN 1 AND 1024 AND octet_length(t.object) <= 1024 AND octet_length(t.owner) <= 1024
		  AND coalesce(octet_length(t.parent), 0) <= 1024
		  AND CASE WHEN array_ndims(t.territories) > 1 THEN false
		           ELSE cardinality(t.territories) <= 1000 AND array_position(t.territories, NULL) IS NULL
		                AND octet_length(array_to_string(t.territories, '')) <= 1024000 END
		  AND jsonb_typeof(t.fields) = 'object' AND octet_length(t.fields::text) <= 1048576
		  AND NOT jsonb_path_exists(t.fields, 'strict $.* ? (@.type() == "object" || @.type() == "array"
		      || (@.type() == "number" && (@ >= ` + float64Past + ` || @ <= -` + float64Past + `)))')`

// float64Past is 2^1024 - 2^970, the least decimal that rounds past
// float64's range (the midpoint between the largest float64 and 2^1024,
// which ties to 2^1024): strconv.ParseFloat, which reads every record's
// fields, refuses it and everything beyond, and takes anything below as a
// float64 (migration 070).
const float64Past = "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792"

// ReadTerritories is the SQL expression that reads recalc.record's
// territories column col into a list every reader can scan: territories
// holding a NULL, or of more than one dimension, stored before migration
// 027 refused them, read as one unknown territory (""), so the record is
// invalid and fails closed.
func ReadTerritories(col string) string {
	return fmt.Sprintf(`CASE WHEN array_ndims(%[1]s) > 1 THEN '{""}' WHEN array_position(%[1]s, NULL) IS NOT NULL THEN '{""}' ELSE %[1]s END`, col)
}

// FixRoots sets the family root of records that lack one (inserted with
// plain SQL), of the records changed by the listed change rows and of those
// naming one of them as parent, and of all their descendants,
// and returns the ids of the records it changed. Change rows marked rooted
// are skipped: those of imports, which set roots themselves, and those of
// updates that kept every row's id and parent (migration 014). With every
// (a full run), it also takes every record whose root is not its parent's
// (its own id, when its parent is missing), whatever the change log says:
// a full run then repairs a root that went wrong, which no family read by
// its stored root shows. Its own updates are not logged as changes: the
// caller recomputes the records it returns.
func FixRoots(ctx context.Context, tx pgx.Tx, seqs []int64, every bool) ([]string, error) {
	todo := every
	if !every {
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM recalc.change WHERE kind = 'record' AND seq = ANY($1) AND NOT rooted)
			OR EXISTS (SELECT FROM recalc.record WHERE root_id IS NULL)`, seqs).Scan(&todo)
		if err != nil || !todo {
			return nil, err
		}
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('recalc.fixing_roots', 'on', true)`); err != nil {
		return nil, fmt.Errorf("fix family roots: %w", err)
	}
	stray := ""
	if every {
		stray = strayRoots
	}
	ids, err := fixRoots(ctx, tx, seqs, stray, "true")
	if pg.Code(err) == pg.CheckViolation {
		ids, err = fixRoots(ctx, tx, seqs, stray, validRecord)
	}
	if err != nil {
		return nil, fmt.Errorf("fix family roots: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('recalc.fixing_roots', 'off', true)`); err != nil {
		return nil, fmt.Errorf("fix family roots: %w", err)
	}
	return ids, nil
}

// strayFrom is the one definition of a stray root: the records t whose
// root is not their parent's p, or, with no parent found, not their own
// id. It is one join of recalc.record with itself.
const strayFrom = `recalc.record t LEFT JOIN recalc.record p ON p.id = t.parent
		    WHERE t.root_id IS DISTINCT FROM CASE WHEN p.rid IS NULL THEN t.id ELSE p.root_id END`

// strayRoots is the branch of fixRoots's wrong records that FixRoots adds
// for every: the records of strayFrom.
const strayRoots = `
		    UNION
		    SELECT t.rid, t.id, t.parent FROM ` + strayFrom

// StrayRoots counts the records whose stored family root differs from the
// one root fixing computes, with no root fixing pending for them: it walks
// as FixRoots does for a full run, from the records of strayFrom that have
// a root and that no change row not marked rooted names, or names the
// parent of, down to their descendants and up to each one's top, and
// counts what FixRoots would write. Such a record is computed in a family
// its parent is not in, so it fails closed, and no family read by its
// stored root shows it; a full run repairs it. Records that fail
// recalc.record's NOT VALID constraints (validRecord) are left out: root
// fixing cannot rewrite them, and they fail closed anyway. A record whose
// root disagrees with its parent's but is what root fixing computes (a
// parent chain that loops, or is deeper than 100) is not counted: no run
// changes it.
//
// Its cost is one join of recalc.record with itself, then index probes
// for the stray records and their descendants only. The pending ids are
// hashed, and validRecord is the count's filter: among the join's other
// conditions, its many terms made the planner think the stray records few
// and probe every pending id for each (9.6 s for 1,000 stray roots beside
// 100,000 pending ids, where hashing them takes 0.1 s). At a million
// records it took 0.25 s with no root wrong, 0.35 s with 1,000 wrong beside
// 100,000 pending ids, 1.2 s with 100,000 wrong, with jit off as the
// command line's sessions run (JIT compiling its plan added 0.4 s).
func StrayRoots(ctx context.Context, q pg.Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `
		WITH RECURSIVE stray AS MATERIALIZED (
		    SELECT t.rid, t.id, t.parent FROM `+strayFrom+` AND t.root_id IS NOT NULL
		), pending AS MATERIALIZED (
		    SELECT DISTINCT unnest(keys) AS id FROM recalc.change WHERE kind = 'record' AND NOT rooted
		), wrong (rid, id, parent) AS MATERIALIZED (
		    SELECT rid, id, parent FROM stray t
		    WHERE NOT EXISTS (SELECT FROM pending x WHERE x.id = t.id)
		      AND NOT EXISTS (SELECT FROM pending x WHERE x.id = t.parent)
		), `+rootWalk+`
		SELECT count(*) FILTER (WHERE `+validRecord+`) FROM recalc.record t, `+rootsDiffer).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count stray family roots: %w", err)
	}
	return n, nil
}

// RepairStrayRoots fixes every stray root in tx as a full run does
// (FixRoots with every) and logs the records it changed as one change row
// marked rooted, so the next run recalculates the families they left and
// joined. It returns how many it changed.
func RepairStrayRoots(ctx context.Context, tx pgx.Tx) (int, error) {
	ids, err := FixRoots(ctx, tx, nil, true)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.change (kind, keys, rooted) VALUES ('record', $1, true)`, ids); err != nil {
		return 0, fmt.Errorf("log the records re-rooted: %w", err)
	}
	return len(ids), nil
}

// rootWalk is the root fixing of FixRoots and StrayRoots, as the CTEs
// that follow wrong, a CTE of records (rid, id, parent): roots holds the
// root (rid, root) that each of them, and each of their descendants,
// should have, the top of its parent chain (its 100th ancestor at most).
const rootWalk = `down (rid, id, parent) AS (
		    SELECT rid, id, parent FROM wrong
		    UNION
		    SELECT c.rid, c.id, c.parent FROM down d CROSS JOIN LATERAL (
		        SELECT rid, id, parent FROM recalc.record WHERE parent = d.id OFFSET 0) c
		), ` + rootsUp

// rootsUp is the upward half of rootWalk, as the CTEs that follow down, a
// CTE of records (rid, id, parent): roots holds the root (rid, root) that
// each of them should have.
const rootsUp = `up (rid, id, parent, depth) AS (
		    SELECT rid, id, parent, 0 FROM down
		    UNION ALL
		    SELECT u.rid, p.id, p.parent, u.depth + 1 FROM up u CROSS JOIN LATERAL (
		        SELECT id, parent FROM recalc.record WHERE id = u.parent OFFSET 0) p
		    WHERE u.depth < 100
		), roots AS (
		    SELECT DISTINCT ON (rid) rid, id AS root FROM up ORDER BY rid, depth DESC
		)`

// rootsDiffer follows rootWalk: the records t of recalc.record whose
// stored root differs from the one roots computes, and that a root fix
// may write.
const rootsDiffer = `roots
		WHERE t.rid = roots.rid AND t.root_id IS DISTINCT FROM roots.root
		  AND octet_length(roots.root) <= 1024`

// fixRoots is one attempt of FixRoots, in a savepoint, on the rows that
// meet the condition only; stray is "" or strayRoots. Each step of the
// walks is a lateral subquery that OFFSET 0 keeps from being flattened, so
// every step is an index probe: as plain joins the planner hashed all of
// recalc.record at each level of the recursion (about 165 ms per small
// batch at 100k records).
func fixRoots(ctx context.Context, tx pgx.Tx, seqs []int64, stray, only string) ([]string, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer sp.Rollback(ctx) // after Commit, a no-op
	rows, err := sp.Query(ctx, `
		WITH RECURSIVE changed AS MATERIALIZED (
		    SELECT DISTINCT unnest(keys) AS id FROM recalc.change WHERE kind = 'record' AND seq = ANY($1) AND NOT rooted
		), wrong (rid, id, parent) AS (
		    SELECT rid, id, parent FROM recalc.record WHERE root_id IS NULL
		    UNION
		    SELECT c.rid, c.id, c.parent FROM changed x CROSS JOIN LATERAL (
		        SELECT rid, id, parent FROM recalc.record WHERE id = x.id
		        UNION ALL -- a changed id may be the parent that records named, or now name
		        SELECT rid, id, parent FROM recalc.record WHERE parent = x.id
		        OFFSET 0) c`+stray+`
		), `+rootWalk+`
		UPDATE recalc.record t SET root_id = roots.root FROM `+rootsDiffer+` AND `+only+`
		RETURNING t.id`, seqs)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	return ids, sp.Commit(ctx)
}

// Vacuum vacuums the change log and the users section's marks (migration
// 057), skipping one when another session holds a conflicting lock. Each
// is a queue: every row is inserted once and deleted
// once, so without vacuuming (autovacuum off, or not yet come by) each read
// of it scans every row it ever held. It leaves the emptied pages in place
// for new rows (TRUNCATE false): giving them back needs an exclusive lock
// that the application's writes keep taken, and VACUUM tries for it for 5 s
// (a 5 s stall of `recalc watch` at 1M records under write load). It
// cannot run in a transaction.
func Vacuum(ctx context.Context, q pg.Querier) error {
	if _, err := q.Exec(ctx, `VACUUM (SKIP_LOCKED, TRUNCATE false) recalc.change, recalc.attached_users_mark`); err != nil {
		return fmt.Errorf("vacuum the change log: %w", err)
	}
	return nil
}

// Stuck names the attached objects whose logged writes wait, because
// their last absorb failed or their capture was not intact.
func Stuck(ctx context.Context, q pg.Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT object FROM recalc.attach_stuck ORDER BY object`)
	if err != nil {
		return nil, fmt.Errorf("read stuck attachments: %w", err)
	}
	objs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	switch {
	case err != nil:
		return nil, fmt.Errorf("read stuck attachments: %w", err)
	case len(objs) == 0:
		return nil, nil // as a report leaves it out
	}
	return objs, nil
}

// StuckRetry is how long the fast path of `recalc watch` leaves alone an
// attached object whose writes it could not absorb, before trying again
// (recalc.attach_stuck, migration 020). Jobs try every object.
const StuckRetry = 10 * time.Second

// absorbTimeout bounds one object's absorb (its statement_timeout): 10 s,
// and 5 ms more for each id logged (what reading a row apart costs, when
// its slice's read failed on a row's values: migration 039); 5 minutes,
// the most, for a whole re-read (a table of some millions of rows takes
// less). Locks are waited for 2 s at most (the absorb's lock_timeout).
func absorbTimeout(keys int64, whole bool) time.Duration {
	const most = 5 * time.Minute
	if whole || keys > int64(most/(5*time.Millisecond)) {
		return most
	}
	return min(10*time.Second+time.Duration(keys)*5*time.Millisecond, most)
}

// SandboxUnsafe is the SQLSTATE of a read refused because the sandbox role
// or its reader function is missing or not as installed (migration 021,
// SECURITY.md "The sandbox role"); `recalc attach` installs them again.
const SandboxUnsafe = "RC003"

// SessionTampered is the SQLSTATE of an absorb whose read changed the
// session's prepared statements (migration 021), which no rollback undoes;
// Absorb drops them all.
const SessionTampered = "RC004"

// nothingToAbsorb reports whether no table is captured and no write to
// one is logged: attach_absorb_begin would then change and return nothing.
// Its first call in a session reads the catalogs (attach_fingerprints),
// about 30 ms of server time that every `recalc run`, import and step of
// `recalc watch` on a database with nothing attached would pay for nothing.
func nothingToAbsorb(ctx context.Context, tx pgx.Tx) (bool, error) {
	var none bool
	err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM recalc.attach_capture)
		AND NOT EXISTS (SELECT FROM recalc.change WHERE kind IN ('attached', 'attached_all'))`).Scan(&none)
	return none, err
}

func wrapAbsorb(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("absorb the writes to attached tables: %w", err)
}

// RereadAttached logs a whole re-read of every attached source (the users
// table's included), as a TRUNCATE does: the next Absorb in tx mirrors them
// again and so repairs what no capture can see, such as a view's rows
// changing with the clock. A full run calls it.
func RereadAttached(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.change (kind, object, keys)
		SELECT 'attached_all', t.object, '{}' FROM recalc.attachment t ORDER BY t.object`); err != nil {
		return fmt.Errorf("log a re-read of the attached tables: %w", err)
	}
	return nil
}

// Absorbed is what Absorb did for one attached object.
type Absorbed struct {
	Object   string
	Keys     int64  // the ids re-read from its source
	Absorbed bool   // false: its change rows stay, because its capture is not intact or absorbing failed
	Code     string // why absorbing failed, "" when it did not: a SQLSTATE (never the message, which may quote a row's values)
}

// Absorb mirrors into recalc.record the writes that the captures of
// attached tables logged (change kinds 'attached' and 'attached_all',
// migration 019): it re-reads their sources for the ids logged, and
// recalc.record's trigger logs the records that changed as change rows of
// kind 'record', which tx then reads as any other. With maxKeys > 0 it
// returns ok false, for the caller to roll tx back and run a job, when more
// than maxKeys ids (or a whole table, after a TRUNCATE) wait, and has then
// absorbed nothing; a captured table written without its capture (its
// catalog fingerprint changed, migration 020) counts as a TRUNCATE, whether
// or not its absorb failed lately; and it leaves alone the objects it could
// not absorb less than StuckRetry ago (recalc.attach_stuck), which jobs
// (maxKeys 0) always try. attach_absorb_begin computes the catalog
// fingerprints once and counts what waits with them (migration 071): it
// then changes nothing. tx must be READ COMMITTED.
func Absorb(ctx context.Context, tx pgx.Tx, maxKeys int) (done []Absorbed, ok bool, err error) {
	if idle, err := nothingToAbsorb(ctx, tx); err != nil || idle {
		return nil, err == nil, wrapAbsorb(err)
	}
	var retry *time.Duration
	var most *int64
	if maxKeys > 0 {
		retry, most = new(StuckRetry), new(int64(maxKeys))
	}
	rows, err := tx.Query(ctx, `SELECT object, keys, whole FROM recalc.attach_absorb_begin($1::interval, $2::bigint)`, retry, most)
	if err != nil {
		return nil, false, wrapAbsorb(err)
	}
	objects, err := pgx.CollectRows(rows, pgx.RowToStructByPos[pendingObject])
	if err != nil {
		return nil, false, wrapAbsorb(err)
	}
	if maxKeys > 0 && tooMuch(objects, maxKeys) {
		return nil, false, nil
	}
	if len(objects) == 0 {
		return nil, true, nil
	}
	if done, err = absorbEach(ctx, tx, objects); err != nil {
		return nil, false, err
	}
	return done, true, nil
}

// AbsorbMarked absorbs in tx the writes logged for the attached objects
// (the users table's aside) with an owner change or a row gone (deleted,
// its id changed away, the table truncated) among them, and for the objects
// attached through a view, whose captures cannot tell such a write (the
// view makes the owner and the rows: migration 074), as Absorb does. An
// import calls it last, before it commits: the effect of such a write that
// committed since the import's first absorb (an owner change's wipe of
// manual shares, a gone row's drop of shares and team entries) then comes
// before the shares and team entries the import wrote, which it spares
// (migrations 058 and 069), as in the commit order. Only such a write
// committed after this absorb drops them, at the next absorb: it committed
// after the import.
func AbsorbMarked(ctx context.Context, tx pgx.Tx) ([]Absorbed, error) {
	rows, err := tx.Query(ctx, `SELECT c.object, sum(cardinality(c.keys))::bigint, bool_or(c.kind = 'attached_all') FROM recalc.change c
		WHERE c.kind IN ('attached', 'attached_all') AND c.object <> $1
		  AND (c.object IN (SELECT r.object FROM recalc.change r WHERE r.kind IN ('attached', 'attached_all') AND r.effect IN ('reowned', 'gone'))
		       OR c.object IN (SELECT a.object FROM recalc.attachment a WHERE a.is_view))
		GROUP BY c.object ORDER BY 1`, model.UsersAttachment)
	if err != nil {
		return nil, wrapAbsorb(err)
	}
	objects, err := pgx.CollectRows(rows, pgx.RowToStructByPos[pendingObject])
	if err != nil || len(objects) == 0 {
		return nil, wrapAbsorb(err)
	}
	return absorbEach(ctx, tx, objects)
}

// AbsorbObject absorbs in tx the writes logged for one attached object, as
// Absorb does for each, and leaves the session's statement_timeout as it
// found it. found is false when no change row was left to absorb. `recalc
// detach users` calls it before it drops the users table's capture: the
// users section stays as last built, so it is built from what the table
// holds, the writes committed before the detach included.
func AbsorbObject(ctx context.Context, tx pgx.Tx, object string) (a Absorbed, found bool, err error) {
	done, err := absorbEach(ctx, tx, []pendingObject{{Object: object, Whole: true}})
	if err != nil || len(done) == 0 {
		return a, false, err
	}
	return done[0], true, nil
}

// pendingObject is an attached object with writes logged: how many keys,
// and whether it is to be read whole.
type pendingObject struct {
	Object string
	Keys   int64
	Whole  bool
}

// tooMuch reports whether objects are more than the fast path absorbs: a
// source to read whole, or more than maxKeys ids. attach_absorb_begin,
// given maxKeys, returns what waits as it decided so; or, having decided
// otherwise, what waits once it recorded the views' columns, more if a
// write committed in between.
func tooMuch(objects []pendingObject, maxKeys int) bool {
	var keys int64
	for _, o := range objects {
		if o.Whole {
			return true
		}
		keys += o.Keys
	}
	return keys > int64(maxKeys)
}

// absorbEach absorbs each object's logged writes (absorbOne), under a
// statement_timeout fitted to them, and leaves the session's as it found
// it. It returns the absorbs of the objects that had change rows left.
func absorbEach(ctx context.Context, tx pgx.Tx, objects []pendingObject) ([]Absorbed, error) {
	var saved string
	if err := tx.QueryRow(ctx, `SELECT current_setting('statement_timeout')`).Scan(&saved); err != nil {
		return nil, wrapAbsorb(err)
	}
	var done []Absorbed
	for _, o := range objects {
		a, found, err := absorbOne(ctx, tx, o.Object, absorbTimeout(o.Keys, o.Whole || o.Object == model.UsersAttachment))
		if err != nil {
			return nil, wrapAbsorb(err)
		}
		if found {
			done = append(done, a)
		}
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('statement_timeout', $1, true)`, saved); err != nil {
		return nil, wrapAbsorb(err)
	}
	return done, nil
}

// absorbOne absorbs the change rows logged for object, in a statement of
// its own under timeout: the application's code may run in its read (as
// the sandbox role, SECURITY.md) and must not hold the engine up for long.
// found is false when no change row was left to absorb. It leaves the
// session's statement_timeout at timeout.
//
// While it re-reads the rows, the setting recalc.absorbing is on: recalc.record's
// trigger then spares the manual shares tx itself wrote when a record's owner
// changes (migration 058, AbsorbMarked).
func absorbOne(ctx context.Context, tx pgx.Tx, object string, timeout time.Duration) (a Absorbed, found bool, err error) {
	if _, err := tx.Exec(ctx, `SELECT set_config('statement_timeout', $1, true), set_config('recalc.absorbing', 'on', true)`,
		fmt.Sprintf("%dms", timeout.Milliseconds())); err != nil {
		return a, false, err
	}
	err = tx.QueryRow(ctx, `SELECT object, keys, absorbed, coalesce(error_code, '') FROM recalc.attach_absorb_one($1)`, object).
		Scan(&a.Object, &a.Keys, &a.Absorbed, &a.Code)
	if err == nil || err == pgx.ErrNoRows {
		if _, err := tx.Exec(ctx, `SELECT set_config('recalc.absorbing', '', true)`); err != nil {
			return a, false, err
		}
	}
	if err == pgx.ErrNoRows {
		return a, false, nil
	}
	if err != nil {
		return a, false, err
	}
	if a.Code == SessionTampered {
		// Code in the read changed the session's prepared statements,
		// which no rollback undoes: drop them all (pgx's cache too)
		// before running anything else.
		if err := tx.Conn().DeallocateAll(ctx); err != nil {
			return a, true, err
		}
	}
	return a, true, nil
}
