package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/schema"
)

// accessCommand prints access from the materialized tables: `recalc access`.
func accessCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "access",
		Usage: "print access read from the materialized tables (no recomputation)",
		Description: "With --format csv alone: every (object, record, active user) with access above none,\n" +
			"sorted by object, record, user in byte order, printed as it is computed.\n" +
			"With --user and --record: the access level of one user to one record; exit 1 with one\n" +
			"line when the user or the record does not exist. --object O --id ID names the record by\n" +
			"the application's id instead (42 for the record account:42 of an attached object).\n" +
			"With --user and --object: one page of the records of the object the user can access at\n" +
			"--min-level or above, in record id order, after --after, at most --limit (1 to 10000).\n" +
			"For an attached object, the ids listed and --after are the application's.\n" +
			"A full page is followed by a note (on standard error) of the --after that continues it;\n" +
			"a shorter page is the last. --format csv prints record,level rows; json one object\n" +
			"{\"records\": [...], \"next_after\": ID or null}; text, one line per record.\n" +
			"All access, and a page, are each read as of one moment (one snapshot); all access printed\n" +
			"while a job is unfinished is of the middle of the job, which a warning says (docs/rls.md).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Usage: "csv: all access as CSV (alone), or a page as CSV; json or text for a page"},
			idFlag(&cli.StringFlag{Name: "user", Usage: "user id, with --record or --object"}),
			idFlag(&cli.StringFlag{Name: "record", Usage: "record id, with --user"}),
			idFlag(&cli.StringFlag{Name: "object", Usage: "object, with --user: list the records the user can access"}),
			idFlag(&cli.StringFlag{Name: "id", Usage: "with --user and --object: the application's id of one record"}),
			&cli.StringFlag{Name: "min-level", Value: "read", Usage: "with --object: read, edit or all"},
			idFlag(&cli.StringFlag{Name: "after", Usage: "with --object: list records after this id (the last of the previous page)"}),
			&cli.IntFlag{Name: "limit", Value: 1000, Usage: "with --object: records per page, 1 to 10000"},
		},
		Action: func(c *cli.Context) error {
			user, record, object, format := c.String("user"), c.String("record"), c.String("object"), c.String("format")
			id := c.String("id")
			if !slices.Contains([]string{"", "text", "csv", "json"}, format) {
				return usageError(c, fmt.Errorf("--format must be text, csv or json, not %.100q", format), false)
			}
			// A flag given empty is given (a script's unset variable): read
			// as absent, --id "" listed a page of records instead of one
			// level, and --format csv --user "" --object "" all access.
			u, r, o, i := c.IsSet("user"), c.IsSet("record"), c.IsSet("object"), c.IsSet("id")
			// The page's flags beside all access or one level were ignored:
			// --format csv --min-level edit printed every read row too.
			pageFlags := c.IsSet("min-level") || c.IsSet("after") || c.IsSet("limit")
			one := u && (r && !o && !i || !r && o && i)
			switch {
			case format == "csv" && !u && !r && !o && !i && !pageFlags:
				return action(out, errOut, AccessCSV)(c)
			case format == "" && one && !pageFlags:
				return action(out, errOut, func(ctx context.Context, env *Env) error { return AccessOne(ctx, env, user, object, id, record) })(c)
			case u && o && !r && !i:
				p := accessPage{user: user, object: object, minLevel: c.String("min-level"), limit: c.Int("limit"), format: format}
				if c.IsSet("after") { // "" is an id
					after := c.String("after")
					p.after = &after
				}
				if err := p.check(); err != nil {
					return usageError(c, err, false)
				}
				return action(out, errOut, func(ctx context.Context, env *Env) error { return AccessList(ctx, env, p) })(c)
			}
			switch {
			case pageFlags && (one || format == "csv" && !u && !r && !o && !i):
				return cli.Exit("recalc access: --min-level, --after and --limit apply to a page: give them with --user U and --object O only", ExitUsage)
			case one:
				return cli.Exit("recalc access: one level is printed alone, as none, read, edit or all: leave out --format", ExitUsage)
			}
			return cli.Exit("recalc access: give --format csv alone, --user U and --record R (or --object O --id ID), or --user U and --object O", ExitUsage)
		},
	}
}

