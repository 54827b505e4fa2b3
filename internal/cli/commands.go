package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/watch"
	"github.com/recalc-dev/recalc/schema"
	"github.com/urfave/cli/v2"
)

// initCommand creates or upgrades the schema: `recalc init`.
func initCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create or upgrade the database schema (idempotent, safe to run concurrently; run it as the role that owns recalc's objects)",
		Description: "Pending migrations apply in one transaction, once the running work (an import, a plan, a\n" +
			"job's finish) ends. Each lock a migration takes on recalc's tables or an attached table is\n" +
			"tried 100 ms at a time (the session's lock_timeout instead when set, as with\n" +
			"options=-c lock_timeout=30s in the URL or PGOPTIONS), so the application's\n" +
			"reads and writes never queue behind it for longer; init rolls back and tries again for 10 s,\n" +
			"then exits 1, naming the sessions seen blocking its lock waits (pid and role), with nothing\n" +
			"migrated: run it again once they end. Then each attached table whose capture\n" +
			"predates version 67 gets its new row trigger, one table at a time, each lock wait at most\n" +
			"200 ms (the session's lock_timeout instead when set, within 10 s of tries): a table the\n" +
			"application holds throughout keeps its old trigger, and init exits 1\n" +
			"naming its object (the schema is migrated): run it again. See docs/operations.md.",
		Action: action(out, errOut, Init),
	}
}

// importCommand stores a model file: `recalc import`.
func importCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "validate a model file and store it; each section present replaces the stored one (--merge: each entry)",
		ArgsUsage: "FILE (or - for standard input)",
		Description: "Nothing is recalculated: run `recalc run` afterwards. An invalid file is rejected whole\n" +
			"with one message naming the offending entry, and the database is left unchanged. While a\n" +
			"recalculation job runs, the import waits for it to end (--wait-job), then imports; a job\n" +
			"no process works on any more (its process was killed) it finishes first, as `recalc run` would.\n" +
			"A lock that another transaction holds on a record, share or team entry the import writes\n" +
			"is waited for --lock-timeout at most: the import then fails, names the sessions holding\n" +
			"such locks and stores nothing, and runs and `recalc watch` go on.\n" +
			"With --max-revoke (or RECALC_MAX_REVOKE), the import is refused when it would take\n" +
			"access away from more than that share of the (user, record) pairs with access whose\n" +
			"access it can change, unless --yes is given; `recalc plan [--merge] FILE` shows the details.\n" +
			"The --max-* flags bound the file's size and cost (docs/limits.md); a warning is logged\n" +
			"when the closure may exceed --closure-warn entries.\n" +
			"With --merge, each entry of FILE replaces the stored entry with the same key (id; name for\n" +
			"objects; (record, grantee, cause) for shares; (record, user) for team entries) and the\n" +
			"\"delete\" section removes entries, as {\"delete\": {\"rules\": [\"r1\"]}}; all else is kept\n" +
			"(docs/model.md). A file from `recalc export`, and --if-revision, are refused when the stored\n" +
			"configuration changed since.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "merge", Usage: "apply FILE entry by entry: replace the entries it lists, delete those in its \"delete\" section, keep the rest"},
			&cli.StringFlag{Name: "if-revision", Usage: "refuse the import unless the stored configuration is at revision `REV` (recalc export logs it and writes it in the file)"},
			&cli.Float64Flag{Name: "max-revoke", EnvVars: []string{"RECALC_MAX_REVOKE"},
				DefaultText: "unset: no guard", Usage: "refuse a change revoking or lowering the access of more than this share (0..1) of the touched pairs with access (0: refuse any)"},
			&cli.BoolFlag{Name: "yes", Usage: "import even past --max-revoke"},
			&cli.DurationFlag{Name: "wait-job", Value: 10 * time.Minute, Usage: "while a recalculation job runs, wait up to this long for it to end, then import " +
				"(sharing changes wait for a recalculation, as in Salesforce); 0: refuse at once"},
			&cli.DurationFlag{Name: "lock-timeout", Value: store.DefaultLockTimeout, Usage: "how long the import waits for each lock another transaction holds " +
				"(a record, share or team entry the application keeps locked, or wrote and has not committed; with shares or team entries, an owner change or a row removed in an attached table, or a write to a base table of an object attached through a view, not yet committed), before it fails and stores nothing (at most 596h)"},
		}, limitFlags()...),
		Action: func(c *cli.Context) error {
			switch {
			case c.NArg() > 1: // urfave/cli reads no flag after the first argument
				return usageError(c, fmt.Errorf("give one FILE, and the flags before it (got %.100q after it)", c.Args().Get(1)), false)
			case c.NArg() == 0:
				return usageError(c, errors.New("give one FILE (or - for standard input)"), false)
			}
			guard := -1.0
			if c.IsSet("max-revoke") && !c.Bool("yes") {
				guard = c.Float64("max-revoke")
				if err := outOfRange(c, []flagRange{{"max-revoke", guard, guard >= 0 && guard <= 1, "between 0 and 1"}}); err != nil { // NaN too
					return err
				}
			}
			lim, err := limitsFrom(c)
			if err != nil {
				return err
			}
			wait := c.Duration("wait-job")
			if err := outOfRange(c, []flagRange{{"wait-job", wait, wait >= 0, "0 (refuse at once) or more"}, lockTimeoutIn(c.Duration("lock-timeout"))}); err != nil {
				return err
			}
			// An empty one (a script's unset variable) would import unguarded.
			if c.IsSet("if-revision") && strings.TrimSpace(c.String("if-revision")) == "" {
				return usageError(c, errors.New("--if-revision is empty: give the revision recalc export wrote, or leave the flag out to import unguarded"), false)
			}
			opt := store.Options{Merge: c.Bool("merge"), IfRevision: c.String("if-revision"), LockTimeout: c.Duration("lock-timeout")}
			return action(out, errOut, func(ctx context.Context, env *Env) error {
				return ImportWith(ctx, env, c.Args().First(), guard, lim, opt, c.Duration("wait-job"))
			})(c)
		},
	}
}

