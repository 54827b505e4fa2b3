package locks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/pg"
)

// TryWait is how long one try of Retry waits for a lock.
const TryWait = 100 * time.Millisecond

// Retry runs try in a savepoint of tx with every lock wait bounded to
// TryWait (lock_timeout), again after a pause of 20-100 ms each time a
// lock was not granted, until it succeeds or wait has passed; then it
// reports false. PostgreSQL queues every later request for a table behind
// a statement waiting to lock it, so a strong lock (DDL, LOCK TABLE) that
// waited for as long as another role kept a transaction open on the table
// would stop every other write (or read) of it for as long; a try that
// times out lets go of what it took, leaving no queue behind. tx's
// lock_timeout is as before once Retry returns. An error other than a lock
// not granted (pg.IsRetryable) ends it at once.
func Retry(ctx context.Context, tx pgx.Tx, wait time.Duration, try func(sp pgx.Tx) error) (bool, error) {
	took, _, err := retryEach(ctx, tx, time.Now().Add(wait), TryWait, TryWait, false, try)
	return took, err
}

// RetrySession is Retry with each try waiting for the session's
// lock_timeout instead of TryWait when the session sets one (SessionTimeout),
// as `recalc init` waits for each lock a migration takes: the commands an
// operator runs (attach, detach, rls enable and disable) take the
// connection string's options=-c lock_timeout=..., or PGOPTIONS, as they
// find it. The tries still go on until wait has passed, one at least, each
// after the first cut to what is left of wait (Within), so a lock_timeout
// past wait is how long they wait in all, and a shorter one ends within
// wait, not up to a lock_timeout past it. When it reports false, blocking
// names the sessions last seen blocking its waits (Watch; for Blamed).
func RetrySession(ctx context.Context, tx pgx.Tx, wait time.Duration, try func(sp pgx.Tx) error) (took bool, blocking []string, err error) {
	each, err := SessionTimeout(ctx, tx)
	if err != nil {
		return false, nil, err
	}
	if each == 0 {
		each = TryWait
	}
	return retryEach(ctx, tx, time.Now().Add(wait), each, each, true, try)
}

// Budget is how long a command that takes several locks, one after
// another with its work between, may still wait for them, all together:
// each lock had a wait of its own, so a command of several objects waited
// several times as long as it said. The work between the locks (a backfill,
// say) does not spend it.
type Budget struct{ left time.Duration }

// NewBudget is the budget of a command that waits wait for its locks in
// all, or the session's lock_timeout when that is longer (SessionTimeout),
// so that one lock held throughout is waited for as long as the session
// asks, as RetrySession does.
func NewBudget(ctx context.Context, q pg.Querier, wait time.Duration) (*Budget, error) {
	each, err := SessionTimeout(ctx, q)
	if err != nil {
		return nil, err
	}
	return &Budget{left: max(wait, each)}, nil
}

// Spent reports whether b has no time left: a lock still to take gets one
// try of TryWait.
func (b *Budget) Spent() bool { return b.left <= 0 }

// Retry is RetrySession for one of the locks of b's command: every try, the
// first too, waits the session's lock_timeout (or TryWait) cut to what is
// left of b, TryWait at least, and the tries go on until b is spent, one
// at least. It spends the time it took. When it reports false, blocking
// names the sessions last seen blocking its waits, as RetrySession's.
func (b *Budget) Retry(ctx context.Context, tx pgx.Tx, try func(sp pgx.Tx) error) (took bool, blocking []string, err error) {
	start := time.Now()
	defer func() { b.left -= time.Since(start) }()
	each, err := SessionTimeout(ctx, tx)
	if err != nil {
		return false, nil, err
	}
	if each == 0 {
		each = TryWait
	}
	deadline := start.Add(b.left)
	return retryEach(ctx, tx, deadline, Within(each, TryWait, deadline), each, true, try)
}

