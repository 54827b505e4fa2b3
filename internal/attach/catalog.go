package attach

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// target is an entry of the spec checked against the database: the rows
// to register for it in recalc.attachment and recalc.attach_capture.
type target struct {
	Object
	source       string // schema.name, quoted
	relid        uint32
	isView       bool
	idType       string // text, bigint, integer, uuid or bpchar (char(n)), as recalc.attachment.id_type
	parentObject string
	captures     []capture
	users        *Users    // the users' columns, for the users' attachment
	rel          *relation // the table or view, as the catalog had it
	fingerprint  []byte    // what the installed capture depends on: equal means unchanged
}

// capture is a table whose writes are captured for a target.
type capture struct {
	Relid  uint32   `json:"relid"`
	Source string   `json:"source"`
	KeyCol string   `json:"key"`
	Func   string   `json:"func"`
	Cols   []string `json:"cols"`
	Types  []uint32 `json:"types"`
	Colls  []uint32 `json:"colls"`
}

// relation is a table or view as the catalog has it.
type relation struct {
	relid               uint32
	kind                string // pg_class.relkind
	inherits            bool   // it has children, or a parent (partitions included)
	subscribed          bool   // a subscription of logical replication writes it
	source              string // schema.name, quoted
	ownedByMe           bool
	invoker             bool // a view with security_invoker: its tables are checked as the reading role
	canSelect, canTrigg bool
	cols                map[string]column
}

// column is a column's type: its oid, and its name when it is a type of
// pg_catalog (empty otherwise); and its collation, and whether that
// collation is nondeterministic (equal strings that differ).
type column struct {
	typ    uint32
	name   string
	shown  string // as format_type shows it, schema-qualified when needed
	base   string // for a domain, its base type's name when that is a type of pg_catalog, through domains over domains
	coll   uint32
	nondet bool
}

// Column types an attachment may read: only pg_catalog's, whose casts to
// text and jsonb no other role can redefine.
var (
	keyTypes   = map[string]string{"text": "text", "varchar": "text", "bpchar": "bpchar", "int8": "bigint", "int4": "integer", "uuid": "uuid"}
	fieldTypes = []string{"bool", "int2", "int4", "int8", "numeric", "float4", "float8", "text", "varchar", "bpchar",
		"date", "timestamp", "timestamptz", "uuid"}
	territoryTypes = []string{"_text", "_varchar"}
)

// readRelation looks up schema.name; nil when there is none.
func readRelation(ctx context.Context, tx pgx.Tx, table string) (*relation, error) {
	schema, name, err := splitTable(table)
	if err != nil {
		return nil, err
	}
	r := relation{cols: map[string]column{}}
	err = tx.QueryRow(ctx, `
		SELECT c.oid, c.relkind::text, format('%I.%I', n.nspname, c.relname), c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user),
		       has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'TRIGGER'),
		       c.relispartition OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid),
		       EXISTS (SELECT 1 FROM pg_subscription_rel s WHERE s.srrelid = c.oid),
		       coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) o WHERE o.option_name = 'security_invoker'), false)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, schema, name).
		Scan(&r.relid, &r.kind, &r.source, &r.ownedByMe, &r.canSelect, &r.canTrigg, &r.inherits, &r.subscribed, &r.invoker)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", table, err)
	}
	rows, err := tx.Query(ctx, `
		SELECT a.attname, a.atttypid, CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN t.typname::text ELSE '' END,
		       format_type(a.atttypid, NULL),
		       coalesce((WITH RECURSIVE d (oid, n) AS (SELECT t.typbasetype, 1 WHERE t.typtype = 'd'
		                        UNION ALL SELECT b.typbasetype, d.n + 1 FROM d JOIN pg_type b ON b.oid = d.oid WHERE b.typtype = 'd' AND d.n < 100)
		                 SELECT b.typname::text FROM d JOIN pg_type b ON b.oid = d.oid
		                 WHERE b.typtype <> 'd' AND b.typnamespace = 'pg_catalog'::regnamespace), ''),
		       a.attcollation, coalesce(NOT l.collisdeterministic, false)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_collation l ON l.oid = a.attcollation
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, r.relid)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table, err)
	}
	var col string
	var c column
	if _, err := pgx.ForEachRow(rows, []any{&col, &c.typ, &c.name, &c.shown, &c.base, &c.coll, &c.nondet}, func() error { r.cols[col] = c; return nil }); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table, err)
	}
	return &r, nil
}

