// Package access holds the read side: access levels and the access CSV
// from the materialized tables, the comparison of access before and after
// a dry run (dryrun.go), the row-level security policies that filter
// application tables by them, the grants of reader and writer roles, and
// the status of calculation and jobs.
package access

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/pg"
)

var levelNames = [...]string{"none", "read", "edit", "all"}

// streamSQL lists effective access per (record, active user) above none
// from the materialized tables: share rows of the record and of its access
// root, through the closure, and the access root's OWD. The records are
// sorted once, then each record's users are found, so rows reach the
// client as they are computed instead of after the whole result is sorted.
const streamSQL = `
SELECT r.object, r.id, x.user_id, x.level
FROM (SELECT rid, id, object, access_root FROM recalc.acl_record ORDER BY object COLLATE "C", id COLLATE "C") r
CROSS JOIN LATERAL (
    SELECT u.id AS user_id, max(l.level) AS level
    FROM (
        SELECT m.uid, s.level
        FROM recalc.acl_share s JOIN recalc.acl_member m ON m.gid = s.gid AND (s.boss_ok OR NOT m.boss)
        WHERE s.rid = r.rid
        UNION ALL
        SELECT m.uid, s.level
        FROM recalc.acl_share s JOIN recalc.acl_member m ON m.gid = s.gid AND (s.boss_ok OR NOT m.boss)
        WHERE s.rid = r.access_root AND r.access_root <> r.rid
        UNION ALL
        SELECT u.uid, CASE WHEN u.internal THEN o.internal_level ELSE o.external_level END
        FROM recalc.acl_record root JOIN recalc.acl_object o ON o.name = root.object CROSS JOIN recalc.acl_user u
        WHERE root.rid = r.access_root AND CASE WHEN u.internal THEN o.internal_level ELSE o.external_level END > 0
    ) l JOIN recalc.acl_user u ON u.uid = l.uid
    GROUP BY u.id
    ORDER BY u.id COLLATE "C"
) x
ORDER BY r.object COLLATE "C", r.id COLLATE "C", x.user_id COLLATE "C"`

// InSnapshot runs read in one REPEATABLE READ READ ONLY transaction, so
// that everything it reads is of one moment: a family a chunk, the watch's
// fast path or a job's finish rewrites between two of its statements is
// read as before it in both. In READ COMMITTED each statement reads its own
// snapshot, and a page of visible records that calls recalc.visible_ids
// twice (after a continuation row) printed one family half before and
// half after a chunk. The transaction first takes the tables a full job's
// swap drops and renames ACCESS SHARE, before any snapshot (LOCK TABLE
// takes none): a snapshot taken before a swap commits reads the swapped-in
// tables as empty. Holding them, the transaction makes a swap wait for it,
// as any reader does, and a swap that waits too long copies its rows into
// the live tables in place instead (sharetable.SwapFull).
func InSnapshot(ctx context.Context, pool *pgxpool.Pool, read func(tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// In the order a reader's statement locks them, as the swap takes them.
		if _, err := tx.Exec(ctx, `LOCK TABLE recalc.acl_record, recalc.acl_share, recalc.acl_member IN ACCESS SHARE MODE`); err != nil {
			return fmt.Errorf("lock the share tables for reading: %w", err)
		}
		return read(tx)
	})
}

// WriteCSV writes every (object, record, user, access) with access
// above none, sorted in byte order, as CSV with a header. Rows stream:
// the first is written once the records are sorted, not once every
// level is computed, and the output is flushed every 64 KiB.
func WriteCSV(ctx context.Context, q pg.Querier, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	bw.WriteString("object,record,user,access\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write access: %w", err)
	}
	rows, err := q.Query(ctx, streamSQL)
	if err != nil {
		return fmt.Errorf("read access: %w", err)
	}
	defer rows.Close()
	var object, record, user string
	var level int16
	for rows.Next() {
		if err := rows.Scan(&object, &record, &user, &level); err != nil {
			return fmt.Errorf("read access: %w", err)
		}
		CSVField(bw, object)
		bw.WriteByte(',')
		CSVField(bw, record)
		bw.WriteByte(',')
		CSVField(bw, user)
		bw.WriteByte(',')
		bw.WriteString(levelNames[level])
		bw.WriteByte('\n')
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read access: %w", err)
	}
	return bw.Flush()
}

// CSVField writes s, quoted as RFC 4180 requires when it holds a comma,
// quote or line break, and only then: every CSV output of recalc's quotes
// fields so (encoding/csv would also quote a leading space, or `\.`).
func CSVField(w *bufio.Writer, s string) {
	if !strings.ContainsAny(s, ",\"\r\n") {
		w.WriteString(s)
		return
	}
	w.WriteByte('"')
	w.WriteString(strings.ReplaceAll(s, `"`, `""`))
	w.WriteByte('"')
}

// Level returns the access user has to record ("none" when either is
// unknown), through the recalc.access_level SQL function.
func Level(ctx context.Context, q pg.Querier, user, record string) (string, error) {
	var l string
	if err := q.QueryRow(ctx, `SELECT recalc.access_level($1, $2)`, user, record).Scan(&l); err != nil {
		return "", fmt.Errorf("access of %q to %q: %w", user, record, err)
	}
	return l, nil
}

// Stats summarises the materialized tables.
type Stats struct {
	Records   int64            `json:"records"`
	Users     int64            `json:"active_users"`
	Closure   int64            `json:"closure_rows"`
	ShareRows int64            `json:"share_rows"`
	ByCause   map[string]int64 `json:"share_rows_by_cause"`
}

// ReadStats counts the materialized rows.
func ReadStats(ctx context.Context, q pg.Querier) (*Stats, error) {
	s := &Stats{ByCause: map[string]int64{}}
	err := q.QueryRow(ctx, `SELECT (SELECT count(*) FROM recalc.acl_record), (SELECT count(*) FROM recalc.acl_user),
		(SELECT count(*) FROM recalc.acl_member)`).Scan(&s.Records, &s.Users, &s.Closure)
	if err != nil {
		return nil, fmt.Errorf("count materialized rows: %w", err)
	}
	rows, err := q.Query(ctx, `SELECT CASE WHEN cause LIKE 'apex:%' THEN 'apex' ELSE cause END, count(*)
		FROM recalc.acl_share GROUP BY 1 ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("count share rows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c string
		var n int64
		if err := rows.Scan(&c, &n); err != nil {
			return nil, fmt.Errorf("count share rows: %w", err)
		}
		s.ByCause[c] = n
		s.ShareRows += n
	}
	return s, rows.Err()
}