// accessPage is a request for one page of a user's visible records.
type accessPage struct {
	user, object, minLevel string
	after                  *string // nil: from the start
	limit                  int
	format                 string // csv, json or text ("" is text)
}

func (p *accessPage) check() error {
	switch {
	case p.minLevel != "read" && p.minLevel != "edit" && p.minLevel != "all":
		return fmt.Errorf("--min-level must be read, edit or all, not %.100q", p.minLevel)
	case p.limit < 1 || p.limit > access.MaxPage:
		return fmt.Errorf("--limit must be between 1 and %d, not %d", access.MaxPage, p.limit)
	}
	return nil
}

// AccessCSV prints all access as CSV, streaming, all of one moment
// (access.InSnapshot). It warns when a job was unfinished at that moment:
// until its finish, the access printed is at no level above the greater
// of the models before and after it, and may be below both (docs/semantics.md).
func AccessCSV(ctx context.Context, env *Env) error {
	if err := checkRecalculated(ctx, env); err != nil {
		return err
	}
	return access.InSnapshot(ctx, env.Pool, func(tx pgx.Tx) error {
		job, err := queue.Unfinished(ctx, tx)
		if err != nil {
			return err
		}
		if job != nil {
			env.Log.Warn().Int64("job", job.ID).Str("status", string(job.Status)).Bool("paused", job.Paused).
				Msg("a recalculation job is unfinished: the access printed is mid-job, never above the greater of the models before and after it, and maybe below both; " +
					"print it again once the job is done (`recalc status`)")
		}
		return access.WriteCSV(ctx, tx, env.Out)
	})
}

// checkRecalculated checks the schema's version, and warns when nothing
// has been recalculated yet: after `recalc import` alone, access printed
// none, or no row, with no hint why.
func checkRecalculated(ctx context.Context, env *Env) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	ran, err := store.Recalculated(ctx, env.Pool)
	if err != nil {
		return err
	}
	if !ran {
		env.Log.Warn().Msg("nothing has been recalculated yet, so no one has access: run `recalc run`")
	}
	return nil
}

// AccessOne prints one user's access level to one record, named by its key
// or by an object and the application's id, and fails when either does not
// exist.
func AccessOne(ctx context.Context, env *Env, user, object, id, record string) error {
	if err := checkRecalculated(ctx, env); err != nil {
		return err
	}
	record, err := recordKey(ctx, env, object, id, record)
	if err != nil {
		return err
	}
	l, err := access.CheckLevel(ctx, env.Pool, user, record)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.Out, l)
	return err
}

// recordKey is record, or the key of the record the application calls id
// in object when they are given (an empty id is an id).
func recordKey(ctx context.Context, env *Env, object, id, record string) (string, error) {
	if object == "" && id == "" {
		return record, nil
	}
	return access.RecordKey(ctx, env.Pool, object, id)
}

// AccessList prints one page of the records of an object a user can access.
func AccessList(ctx context.Context, env *Env, p accessPage) error {
	if err := checkRecalculated(ctx, env); err != nil {
		return err
	}
	var page []access.Visible
	// One snapshot: a page may take several calls of recalc.visible_ids.
	err := access.InSnapshot(ctx, env.Pool, func(tx pgx.Tx) error {
		if err := access.CheckUserObject(ctx, tx, p.user, p.object); err != nil {
			return err
		}
		var err error
		page, err = access.VisiblePage(ctx, tx, p.user, p.object, p.minLevel, p.after, p.limit)
		return err
	})
	if err != nil {
		return err
	}
	var next *string
	if len(page) == p.limit {
		next = &page[len(page)-1].Record
		env.Log.Info().Str("next_after", *next).Int("records", len(page)).Msg("page full: continue with --after")
	}
	switch p.format {
	case "json":
		if page == nil {
			page = []access.Visible{}
		}
		return json.NewEncoder(env.Out).Encode(struct {
			Records   []access.Visible `json:"records"`
			NextAfter *string          `json:"next_after"`
		}{page, next})
	case "csv":
		w := bufio.NewWriter(env.Out)
		w.WriteString("record,level\n")
		for _, v := range page {
			access.CSVField(w, v.Record)
			w.WriteString("," + v.Level + "\n")
		}
		return w.Flush()
	}
	for _, v := range page {
		fmt.Fprintf(env.Out, "%s\t%s\n", shown(v.Record), v.Level)
	}
	return nil
}

