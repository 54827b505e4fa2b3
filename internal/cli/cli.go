// Package cli builds the recalc command-line app: one constructor per
// command (commands.go), whose flags it reads and whose output it formats.
// Each command's logic is a function taking (ctx, *Env) so tests can drive
// it without a process; Env carries the pool, output writer and logger. It
// holds no SQL: commands call internal/engine and the storage packages.
package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/attach"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/schema"
)

// Env is what every command needs.
type Env struct {
	Pool *pgxpool.Pool
	Out  io.Writer
	Log  zerolog.Logger
}

// Exit statuses, the same for every command.
const (
	ExitOK          = 0   // success
	ExitFailed      = 1   // the command failed: a job failed, drift found, invalid input, ...
	ExitUsage       = 2   // a mistyped command, flag or argument
	ExitNoDatabase  = 3   // the database cannot be reached
	ExitInterrupted = 130 // interrupted by SIGINT or SIGTERM; a job stays resumable
)

// App returns the recalc command-line app writing results to out and logs to errOut.
func App(out, errOut io.Writer) *cli.App {
	app := &cli.App{
		Name:    "recalc",
		Version: version(),
		Usage:   "recalculate a CRM's materialized sharing (who can read or edit each record) on PostgreSQL",
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
			cli.HelpFlag, // urfave/cli adds it only when it adds its own help command
		},
		Before: before,
		After:  stopProfiles,
		// Errors are returned, not exited on, so that After still writes
		// the profiles: main exits with ExitCode.
		ExitErrHandler:       func(*cli.Context, error) {},
		EnableBashCompletion: true,
		OnUsageError:         usageError,
		Action:               unknownCommand,
		CommandNotFound:      helpOfContext,
		Commands: []*cli.Command{
			initCommand(out, errOut),
			importCommand(out, errOut),
			exportCommand(out, errOut),
			runCommand(out, errOut),
			deferCommand(out, errOut),
			resumeCommand(out, errOut),
			watchCommand(out, errOut),
			waitCommand(out, errOut),
			statusCommand(out, errOut),
			planCommand(out, errOut),
			accessCommand(out, errOut),
			explainCommand(out, errOut),
			verifyCommand(out, errOut),
			grantCommand(out, errOut),
			attachCommand(out, errOut),
			detachCommand(out, errOut),
			rlsCommand(out, errOut),
			statsCommand(out, errOut),
			changesCommand(out, errOut),
			completionCommand(out),
			helpCommand(),
		},
	}
	for _, cmd := range app.Commands {
		setUsageError(cmd)
	}
	return app
}

// unknownCommand is the app's action, reached when no command matched: help
// with no argument, else a one-line error with the nearest command.
func unknownCommand(c *cli.Context) error {
	if c.NArg() == 0 {
		return cli.ShowAppHelp(c)
	}
	name := c.Args().First()
	msg := fmt.Sprintf("recalc: unknown command %.100q", name)
	if s := nearest(name, c.App.Commands); s != "" {
		msg += fmt.Sprintf(": did you mean %q?", s)
	}
	return cli.Exit(msg+" (`recalc help` lists the commands)", ExitUsage)
}

// helpCommand is `recalc help [COMMAND]`, as urfave/cli's own, except that
// a COMMAND recalc does not have is a usage error (urfave/cli exits 3, the
// status that means no database).
func helpCommand() *cli.Command {
	return &cli.Command{
		Name:      "help",
		Aliases:   []string{"h"},
		Usage:     "show the commands, or one command's help",
		ArgsUsage: "[COMMAND]",
		Action: func(c *cli.Context) error {
			name := c.Args().First()
			if name == "" {
				return cli.ShowAppHelp(c)
			}
			if c.App.Command(name) == nil {
				return unknownCommand(c)
			}
			return cli.ShowCommandHelp(c.Lineage()[1], name)
		},
	}
}

// helpOfContext answers --help followed by an operand that names no
// subcommand. After a command that has none, `recalc grant --help reader`,
// it shows that command's help, as --help alone does; elsewhere, `recalc
// --help stat` or `recalc rls --help enabel`, the operand is a mistyped
// command: a usage error with the nearest one. (urfave/cli would exit 3,
// the status that means no database, and cannot return an error here.)
func helpOfContext(c *cli.Context, topic string) {
	cmds := c.App.Commands
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		cmds = slices.DeleteFunc(slices.Clone(c.Command.Subcommands), func(s *cli.Command) bool { return s.Name == "help" })
		if len(cmds) == 0 && len(c.Lineage()) > 1 {
			_ = cli.ShowCommandHelp(c.Lineage()[1], c.Command.Name)
			return
		}
	}
	msg := fmt.Sprintf("recalc: unknown command %.100q", topic)
	if s := nearest(topic, cmds); s != "" {
		msg += fmt.Sprintf(": did you mean %q?", s)
	}
	cli.HandleExitCoder(cli.Exit(msg+" (`recalc help` lists the commands)", ExitUsage))
}

