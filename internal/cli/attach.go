package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/attach"
	"github.com/recalc-dev/recalc/internal/changes"
	"github.com/recalc-dev/recalc/schema"
)

// attachCommand attaches objects to application tables: `recalc attach`.
func attachCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "attach objects to the application's own tables, as a spec FILE says (docs/attach.md)",
		ArgsUsage: "FILE (or - for standard input), or --list",
		Description: "FILE lists the attached objects: for each, its table or view, id, owner and parent columns, the\n" +
			"columns criteria rules read, and for a view the base tables to capture. recalc installs capture\n" +
			"triggers, so that every INSERT, UPDATE, DELETE, COPY and TRUNCATE of the table is logged in the\n" +
			"same transaction (the next `recalc run` or `recalc watch` step mirrors it into recalc.record),\n" +
			"and backfills the existing rows. Applying the same file again changes nothing but has the\n" +
			"engine retry objects whose writes it could not absorb; a changed file updates; objects the\n" +
			"file no longer names are detached. A \"users\" entry attaches the model's users to a table the\n" +
			"same way: its id, role, type and active columns (docs/attach.md, \"Attaching the users\").\n" +
			"recalc reads the tables as its sandbox role (the schema owner's name followed by _sandbox,\n" +
			"SECURITY.md): it creates the role if it may create roles, else says what to run.\n" +
			"Its locks on the application's tables and recalc.record are tried 100 ms at a time (the session's\n" +
			"lock_timeout instead when set: options=-c lock_timeout=30s in the URL, or PGOPTIONS), 10 s for\n" +
			"all of them together (or the lock_timeout when longer); then it fails naming the sessions seen\n" +
			"blocking one (docs/operations.md, \"The session's lock_timeout\").\n" +
			"All in one transaction: on any error nothing changes. Run it as the role that owns the schema.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "list", Usage: "show the attached objects instead"},
			formatFlag(),
		},
		Action: formatAction(out, errOut, func(c *cli.Context, format string) func(context.Context, *Env) error {
			return func(ctx context.Context, env *Env) error {
				if err := schema.Check(ctx, env.Pool); err != nil {
					return err
				}
				if c.Bool("list") {
					return listAttached(ctx, env, format)
				}
				return applyAttach(ctx, env, errOut, c.Args().First(), format)
			}
		}),
		Before: func(c *cli.Context) error {
			if flag := flagAfterArgument(c.Command, c.Args().Slice()); flag != "" { // urfave/cli reads no flag after the first argument
				return usageError(c, fmt.Errorf("give the spec FILE, and the flags before it (got %.100q after it)", flag), false)
			}
			if c.Bool("list") != (c.NArg() == 0) || c.NArg() > 1 {
				return cli.Exit("recalc attach: give one spec FILE (or - for standard input), or --list", ExitUsage)
			}
			return nil
		},
	}
}

// detachCommand detaches objects: `recalc detach`.
func detachCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "detach",
		Usage:     "detach objects from the application's tables: drop their capture and delete their records",
		ArgsUsage: "OBJECT... or --all",
		Description: "The capture triggers and functions recalc installed are dropped, and the object's records are\n" +
			"deleted from recalc.record, so their shares go too; the next `recalc run` drops their share rows.\n" +
			"The application's tables and rows are untouched. All in one transaction. Detaching the users\n" +
			"first absorbs the writes committed to their table, so the users section, which stays as last\n" +
			"built, has them. Run it as the role that owns schema recalc.\n" +
			"Its locks on the application's tables are tried 100 ms at a time (the session's lock_timeout\n" +
			"instead when set: options=-c lock_timeout=30s in the URL, or PGOPTIONS), 10 s for all of them\n" +
			"together (or the lock_timeout when longer); then it fails naming the sessions seen blocking\n" +
			"one (docs/operations.md, \"The session's lock_timeout\").",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "all", Usage: "detach every attached object"}, formatFlag()},
		Before: func(c *cli.Context) error {
			if c.Bool("all") == (c.NArg() > 0) {
				return cli.Exit("recalc detach: give the objects to detach, or --all", ExitUsage)
			}
			if flag := flagAfterArgument(c.Command, c.Args().Slice()); flag != "" {
				return usageError(c, fmt.Errorf("give the OBJECTs, and the flags before them (got %.100q after them)", flag), false)
			}
			for _, object := range c.Args().Slice() {
				if err := checkID(c, "OBJECT", object, maxIDBytes); err != nil {
					return err
				}
			}
			return nil
		},
		Action: formatAction(out, errOut, func(c *cli.Context, format string) func(context.Context, *Env) error {
			return func(ctx context.Context, env *Env) error {
				if err := schema.Check(ctx, env.Pool); err != nil {
					return err
				}
				changes, err := attach.Detach(ctx, env.Pool, c.Args().Slice())
				if err != nil {
					return err
				}
				return printChanges(env, changes, format)
			}
		}),
	}
}

