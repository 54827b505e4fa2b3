// Package cli builds the recalc command-line app. Each command's logic is a
// function taking (ctx, *Env) so tests can drive it without a process; Env
// carries the pool, output writer and logger.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/watch"
	"github.com/recalc-dev/recalc/schema"
)

// Env is what every command needs.
type Env struct {
	Pool *pgxpool.Pool
	Out  io.Writer
	Log  zerolog.Logger
}

// App returns the recalc command-line app writing results to out and logs to errOut.
func App(out, errOut io.Writer) *cli.App {
	return &cli.App{
		Name:  "recalc",
		Usage: "recalculate a CRM's materialized sharing (who can read or edit each record) on PostgreSQL",
		Description: "recalc stores an org's sharing model (org-wide defaults, roles, groups, territories, rules,\n" +
			"manual shares, teams, records) and keeps materialized share tables that answer\n" +
			"\"what access does user U have to record R\" with one indexed query.\n\n" +
			"Typical use: recalc init; recalc import org.json; recalc run; recalc access --format csv",
		Writer:    out,
		ErrWriter: errOut,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "database-url", EnvVars: []string{"DATABASE_URL"},
				Usage: "PostgreSQL connection string (URL or key=value); empty uses the PG* environment variables. Sessions run with jit=off and random_page_cost=1.1 unless it sets them"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"RECALC_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"RECALC_LOG_FORMAT"}, Usage: "auto (console on a terminal, JSON otherwise), console or json"},
			&cli.StringFlag{Name: "cpu-profile", EnvVars: []string{"RECALC_CPU_PROFILE"}, Usage: "write a pprof CPU profile of the command to this file"},
			&cli.StringFlag{Name: "mem-profile", EnvVars: []string{"RECALC_MEM_PROFILE"}, Usage: "write a pprof heap profile (allocations) at the command's end to this file"},
		},
		Before: before,
		After:  stopProfiles,
		Commands: []*cli.Command{
			{
				Name:   "init",
				Usage:  "create or upgrade the database schema (idempotent, safe to run concurrently)",
				Action: action(out, errOut, Init),
			},
			{
				Name:      "import",
				Usage:     "validate a model file and store it; each section present replaces the stored one",
				ArgsUsage: "FILE (or - for standard input)",
				Description: "Nothing is recalculated: run `recalc run` afterwards. An invalid file is rejected whole\n" +
					"with one message naming the offending entry, and the database is left unchanged.\n" +
					"With --max-revoke (or RECALC_MAX_REVOKE), the import is refused when it would take\n" +
					"access away from more than that share of the (user, record) pairs with access on the\n" +
					"records it touches, unless --yes is given; `recalc plan FILE` shows the details.\n" +
					"The --max-* flags bound the file's size and cost (docs/limits.md); a warning is logged\n" +
					"when the closure may exceed --closure-warn entries.",
				Flags: append([]cli.Flag{
					&cli.Float64Flag{Name: "max-revoke", EnvVars: []string{"RECALC_MAX_REVOKE"},
						Usage: "refuse a change revoking more than this share (0..1) of the touched pairs with access; unset: no guard"},
					&cli.BoolFlag{Name: "yes", Usage: "import even past --max-revoke"},
				}, limitFlags()...),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("recalc import: expected one FILE argument (or - for standard input)", 2)
					}
					guard := -1.0
					if c.IsSet("max-revoke") && !c.Bool("yes") {
						if guard = c.Float64("max-revoke"); guard < 0 || guard > 1 {
							return cli.Exit("recalc import: --max-revoke must be between 0 and 1", 2)
						}
					}
					lim, err := limitsFrom(c)
					if err != nil {
						return err
					}
					return action(out, errOut, func(ctx context.Context, env *Env) error { return Import(ctx, env, c.Args().First(), guard, lim) })(c)
				},
			},
			{
				Name:  "run",
				Usage: "recalculate what changed since the share tables were last computed, and return when done",
				Description: "A run plans (see `recalc plan`), stores a job split into chunks, and works them.\n" +
					"If a job is unfinished (running in another process, or left by a crash or a failure),\n" +
					"the run joins or resumes it first: any number of runs, on any hosts, share one job.\n" +
					"A full job computes into staging tables swapped in atomically at the end and reports\n" +
					"the drift it repaired; an incremental job rewrites only the rows that differ, under\n" +
					"row locks. While calculation is deferred (`recalc defer`) a run changes nothing and\n" +
					"says so. Prints a one-line JSON report.",
				Flags: append([]cli.Flag{
					&cli.BoolFlag{Name: "full", Usage: "recalculate everything from scratch (repairs any drift)"},
					&cli.BoolFlag{Name: "in-place", Usage: "with --full: rewrite the live tables family by family under row locks, instead of building new ones and swapping them in (needs no second copy on disk; slower)"},
				}, runFlags()...),
				Action: func(c *cli.Context) error {
					opt, err := runOptions(c, errOut)
					if err != nil {
						return err
					}
					return action(out, errOut, func(ctx context.Context, env *Env) error { return Run(ctx, env, opt) })(c)
				},
			},
			{
				Name:  "defer",
				Usage: "suspend recalculation, e.g. around a bulk load (both sides unless one is named)",
				Description: "Deferred, imports and data changes accumulate and `recalc run` changes nothing.\n" +
					"--closure defers group membership (the closure: who is in which group, role and territory);\n" +
					"--rules defers share rows (sharing rules, owners, shares, teams, OWDs). Each side\n" +
					"recalculates on its own when the other is deferred.",
				Flags: sideFlags(),
				Action: func(c *cli.Context) error {
					sides := sides(c)
					return action(out, errOut, func(ctx context.Context, env *Env) error { return DeferCmd(ctx, env, sides) })(c)
				},
			},
			{
				Name:  "resume",
				Usage: "lift the deferral (both sides unless one is named) and recalculate what accumulated",
				Flags: append(append(sideFlags(), &cli.BoolFlag{Name: "full", Usage: "recalculate everything from scratch"}), runFlags()...),
				Action: func(c *cli.Context) error {
					opt, err := runOptions(c, errOut)
					if err != nil {
						return err
					}
					opt.Trigger = "resume"
					sides := sides(c)
					return action(out, errOut, func(ctx context.Context, env *Env) error { return ResumeCmd(ctx, env, sides, opt) })(c)
				},
			},
			{
				Name:  "watch",
				Usage: "keep the share tables current: run after each burst of changes, until SIGINT or SIGTERM",
				Description: "Listens on channel recalc_changes (record writes by any SQL, and imports), waits for\n" +
					"--debounce of quiet (at most --max-wait), then runs an incremental recalculation.\n" +
					"Respects deferral. On SIGINT or SIGTERM it stops; an interrupted job resumes at the\n" +
					"next start.",
				Flags: append([]cli.Flag{
					&cli.DurationFlag{Name: "debounce", Value: 2 * time.Second, Usage: "quiet time after the last change before a run"},
					&cli.DurationFlag{Name: "max-wait", Value: 30 * time.Second, Usage: "longest a change waits while changes keep coming"},
					&cli.DurationFlag{Name: "poll", Value: time.Minute, Usage: "run at least this often, notification or not"},
				}, runFlags()...),
				Action: func(c *cli.Context) error {
					opt, err := runOptions(c, errOut)
					if err != nil {
						return err
					}
					opt.Trigger = "watch"
					wopt := watch.Options{Debounce: c.Duration("debounce"), MaxWait: c.Duration("max-wait"), Poll: c.Duration("poll")}
					if wopt.Debounce <= 0 || wopt.MaxWait <= 0 || wopt.Poll <= 0 {
						return cli.Exit("recalc watch: --debounce, --max-wait and --poll must be positive", 2)
					}
					return action(out, errOut, func(ctx context.Context, env *Env) error { return WatchCmd(ctx, env, wopt, opt) })(c)
				},
			},
			{
				Name:      "wait",
				Usage:     "block until a job ends; exit 0 if it succeeded, 1 if it failed",
				ArgsUsage: "[JOB] (default: the unfinished job, else the latest)",
				Action: func(c *cli.Context) error {
					var id int64
					if c.NArg() > 0 {
						if _, err := fmt.Sscan(c.Args().First(), &id); err != nil || id < 1 {
							return cli.Exit("recalc wait: JOB must be a job number", 2)
						}
					}
					return action(out, errOut, func(ctx context.Context, env *Env) error { return WaitCmd(ctx, env, id) })(c)
				},
			},
			{
				Name:  "status",
				Usage: "show deferral, pending changes, and the running and recent jobs with their figures",
				Flags: []cli.Flag{
					formatFlag(),
					&cli.IntFlag{Name: "jobs", Value: 5, Usage: "how many jobs to list"},
				},
				Action: func(c *cli.Context) error {
					f, err := textOrJSON(c)
					if err != nil {
						return err
					}
					n := c.Int("jobs")
					return action(out, errOut, func(ctx context.Context, env *Env) error { return StatusCmd(ctx, env, f, n) })(c)
				},
			},
			{
				Name:      "plan",
				Usage:     "print what `recalc run` would recalculate now, and why; with FILE, what importing FILE would do to access",
				ArgsUsage: "[FILE]",
				Description: "Without FILE: the changes since the share tables were last computed, why each matters,\n" +
					"the records to recompute by object, and the chunks.\n" +
					"With FILE: a dry run of importing FILE and recalculating, rolled back. For each object it\n" +
					"reports how many (user, record) pairs gain and lose access and at which levels, with a\n" +
					"sample of each, the records to rewrite and chunks, and an estimated time. Nothing is stored.\n" +
					"FILE is read within the --max-* limits, as by `recalc import` (docs/limits.md). Either way a\n" +
					"warning is logged when the closure may exceed --closure-warn entries.",
				Flags: append([]cli.Flag{
					&cli.BoolFlag{Name: "full", Usage: "plan a full recalculation"},
					&cli.IntFlag{Name: "chunk-size", Value: 5000, Usage: "records per chunk"},
					formatFlag(),
				}, limitFlags()...),
				Action: func(c *cli.Context) error {
					f, err := textOrJSON(c)
					if err != nil {
						return err
					}
					opt := engine.Options{ChunkSize: c.Int("chunk-size"), Full: c.Bool("full")}
					lim, err := limitsFrom(c)
					if err != nil {
						return err
					}
					if c.NArg() > 0 {
						return action(out, errOut, func(ctx context.Context, env *Env) error { return DryRunCmd(ctx, env, c.Args().First(), opt, f, lim) })(c)
					}
					return action(out, errOut, func(ctx context.Context, env *Env) error { return PlanCmd(ctx, env, opt, f, lim.ClosureWarn) })(c)
				},
			},
			{
				Name:  "access",
				Usage: "print access read from the materialized tables (no recomputation)",
				Description: "With --format csv: every (object, record, active user) with access above none,\n" +
					"sorted by object, record, user in byte order.\n" +
					"With --user and --record: the access level of one user to one record.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "format", Usage: "csv: print all access as CSV"},
					&cli.StringFlag{Name: "user", Usage: "user id, with --record"},
					&cli.StringFlag{Name: "record", Usage: "record id, with --user"},
				},
				Action: func(c *cli.Context) error {
					switch {
					case c.String("format") == "csv" && c.String("user") == "" && c.String("record") == "":
						return action(out, errOut, AccessCSV)(c)
					case c.String("format") == "" && c.String("user") != "" && c.String("record") != "":
						return action(out, errOut, func(ctx context.Context, env *Env) error {
							return AccessOne(ctx, env, c.String("user"), c.String("record"))
						})(c)
					}
					return cli.Exit("recalc access: give either --format csv, or --user U and --record R", 2)
				},
			},
			{
				Name:  "explain",
				Usage: "say why a user has the access they have to a record: every reason, not just the first",
				Description: "Lists each grant that reaches the user (owner, rule, manual or apex share, team,\n" +
					"territory, implicit parent or child, OWD, controlled by parent) with how the user\n" +
					"receives it: through which group path, role chain or territory. Computed from the\n" +
					"configuration the share tables were last computed from, and checked against them.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Required: true, Usage: "user id"},
					&cli.StringFlag{Name: "record", Required: true, Usage: "record id"},
					formatFlag(),
				},
				Action: func(c *cli.Context) error {
					f, err := textOrJSON(c)
					if err != nil {
						return err
					}
					return action(out, errOut, func(ctx context.Context, env *Env) error {
						return ExplainCmd(ctx, env, c.String("user"), c.String("record"), f)
					})(c)
				},
			},
			{
				Name:  "verify",
				Usage: "recompute from scratch and compare with the materialized tables; exit 1 on drift",
				Description: "Compares every family (or --sample N random ones) and the closure with a fresh\n" +
					"computation from the configuration they were last computed from, and reports the\n" +
					"differences by object and row cause. Families with changes not yet recalculated are\n" +
					"skipped. --repair fixes what differs, under the same row locks as a job.",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "sample", Usage: "verify this many random families instead of all"},
					&cli.BoolFlag{Name: "repair", Usage: "fix the differences"},
					formatFlag(),
				},
				Action: func(c *cli.Context) error {
					f, err := textOrJSON(c)
					if err != nil {
						return err
					}
					opt := engine.VerifyOptions{Sample: c.Int("sample"), Repair: c.Bool("repair")}
					return action(out, errOut, func(ctx context.Context, env *Env) error { return VerifyCmd(ctx, env, opt, f) })(c)
				},
			},
			{
				Name:      "grant",
				Usage:     "give an existing role the least privileges of a reader or a writer of recalc (see SECURITY.md)",
				ArgsUsage: "reader|writer ROLE",
				Description: "reader: EXECUTE on the SQL access API (access_level, visible_records, invalid_records),\n" +
					"which row-level security policies call; no table.\n" +
					"writer: SELECT and DELETE on recalc.record, INSERT and UPDATE of its columns id, object, owner,\n" +
					"parent, fields and territories only; no other table. Run it as the role that owns the schema.",
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return fmt.Errorf("give the kind of access and the role: recalc grant reader|writer ROLE")
					}
					kind, role := c.Args().Get(0), c.Args().Get(1)
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
			},
			{
				Name:  "rls",
				Usage: "install or remove a row-level security policy that filters an application table by recalc's access",
				Subcommands: []*cli.Command{
					{
						Name:  "enable",
						Usage: "enable row-level security on TABLE so a session sees only the rows its user may read",
						Description: "The policy calls recalc.visible_records(current_setting(USER_SETTING), OBJECT), so a\n" +
							"session sets its user with: SET LOCAL app.user_id = 'u1' (or set_config). Any session can set\n" +
							"any user: the application owns the setting, and end users never run SQL (SECURITY.md). With\n" +
							"--user-from-role the policy takes the user id from current_user instead. Readers need\n" +
							"`recalc grant reader ROLE`. Table owners and superusers bypass row-level security, as always\n" +
							"in PostgreSQL.",
						Flags: []cli.Flag{
							&cli.StringFlag{Name: "table", Required: true, Usage: "application table, TABLE or SCHEMA.TABLE"},
							&cli.StringFlag{Name: "object", Required: true, Usage: "the recalc object its rows are records of"},
							&cli.StringFlag{Name: "user-setting", Usage: "custom setting holding the current user id, e.g. app.user_id"},
							&cli.BoolFlag{Name: "user-from-role", Usage: "take the user id from current_user, not from a setting"},
							&cli.StringFlag{Name: "id-column", Value: "id", Usage: "column holding the record id"},
						},
						Action: func(c *cli.Context) error {
							r := &access.RLS{Table: c.String("table"), Object: c.String("object"), IDColumn: c.String("id-column"),
								UserSetting: c.String("user-setting"), UserFromRole: c.Bool("user-from-role")}
							if r.UserSetting == "" && !r.UserFromRole {
								return fmt.Errorf("say where the current user comes from: --user-setting app.user_id or --user-from-role")
							}
							return action(out, errOut, func(ctx context.Context, env *Env) error {
								err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error { return access.EnableRLS(ctx, tx, r) })
								if err == nil {
									user := fmt.Sprintf("current_setting('%s')", r.UserSetting)
									if r.UserFromRole {
										user = "current_user"
									}
									fmt.Fprintf(env.Out, "Row-level security enabled on %s: policy %s shows the rows of %s that %s may read.\n",
										r.Table, access.PolicyName, r.Object, user)
								}
								return err
							})(c)
						},
					},
					{
						Name:  "disable",
						Usage: "drop recalc's policy from TABLE and disable row-level security",
						Flags: []cli.Flag{&cli.StringFlag{Name: "table", Required: true, Usage: "application table"}},
						Action: func(c *cli.Context) error {
							return action(out, errOut, func(ctx context.Context, env *Env) error {
								return pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error { return access.DisableRLS(ctx, tx, c.String("table")) })
							})(c)
						},
					},
				},
			},
			{
				Name:  "stats",
				Usage: "summarise the materialized tables: records, users, closure and share rows by row cause",
				Flags: []cli.Flag{formatFlag()},
				Action: func(c *cli.Context) error {
					f, err := textOrJSON(c)
					if err != nil {
						return err
					}
					return action(out, errOut, func(ctx context.Context, env *Env) error { return Stats(ctx, env, f) })(c)
				},
			},
		},
	}
}