// column checks that table has column col of one of the types allowed.
func (r *relation) column(table, what, col string, allowed []string) (column, error) {
	c, ok := r.cols[col]
	if !ok {
		return c, fmt.Errorf("%s column %q does not exist in %s%s", what, col, table, r.nearColumn(col))
	}
	if !slices.Contains(allowed, c.name) {
		names := make([]string, len(allowed))
		for i, a := range allowed {
			names[i] = sqlType(a)
		}
		hint := ""
		switch {
		case c.name == "" && slices.Contains(allowed, c.base):
			// A domain over a type recalc reads: cast it to that type, so
			// that its values keep their JSON type (a number, a boolean,
			// ISO 8601), never to text, which conditions compare as strings.
			hint = fmt.Sprintf("; it is a domain over %s: attach a view over %s that casts the column to it, such as %s::%s AS %s",
				sqlType(c.base), table, pgx.Identifier{col}.Sanitize(), c.base, pgx.Identifier{col}.Sanitize())
		case c.name == "":
			hint = fmt.Sprintf("; for a type of the application's own (an enum, a domain), attach a view over %s that casts the column, such as %s::text AS %s",
				table, pgx.Identifier{col}.Sanitize(), pgx.Identifier{col}.Sanitize())
		}
		return c, fmt.Errorf("%s column %q of %s is of type %s, which recalc cannot read: use one of %s (PostgreSQL's own types)%s",
			what, col, table, c.shown, strings.Join(names, ", "), hint)
	}
	return c, nil
}

// sqlType is the SQL name of a pg_catalog type's internal name (int8 is
// bigint); "" stands for a type outside pg_catalog.
func sqlType(name string) string {
	switch name {
	case "":
		return "one not in pg_catalog"
	case "int8":
		return "bigint"
	case "int4":
		return "integer"
	case "int2":
		return "smallint"
	case "bool":
		return "boolean"
	case "float8":
		return "double precision"
	case "float4":
		return "real"
	case "timestamptz":
		return "timestamp with time zone"
	}
	return name
}