// nearest is the command whose name starts with name or is at most two
// edits from it, the closest first; "" when none is.
func nearest(name string, cmds []*cli.Command) string {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.Name
	}
	return nearestName(name, names)
}

// nearestName is the one of names that starts with name or is at most two
// edits from it, the closest first; "" when none is.
func nearestName(name string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		d := editDistance(name, n)
		if strings.HasPrefix(n, name) {
			d = 0
		}
		if d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// flagNames are the names of flags, aliases included.
func flagNames(flags []cli.Flag) []string {
	var names []string
	for _, f := range flags {
		names = append(names, f.Names()...)
	}
	return names
}

// unknownFlag rewords urfave/cli's error for a flag the command does not
// have: a global option given after the command is told to go before it
// (global is then true), and a mistyped one gets the nearest of the
// command's flags.
func unknownFlag(c *cli.Context, err error, path []string) (_ error, global bool) {
	name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: ")
	if !ok {
		return err, false
	}
	name = strings.TrimLeft(name, "-")
	dashed := func(n string) string {
		if len(n) == 1 {
			return "-" + n
		}
		return "--" + n
	}
	if len(path) > 0 && slices.Contains(flagNames(c.App.Flags), name) {
		return fmt.Errorf("%s is an option of recalc itself: give it before the command (recalc %s ... %s)",
			dashed(name), dashed(name), strings.Join(path, " ")), true
	}
	if c.Command != nil && len(name) > 1 {
		if s := nearestName(name, flagNames(c.Command.Flags)); s != "" {
			return fmt.Errorf("unknown flag %.100s: did you mean %s?", dashed(name), dashed(s)), false
		}
	}
	return fmt.Errorf("unknown flag %.100s", dashed(name)), false
}

// badFlagValue rewords the flag package's error for a value a flag cannot
// take, which names the flag with one dash and says only "parse error", to
// name the flag as it is typed and the kind of value it takes.
func badFlagValue(c *cli.Context, err error) error {
	value, name, ok := flagValueError(err.Error())
	if !ok {
		return err
	}
	var flags []cli.Flag
	if c.Command != nil {
		flags = c.Command.Flags
	}
	var want string
	for _, f := range slices.Concat(flags, c.App.Flags) {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		switch f.(type) {
		case *cli.IntFlag, *cli.Int64Flag:
			want = "a whole number"
		case *cli.Float64Flag:
			want = "a number"
		case *cli.DurationFlag:
			want = "a duration with its unit, such as 500ms, 5s or 10m"
		case *cli.BoolFlag:
			want = "true or false"
		}
		break
	}
	if want == "" {
		return err
	}
	return fmt.Errorf("invalid value %.100s for --%s: give %s", value, name, want)
}

// flagValueError parses the flag package's error for a value a flag cannot
// take, `invalid value "abc" for flag -workers: parse error` (or `invalid
// boolean value "x" for -full: ...`), into the quoted value and the flag's
// name.
func flagValueError(msg string) (value, name string, ok bool) {
	rest, ok := strings.CutPrefix(msg, "invalid value ")
	if !ok {
		if rest, ok = strings.CutPrefix(msg, "invalid boolean value "); !ok {
			return "", "", false
		}
	}
	value, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return "", "", false
	}
	rest, ok = strings.CutPrefix(rest[len(value):], " for ")
	if !ok {
		return "", "", false
	}
	name, _, ok = strings.Cut(strings.TrimLeft(strings.TrimPrefix(rest, "flag "), "-"), ":")
	return value, name, ok && name != ""
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// oneLine joins a multi-line error (pgx lists each address it tried) into
// one line.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// usageError reports a mistyped flag or argument on one line, without the
// help, and exits 2.
func usageError(c *cli.Context, err error, _ bool) error {
	path := commandPath(c)
	err, global := unknownFlag(c, err, path)
	err = badFlagValue(c, err)
	help := "`recalc --help`"
	if len(path) > 0 && !global {
		help = fmt.Sprintf("`recalc %s --help`", strings.Join(path, " "))
	}
	return cli.Exit(fmt.Sprintf("recalc: %v (see %s)", err, help), ExitUsage)
}

// commandPath is the names of c's command, outermost first: rls enable.
func commandPath(c *cli.Context) []string {
	var path []string
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.Command.Name != "" && ctx.Command.Name != c.App.Name {
			path = append([]string{ctx.Command.Name}, path...)
		}
	}
	return path
}