// runCommand recalculates: `recalc run`.
func runCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "recalculate what changed since the share tables were last computed, and return when done",
		Description: "A run plans (see `recalc plan`), stores a job split into chunks, and works them.\n" +
			"If a job is unfinished (running in another process, or left by a crash or a failure),\n" +
			"the run joins or resumes it first: any number of runs, on any hosts, share one job\n" +
			"(a run --full then runs a full job of its own, and fails after joining ten in a row).\n" +
			"An incremental job rewrites only the rows that differ, under row locks. A full job, by\n" +
			"default (--in-place), is an incremental one over every family: it diffs each family and\n" +
			"rewrites only those that differ, so readers and the application's writes go on. The first\n" +
			"computation, and any full job with --in-place=false, computes into staging tables swapped\n" +
			"in at the end instead (faster from scratch; the swap waits for open readers, and a\n" +
			"transaction whose snapshot predates it reads the new tables as empty). While calculation\n" +
			"is deferred (`recalc defer`) a run changes nothing and says so; a job whose chunks find share\n" +
			"rows deferred pauses (status paused, chunks_done in the report; exit 0) until `recalc resume`.\n" +
			"Prints a one-line JSON report.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "full", Usage: "read every attached table again, check every family root, recompute every family and rewrite those that differ (repairs any drift; see --in-place)"},
		}, runFlags()...),
		Action: func(c *cli.Context) error {
			opt, err := runOptions(c, errOut)
			if err != nil {
				return err
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error { return Run(ctx, env, opt) })(c)
		},
	}
}

// deferCommand suspends recalculation: `recalc defer`.
func deferCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "defer",
		Usage: "suspend recalculation, e.g. around a bulk load (both sides unless one is named)",
		Description: "Deferred, imports and data changes accumulate and `recalc run` changes nothing.\n" +
			"--closure defers group membership (the closure: who is in which group, role and territory);\n" +
			"--rules defers share rows (sharing rules, owners, shares, teams, OWDs). Each side\n" +
			"recalculates on its own when the other is deferred (not beside a job paused as below).\n" +
			"recalc.wait_fresh waits for what a deferred side has yet to apply (every change for share\n" +
			"rows; users, roles, groups and territories for the closure) until it resumes.\n" +
			"It returns once a watch step or plan that began before it has ended and, deferring share\n" +
			"rows, once the chunks in flight of a job have committed, so that writes committed after it\n" +
			"wait for the resume (past a second it logs what it waits for). Such a job pauses at its next\n" +
			"chunk, in every process: `recalc run` reports it paused and exits 0, and `recalc resume`\n" +
			"finishes it. An import finishes it first, its chunks leaving out the families written since\n" +
			"the job was planned (they keep their share rows until the resume), and what it imports waits.",
		Flags: sideFlags(),
		Action: func(c *cli.Context) error {
			sides := sides(c)
			return action(out, errOut, func(ctx context.Context, env *Env) error { return DeferCmd(ctx, env, sides) })(c)
		},
	}
}