// action opens the pool and logger for a command and maps errors to exit codes.
func action(out, errOut io.Writer, fn func(context.Context, *Env) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		log, err := newLogger(errOut, c.String("log-level"), c.String("log-format"))
		if err != nil {
			return cli.Exit("recalc: "+err.Error(), 2)
		}
		cfg, err := pgxpool.ParseConfig(c.String("database-url"))
		if err != nil {
			return cli.Exit("recalc: bad --database-url / DATABASE_URL: "+err.Error(), 2)
		}
		cfg.MaxConns = int32(max(4, runtime.NumCPU()+2, c.Int("workers")+2))
		// JIT compilation costs hundreds of milliseconds on queries whose
		// estimates look big (recursive CTEs) and gains nothing on recalc's
		// index-driven queries and bulk writes.
		//
		// Random page reads cost 4 sequential ones by default, a figure for
		// spinning disks: with it the planner prefers scanning a whole share
		// table to a few thousand index probes for one chunk's families.
		// Either setting given in the URL (?random_page_cost=4) wins.
		for k, v := range map[string]string{"jit": "off", "random_page_cost": "1.1"} {
			if _, set := cfg.ConnConfig.RuntimeParams[k]; !set {
				cfg.ConnConfig.RuntimeParams[k] = v
			}
		}
		pool, err := pgxpool.NewWithConfig(c.Context, cfg)
		if err != nil {
			return cli.Exit("recalc: connect to database: "+err.Error(), 1)
		}
		defer pool.Close()
		if err := pool.Ping(c.Context); err != nil {
			return cli.Exit("recalc: cannot reach the database (set DATABASE_URL or the PG* variables): "+err.Error(), 1)
		}
		if err := fn(c.Context, &Env{Pool: pool, Out: out, Log: log}); err != nil {
			if errors.Is(err, errJobFailed) || errors.Is(err, errDrift) {
				return cli.Exit("", 1)
			}
			return cli.Exit("recalc: "+err.Error(), 1)
		}
		return nil
	}
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("bad --log-level %q", level)
	}
	switch format {
	case "auto":
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: true}
	case "json":
	default:
		return zerolog.Logger{}, fmt.Errorf("bad --log-format %q: use auto, console or json", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Init creates or upgrades the schema.
func Init(ctx context.Context, env *Env) error {
	n, err := schema.Migrate(ctx, env.Pool)
	if err != nil {
		return err
	}
	env.Log.Info().Int("migrations_applied", n).Msg("schema is up to date")
	return nil
}

// Import stores a model file ("-" for standard input), read within lim.
func Import(ctx context.Context, env *Env, path string, maxRevoke float64, lim model.Limits) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	r, closeFile, err := openModel(path)
	if err != nil {
		return err
	}
	defer closeFile()
	var check func(context.Context, pgx.Tx) error
	if maxRevoke >= 0 {
		check = func(ctx context.Context, tx pgx.Tx) error { return blastRadius(ctx, tx, maxRevoke) }
	}
	start := time.Now()
	res, err := store.Import(ctx, env.Pool, r, lim, env.Log, check)
	if err != nil {
		return err
	}
	warnClosure(ctx, env.Pool, env.Log, lim.ClosureWarn)
	env.Log.Info().Strs("sections", res.Sections).Int64("records", res.Records).Int64("shares", res.Shares).
		Int64("teams", res.Teams).Int64("changes", res.Changes).Int64("manual_shares_wiped", res.ManualSharesWiped).
		Dur("duration", time.Since(start)).Msg("model imported; run `recalc run` to recalculate")
	return nil
}