// uniqueOn reports whether a valid, not deferrable unique index or
// constraint covers the column alone (the capture checks it again).
func uniqueOn(ctx context.Context, tx pgx.Tx, relid uint32, col string) (bool, error) {
	var ok bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (
		SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = $1 AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL
		  AND a.attname = $2)`, relid, col).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up unique indexes: %w", err)
	}
	return ok, nil
}

// viewReads checks what a view's query depends on: only functions,
// operators and text search configurations and dictionaries of pg_catalog
// (the capture runs it with the engine's rights, functions in a view run
// as the caller, and another owner's configuration could change what it
// shows with no write), and only tables, which it
// returns by oid with their names and how many times the view reads each.
func viewReads(ctx context.Context, tx pgx.Tx, relid uint32, view string) (map[uint32]viewRead, error) {
	// A function, an operator, or a text search configuration or
	// dictionary, whose owner can change what the view shows (ALTER TEXT
	// SEARCH CONFIGURATION ... ALTER MAPPING) with no write and no catalog
	// row the fingerprints follow: the first not of pg_catalog.
	var textSearch bool
	var foreign string
	err := tx.QueryRow(ctx, `
		SELECT g.oid IS NOT NULL OR t.oid IS NOT NULL,
		       coalesce(p.oid::regprocedure::text, o.oid::regoperator::text,
		                'configuration ' || g.oid::regconfig::text, 'dictionary ' || t.oid::regdictionary::text)
		FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
		LEFT JOIN pg_proc p ON d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid
		LEFT JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
		LEFT JOIN pg_ts_config g ON d.refclassid = 'pg_ts_config'::regclass AND g.oid = d.refobjid
		LEFT JOIN pg_ts_dict t ON d.refclassid = 'pg_ts_dict'::regclass AND t.oid = d.refobjid
		WHERE r.ev_class = $1 AND (p.pronamespace <> 'pg_catalog'::regnamespace OR o.oprnamespace <> 'pg_catalog'::regnamespace
		   OR g.cfgnamespace <> 'pg_catalog'::regnamespace OR t.dictnamespace <> 'pg_catalog'::regnamespace)
		ORDER BY 1
		LIMIT 1`, relid).Scan(&textSearch, &foreign)
	switch {
	case err == nil && textSearch:
		return nil, fmt.Errorf("view %s uses text search %s, which is not PostgreSQL's own: its owner could change what the view shows without writing a row; use one of pg_catalog's", view, foreign)
	case err == nil:
		return nil, fmt.Errorf("view %s calls %s, which is not PostgreSQL's own: recalc reads the view with its own rights, so it may call only pg_catalog functions and operators", view, foreign)
	case err != pgx.ErrNoRows:
		return nil, fmt.Errorf("read dependencies of view %s: %w", view, err)
	}
	// How many times the view reads each table: its range table entries
	// of the relation, counted in the stored rule's text (":rtekind 0
	// :relid N" in PostgreSQL 15 and 16).
	rows, err := tx.Query(ctx, `
		SELECT DISTINCT c.oid, c.relkind::text, c.oid::regclass::text, regexp_count(r.ev_action::text, ':rtekind 0 :relid ' || c.oid || ' ')
		FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
		JOIN pg_class c ON d.refclassid = 'pg_class'::regclass AND c.oid = d.refobjid
		WHERE r.ev_class = $1 AND c.oid <> $1`, relid)
	if err != nil {
		return nil, fmt.Errorf("read tables of view %s: %w", view, err)
	}
	tables := map[uint32]viewRead{}
	var oid uint32
	var kind string
	var read viewRead
	_, err = pgx.ForEachRow(rows, []any{&oid, &kind, &read.name, &read.times}, func() error {
		switch kind {
		case "r":
		case "c":
			return fmt.Errorf("view %s reads a field of the composite type %s: attach a view that reads only tables' columns (a column of that type as a whole, col::text, may be read)", view, read.name)
		default:
			return fmt.Errorf("view %s reads %s, which is not a table: attach a view over tables only", view, read.name)
		}
		tables[oid] = read
		return nil
	})
	return tables, err
}

// viewRead is a table a view reads, and how many times.
type viewRead struct {
	name  string
	times int
}

// funcName names the capture function of object on table relid: short
// enough for the trigger names derived from it, and the same on every apply.
func funcName(object string, relid uint32) string {
	h := sha256.Sum256([]byte(object))
	return fmt.Sprintf("attach_%x_%d", h[:6], relid)
}

// setFingerprint records what the installed capture depends on.
func (t *target) setFingerprint() error {
	b, err := json.Marshal(struct {
		Spec     Object    `json:"spec"`
		Source   string    `json:"source"`
		Relid    uint32    `json:"relid"`
		Captures []capture `json:"captures"`
		Users    *Users    `json:"users,omitempty"` // recalc.attach_users_sync reads its type and active
	}{t.Object, t.source, t.relid, t.captures, t.users})
	t.fingerprint = b
	return err
}

// nearColumn names the column that col would be with its case or quotes
// corrected (a spec names columns as the catalog spells them, unquoted:
// "Rating", not "rating" nor "\"Rating\""), or returns "".
func (r *relation) nearColumn(col string) string {
	want := strings.ToLower(strings.Trim(col, `"`))
	var near []string
	for name := range r.cols {
		if strings.ToLower(name) == want {
			near = append(near, name)
		}
	}
	if len(near) != 1 {
		return ""
	}
	return fmt.Sprintf(": did you mean %q? (names as the catalog spells them, unquoted and case-sensitive)", near[0])
}