// rlsCommand installs or removes row-level security policies: `recalc rls`.
func rlsCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:        "rls",
		Usage:       "install or remove row-level security policies that filter an application table by recalc's access",
		Subcommands: []*cli.Command{rlsEnableCommand(out, errOut), rlsDisableCommand(out, errOut)},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return cli.ShowSubcommandHelp(c)
			}
			return usageError(c, fmt.Errorf("unknown subcommand %.100q: give enable or disable", c.Args().First()), false)
		},
	}
}

func rlsEnableCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "enable",
		Usage: "enable row-level security on TABLE so a session sees only the rows its user may read",
		Description: "Installs policy recalc_read: a session sees the rows whose record (the id column, as text)\n" +
			"its user may read. The user comes from --user-setting (a session sets it with\n" +
			"SET LOCAL app.user_id = 'u1' or set_config; any session can set any user, so end users must\n" +
			"never run SQL: SECURITY.md) or, with --user-from-role, from current_user.\n" +
			"Without --write, UPDATE and DELETE touch no row and INSERT fails for roles under the policy:\n" +
			"--write lets a session update and delete the rows its user may edit, --insert-role ROLE lets\n" +
			"ROLE insert any row, --owner-column COL lets a user read and change the rows it owns. On an\n" +
			"attached table they come with a write guard (a trigger): an owner or id change needs all access\n" +
			"(the attached owner column's, and --owner-column's), a new or changed parent must be readable,\n" +
			"and the writing role needs `recalc grant reader`.\n" +
			"OBJECT must be in the stored model; the id column must be text, varchar, char, smallint,\n" +
			"integer, bigint or uuid. Readers need `recalc grant reader ROLE`. Superusers and BYPASSRLS roles bypass\n" +
			"row-level security, and so do reads as the table's owner unless --force (FORCE ROW LEVEL\n" +
			"SECURITY): without it, a warning is printed on standard error.\n" +
			"--per-user-plans installs a policy the planner plans for each query's user: a user with few grants\n" +
			"gets its rows by id (a list of 50 reads ~50 rows, not the table). PostgreSQL reuses a prepared\n" +
			"statement's plan, so give it only with --user-from-role (a new role gets a new plan) or where no\n" +
			"prepared list query is reused across users: a broad user on a selective user's plan reads every\n" +
			"row (with --user-setting, a warning says so). A text or varchar id column then needs a\n" +
			"deterministic collation. See docs/rls.md.\n" +
			"It locks the table ACCESS EXCLUSIVE, tried 100 ms at a time (the session's lock_timeout instead\n" +
			"when set: options=-c lock_timeout=30s in the URL, or PGOPTIONS) for 10 s, then fails naming the\n" +
			"sessions seen blocking it (docs/operations.md, \"The session's lock_timeout\").",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "table", Required: true, Usage: "application table, TABLE or SCHEMA.TABLE, names as the catalog spells them, unquoted (ws.workspaceMember); a name holding a dot cannot be given: rename it"},
			idFlag(&cli.StringFlag{Name: "object", Required: true, Usage: "the recalc object its rows are records of"}),
			&cli.StringFlag{Name: "user-setting", Usage: "custom setting holding the current user id, e.g. app.user_id"},
			&cli.BoolFlag{Name: "user-from-role", Usage: "take the user id from current_user, not from a setting"},
			&cli.StringFlag{Name: "id-column", Value: "id", Usage: "column holding the record id"},
			&cli.BoolFlag{Name: "write", Usage: "also install UPDATE and DELETE policies: rows the user may edit (on an attached table, an owner or id change needs all, and a parent must be readable)"},
			&cli.StringFlag{Name: "insert-role", Usage: "role that may INSERT any row (the application's role; it needs recalc grant reader, and on an attached table the write guard checks its rows)"},
			&cli.StringFlag{Name: "owner-column", Usage: "column holding the row owner's user id: owners may read and change their rows"},
			&cli.BoolFlag{Name: "force", Usage: "apply the policies to the table's owner too (FORCE ROW LEVEL SECURITY)"},
			&cli.BoolFlag{Name: "per-user-plans", Usage: "plan each query for its user: a selective user's rows are fetched by id (see the description)"},
		},
		Action: func(c *cli.Context) error {
			r := &access.RLS{Table: c.String("table"), Object: c.String("object"), IDColumn: c.String("id-column"),
				UserSetting: c.String("user-setting"), UserFromRole: c.Bool("user-from-role"),
				Write: c.Bool("write"), InsertRole: c.String("insert-role"), OwnerColumn: c.String("owner-column"), Force: c.Bool("force"),
				PerUserPlans: c.Bool("per-user-plans")}
			if !r.UserFromRole && r.UserSetting == "" {
				return usageError(c, errors.New("say where the current user comes from: --user-setting app.user_id or --user-from-role"), false)
			}
			if err := r.Validate(); err != nil {
				return usageError(c, err, false)
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error { return enableRLS(ctx, env, errOut, r) })(c)
		},
	}
}