// setUsageError makes cmd and its subcommands report usage errors with
// usageError: missing required flags (urfave/cli checks those before
// anything else and prints the whole help, so cmd checks them itself, first
// thing in Before), and any argument given to a command that takes none (a
// flag typed without its dashes, `defer closure`, would otherwise be
// ignored and the command run as if it were not there), and any flag or
// argument that is not UTF-8 (checkUTF8).
func setUsageError(cmd *cli.Command) {
	cmd.OnUsageError = usageError
	var required []string
	for _, f := range cmd.Flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Required {
			sf.Required = false
			required = append(required, sf.Name)
		}
	}
	noArgs := cmd.ArgsUsage == "" && len(cmd.Subcommands) == 0
	before := cmd.Before
	cmd.Before = func(c *cli.Context) error {
		var missing []string
		for _, name := range required {
			if !c.IsSet(name) {
				missing = append(missing, "--"+name)
			}
		}
		if len(missing) > 0 {
			return usageError(c, fmt.Errorf("give %s", strings.Join(missing, " and ")), false)
		}
		if noArgs && c.NArg() > 0 && cmd.Command(c.Args().First()) == nil { // not urfave/cli's help subcommand
			return usageError(c, strayArgument(cmd, c.Args().First()), false)
		}
		if err := checkUTF8(c, cmd); err != nil {
			return usageError(c, err, false)
		}
		if before != nil {
			return before(c)
		}
		return nil
	}
	for _, sub := range cmd.Subcommands {
		setUsageError(sub)
	}
}

// checkUTF8 refuses a string flag or an argument of cmd that is not valid
// UTF-8, which PostgreSQL would refuse with an error of its own. File names
// (a flag with TakesFile, a FILE argument) and the webhook secret (HMAC key
// bytes) may be any bytes.
func checkUTF8(c *cli.Context, cmd *cli.Command) error {
	for _, f := range cmd.Flags {
		if sf, ok := f.(*cli.StringFlag); ok && !sf.TakesFile && sf.Name != "notify-secret" && !utf8.ValidString(c.String(sf.Name)) {
			return fmt.Errorf("--%s is not valid UTF-8", sf.Name)
		}
	}
	if strings.Contains(cmd.ArgsUsage, "FILE") {
		return nil
	}
	for i, arg := range c.Args().Slice() {
		if !utf8.ValidString(arg) {
			return fmt.Errorf("argument %d is not valid UTF-8", i+1)
		}
	}
	return nil
}

// maxIDBytes bounds a stored id, object or name: recalc.record's check
// constraint, and the model's default --max-id-bytes.
var maxIDBytes = model.DefaultLimits().IDBytes

// maxUserBytes bounds a user id: the database does not bound users, so an
// import with a larger --max-id-bytes (or 0) may store longer ones.
const maxUserBytes = 64 << 10

// checkID refuses v, which what names, when it is longer than limit: it
// names nothing stored, and would be echoed whole in the error.
func checkID(c *cli.Context, what, v string, limit int64) error {
	if int64(len(v)) > limit {
		return usageError(c, fmt.Errorf("%s is %d bytes long, and none stored is over %d", what, len(v), limit), false)
	}
	return nil
}

// idFlag is f, its value refused by checkID before the command runs.
func idFlag(f *cli.StringFlag) *cli.StringFlag {
	limit := maxIDBytes
	if f.Name == "user" {
		limit = maxUserBytes
	}
	f.Action = func(c *cli.Context, v string) error { return checkID(c, "--"+f.Name, v, limit) }
	return f
}

// flagRange is a numeric flag's value, whether it is in the range the
// command takes, and that range, as its usage error says it.
type flagRange struct {
	name  string
	value any
	ok    bool
	want  string
}

// outOfRange is the usage error of the first flag whose value is out of
// its range, naming the flag, the range and the value; nil when none is.
func outOfRange(c *cli.Context, flags []flagRange) error {
	for _, f := range flags {
		if !f.ok {
			return usageError(c, fmt.Errorf("--%s must be %s, not %v", f.name, f.want, f.value), false)
		}
	}
	return nil
}