func openModel(path string) (io.Reader, func(), error) {
	if path == "-" {
		return os.Stdin, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open model file: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// blastRadius dry-runs the imported change in a savepoint and refuses it
// when it would revoke more than maxRevoke of the touched pairs with access.
func blastRadius(ctx context.Context, tx pgx.Tx, maxRevoke float64) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	defer sp.Rollback(context.WithoutCancel(ctx))
	im, err := engine.DryRun(ctx, sp, engine.Options{})
	if err != nil {
		return fmt.Errorf("blast-radius check: %w", err)
	}
	if share := im.RevokedShare(); share > maxRevoke {
		var b strings.Builder
		fmt.Fprintf(&b, "refused: this change would revoke access for %d of the %d (user, record) pairs with access on the records it touches (%.1f%%, over --max-revoke %.1f%%):",
			im.Lost, im.PairsBefore, 100*share, 100*maxRevoke)
		for _, o := range im.Objects {
			if o.Lost == 0 {
				continue
			}
			fmt.Fprintf(&b, "\n  %s: %d pairs lose access", o.Object, o.Lost)
			for _, p := range o.LossSamples {
				fmt.Fprintf(&b, "\n    e.g. %s on %s: %s -> %s", p.User, p.Record, p.Before, p.After)
			}
		}
		b.WriteString("\nNothing was stored. `recalc plan FILE` shows the whole impact; import with --yes to proceed.")
		return errors.New(b.String())
	}
	return nil
}

// DryRunCmd prints what importing path (read within lim) would do, computed
// in a rolled-back transaction.
func DryRunCmd(ctx context.Context, env *Env, path string, opt engine.Options, format string, lim model.Limits) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	r, closeFile, err := openModel(path)
	if err != nil {
		return err
	}
	defer closeFile()
	tx, err := env.Pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := store.ImportTx(ctx, tx, r, lim, env.Log); err != nil {
		return err
	}
	warnClosure(ctx, tx, env.Log, lim.ClosureWarn)
	im, err := engine.DryRun(ctx, tx, opt)
	if err != nil {
		return err
	}
	if format == "json" {
		return json.NewEncoder(env.Out).Encode(im)
	}
	w := env.Out
	fmt.Fprintf(w, "Dry run of importing %s (nothing is stored):\n", path)
	if im.Note != "" {
		fmt.Fprintf(w, "Note: %s\n", im.Note)
	}
	fmt.Fprintf(w, "  %d (user, record) pairs gain access, %d lose it", im.Gained, im.Lost)
	if im.LostWithDeleted > 0 {
		fmt.Fprintf(w, ", %d go with deleted records", im.LostWithDeleted)
	}
	fmt.Fprintf(w, " (of %d pairs with access on the touched records: %.1f%% revoked).\n", im.PairsBefore, 100*im.RevokedShare())
	for _, o := range im.Objects {
		fmt.Fprintf(w, "\n%s: +%d -%d\n", o.Object, o.Gained, o.Lost)
		for _, c := range o.Changes {
			fmt.Fprintf(w, "  %-5s -> %-5s %d pairs\n", c.Before, c.After, c.Pairs)
		}
		for _, p := range o.GainSamples {
			fmt.Fprintf(w, "  gains, e.g. %s on %s: %s -> %s\n", p.User, p.Record, p.Before, p.After)
		}
		for _, p := range o.LossSamples {
			fmt.Fprintf(w, "  loses, e.g. %s on %s: %s -> %s\n", p.User, p.Record, p.Before, p.After)
		}
	}
	pl := im.Planned
	var total int64
	for _, n := range pl.Records {
		total += n
	}
	fmt.Fprintf(w, "\nRecalculation: %s, %d records to recompute in %d families, %d chunks, %d changes; estimated %s.\n",
		pl.Kind, total, pl.Families, pl.NumChunks, len(pl.Plan.Changes), im.Estimated.Round(time.Millisecond))
	return nil
}