// resumeCommand lifts the deferral and recalculates: `recalc resume`.
func resumeCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "resume",
		Usage: "lift the deferral (both sides unless one is named) and recalculate what accumulated",
		Flags: append(append(sideFlags(), &cli.BoolFlag{Name: "full", Usage: "recompute every family, as recalc run --full"}), runFlags()...),
		Action: func(c *cli.Context) error {
			opt, err := runOptions(c, errOut)
			if err != nil {
				return err
			}
			opt.Trigger = strings.Replace(opt.Trigger, "run", "resume", 1) // resume, or resume --full
			sides := sides(c)
			return action(out, errOut, func(ctx context.Context, env *Env) error { return ResumeCmd(ctx, env, sides, opt) })(c)
		},
	}
}

// watchCommand recalculates after each burst of changes: `recalc watch`.
func watchCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "watch",
		Usage: "keep the share tables fresh: materialize each commit's changes within milliseconds, until SIGINT or SIGTERM",
		Description: "Listens on channel recalc_changes (record writes by any SQL, writes to attached tables,\n" +
			"and imports), waits for --debounce of quiet (at most --max-wait), then materializes what\n" +
			"committed. Every --catalog-poll it also reads a digest of the catalog rows that say what the\n" +
			"attached sources show, and steps when it moves: a view redefined, an enum label renamed, a\n" +
			"composite type altered or the capture's triggers disabled around a write send no notification (after a step, it reads\n" +
			"it again no sooner than 4 times what the step took). Record changes take the fast path, in batches naming at most --fast-records\n" +
			"records: one short transaction each, no job, with the configuration kept in memory; it\n" +
			"first re-reads the rows that attached tables' writes logged (docs/attach.md). Anything\n" +
			"else (a model import, a truncate, one statement naming more records, records moved between\n" +
			"more families than that, an unfinished job) runs a job, as `recalc run` does (in place: a\n" +
			"full job rewrites the live tables under row locks instead of swapping in new ones).\n" +
			"Respects deferral. Reconnects with backoff when the connection is lost, or refused once it\n" +
			"runs (a database dropped or being restored: logged at level error); a refusal at start (no\n" +
			"such database or role, a wrong password, no CONNECT right, a require_auth or\n" +
			"channel_binding the server's authentication does not meet) exits 1. On SIGINT or\n" +
			"SIGTERM it stops (exit 0); an interrupted job resumes at the next start.\n" +
			"Once a newer recalc has upgraded the schema, it exits 1 at its next step or --poll.",
		Flags: append([]cli.Flag{
			&cli.DurationFlag{Name: "debounce", Value: 2 * time.Millisecond, Usage: "quiet time after the last change before materializing"},
			&cli.DurationFlag{Name: "max-wait", Value: 20 * time.Millisecond, Usage: "longest a change waits while changes keep coming"},
			&cli.DurationFlag{Name: "poll", Value: 10 * time.Second, Action: atLeast("poll", minPoll),
				Usage: fmt.Sprintf("look for changes at least this often, notification or not (short, such as 20ms, where writers set recalc.notify = off; %v or more)", minPoll)},
			&cli.IntFlag{Name: "fast-records", Value: 1000, Usage: "most records a batch may name for the fast path (0: always run a job)"},
			&cli.DurationFlag{Name: "catalog-poll", Value: watch.DefaultCatalog, Action: zeroOrAtLeast("catalog-poll", minPoll),
				Usage: fmt.Sprintf("between steps, look this often for catalog changes to attached sources that write no row (0: only at --poll; else %v or more)", minPoll)},
			metricsAddrFlag(),
		}, runFlags()...),
		Action: func(c *cli.Context) error {
			opt, err := runOptions(c, errOut)
			if err != nil {
				return err
			}
			opt.Trigger = "watch"
			wopt := watch.Options{Debounce: c.Duration("debounce"), MaxWait: c.Duration("max-wait"), Poll: c.Duration("poll"),
				FastRecords: c.Int("fast-records"), Catalog: c.Duration("catalog-poll")}
			if err := outOfRange(c, []flagRange{ // --catalog-poll: its flag's action
				{"debounce", wopt.Debounce, wopt.Debounce > 0, "positive"},
				{"max-wait", wopt.MaxWait, wopt.MaxWait > 0, "positive"},
				{"fast-records", wopt.FastRecords, wopt.FastRecords >= 0, "0 or more"},
			}); err != nil {
				return err
			}
			if wopt.Catalog == 0 {
				wopt.Catalog = -1 // never: the poll's step finds them
			}
			maddr, err := metricsAddr(c)
			if err != nil {
				return err
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error { return WatchCmd(ctx, env, wopt, opt, maddr) })(c)
		},
	}
}