// atLeast is the Action of a numeric flag whose value must be least or
// more; NaN is refused too.
func atLeast[T cmp.Ordered](name string, least T) func(*cli.Context, T) error {
	return func(c *cli.Context, v T) error {
		return outOfRange(c, []flagRange{{name, v, v >= least, fmt.Sprintf("%v or more", least)}})
	}
}

// zeroOrAtLeast is atLeast for a flag whose 0 turns something off.
func zeroOrAtLeast(name string, least time.Duration) func(*cli.Context, time.Duration) error {
	return func(c *cli.Context, v time.Duration) error {
		if v != 0 && v < least {
			return usageError(c, fmt.Errorf("--%s must be 0 or %v or more, not %v", name, least, v), false)
		}
		return nil
	}
}

// minPoll is the shortest --poll (of watch, and changes --follow) and
// nonzero --catalog-poll (of watch): a shorter one has the process query
// the database without pause.
const minPoll = 10 * time.Millisecond

// strayArgument is the error for arg given to cmd, which takes no
// arguments, naming the flag it may have meant.
func strayArgument(cmd *cli.Command, arg string) error {
	for _, f := range cmd.Flags {
		for _, name := range f.Names() {
			if len(name) > 1 && name == strings.TrimLeft(arg, "-") {
				return fmt.Errorf("%s takes no arguments, got %.100q: a flag starts with dashes, as --%s", cmd.Name, arg, name)
			}
		}
	}
	hint := map[string]string{"changes": ": give the cursor as --since CURSOR", "export": ": --output FILE names the file"}[cmd.Name]
	return fmt.Errorf("%s takes no arguments, got %.100q%s", cmd.Name, arg, hint)
}

// version is the module version the binary was built from ("devel" for a
// build from a work tree) and the schema version it needs.
func version() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return fmt.Sprintf("%s (schema version %d)", v, schema.Latest())
}

// Errors that make a command exit 1 with no message: it printed its result.
var (
	errJobFailed = errors.New("the job failed")                  // `recalc wait`: the job failed
	errDrift     = errors.New("the materialized tables drifted") // `recalc verify`: drift not repaired, or a source not compared
	// errNoDatabase, wrapped, exits ExitNoDatabase with the error's message:
	// the database was lost and could not be reached again.
	errNoDatabase = errors.New("the database cannot be reached")
)

// defaultConnectTimeout bounds each connection's establishment when
// neither the URL nor PGCONNECT_TIMEOUT sets connect_timeout.
const defaultConnectTimeout = 10 * time.Second

// action opens the pool and logger for a command and maps errors to exit codes.
func action(out, errOut io.Writer, fn func(context.Context, *Env) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		log, err := newLogger(errOut, c.String("log-level"), c.String("log-format"))
		if err != nil {
			return cli.Exit("recalc: "+err.Error(), 2)
		}
		cfg, err := pgxpool.ParseConfig(c.String("database-url"))
		if err != nil {
			return cli.Exit("recalc: bad --database-url / DATABASE_URL: "+err.Error()+
				": give a URL such as postgres://USER@HOST:5432/DATABASE or key=value pairs such as host=HOST dbname=DATABASE", 2)
		}
		// libpq waits for ever for a server that accepts the connection and
		// never answers (hung, stopped, a half-open path): a nightly run or a
		// probe would never end. Bound it unless the URL or the environment
		// says (connect_timeout=0 still waits for ever).
		if !strings.Contains(c.String("database-url"), "connect_timeout") && os.Getenv("PGCONNECT_TIMEOUT") == "" {
			cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
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
		pg.PinSession(&cfg.ConnConfig.Config)
		db := describeDB(&cfg.ConnConfig.Config, c.String("database-url"), os.Getenv)
		pool, err := pgxpool.NewWithConfig(c.Context, cfg)
		if err != nil {
			return cli.Exit(fmt.Sprintf("recalc: connect to %s: %s", db, oneLine(err)), ExitNoDatabase)
		}
		defer pool.Close()
		if err := pool.Ping(c.Context); err != nil {
			if c.Context.Err() != nil { // SIGINT while connecting: the server was not at fault
				return cli.Exit(interrupted(strings.Join(commandPath(c), " ")), ExitInterrupted)
			}
			if msg := refused(db, err); msg != "" {
				return cli.Exit(msg, ExitFailed)
			}
			return cli.Exit(fmt.Sprintf("recalc: cannot reach %s (set DATABASE_URL or the PG* variables): %s", db, oneLine(err)), ExitNoDatabase)
		}
		if msg := sqlASCII(c.Context, pool, db, errOut, removesRecalc(commandPath(c))); msg != "" {
			return cli.Exit(msg, ExitFailed)
		}
		err = fn(c.Context, &Env{Pool: pool, Out: out, Log: log})
		switch {
		case err == nil:
			return nil
		case c.Context.Err() != nil:
			return cli.Exit(interrupted(strings.Join(commandPath(c), " ")), ExitInterrupted)
		case errors.Is(err, errJobFailed) || errors.Is(err, errDrift):
			return cli.Exit("", ExitFailed)
		case refused(db, err) != "": // the database dropped, the role's password changed, ...
			return cli.Exit(refused(db, err), ExitFailed)
		case errors.Is(err, errNoDatabase):
			return cli.Exit("recalc: "+oneLine(err), ExitNoDatabase)
		case lostDatabase(err): // mid-command: a restart, a failover, a terminated session
			return cli.Exit(fmt.Sprintf("recalc: lost the connection to %s: %s: run the command again once the database is reachable (an unfinished job resumes)",
				db, oneLine(err)), ExitNoDatabase)
		case errors.As(err, new(*schema.VersionError)):
			return cli.Exit(fmt.Sprintf("recalc: %s: %v", db, err), ExitFailed)
		}
		msg := "recalc: " + err.Error()
		if h := pg.Hint(err); h != "" && !strings.Contains(msg, h) {
			msg += "\nhint: " + h // PostgreSQL's: what to do next
		}
		return cli.Exit(msg, ExitFailed)
	}
}