// enableRLS installs r's policies, warns of the reads that would bypass
// them or that they would block, and says what it did.
func enableRLS(ctx context.Context, env *Env, errOut io.Writer, r *access.RLS) error {
	// Ownership first: it reads only the catalog, and a role that is not
	// the owner gains nothing by taking recalc's engine role, which
	// schema.Check's refusal would tell it to.
	if err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error { return access.CheckRLSOwner(ctx, tx, r.Table) }); err != nil {
		return err
	}
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	var f rlsFindings
	if err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		if err := access.EnableRLS(ctx, tx, r); err != nil {
			return err
		}
		return f.read(ctx, tx, r)
	}); err != nil {
		return err
	}
	f.warn(errOut, r)
	user := fmt.Sprintf("current_setting('%s')", r.UserSetting)
	if r.UserFromRole {
		user = "current_user"
	}
	fmt.Fprintf(env.Out, "Row-level security enabled on %s: policy %s shows the rows of %s that %s may read", r.Table, access.PolicyName, r.Object, user)
	if r.Write {
		fmt.Fprint(env.Out, "; UPDATE and DELETE reach the rows it may edit")
	}
	if r.InsertRole != "" {
		fmt.Fprintf(env.Out, "; role %s may INSERT any row", r.InsertRole)
	}
	if r.OwnerColumn != "" {
		fmt.Fprintf(env.Out, "; a user reads, writes and deletes the rows whose %s is its id", r.OwnerColumn)
	}
	fmt.Fprintln(env.Out, ".")
	return nil
}

// rlsFindings is what rls enable warns of, read in the transaction that
// installs the policies.
type rlsFindings struct {
	owner, engine, parent        string
	others, views                []string
	bypass, blocked              bool
	cut                          []access.CutRoleName
	cutTotal                     int
	children, parents, bypassing []string
	attachedViews                []string
}

// read reads f for r's table in tx.
func (f *rlsFindings) read(ctx context.Context, tx pgx.Tx, r *access.RLS) (err error) {
	if f.children, f.parents, err = access.UnprotectedRelatives(ctx, tx, r.Table, 5); err != nil {
		return err
	}
	if f.bypassing, f.attachedViews, err = access.BypassingViews(ctx, tx, r.Table, 5); err != nil {
		return err
	}
	if r.UserFromRole {
		if f.cut, f.cutTotal, err = access.CutRoleNames(ctx, tx, 3); err != nil {
			return err
		}
	}
	if f.owner, f.bypass, err = access.OwnerBypass(ctx, tx, r.Table); err != nil {
		return err
	}
	if f.views, err = access.ViewBases(ctx, tx, r.Table); err != nil {
		return err
	}
	if f.parent, err = access.ParentWithoutKey(ctx, tx, r.Table); err != nil {
		return err
	}
	if f.others, err = access.OtherPolicies(ctx, tx, r.Table, true); err != nil {
		return err
	}
	f.engine, f.blocked, err = access.EngineBlocked(ctx, tx, r.Table)
	return err
}