// flagAfterArgument returns the first of args after the first that is one
// of cmd's flags (urfave/cli reads no flag after an argument), or "".
func flagAfterArgument(cmd *cli.Command, args []string) string {
	for _, arg := range args[min(1, len(args)):] {
		name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !strings.HasPrefix(arg, "-") || name == "" {
			continue
		}
		for _, f := range cmd.Flags {
			if slices.Contains(f.Names(), name) {
				return arg
			}
		}
	}
	return ""
}

// applyAttach reads and applies a spec file, then warns of the write guards
// it left checking nothing.
func applyAttach(ctx context.Context, env *Env, errOut io.Writer, file, format string) error {
	r := io.Reader(os.Stdin)
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("open attachment spec: %w: check the path (or give - to read standard input)", err)
		}
		defer f.Close()
		// A directory opens, and its read error read as a spec that is not JSON.
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return fmt.Errorf("open attachment spec: %s is a directory: give the spec file (or - for standard input)", shown(file))
		}
		r = f
	}
	spec, err := attach.Parse(r)
	if err != nil {
		return err
	}
	changes, err := attach.Apply(ctx, env.Pool, spec)
	if err != nil {
		return err
	}
	for _, c := range changes {
		env.Log.Info().Str("object", c.Object).Str("table", c.Table).Str("status", string(c.Status)).Int64("records", c.Records).Msg("attachment")
	}
	if err := printChanges(env, changes, format); err != nil {
		return err
	}
	var unguarded []string
	if err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) (err error) {
		unguarded, err = access.UnguardedBaseTables(ctx, tx)
		return err
	}); err != nil {
		return err
	}
	for _, t := range unguarded {
		fmt.Fprintf(errOut, "warning: %s has recalc's write policies, but is attached only as a base table of views: their write guard checks nothing there, so "+
			"an editor may change the owner, id or parent columns unless a trigger of the application's own checks them (docs/rls.md, \"What the write policies do not check, and the write guard\"), "+
			"or attach the object to the table itself\n", shown(t))
	}
	return nil
}

// printChanges prints what attach or detach did.
func printChanges(env *Env, changes []attach.Change, format string) error {
	if format == "json" {
		return json.NewEncoder(env.Out).Encode(changes)
	}
	if len(changes) == 0 {
		fmt.Fprintln(env.Out, "Nothing attached.")
	}
	for _, c := range changes {
		if c.Status == attach.Unchanged { // nothing written: its records are as they were
			fmt.Fprintf(env.Out, "%-16s %-10s %s\n", c.Object, c.Status, shown(c.Table))
			continue
		}
		fmt.Fprintf(env.Out, "%-16s %-10s %s (%d records)\n", c.Object, c.Status, shown(c.Table), c.Records)
	}
	fmt.Fprintln(env.Out, "Run `recalc run` (or keep `recalc watch` running) to recalculate.")
	return nil
}

// listAttached prints the attached objects.
func listAttached(ctx context.Context, env *Env, format string) error {
	ls, err := attach.List(ctx, env.Pool)
	if err != nil {
		return err
	}
	if format == "json" {
		return json.NewEncoder(env.Out).Encode(ls)
	}
	if len(ls) == 0 {
		fmt.Fprintln(env.Out, "No object is attached.")
	}
	for _, l := range ls {
		state := "capture complete"
		switch {
		case !l.Complete:
			state = "CAPTURE INCOMPLETE (a trigger dropped or disabled, or a table or column changed): run `recalc attach FILE` again"
		case l.AbsorbError == attach.NotIntact:
			state = "WRITES NOT ABSORBED (the capture was not intact at the last try): run `recalc attach FILE` again"
		case l.AbsorbError == changes.SandboxUnsafe:
			state = "WRITES NOT ABSORBED (SQLSTATE " + l.AbsorbError + ": the sandbox role recalc reads as is missing or changed): see SECURITY.md, \"The sandbox role\", then run `recalc attach FILE` again"
		case l.AbsorbError == changes.SessionTampered:
			state = "WRITES NOT ABSORBED (SQLSTATE " + l.AbsorbError + ": code in the table's indexes or statistics ran in recalc's read and changed its session): drop that code, then run `recalc attach FILE` again"
		case strings.HasPrefix(l.AbsorbError, "22"):
			state = "WRITES NOT ABSORBED (SQLSTATE " + l.AbsorbError + ": a row's value fails every read of the source, as in a view that aggregates): correct the row or the view (docs/attach.md)"
		case l.AbsorbError != "":
			state = "WRITES NOT ABSORBED (SQLSTATE " + l.AbsorbError + "): grant recalc's role what it lacks, then run `recalc attach FILE` again (docs/attach.md)"
		}
		what := "records"
		if fx := l.UserFixes; fx != nil {
			what = fmt.Sprintf("users (%d skipped, %d made inactive, %d inactive stubs: docs/attach.md)", fx.Skipped, fx.Inactive, fx.Stubs)
		}
		table := shown(l.Table)
		if l.Renamed != "" {
			table += " (now " + shown(l.Renamed) + ")"
		}
		fmt.Fprintf(env.Out, "%-16s %s (capture on %s) %d %s, %s\n", l.Object, table, shown(strings.Join(l.Capture, ", ")), l.Records, what, state)
	}
	return nil
}