// sqlASCII is the one line of a command refused because the database's
// encoding is SQL_ASCII, "" for any other (or when it cannot be read: the
// command then fails on its own). PostgreSQL stores SQL_ASCII text as the
// bytes written, unchecked, and converts nothing for a UTF8 client, so a
// row of an attached table hands recalc bytes that are not UTF-8: Go read
// a field's as U+FFFD where SQL compares the bytes, so that a full run
// granted a rule's access that an incremental one, prefiltered in SQL,
// did not (a lost or stray share), and an id's made every incremental run
// fail ("conversion between UTF8 and SQL_ASCII is not supported", as did
// an import of a value escaped in JSON). Any other server encoding is
// converted to and from UTF-8 by the server, and checked.
//
// A command that takes recalc off the application's tables (removal:
// removesRecalc) still runs where recalc is installed, warning on errOut:
// refused, it left an install made before the refusal with its capture
// triggers on the application's tables and its row-level security, which
// only these commands undo whole (dropping schema recalc by hand drops
// its policies, not the row-level security it enabled).
func sqlASCII(ctx context.Context, pool *pgxpool.Pool, db string, errOut io.Writer, removal bool) string {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return ""
	}
	defer c.Release()
	if c.Conn().PgConn().ParameterStatus("server_encoding") != "SQL_ASCII" {
		return ""
	}
	if installed, err := schema.Installed(ctx, c); removal && err == nil && installed {
		fmt.Fprintf(errOut, "warning: %s: the database's encoding is SQL_ASCII: recalc runs only init, detach and rls disable there, "+
			"to take it off the application's tables\n", db)
		return ""
	}
	return fmt.Sprintf("recalc: %s: the database's encoding is SQL_ASCII, whose text PostgreSQL does not check: recalc needs text it can read as UTF-8 "+
		"and refuses it: move the data to a database created with ENCODING 'UTF8' (pg_dump, then restore into it)", db)
}

// removesRecalc reports whether the command at path (commandPath) is one
// that takes recalc off a database, or brings its schema up to the
// version that those need (schema.Check): init, detach and rls disable.
func removesRecalc(path []string) bool {
	switch strings.Join(path, " ") {
	case "init", "detach", "rls disable":
		return true
	}
	return false
}

// lostDatabase reports whether err is the database lost or refusing
// connections: a connection that failed, or one the server ended
// (pg.IsServerGone).
func lostDatabase(err error) bool {
	// *net.OpError, not net.Error: a syscall.Errno is a net.Error too, and
	// a file's "no such file or directory" is not the database lost.
	// A listen's (watch --metrics-addr in use) is the command's own.
	var ce *pgconn.ConnectError
	var oe *net.OpError
	return pg.IsServerGone(err) || errors.As(err, &ce) || errors.As(err, &oe) && oe.Op != "listen"
}