// warn writes f's warnings for r to errOut.
func (f *rlsFindings) warn(errOut io.Writer, r *access.RLS) {
	view := sharedBaseWarning(errOut, r, f.views)
	if writes := r.Write || r.InsertRole != "" || r.OwnerColumn != ""; writes && view != "" {
		fmt.Fprintf(errOut, "warning: %s is a base table of object %s's attached view: the write guard knows no owner or parent column of it, "+
			"so an editor may change them; add the trigger docs/rls.md gives (\"What the write policies do not check, and the write guard\")\n", r.Table, view)
	} else if writes && f.parent != "" {
		fmt.Fprintf(errOut, "warning: %s's parent column has no foreign key to the table of %s: a user may leave a row under a %s that no longer exists "+
			"and read whatever record later takes its id; declare the foreign key (docs/rls.md, \"What the write policies do not check, and the write guard\")\n", r.Table, f.parent, f.parent)
	}
	if f.blocked {
		fmt.Fprintf(errOut, "warning: %s is attached, and recalc's role %q can no longer read it to absorb its writes, which will wait: "+
			"make it the table's owner, or ALTER ROLE %q BYPASSRLS as a superuser (docs/attach.md)\n", r.Table, f.engine, f.engine)
	}
	if len(f.others) > 0 {
		fmt.Fprintf(errOut, "warning: %s has permissive policies of its own (%s) that admit rows to SELECT: permissive policies add up, "+
			"so a row any of them admits is visible whatever recalc allows; make them restrictive (AS RESTRICTIVE) or drop them\n", r.Table, shown(strings.Join(f.others, ", ")))
	}
	switch {
	case f.bypass && r.Force:
		fmt.Fprintf(errOut, "warning: reads as %s's owner %q bypass these policies and see every row, even with --force (a superuser, or BYPASSRLS): read as another role\n", r.Table, f.owner)
	case f.bypass:
		fmt.Fprintf(errOut, "warning: reads as %s's owner %q bypass these policies and see every row: give --force, or read as another role\n", r.Table, f.owner)
	}
	cutRoleWarning(errOut, f.cut, f.cutTotal)
	if len(f.children) > 0 {
		fmt.Fprintf(errOut, "warning: %s has partitions or inheritance children not under recalc's policies (no row-level security: %s): "+
			"PostgreSQL applies a table's policies only to reads through it, so a role that may read one of them reads all its rows; "+
			"run rls enable on each (and on each partition added later), or grant no privilege on them\n", r.Table, shown(strings.Join(f.children, ", ")))
	}
	if len(f.bypassing) > 0 {
		fmt.Fprintf(errOut, "warning: views over %s show its rows without these policies (%s): PostgreSQL reads a view's tables as the view's owner, "+
			"who bypasses them here, unless the view is security_invoker, and a materialized view holds every row its refresh read; "+
			"ALTER VIEW ... SET (security_invoker = true), or grant no privilege on them\n", r.Table, shown(strings.Join(f.bypassing, ", ")))
	}
	if len(f.attachedViews) > 0 {
		fmt.Fprintf(errOut, "warning: views recalc attaches over %s show its rows without these policies to the roles granted SELECT on them (%s): "+
			"recalc's role owns them and bypasses row-level security, and they may not be security_invoker (recalc reads them as its sandbox role); "+
			"REVOKE SELECT ON %s FROM those roles (docs/rls.md)\n", r.Table, shown(strings.Join(f.attachedViews, ", ")), shown(strings.Join(f.attachedViews, ", ")))
	}
	if len(f.parents) > 0 {
		fmt.Fprintf(errOut, "warning: %s is a partition or inheritance child of %s, which has no row-level security: a read through it sees this table's rows "+
			"without these policies; run rls enable on it too, or grant no privilege on it\n", r.Table, shown(strings.Join(f.parents, ", ")))
	}
	if r.PerUserPlans && !r.UserFromRole {
		fmt.Fprintln(errOut, "warning: with --user-setting, a prepared statement's plan is made for the user it was first planned for: a broad user on a selective user's plan reads every row; reuse no prepared list query across users, or use --user-from-role (docs/rls.md)")
	}
}

