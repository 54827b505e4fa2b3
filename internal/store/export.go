package store

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
)

// Revision identifies the stored configuration sections: a hash of them,
// so it is the same after an import that changes none of them, and
// differs after one that does. Records, shares and team entries, which the
// application also writes with plain SQL, are not part of it.
func Revision(ctx context.Context, q pg.Querier) (string, error) {
	var rev string
	err := q.QueryRow(ctx, `SELECT left(encode(sha256(convert_to(
		coalesce(string_agg(name || ':' || doc::text, E'\n' ORDER BY name), ''), 'UTF8')), 'hex'), 16)
		FROM recalc.model_section`).Scan(&rev)
	if err != nil {
		return "", fmt.Errorf("read model revision: %w", err)
	}
	return rev, nil
}

// ExportCounts says what an export wrote.
type ExportCounts struct {
	Revision               string
	Sections               []string
	Records, Shares, Teams int64
}

// Export writes the stored model to w in the model file format, with the
// sections listed (all when none), from one snapshot. Records, shares and
// team entries are streamed in key order, so memory stays bounded however
// many there are. Importing the file gives back the same stored model. The
// records of attached objects are left out: they are the application's rows.
func Export(ctx context.Context, pool *pgxpool.Pool, w io.Writer, sections []string) (*ExportCounts, error) {
	if len(sections) == 0 {
		sections = append(slices.Clone(model.ConfigSections), model.DataSections...)
	}
	res := &ExportCounts{}
	bw := bufio.NewWriterSize(w, 1<<16)
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if res.Revision, err = Revision(ctx, tx); err != nil {
			return err
		}
		fmt.Fprintf(bw, "{\"version\": 1,\n\"revision\": %q", res.Revision)
		for _, sec := range sections {
			if slices.Contains(model.DataSections, sec) {
				res.Sections = append(res.Sections, sec)
				if err := exportData(ctx, tx, bw, sec, res); err != nil {
					return err
				}
				continue
			}
			doc, err := storedSection(ctx, tx, sec)
			if err != nil {
				return err
			}
			if doc != nil { // a section never imported stays absent
				res.Sections = append(res.Sections, sec)
				fmt.Fprintf(bw, ",\n%q: %s", sec, doc)
			}
		}
		bw.WriteString("}\n")
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("write export: %w", err)
	}
	return res, nil
}

// storedSection is the stored configuration section name, nil when it was
// never imported.
func storedSection(ctx context.Context, q pg.Querier, name string) ([]byte, error) {
	var doc []byte
	err := q.QueryRow(ctx, `SELECT doc::text FROM recalc.model_section WHERE name = $1`, name).Scan(&doc)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read section %s: %w", name, err)
	}
	return doc, nil
}

// Exported entries of the large sections, in the model file format.
type (
	recordOut struct {
		Object      string          `json:"object"`
		ID          string          `json:"id"`
		Owner       string          `json:"owner"`
		Parent      string          `json:"parent,omitempty"`
		Fields      json.RawMessage `json:"fields"`
		Territories []string        `json:"territories,omitempty"`
	}
	shareOut struct {
		Object  string      `json:"object"`
		Record  string      `json:"record"`
		Grantee string      `json:"grantee"`
		Access  model.Level `json:"access"`
		Cause   string      `json:"cause"`
	}
	teamOut struct {
		Record      string       `json:"record"`
		User        string       `json:"user"`
		Access      model.Level  `json:"access"`
		Contact     *model.Level `json:"contact_access,omitempty"`
		Opportunity *model.Level `json:"opportunity_access,omitempty"`
		Case        *model.Level `json:"case_access,omitempty"`
	}
)

// exportData streams the large section sec to w, one entry a line.
func exportData(ctx context.Context, tx pgx.Tx, w *bufio.Writer, sec string, res *ExportCounts) error {
	enc := json.NewEncoder(w) // one entry and a newline per call
	enc.SetEscapeHTML(false)
	fmt.Fprintf(w, ",\n%q: [", sec)
	var n int64
	sep := func() {
		if n > 0 {
			w.WriteByte(',')
		}
		w.WriteByte('\n')
		n++
	}
	var err error
	switch sec {
	case "records":
		var r recordOut
		var parent *string
		// The records of attached objects are the application's rows: an
		// import keeps them, and refuses a file that writes them.
		err = forEach(ctx, tx, `SELECT object, id, owner, parent, fields::text, `+changes.ReadTerritories("territories")+` FROM recalc.record r
			WHERE NOT EXISTS (SELECT 1 FROM recalc.attachment a WHERE a.object = r.object) ORDER BY id`,
			[]any{&r.Object, &r.ID, &r.Owner, &parent, &r.Fields, &r.Territories}, func() error {
				r.Parent = ""
				if parent != nil {
					r.Parent = *parent
				}
				sep()
				return enc.Encode(&r)
			})
		res.Records = n
	case "shares":
		var s shareOut
		err = forEach(ctx, tx, `SELECT object, record, grantee, access, cause FROM recalc.share_input ORDER BY record, grantee, cause`,
			[]any{&s.Object, &s.Record, &s.Grantee, &s.Access, &s.Cause}, func() error { sep(); return enc.Encode(&s) })
		res.Shares = n
	case "teams":
		var t teamOut
		var c, o, k model.Level
		err = forEach(ctx, tx, `SELECT record, user_id, access, contact_access, opportunity_access, case_access FROM recalc.team ORDER BY record, user_id`,
			[]any{&t.Record, &t.User, &t.Access, &c, &o, &k}, func() error {
				t.Contact, t.Opportunity, t.Case = nonZero(&c), nonZero(&o), nonZero(&k)
				sep()
				return enc.Encode(&t)
			})
		res.Teams = n
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", sec, err)
	}
	_, err = w.WriteString("]")
	return err
}

func nonZero(l *model.Level) *model.Level {
	if *l == model.None {
		return nil
	}
	return l
}

// forEach runs sql and calls fn after scanning each row into dst.
func forEach(ctx context.Context, tx pgx.Tx, sql string, dst []any, fn func() error) error {
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return err
	}
	_, err = pgx.ForEachRow(rows, dst, fn)
	return err
}