// waitCommand blocks until a job ends: `recalc wait`.
func waitCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "block until a job ends; exit 0 if it succeeded, 1 if it failed",
		ArgsUsage: "[JOB] (default: the unfinished job, else the latest)",
		Description: "A lost connection (a server restart) is no failure: it reconnects with backoff and waits on,\n" +
			"and exits 3 when the database stays unreachable for two minutes. A reconnect the server refuses\n" +
			"for its configuration (the database dropped, the role or its CONNECT right gone) exits 1 at once.\n" +
			"A job no process works on (interrupted: `recalc run` resumes it), or paused while share rows are\n" +
			"deferred (`recalc resume` finishes it), exits 1 saying so.",
		Action: func(c *cli.Context) error {
			var id int64
			var err error
			switch arg := c.Args().First(); {
			case c.NArg() > 1:
				return usageError(c, fmt.Errorf("give at most one JOB, and the flags before it (got %.100q after it)", c.Args().Get(1)), false)
			case c.NArg() == 1:
				if id, err = strconv.ParseInt(arg, 10, 64); err != nil || id < 1 || strings.Trim(arg, "0123456789") != "" { // no sign
					return usageError(c, fmt.Errorf("JOB must be a job number, such as 7, not %.100q: `recalc status --jobs N` lists the latest N jobs", arg), false)
				}
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error { return WaitCmd(ctx, env, id) })(c)
		},
	}
}

// statusCommand shows deferral, pending changes and jobs: `recalc status`.
func statusCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show deferral, pending changes, and the running (or interrupted, or paused) and recent jobs with their figures",
		Flags: []cli.Flag{
			formatFlag(),
			&cli.IntFlag{Name: "jobs", Value: 5, Usage: "how many jobs to list (0 or more)", Action: atLeast("jobs", 0)},
		},
		Action: formatAction(out, errOut, func(c *cli.Context, f string) func(context.Context, *Env) error {
			return func(ctx context.Context, env *Env) error { return StatusCmd(ctx, env, f, c.Int("jobs")) }
		}),
	}
}

// planCommand shows what a run would do, or what importing a file would: `recalc plan`.
func planCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "plan",
		Usage:     "print what `recalc run` would recalculate now, and why; with FILE, what importing FILE would do to access",
		ArgsUsage: "[FILE]",
		Description: "Without FILE: the changes since the share tables were last computed, why each matters,\n" +
			"the records to recompute by object, and the chunks.\n" +
			"With FILE: a dry run of importing FILE (with --merge, merging it) and recalculating, rolled back. For each object it\n" +
			"reports how many (user, record) pairs gain and lose access and at which levels, with a\n" +
			"sample of each, the records to rewrite and chunks, and an estimated time. Nothing is stored.\n" +
			"It compares only the pairs whose access can change, and past two seconds logs its progress.\n" +
			"FILE is read within the --max-* limits, as by `recalc import` (docs/limits.md). Either way a\n" +
			"warning is logged when the closure may exceed --closure-warn entries.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "full", Usage: "plan a full recalculation"},
			&cli.BoolFlag{Name: "merge", Usage: "FILE is a merge file, as for recalc import --merge"},
			&cli.IntFlag{Name: "chunk-size", Value: 5000, Usage: "records per chunk"},
			formatFlag(),
		}, limitFlags()...),
		Action: func(c *cli.Context) error {
			f, err := textOrJSON(c)
			if err != nil {
				return err
			}
			// In place, as `recalc run` plans by default.
			opt := engine.Options{ChunkSize: c.Int("chunk-size"), Full: c.Bool("full"), InPlace: true, Live: liveOut(errOut)}
			if opt.ChunkSize < 1 { // as recalc run refuses it: no chunk holds no record
				return usageError(c, fmt.Errorf("--chunk-size must be at least 1, not %d", opt.ChunkSize), false)
			}
			lim, err := limitsFrom(c)
			if err != nil {
				return err
			}
			switch {
			case c.NArg() > 1: // urfave/cli reads no flag after the first argument
				return usageError(c, fmt.Errorf("give one FILE, and the flags before it (got %.100q after it)", c.Args().Get(1)), false)
			case c.NArg() == 1:
				return action(out, errOut, func(ctx context.Context, env *Env) error {
					return DryRunCmd(ctx, env, c.Args().First(), c.Bool("merge"), opt, f, lim)
				})(c)
			case c.Bool("merge"):
				return usageError(c, errors.New("--merge needs the FILE to merge"), false)
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error { return PlanCmd(ctx, env, opt, f, lim.ClosureWarn) })(c)
		},
	}
}

