package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// CopyLimit is the physical limit: the fastest way this server takes the
// rows a full recalculation produces (every materialized table a full run
// rebuilds: acl_share, acl_record, acl_member) from a binary COPY dump into
// identically indexed tables. Two ways are timed, COPY into the indexed
// tables and COPY into bare tables followed by building the indexes, and
// the faster counts.
type CopyLimit struct {
	Seconds    float64 `json:"s"` // the faster of the two
	Method     string  `json:"method"`
	IndexedS   float64 `json:"copy_into_indexed_s"`
	IndexLastS float64 `json:"copy_then_index_s"`
	Rows       int64   `json:"rows"`
	Ratio      float64 `json:"rows_per_s_vs_full"` // recalc's rows/s over COPY's: copy time / full time
}

// fullTables are the tables a full recalculation rebuilds, with their rows.
var fullTables = []string{"acl_share", "acl_record", "acl_member"}

func rawCopy(ctx context.Context, pool *pgxpool.Pool, dir string) (CopyLimit, error) {
	var out CopyLimit
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return out, err
	}
	defer conn.Release()
	files := map[string]string{}
	defer func() {
		for _, path := range files {
			os.Remove(path)
		}
	}()
	if out.Rows, err = dumpTables(ctx, conn, dir, files); err != nil {
		return out, err
	}
	indexed, err := loadDumps(ctx, conn, files, true)
	if err != nil {
		return out, err
	}
	last, err := loadDumps(ctx, conn, files, false)
	if err != nil {
		return out, err
	}
	if _, err := conn.Exec(ctx, `DROP SCHEMA bench_copy CASCADE`); err != nil {
		return out, err
	}
	out.IndexedS, out.IndexLastS = indexed.Seconds(), last.Seconds()
	out.Seconds, out.Method = out.IndexedS, "COPY into indexed tables"
	if last < indexed {
		out.Seconds, out.Method = out.IndexLastS, "COPY, then CREATE INDEX"
	}
	return out, nil
}

// dumpTables dumps each of fullTables in binary COPY format into a file in
// dir, noted in files, and returns the number of rows dumped.
func dumpTables(ctx context.Context, conn *pgxpool.Conn, dir string, files map[string]string) (int64, error) {
	var rows int64
	for _, t := range fullTables {
		path := filepath.Join(dir, t+".copy")
		f, err := os.Create(path)
		if err != nil {
			return 0, err
		}
		files[t] = path
		tag, err := conn.Conn().PgConn().CopyTo(ctx, f, `COPY recalc.`+t+` TO STDOUT (FORMAT binary)`)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, fmt.Errorf("dump %s: %w", t, err)
		}
		rows += tag.RowsAffected()
	}
	return rows, nil
}

// loadDumps times loading the dumps into fresh copies of the tables in
// schema bench_copy: indexed first, or bare and indexed after.
func loadDumps(ctx context.Context, conn *pgxpool.Conn, files map[string]string, indexFirst bool) (time.Duration, error) {
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS bench_copy CASCADE; CREATE SCHEMA bench_copy`); err != nil {
		return 0, err
	}
	start := time.Now()
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, t := range fullTables {
			like := "INCLUDING DEFAULTS"
			if indexFirst {
				like = "INCLUDING ALL"
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE bench_copy.%s (LIKE recalc.%[1]s %s)`, t, like)); err != nil {
				return err
			}
			f, err := os.Open(files[t])
			if err != nil {
				return err
			}
			_, err = tx.Conn().PgConn().CopyFrom(ctx, f, `COPY bench_copy.`+t+` FROM STDIN (FORMAT binary)`)
			f.Close()
			if err != nil {
				return fmt.Errorf("copy %s: %w", t, err)
			}
			if indexFirst {
				continue
			}
			defs, err := indexDefs(ctx, tx, t)
			if err != nil {
				return err
			}
			for _, d := range defs {
				if _, err := tx.Exec(ctx, d); err != nil {
					return fmt.Errorf("index %s: %w", t, err)
				}
			}
		}
		return nil
	})
	return time.Since(start), err
}

// indexDefs returns the definitions of recalc.table's indexes, rewritten
// for its copy in bench_copy.
func indexDefs(ctx context.Context, tx pgx.Tx, table string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'recalc' AND tablename = $1`, table)
	if err != nil {
		return nil, err
	}
	defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for i, d := range defs {
		from := " ON recalc." + table + " "
		if !strings.Contains(d, from) {
			return nil, fmt.Errorf("unexpected index definition %q", d)
		}
		defs[i] = strings.Replace(d, from, " ON bench_copy."+table+" ", 1)
	}
	return defs, nil
}