// refused is the one line of a command whose connection the server refused
// for its configuration (pg.ConnectRefused), or the client refused for its
// own settings (pg.ConnectMisconfigured): which database, the reason
// (which never holds the password) and what to do, for no retry fixes it;
// "" for any other error.
func refused(db string, err error) string {
	if ce := pg.ConnectMisconfigured(err); ce != nil && pg.ConnectRefused(err) == nil {
		return fmt.Sprintf("recalc: %s: the client refused the connection: %s: check the settings in --database-url / DATABASE_URL (require_auth, channel_binding, sslcertmode, the password or ~/.pgpass) against the server's authentication method for the role (pg_hba.conf)",
			db, oneLine(ce))
	}
	pe := pg.ConnectRefused(err)
	if pe == nil {
		return ""
	}
	todo := "check the role and password in --database-url / DATABASE_URL (or ~/.pgpass): the role must exist, may log in, and pg_hba.conf must let it in"
	switch pe.Code {
	case pg.InvalidCatalogName:
		todo = "create the database (or restore it), or name an existing one in --database-url / DATABASE_URL; then `recalc init`"
	case pg.InsufficientPrivilege:
		todo = "grant the role CONNECT on the database (GRANT CONNECT ON DATABASE ... TO ...), or check the role in --database-url / DATABASE_URL"
	}
	return fmt.Sprintf("recalc: %s: the server refused the connection: %s (SQLSTATE %s): %s", db, oneLine(errors.New(pe.Message)), pe.Code, todo)
}

// interrupted is the error of command cmd stopped by SIGINT or SIGTERM:
// what became of its work, and what to do next.
func interrupted(cmd string) string {
	switch cmd {
	case "run", "resume":
		return "recalc: interrupted: an unfinished job stays resumable, and the next `recalc run` resumes it"
	case "import", "attach", "detach": // each one transaction
		return fmt.Sprintf("recalc: interrupted: nothing was stored (%s is one transaction): run recalc %s again", cmd, cmd)
	case "wait":
		return "recalc: interrupted: the job goes on; `recalc wait` waits for it again"
	}
	return fmt.Sprintf("recalc: interrupted: recalc %s stopped before it finished: run it again", cmd)
}