// explainCommand says why a user has their access to a record: `recalc explain`.
func explainCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "explain",
		Usage: "say why a user has the access they have to a record: every reason, not just the first",
		Description: "Lists each grant that reaches the user (owner, rule, manual or apex share, team,\n" +
			"territory, implicit parent or child, OWD, controlled by parent) with how the user\n" +
			"receives it: through which group path, role chain or territory. Computed from the\n" +
			"configuration the share tables were last computed from, and checked against them.\n" +
			"Name the record by its key (--record), or by --object and the application's --id.",
		Flags: []cli.Flag{
			idFlag(&cli.StringFlag{Name: "user", Required: true, Usage: "user id"}),
			idFlag(&cli.StringFlag{Name: "record", Usage: "record id (its key: account:42 for an attached object)"}),
			idFlag(&cli.StringFlag{Name: "object", Usage: "with --id: the record's object"}),
			idFlag(&cli.StringFlag{Name: "id", Usage: "with --object: the application's id of the record"}),
			formatFlag(),
		},
		Action: func(c *cli.Context) error {
			record, object, id := c.String("record"), c.String("object"), c.String("id")
			if (record != "") == (object != "" || id != "") || (object != "") != (id != "") {
				return cli.Exit("recalc explain: give --record R, or --object O and --id ID (see `recalc explain --help`)", ExitUsage)
			}
			return formatAction(out, errOut, func(c *cli.Context, f string) func(context.Context, *Env) error {
				return func(ctx context.Context, env *Env) error {
					return ExplainCmd(ctx, env, c.String("user"), object, id, record, f)
				}
			})(c)
		},
	}
}

// verifyCommand compares the materialized tables with a recomputation: `recalc verify`.
func verifyCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "recompute from scratch and compare with the materialized tables; exit 1 on drift",
		Description: "Compares every family (or --sample N random ones) and the closure with a fresh\n" +
			"computation from the configuration they were last computed from, and reports the\n" +
			"differences by object and row cause. Families with changes not yet recalculated are\n" +
			"skipped, and so is the closure beside a job that started meanwhile and changes it.\n" +
			"First it reads each attached table (or view) again, whole, and counts the\n" +
			"records it mirrors that differ from it although no write is pending: what no capture\n" +
			"saw; a source it cannot compare (capture not intact, read failing) makes it exit 1 too.\n" +
			"Each source's read holds its attachment's lock and a share lock on its tables, as a full\n" +
			"run's does: the watch absorbs that object's writes once it ends, and DDL on those tables\n" +
			"waits. It also counts the records whose stored family root is not the one root fixing\n" +
			"computes (the top of their parent chain) although no change is pending for them: each is\n" +
			"computed where its parent is not and fails closed, and `recalc run --full` repairs them.\n" +
			"--repair fixes what differs, under the same row locks as a job (family roots as a full\n" +
			"run fixes them, under the model lock); re-read and re-rooted records are left for the\n" +
			"next `recalc run` to recalculate, and so are the families a write reaches while it repairs.\n" +
			"While calculation is deferred (`recalc defer`), the families written since are skipped as\n" +
			"pending and the closure is compared with the membership it was last computed from: none\n" +
			"of what waits for `recalc resume` is drift, and --repair materializes none of it.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "sample", Usage: "verify this many random families instead of all (0: all)", Action: atLeast("sample", 0)},
			&cli.BoolFlag{Name: "repair", Usage: "fix the differences"},
			&cli.BoolFlag{Name: "sources", Value: true, Usage: "compare the attached tables with the records mirrored from them (--sources=false skips it)"},
			formatFlag(),
		},
		Action: formatAction(out, errOut, func(c *cli.Context, f string) func(context.Context, *Env) error {
			opt := engine.VerifyOptions{Sample: c.Int("sample"), Repair: c.Bool("repair"), Sources: c.Bool("sources")}
			return func(ctx context.Context, env *Env) error { return VerifyCmd(ctx, env, opt, f) }
		}),
	}
}