// SessionTimeout is the lock_timeout the session started with (its
// connection options, PGOPTIONS, or the role's or the database's setting),
// whatever a transaction set since: 0 when none is set.
func SessionTimeout(ctx context.Context, q pg.Querier) (time.Duration, error) {
	var ms int64
	if err := q.QueryRow(ctx, `SELECT reset_val::bigint FROM pg_catalog.pg_settings WHERE name = 'lock_timeout'`).Scan(&ms); err != nil {
		return 0, fmt.Errorf("read the session's lock_timeout: %w", err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Within is how long a try after the first, of tries that each wait each
// for a lock until deadline, may wait: each, cut to what is left until
// deadline, but floor at least. Tries of a long session lock_timeout then
// end by deadline (floor past it at most), rather than up to each past it,
// with the application's reads and writes queued behind the last one.
func Within(each, floor time.Duration, deadline time.Time) time.Duration {
	return min(each, max(time.Until(deadline), floor))
}

// retryEach is Retry until deadline with the first try waiting at most
// first, and the others each within what is left until deadline (Within).
// With watch, blocking names the sessions last seen blocking its waits
// (Watch); else it is nil.
func retryEach(ctx context.Context, tx pgx.Tx, deadline time.Time, first, each time.Duration, watch bool,
	try func(sp pgx.Tx) error) (took bool, blocking []string, err error) {
	var timeout string
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.current_setting('lock_timeout')`).Scan(&timeout); err != nil {
		return false, nil, fmt.Errorf("read lock_timeout: %w", err)
	}
	if watch {
		stop := Watch(ctx, tx.Conn())
		defer func() { blocking = stop() }()
	}
	for this := first; ; this = Within(each, TryWait, deadline) {
		err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { // a savepoint: a timed-out try releases its locks
			if err := SetTimeout(ctx, sp, this); err != nil {
				return err
			}
			return try(sp)
		})
		if _, rerr := tx.Exec(ctx, `SELECT pg_catalog.set_config('lock_timeout', $1, true)`, timeout); rerr != nil && err == nil {
			err = fmt.Errorf("restore lock_timeout: %w", rerr)
		}
		switch {
		case err == nil:
			return true, nil, nil
		case !pg.IsRetryable(err):
			return false, nil, err
		case !time.Now().Before(deadline):
			return false, nil, nil
		}
		select {
		case <-ctx.Done():
			return false, nil, ctx.Err()
		case <-time.After(time.Duration(20+rand.IntN(80)) * time.Millisecond):
		}
	}
}

// Held is the kind of lock Holders looks for.
type Held int

const (
	// AnyLock is every lock: DDL waits for readers too.
	AnyLock Held = iota
	// WriteLock is a lock that a write or a row lock takes: a reader's
	// ACCESS SHARE is left out.
	WriteLock
)

// Holders names the sessions but q's that hold a lock of kind held on one
// of relations (names or oids, as regclass reads them), at most 10: their
// process ids and roles, never a query. A prepared transaction
// (PREPARE TRANSACTION, not yet committed or rolled back) holds its locks
// with no session: it is named by its transaction id and owner
// (preparedSQL), which pg_prepared_xacts lists with its name. Nil when
// they cannot be read.
func Holders(ctx context.Context, q pg.Querier, held Held, relations []string) []string {
	return sessions(ctx, q, `SELECT DISTINCT CASE WHEN l.pid IS NOT NULL
		    THEN pg_catalog.format('pid %s (role %s)', l.pid, coalesce(pg_catalog.quote_ident(a.usename), 'unknown'))
		    ELSE coalesce((SELECT `+preparedSQL+` FROM pg_catalog.pg_locks x JOIN pg_catalog.pg_prepared_xacts p ON p.transaction = x.transactionid
		         WHERE x.locktype = 'transactionid' AND x.pid IS NULL AND x.virtualtransaction = l.virtualtransaction LIMIT 1),
		        'a prepared transaction') END
		FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
		WHERE l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) AND l.granted
		  AND l.relation = ANY($1::pg_catalog.regclass[]) AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
		  AND ($2 = 0 OR l.mode <> 'AccessShareLock')
		ORDER BY 1 LIMIT 10`, relations, int(held))
}

// preparedSQL names prepared transaction p (pg_prepared_xacts): by its
// transaction id and owner, not its name, which the application chose.
const preparedSQL = `pg_catalog.format('prepared transaction %s (role %s)', p.transaction, pg_catalog.quote_ident(p.owner::text))`

// blockers names the sessions that block session pid's lock wait now,
// as Holders names them: those holding a lock it waits for, and those
// queued ahead of it for one (pg_blocking_pids). pg_blocking_pids reports
// a prepared transaction as process 0: those are named instead by the
// conflicting locks they hold on what pid waits for (the modes' conflicts
// as PostgreSQL's lock table has them, a bit per mode in the order of
// modeOrder). Nil when it waits for none, or they cannot be read.
func blockers(ctx context.Context, q pg.Querier, pid uint32) []string {
	return sessions(ctx, q, `WITH b AS (SELECT pg_catalog.pg_blocking_pids($1) AS pids),
		m (modes, conflicts) AS (SELECT `+modeOrder+`, '{128,192,240,248,236,252,254,255}'::int[])
		SELECT s FROM (
		    SELECT pg_catalog.format('pid %s (role %s)', b.pid, coalesce(pg_catalog.quote_ident(a.usename), 'unknown')) AS s, b.pid AS n
		    FROM pg_catalog.unnest((SELECT pids FROM b)) b (pid) LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = b.pid
		    WHERE b.pid <> 0
		    UNION
		    SELECT `+preparedSQL+`, 0
		    FROM m, pg_catalog.pg_locks w
		    JOIN pg_catalog.pg_locks h ON h.granted AND h.pid IS NULL AND h.locktype = w.locktype
		      AND h.database IS NOT DISTINCT FROM w.database AND h.relation IS NOT DISTINCT FROM w.relation
		      AND h.page IS NOT DISTINCT FROM w.page AND h.tuple IS NOT DISTINCT FROM w.tuple
		      AND h.virtualxid IS NOT DISTINCT FROM w.virtualxid AND h.transactionid IS NOT DISTINCT FROM w.transactionid
		      AND h.classid IS NOT DISTINCT FROM w.classid AND h.objid IS NOT DISTINCT FROM w.objid AND h.objsubid IS NOT DISTINCT FROM w.objsubid
		    JOIN pg_catalog.pg_locks x ON x.locktype = 'transactionid' AND x.pid IS NULL AND x.virtualtransaction = h.virtualtransaction
		    JOIN pg_catalog.pg_prepared_xacts p ON p.transaction = x.transactionid
		    WHERE (SELECT 0 = ANY (pids) FROM b) AND w.pid = $1 AND NOT w.granted
		      AND (m.conflicts[pg_catalog.array_position(m.modes, w.mode)] >> (pg_catalog.array_position(m.modes, h.mode) - 1)) & 1 = 1) x
		ORDER BY n, s LIMIT 10`, int64(pid))
}

// modeOrder lists the table lock modes, weakest first: the order of
// blockers' conflict bits.
const modeOrder = `'{AccessShareLock,RowShareLock,RowExclusiveLock,ShareUpdateExclusiveLock,ShareLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}'::text[]`

// sessions is the one text column of the rows sql reads (Holders,
// blockers): nil when they cannot be read.
func sessions(ctx context.Context, q pg.Querier, sql string, args ...any) []string {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil
	}
	return out
}

// Named lists holders (Holders) to quote in an error: "none seen" when no
// session holds such a lock any more, or they could not be read.
func Named(holders []string) string {
	if len(holders) == 0 {
		return "none seen"
	}
	return strings.Join(holders, ", ")
}