// describeDB names the database a command works on, for its messages: the
// database the server picks when none is given (the user's name), and, when
// neither the URL nor any PG* variable says where, that libpq's defaults
// chose it, so that a service whose DATABASE_URL is missing is not told to
// `recalc init` whatever database those defaults reach.
func describeDB(cfg *pgconn.Config, url string, getenv func(string) string) string {
	name := cfg.Database
	if name == "" {
		name = cfg.User // the server's default
	}
	db := fmt.Sprintf("database %q on %s:%d as %q", name, cfg.Host, cfg.Port, cfg.User)
	if strings.TrimSpace(url) != "" {
		return db
	}
	for _, v := range []string{"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGSERVICEFILE", "PGPASSWORD"} {
		if getenv(v) != "" {
			return db
		}
	}
	return db + " (DATABASE_URL is not set, nor any PG* variable: these are libpq's defaults)"
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	// Only the levels --help names: zerolog also takes "" and "disabled",
	// which silence every line, warnings and errors included, and "panic"
	// and "fatal", which silence all but lines recalc never writes.
	lvl, ok := map[string]zerolog.Level{"debug": zerolog.DebugLevel, "info": zerolog.InfoLevel,
		"warn": zerolog.WarnLevel, "error": zerolog.ErrorLevel}[strings.ToLower(level)]
	if !ok {
		return zerolog.Logger{}, fmt.Errorf("bad --log-level %.100q: use debug, info, warn or error", level)
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
		return zerolog.Logger{}, fmt.Errorf("bad --log-format %.100q: use auto, console or json", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Init creates or upgrades the schema.
func Init(ctx context.Context, env *Env) error {
	n, err := schema.Migrate(ctx, env.Pool)
	// A table left with its old capture trigger fails the command, after
	// what follows: the schema is migrated, and the warnings below still
	// concern it.
	var pins *schema.PinsError
	if err != nil && !errors.As(err, &pins) {
		return err
	}
	msg := "schema is up to date"
	if n > 0 {
		msg = "schema created or upgraded"
	}
	env.Log.Info().Int("migrations_applied", n).Msg(msg)
	fault, err := attach.SandboxFault(ctx, env.Pool)
	if err != nil {
		return err
	}
	if fault != "" {
		env.Log.Warn().Str("fault", fault).Msg("the writes to attached tables will wait until recalc can read them as its sandbox role: " +
			"as an administrator, create the role as SECURITY.md (\"The sandbox role\") says, then run `recalc attach FILE` again")
	}
	outdated, err := access.OutdatedPolicies(ctx, env.Pool)
	if err != nil {
		return err
	}
	for _, table := range outdated {
		env.Log.Warn().Str("table", table).Msg("an earlier recalc installed this table's row-level security policies: " +
			"run `recalc rls enable` on it again with the same flags to bring them up to date (docs/rls.md)")
	}
	if pins != nil {
		return pins
	}
	return nil
}

// ImportWith stores a model file ("-" for standard input), read within lim,
// as opt says: a merge (--merge), a revision check (--if-revision). While a
// recalculation job runs it waits up to waitJob for the job to end; a job
// that no process works on any more (its process was killed) it finishes
// first, as `recalc run` would, planning nothing new.
func ImportWith(ctx context.Context, env *Env, path string, maxRevoke float64, lim model.Limits, opt store.Options, waitJob time.Duration) error {
	r, closeFile, err := openModel(ctx, env, path)
	if err != nil {
		return err
	}
	defer closeFile()
	var check func(context.Context, pgx.Tx) error
	if maxRevoke >= 0 {
		check = func(ctx context.Context, tx pgx.Tx) error { return blastRadius(ctx, tx, maxRevoke, env.Log) }
	}
	began := time.Now()
	var start time.Time
	var res *store.Result
	for {
		// A running job refuses the import before it reads the file, so
		// the file can be imported once the job has ended.
		start = time.Now()
		res, err = store.ImportWith(ctx, env.Pool, r, lim, env.Log, check, opt)
		var busy *store.BusyError
		if errors.As(err, &busy) && (busy.Status == queue.Interrupted || busy.Status == queue.Paused) {
			if err := finishBeforeImport(ctx, env, busy); err != nil {
				return err
			}
			continue
		}
		if !errors.As(err, &busy) || busy.Status != queue.Running || time.Since(began) >= waitJob {
			break
		}
		env.Log.Info().Int64("job", busy.Job).Dur("wait_job", waitJob).Msg("a recalculation job is running: the import waits for it to end")
		if err := waitForJob(ctx, env.Pool, busy.Job, began.Add(waitJob)); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	warnClosureEstimate(env.Log, res.ClosureEstimate, lim.ClosureWarn)
	next := "model imported; run `recalc run` to recalculate (a running `recalc watch` does it by itself)"
	if deferred, err := store.Deferred(ctx, env.Pool); err == nil && len(deferred) > 0 {
		next = "model imported; calculation of " + strings.Join(slices.Sorted(maps.Keys(deferred)), " and ") +
			" is deferred: `recalc run` recalculates the rest, `recalc resume` lifts the deferral and recalculates all"
	}
	env.Log.Info().Bool("merge", opt.Merge).Strs("sections", res.Sections).Int64("records", res.Records).Int64("shares", res.Shares).
		Int64("teams", res.Teams).Int64("changes", res.Changes).Int64("manual_shares_wiped", res.ManualSharesWiped).
		Int64("duration_ms", time.Since(start).Milliseconds()).Msg(next)
	return nil
}

// finishBeforeImport finishes the job that busy names, interrupted (no
// process works on it) or paused by a deferral, as `recalc run` or `recalc
// resume` would, planning nothing new: an import computes from the
// configuration it stores, so it never lands beside an unfinished job.
// While share rows are deferred, the job's chunks leave out the families
// written since it was planned (engine.Finish), and the import's own
// writes wait for `recalc resume`.
func finishBeforeImport(ctx context.Context, env *Env, busy *store.BusyError) error {
	what, then := "was interrupted", "run `recalc run`"
	if busy.Status == queue.Paused {
		what, then = "was paused by `recalc defer`", "run `recalc resume`, `recalc defer`"
	}
	env.Log.Warn().Int64("job", busy.Job).Msg("a recalculation job " + what + ": the import finishes it first, then imports")
	if _, err := engine.Finish(ctx, env.Pool, engine.Options{}, env.Log); err != nil {
		return fmt.Errorf("finish job %d, which %s, before importing (%s, then import again): %w", busy.Job, what, then, err)
	}
	return nil
}

// waitForJob waits until job id has ended, or no process works on it, or
// the deadline has passed (the caller then tries again, and says so).
func waitForJob(ctx context.Context, pool *pgxpool.Pool, id int64, deadline time.Time) error {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	err := func() error {
		conn, done, err := listenForJobs(wctx, pool)
		if err != nil {
			return err
		}
		defer done()
		_, err = awaitJob(wctx, conn, id)
		return err
	}()
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		return nil // the deadline
	}
	return err
}

// openModel checks the schema, then opens the model file path ("-" for
// standard input) and returns it with the function that closes it.
func openModel(ctx context.Context, env *Env, path string) (io.Reader, func(), error) {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return nil, nil, err
	}
	f, done := os.Stdin, func() {}
	if path != "-" {
		var err error
		if f, err = os.Open(path); err != nil {
			return nil, nil, fmt.Errorf("open model file: %w: check the path (or give - to read standard input)", err)
		}
		done = func() { f.Close() }
	}
	// A directory opens, and its read error read as malformed JSON.
	if st, err := f.Stat(); err == nil && st.IsDir() {
		done()
		return nil, nil, fmt.Errorf("open model file: %s is a directory: give the model file (or - for standard input)", shown(f.Name()))
	}
	return f, done, nil
}

// blastRadius dry-runs the imported change in a savepoint and refuses it
// when it would revoke more than maxRevoke of the touched pairs with access.
func blastRadius(ctx context.Context, tx pgx.Tx, maxRevoke float64, log zerolog.Logger) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	defer sp.Rollback(context.WithoutCancel(ctx))
	im, err := engine.DryRun(ctx, sp, engine.Options{InPlace: true}, log) // as `recalc run` plans
	if err != nil {
		return fmt.Errorf("blast-radius check: %w", err)
	}
	if share := im.RevokedShare(); share > maxRevoke {
		var b strings.Builder
		fmt.Fprintf(&b, "refused: this change would revoke or lower access for %d of the %d (user, record) pairs with access whose access it can change (%.1f%%, over --max-revoke %.1f%%):",
			im.Lost, im.PairsBefore, 100*share, 100*maxRevoke)
		for _, o := range im.Objects {
			if o.Lost == 0 {
				continue
			}
			fmt.Fprintf(&b, "\n  %s: %d pairs lose access or a level", shown(o.Object), o.Lost)
			for _, p := range o.LossSamples {
				fmt.Fprintf(&b, "\n    e.g. %s on %s: %s -> %s", shown(p.User), shown(p.Record), p.Before, p.After)
			}
		}
		b.WriteString("\nNothing was stored. `recalc plan FILE` (`recalc plan --merge FILE` for a merge file) shows the whole impact; import with --yes to proceed.")
		return errors.New(b.String())
	}
	return nil
}

// liveOut is w when it is a terminal, for a progress line redrawn in
// place, and nil otherwise.
func liveOut(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		return w
	}
	return nil
}