// Run recalculates and prints a one-line JSON report of the job.
func Run(ctx context.Context, env *Env, opt engine.Options) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	rep, err := engine.Run(ctx, env.Pool, opt, env.Log)
	if err != nil {
		return err
	}
	return json.NewEncoder(env.Out).Encode(rep)
}

// PlanCmd prints what a run would do, computed in a transaction that is
// rolled back, and warns when the closure may exceed closureWarn entries.
func PlanCmd(ctx context.Context, env *Env, opt engine.Options, format string, closureWarn int64) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	// Planning fixes the family roots of records the application wrote, so
	// the transaction writes; it is rolled back.
	tx, err := env.Pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	pl, err := engine.Plan(ctx, tx, opt)
	if err != nil {
		return err
	}
	warnClosure(ctx, tx, env.Log, closureWarn)
	if format == "json" {
		return json.NewEncoder(env.Out).Encode(pl)
	}
	w := env.Out
	switch {
	case pl.Plan.Empty():
		fmt.Fprintln(w, "Nothing to recalculate: the share tables are up to date with the stored model.")
		return nil
	case pl.Plan.Full:
		fmt.Fprintf(w, "Plan: full recalculation (%s)\n", pl.Plan.FullReason)
	default:
		fmt.Fprintln(w, "Plan: incremental recalculation")
	}
	if len(pl.Plan.Changes) > 0 {
		fmt.Fprintln(w, "\nChanges:")
		for _, c := range pl.Plan.Changes {
			fmt.Fprintf(w, "  - %s\n      -> %s\n", c.What, c.Effect)
		}
	}
	if pl.Plan.Closure {
		fmt.Fprintln(w, "\nThe group closure is rewritten where it differs.")
	}
	var total int64
	for _, n := range pl.Records {
		total += n
	}
	fmt.Fprintf(w, "\nRecords to recompute: %d in %d families, %d chunks\n", total, pl.Families, pl.NumChunks)
	for _, o := range sortedKeys(pl.Records) {
		fmt.Fprintf(w, "  %-16s %d\n", o, pl.Records[o])
	}
	return nil
}

// AccessCSV prints all access as CSV.
func AccessCSV(ctx context.Context, env *Env) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	return access.WriteCSV(ctx, env.Pool, env.Out)
}

// AccessOne prints one user's access level to one record.
func AccessOne(ctx context.Context, env *Env, user, record string) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	l, err := access.Level(ctx, env.Pool, user, record)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.Out, l)
	return err
}

// Stats prints a summary of the materialized tables.
func Stats(ctx context.Context, env *Env, format string) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	s, err := access.ReadStats(ctx, env.Pool)
	if err != nil {
		return err
	}
	if format == "json" {
		return json.NewEncoder(env.Out).Encode(s)
	}
	fmt.Fprintf(env.Out, "records:       %d\nactive users:  %d\nclosure rows:  %d\nshare rows:    %d\n", s.Records, s.Users, s.Closure, s.ShareRows)
	for _, c := range sortedKeys(s.ByCause) {
		fmt.Fprintf(env.Out, "  %-16s %d\n", c, s.ByCause[c])
	}
	return nil
}