// cutRoleWarning warns, under --user-from-role, of the users whose ids are
// longer than a PostgreSQL name (total of them, cut the first few): no role
// is named like them, so they read nothing, and CREATE ROLE cuts such an id
// to its first 63 bytes, which may be another user's id: the role created
// for one user would then read as the other.
func cutRoleWarning(errOut io.Writer, cut []access.CutRoleName, total int) {
	if total == 0 {
		return
	}
	var collide []string
	for _, c := range cut {
		if c.Other != "" {
			collide = append(collide, fmt.Sprintf("%.80q is cut to %.80q", c.User, c.Other))
		}
	}
	fmt.Fprintf(errOut, "warning: users with ids longer than PostgreSQL's %d-byte role names: %d (%.80q first): no role is named like them, so they read nothing, "+
		"and CREATE ROLE cuts such an id to its first %d bytes", pg.MaxName, total, cut[0].User, pg.MaxName)
	if len(collide) > 0 {
		fmt.Fprintf(errOut, ", which is another user's id: the role created for one user reads as the other (%s)", strings.Join(collide, "; "))
	}
	fmt.Fprintln(errOut, "; give such users ids of at most 63 bytes, or take the user from a setting (docs/rls.md)")
}

// sharedBaseWarning warns when r's table is a base table of attached views
// of other objects than r's (vtiger's vtiger_crmentity), whose rows these
// policies would judge as r's records; it returns the object whose view the
// table is a base table of, r's own first ("" when none).
func sharedBaseWarning(errOut io.Writer, r *access.RLS, views []string) string {
	if len(views) == 0 {
		return ""
	}
	if slices.ContainsFunc(views, func(v string) bool { return v != r.Object }) {
		fmt.Fprintf(errOut, "warning: %s is a base table of the attached views of objects %s: its rows belong to records of each, "+
			"and these policies judge every row as a record of %s, so a row of another object is hidden from every user (or, where its id is also "+
			"a record of %s's, judged by that record's access); filter such a shared table with a policy of your own that reads each row's object "+
			"(docs/rls.md, \"A table that several objects share\")\n", r.Table, andList(views), r.Object, r.Object)
	}
	if slices.Contains(views, r.Object) {
		return r.Object
	}
	return views[0]
}

func rlsDisableCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "disable",
		Usage: "drop recalc's policies from TABLE, and disable row-level security unless the table has policies of its own",
		Description: "It locks the table ACCESS EXCLUSIVE, tried 100 ms at a time (the session's lock_timeout instead\n" +
			"when set: options=-c lock_timeout=30s in the URL, or PGOPTIONS) for 10 s, then fails naming the\n" +
			"sessions seen blocking it (docs/operations.md, \"The session's lock_timeout\").",
		Flags: []cli.Flag{&cli.StringFlag{Name: "table", Required: true, Usage: "application table, TABLE or SCHEMA.TABLE, names as the catalog spells them, unquoted (ws.workspaceMember); a name holding a dot cannot be given: rename it"}},
		Action: func(c *cli.Context) error {
			if err := access.CheckTable(c.String("table")); err != nil {
				return usageError(c, err, false)
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error {
				var remaining, reads []string
				if err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) (err error) {
					if remaining, err = access.DisableRLS(ctx, tx, c.String("table")); err != nil || len(remaining) == 0 {
						return err
					}
					reads, err = access.OtherPolicies(ctx, tx, c.String("table"), true)
					return err
				}); err != nil {
					return err
				}
				if len(remaining) > 0 {
					fmt.Fprintf(env.Out, "recalc's policies dropped from %s; row-level security stays enabled for its other policies: %s.\n", c.String("table"), shown(strings.Join(remaining, ", ")))
					if len(reads) == 0 {
						fmt.Fprintf(errOut, "warning: none of them admits rows to SELECT, so roles under row-level security now read no row of %s: "+
							"add a permissive policy, or ALTER TABLE ... DISABLE ROW LEVEL SECURITY if the table had it off before recalc\n", c.String("table"))
					}
					return nil
				}
				fmt.Fprintf(env.Out, "recalc's policies dropped from %s, and row-level security disabled.\n", c.String("table"))
				return nil
			})(c)
		},
	}
}

// andList joins names as "a", "a and b", "a, b and c".
func andList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