// DryRunCmd prints what importing path (read within lim; merged, with merge)
// would do, computed in a rolled-back transaction. A long dry run logs its
// progress (opt.Live: on a line redrawn in place).
func DryRunCmd(ctx context.Context, env *Env, path string, merge bool, opt engine.Options, format string, lim model.Limits) error {
	r, closeFile, err := openModel(ctx, env, path)
	if err != nil {
		return err
	}
	defer closeFile()
	tx, err := env.Pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	res, err := store.ImportTxWith(ctx, tx, r, lim, env.Log, store.Options{Merge: merge})
	if locked := new(store.LockedError); errors.As(err, &locked) {
		locked.Holders, locked.DryRun = store.LockHolders(ctx, env.Pool), true
	}
	if err != nil {
		return err
	}
	warnClosureEstimate(env.Log, res.ClosureEstimate, lim.ClosureWarn)
	im, err := engine.DryRun(ctx, tx, opt, env.Log)
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
	fmt.Fprintf(w, " (of %d compared pairs with access: %.1f%% revoked).\n", im.PairsBefore, 100*im.RevokedShare())
	for _, o := range im.Objects {
		fmt.Fprintf(w, "\n%s: +%d -%d\n", shown(o.Object), o.Gained, o.Lost)
		for _, c := range o.Changes {
			fmt.Fprintf(w, "  %-5s -> %-5s %d pairs\n", c.Before, c.After, c.Pairs)
		}
		for _, p := range o.GainSamples {
			fmt.Fprintf(w, "  gains, e.g. %s on %s: %s -> %s\n", shown(p.User), shown(p.Record), p.Before, p.After)
		}
		for _, p := range o.LossSamples {
			fmt.Fprintf(w, "  loses, e.g. %s on %s: %s -> %s\n", shown(p.User), shown(p.Record), p.Before, p.After)
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
	if err := attach.RecalculatesAsOwner(ctx, env.Pool, "run"); err != nil {
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
			fmt.Fprintf(w, "  - %s\n      -> %s\n", shown(c.What), shown(c.Effect))
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
		fmt.Fprintf(w, "  %-16s %d\n", shown(o), pl.Records[o])
	}
	return nil
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