// grantCommand gives a role the privileges of a reader or a writer: `recalc grant`.
func grantCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "grant",
		Usage:     "give an existing role the least privileges of a reader or a writer of recalc (see SECURITY.md)",
		ArgsUsage: "reader|writer ROLE",
		Description: "reader: EXECUTE on the SQL access API (access_level, can_access, visible_records, visible_ids,\n" +
			"record_key, the rls_* functions that policies call, invalid_records), on\n" +
			"the feed (access_changes, access_changes_head) and on read-your-writes (fresh_token,\n" +
			"wait_fresh); SELECT on the view invalid_record; no table.\n" +
			"writer: SELECT (of every column but root_id) and DELETE on recalc.record (never on the\n" +
			"records of attached objects, which row-level security hides from it), INSERT and\n" +
			"UPDATE of its columns id, object, owner,\n" +
			"parent, fields and territories only, and read-your-writes; no other table. Run it as the role\n" +
			"that owns the schema.",
		Action: func(c *cli.Context) error {
			if flag := flagAfterArgument(c.Command, c.Args().Slice()); flag != "" {
				return usageError(c, fmt.Errorf("give the flags before the kind of access and the role (got %.100q after them)", flag), false)
			}
			if c.NArg() != 2 || c.Args().Get(1) == "" {
				return cli.Exit("recalc: give the kind of access and the role: recalc grant reader|writer ROLE", ExitUsage)
			}
			kind, role := c.Args().Get(0), c.Args().Get(1)
			if kind != access.Reader && kind != access.Writer {
				return cli.Exit(fmt.Sprintf("recalc: unknown kind of access %.100q: give %s or %s", kind, access.Reader, access.Writer), ExitUsage)
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error {
				if err := schema.Check(ctx, env.Pool); err != nil {
					return err
				}
				err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error { return access.Grant(ctx, tx, kind, role) })
				if err == nil {
					fmt.Fprintf(env.Out, "Granted %s access to role %s.\n", kind, role)
				}
				return err
			})(c)
		},
	}
}

// statsCommand summarises the materialized tables: `recalc stats`.
func statsCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "stats",
		Usage: "summarise the materialized tables: records, users, closure and share rows by row cause",
		Flags: []cli.Flag{formatFlag()},
		Action: formatAction(out, errOut, func(_ *cli.Context, f string) func(context.Context, *Env) error {
			return func(ctx context.Context, env *Env) error { return Stats(ctx, env, f) }
		}),
	}
}

// completionCommand prints a shell completion script. The app completes
// commands and flags itself (--generate-bash-completion); the script asks it.
func completionCommand(out io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: source <(recalc completion bash), or zsh",
		ArgsUsage: "bash|zsh",
		Action: func(c *cli.Context) error {
			script, ok := completionScripts[c.Args().First()]
			if !ok || c.NArg() != 1 {
				return cli.Exit("recalc: give the shell: recalc completion bash|zsh", ExitUsage)
			}
			_, err := io.WriteString(out, script)
			return err
		},
	}
}

// completionScripts ask `recalc ... --generate-bash-completion` for the
// words that may follow what is typed. When the word being typed starts with
// "-", a "-" is passed after the others: that makes the app list flags
// rather than commands (the word itself may be "--", which would end them).
var completionScripts = map[string]string{
	"bash": `_recalc_complete() {
  local cur=${COMP_WORDS[COMP_CWORD]} words
  local -a args=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
  [[ $cur == -* ]] && args+=(-)
  words=$("${COMP_WORDS[0]}" "${args[@]}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _recalc_complete recalc
`,
	"zsh": `#compdef recalc
_recalc() {
  local -a opts args
  args=(${words[@]:1:$CURRENT-2})
  [[ ${words[CURRENT]} == -* ]] && args+=(-)
  opts=("${(@f)$(${words[1]} ${args[@]} --generate-bash-completion 2>/dev/null)}")
  _describe 'recalc' opts
}
compdef _recalc recalc
`,
}
