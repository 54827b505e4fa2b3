package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/attach"
	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/metrics"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/notify"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/internal/watch"
	"github.com/recalc-dev/recalc/internal/workers"
	"github.com/recalc-dev/recalc/schema"
)

// runFlags are the flags of every command that recalculates.
func runFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "in-place", Value: true, Usage: "full jobs (--full, or planned for a truncate) rewrite the live tables " +
			"family by family, locking and writing only the families that differ; --in-place=false builds new tables and swaps them in: faster from scratch " +
			"(a first computation always does; a change to most records then becomes a full job too), but the swap waits for open readers, a transaction whose snapshot predates it reads the new tables as " +
			"empty, and its index builds stall the application's commits"},
		&cli.IntFlag{Name: "workers", Value: 2, Usage: "chunks this process works at once"},
		&cli.IntFlag{Name: "chunk-size", Value: 5000, Usage: "records per chunk of a new job (whole record families stay together)"},
		&cli.DurationFlag{Name: "lock-timeout", Value: 5 * time.Second, Usage: "how long a chunk, or planning, waits for a row lock (at most 596h)"},
		&cli.IntFlag{Name: "retries", Value: 5, Usage: "retries of a chunk that hit a lock timeout, deadlock or serialization failure, with backoff"},
		&cli.Float64Flag{Name: "nice", Usage: "after each chunk, a worker rests this many times as long as the chunk took, leaving the CPUs and the disk " +
			"to the application (1: a job takes about twice as long; 0 to 100)"},
		&cli.StringFlag{Name: "notify-url", EnvVars: []string{"RECALC_NOTIFY_URL"}, Usage: "POST each job's completion notification (JSON) to this http(s) URL; one not delivered is kept and retried by later runs"},
		&cli.StringFlag{Name: "notify-secret", EnvVars: []string{"RECALC_NOTIFY_SECRET"}, Usage: "sign webhook bodies with HMAC-SHA256 under this secret (16+ characters; prefer the environment variable): headers X-Recalc-Timestamp and X-Recalc-Signature"},
		&cli.StringSliceFlag{Name: "notify-email", EnvVars: []string{"RECALC_NOTIFY_EMAIL"}, Usage: "mail each job's completion notification to this address (repeatable)"},
		&cli.StringFlag{Name: "smtp-addr", Value: "localhost:25", EnvVars: []string{"RECALC_SMTP_ADDR"}, Usage: "SMTP relay for --notify-email, host:port"},
		&cli.StringFlag{Name: "smtp-from", Value: "recalc@localhost", EnvVars: []string{"RECALC_SMTP_FROM"}, Usage: "sender address for --notify-email"},
		&cli.DurationFlag{Name: "notify-timeout", Value: 10 * time.Second, Usage: "timeout of each notification attempt"},
		&cli.IntFlag{Name: "notify-retries", Value: 3, Usage: "quick webhook retries after a failure, with backoff, before the notification is kept for a later run"},
	}
}

// maxLockTimeout is the longest lock_timeout PostgreSQL takes: its
// integer range of milliseconds.
const maxLockTimeout = math.MaxInt32 * time.Millisecond

// lockTimeoutIn is --lock-timeout d in its range: PostgreSQL refuses a
// lock_timeout past its integer range of milliseconds, which would fail
// every chunk, import and step of a watch.
func lockTimeoutIn(d time.Duration) flagRange {
	return flagRange{"lock-timeout", d, d > 0 && d <= maxLockTimeout, fmt.Sprintf("positive and at most %s (PostgreSQL's longest lock_timeout)", maxLockTimeout)}
}

// runOptions reads runFlags (and --full, where the command has it).
func runOptions(c *cli.Context, errOut io.Writer) (engine.Options, error) {
	opt := engine.Options{Workers: c.Int("workers"), ChunkSize: c.Int("chunk-size"), Full: c.Bool("full"), InPlace: c.Bool("in-place"),
		LockTimeout: c.Duration("lock-timeout"), Retries: c.Int("retries"), Nice: c.Float64("nice"), Trigger: "run"}
	if opt.Full {
		opt.Trigger = "run --full"
	}
	opt.Notify = &notify.Notifier{URL: c.String("notify-url"), Secret: c.String("notify-secret"), Email: c.StringSlice("notify-email"),
		SMTPAddr: c.String("smtp-addr"), From: c.String("smtp-from"), Timeout: c.Duration("notify-timeout"), Retries: c.Int("notify-retries")}
	if err := outOfRange(c, []flagRange{
		{"workers", opt.Workers, opt.Workers >= 1, "at least 1"},
		{"chunk-size", opt.ChunkSize, opt.ChunkSize >= 1, "at least 1"},
		{"retries", opt.Retries, opt.Retries >= 0, "0 or more"},
		lockTimeoutIn(opt.LockTimeout),
		{"nice", opt.Nice, opt.Nice >= 0 && opt.Nice <= 100, "between 0 and 100"}, // NaN too
		{"notify-timeout", opt.Notify.Timeout, opt.Notify.Timeout > 0, "positive"},
		{"notify-retries", opt.Notify.Retries, opt.Notify.Retries >= 0 && opt.Notify.Retries <= 10, "between 0 and 10"},
	}); err != nil {
		return opt, err
	}
	if err := opt.Notify.Validate(); err != nil {
		return opt, cli.Exit("recalc: "+err.Error(), 2)
	}
	if f, ok := errOut.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		opt.Live = errOut
	}
	return opt, nil
}

func sideFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "closure", Usage: "only group membership (the closure)"},
		&cli.BoolFlag{Name: "rules", Usage: "only share rows (rules, owners, shares, teams, OWDs)"},
	}
}

func sides(c *cli.Context) []string {
	var out []string
	if c.Bool("closure") {
		out = append(out, store.SideClosure)
	}
	if c.Bool("rules") {
		out = append(out, store.SideRules)
	}
	if len(out) == 0 {
		out = []string{store.SideClosure, store.SideRules}
	}
	return out
}

// DeferCmd suspends calculation of sides.
func DeferCmd(ctx context.Context, env *Env, sides []string) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	if err := store.Defer(ctx, env.Pool, sides); err != nil {
		return err
	}
	if err := awaitInFlight(ctx, env, sides); err != nil {
		return fmt.Errorf("calculation is deferred (%s), but a watch step, plan or job chunk that began before may still materialize writes committed now: "+
			"run `recalc defer` again to wait for it: %w", strings.Join(sides, ", "), err)
	}
	fmt.Fprintf(env.Out, "Calculation deferred (%s). Imports and data changes accumulate; `recalc resume` recalculates them.\n", strings.Join(sides, ", "))
	return nil
}

// deferWaitSaid is how long `recalc defer` waits for what is in flight
// before it says so.
const deferWaitSaid = time.Second

// awaitInFlight returns once what read no deferral of sides has ended: a
// step or plan in flight (it holds the model lock), and, for share rows, a
// job's chunks in flight, which read records as they run (store.AwaitChunks;
// a closure job's finish reads none: workChunks). So a write committed after
// `recalc defer` returns waits for the resume. Past deferWaitSaid it logs
// that it waits.
func awaitInFlight(ctx context.Context, env *Env, sides []string) error {
	done, said := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(said)
		select {
		case <-done:
		case <-time.After(deferWaitSaid):
			env.Log.Info().Strs("sides", sides).Msg("waiting for the import, plan, watch step or job chunks in flight to end before returning; the deferral is already in place")
		}
	}()
	defer func() { close(done); <-said }()
	if err := store.AwaitInFlight(ctx, env.Pool); err != nil || !slices.Contains(sides, store.SideRules) {
		return err
	}
	return store.AwaitChunks(ctx, env.Pool)
}

// ResumeCmd lifts the deferral of sides and recalculates.
func ResumeCmd(ctx context.Context, env *Env, sides []string, opt engine.Options) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	if err := store.Undefer(ctx, env.Pool, sides); err != nil {
		return err
	}
	env.Log.Info().Strs("sides", sides).Msg("deferral lifted")
	return Run(ctx, env, opt)
}

// WatchCmd materializes changes as they commit until ctx ends. With
// metricsAddr it serves /metrics and /healthz there (internal/metrics).
func WatchCmd(ctx context.Context, env *Env, wopt watch.Options, opt engine.Options, metricsAddr string) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	if err := attach.RecalculatesAsOwner(ctx, env.Pool, "watch"); err != nil {
		return err
	}
	m := metrics.New(env.Pool, wopt.Poll+wopt.MaxWait+time.Minute)
	opt.Contended = m.Contended
	redeliver := opt.Notify.RedeliverEvery(30*time.Second, env.Pool, env.Log)
	// Completion notifications go out beside the loop: a slow receiver
	// delays no step. What a stop leaves undelivered is kept for the next
	// process.
	nctx, stopNotify := context.WithCancel(ctx)
	var waitNotify func()
	opt.Announce, waitNotify = opt.Notify.Background(nctx, env.Pool, env.Log)
	defer func() { stopNotify(); waitNotify() }()
	live := engine.NewLive(opt, wopt.FastRecords)
	step := func(ctx context.Context) error {
		m.Begin()
		rep, err := live.Step(ctx, env.Pool, env.Log)
		m.End(runOf(rep), err)
		if ve := new(schema.VersionError); errors.As(err, &ve) && ve.Current > ve.Want {
			// No retry helps: exit, so that a service manager starts the
			// new binary (docs/operations.md, "Upgrades").
			return fmt.Errorf("%w: %w", watch.ErrStop, err)
		}
		redeliver(ctx)
		if err == nil && rep.Fast && rep.Changes > 0 {
			env.Log.Debug().Int("changes", rep.Changes).Int64("records", rep.Written.Records).
				Int64("share_rows_added", rep.Written.Added).Int64("share_rows_removed", rep.Written.Removed).
				Int64("share_rows_updated", rep.Written.Updated).Dur("duration_ms", rep.Duration).Msg("changes materialized")
		}
		return err
	}
	return metrics.Serve(ctx, metricsAddr, m, env.Log, func(ctx context.Context) error {
		return watch.Run(ctx, env.Pool, wopt, step, env.Log)
	})
}

// WaitCmd blocks until job id (or the unfinished, else the latest job) ends
// and prints its completion notification.
func WaitCmd(ctx context.Context, env *Env, id int64) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	var j *queue.Job
	var lostAt time.Time
	for attempt := 0; ; attempt++ {
		conn, done, err := listenForJobs(ctx, env.Pool)
		connected := time.Now()
		if err == nil {
			if id == 0 {
				if id, err = queue.UnfinishedOrLatest(ctx, conn); err == nil && id == 0 {
					done()
					return fmt.Errorf("there is no job to wait for: `recalc run` starts one")
				}
			}
			if err == nil {
				j, err = awaitJob(ctx, conn, id)
			}
			if err != nil && !conn.Conn().IsClosed() && !connectionLost(err) {
				done()
				return err
			}
			done()
		} else if !connectionLost(err) || pg.ConnectRefused(err) != nil || pg.ConnectMisconfigured(err) != nil {
			return err // a refusal (the database dropped, ...) no retry within waitReconnectFor fixes
		}
		if err == nil {
			break
		}
		if conn != nil && time.Since(connected) > 10*time.Second {
			// It had waited on a connection for a while: a new loss,
			// backed off afresh. One cut at once counts as the same loss.
			lostAt, attempt = time.Time{}, 0
		}
		// The connection was lost (a server restart, a pooler's or an
		// administrator's cut): the job goes on without us. Wait again on a
		// new one, for a while.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if lostAt.IsZero() {
			lostAt = time.Now()
		}
		if time.Since(lostAt) > waitReconnectFor {
			return fmt.Errorf("%w: lost the database connection while waiting for job %d, and could not reconnect within %s: %w; "+
				"`recalc wait %d` waits again", errNoDatabase, id, waitReconnectFor, err, id)
		}
		backoff := workers.Backoff(attempt)
		env.Log.Warn().Int64("job", id).Err(err).Dur("backoff_ms", backoff).Msg("lost the database connection while waiting; reconnecting")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
	if j.Paused && j.Status == queue.Running {
		return fmt.Errorf("job %d is paused: calculation of share rows is deferred (`recalc defer`), and its chunks left wait; `recalc resume` finishes it", id)
	}
	if j.Interrupted {
		return fmt.Errorf("job %d was interrupted: no process is working on it; `recalc run` resumes it", id)
	}
	payload, err := queue.Payload(ctx, env.Pool, id)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Out, string(payload))
	if j.Status == queue.Failed {
		return errJobFailed
	}
	return nil
}

// waitReconnectFor is how long `recalc wait` tries to reconnect after it
// lost its connection, before it gives up with ExitNoDatabase.
const waitReconnectFor = 2 * time.Minute

// connectionLost says whether err is the loss of the connection, or the
// failure to make one, rather than an answer to a statement or an error of
// recalc's own (a job that does not exist): the database lost
// (lostDatabase), the connection's end, or a statement pgx never sent.
func connectionLost(err error) bool {
	return lostDatabase(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err)
}

// listenForJobs takes a connection from pool that listens on
// queue.Channel; done closes it, since a listening connection is not for
// the pool.
func listenForJobs(ctx context.Context, pool *pgxpool.Pool) (conn *pgxpool.Conn, done func(), err error) {
	if conn, err = pool.Acquire(ctx); err != nil {
		return nil, nil, fmt.Errorf("acquire connection: %w", err)
	}
	done = func() { _ = conn.Hijack().Close(context.WithoutCancel(ctx)) }
	if err := pg.Listen(ctx, conn, queue.Channel); err != nil {
		done()
		return nil, nil, err
	}
	return conn, done, nil
}

// awaitJob returns job id once it has ended, or no process works on it
// (Interrupted), or it is paused while share rows are deferred (Paused), on
// conn, which listens on queue.Channel.
func awaitJob(ctx context.Context, conn *pgxpool.Conn, id int64) (*queue.Job, error) {
	for {
		j, err := queue.Get(ctx, conn, id)
		if err != nil {
			return nil, err
		}
		if j == nil {
			return nil, fmt.Errorf("job %d does not exist: `recalc status --jobs N` lists the latest N jobs", id)
		}
		if j.Interrupted || j.Paused || j.Status != queue.Running {
			return j, nil
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second) // recheck now and then
		_, err = conn.Conn().WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// StatusCmd prints deferral, pending changes and jobs.
func StatusCmd(ctx context.Context, env *Env, format string, jobs int) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	st, err := access.ReadStatus(ctx, env.Pool, jobs)
	if err != nil {
		return err
	}
	if format == "json" {
		return json.NewEncoder(env.Out).Encode(st)
	}
	w := env.Out
	if len(st.Deferred) == 0 {
		fmt.Fprintln(w, "Calculation: active")
	}
	for _, side := range sortedKeys(st.Deferred) {
		since := st.Deferred[side]
		fmt.Fprintf(w, "Calculation of %s: DEFERRED since %s (%s ago)\n", side, since.Format(time.RFC3339), time.Since(since).Round(time.Second))
	}
	fmt.Fprintf(w, "Pending: %d changes: %d records, sections %v\n", st.PendingChanges, st.PendingRecords, st.PendingConfig)
	for _, u := range st.Unabsorbed {
		why := "its capture is not intact: run `recalc attach FILE` again"
		if u.Code != "" {
			why = "reading its table failed with SQLSTATE " + u.Code + " (docs/attach.md)"
		}
		fmt.Fprintf(w, "Writes to attached object %s NOT ABSORBED since %s: %s\n", u.Object, u.Since.Format(time.RFC3339), why)
	}
	if len(st.Jobs) == 0 && jobs > 0 { // --jobs 0 asks for none
		fmt.Fprintln(w, "Jobs: none yet")
	}
	for _, j := range st.Jobs {
		printJob(w, j)
	}
	printKept(w, st)
	if st.InvalidRecords > 0 {
		fmt.Fprintf(w, "Invalid records, given no access: %d (all in the view recalc.invalid_record)\n", st.InvalidRecords)
		for _, r := range st.Invalid {
			fmt.Fprintf(w, "  %s %s: %s\n", shown(r.Object), shown(r.Record), shown(r.Reason))
		}
	}
	return nil
}

// printJob prints one job's line of `recalc status`, its columns aligned
// whatever the job's kind and status.
func printJob(w io.Writer, j access.JobSummary) {
	fmt.Fprintf(w, "Job %d  %-11s %-11s %-13s chunks %d/%d  records %d  share rows +%d -%d ~%d",
		j.ID, j.Kind, j.Status, j.Trigger, j.ChunksDone, j.Chunks, j.Records, j.RowsAdded, j.RowsRemoved, j.RowsUpdated)
	if j.Invalid > 0 {
		fmt.Fprintf(w, "  invalid %d", j.Invalid)
	}
	if (j.Kind == queue.Full || strings.HasSuffix(j.Trigger, "--full") || j.DriftFixed > 0) && j.Status == queue.Done {
		fmt.Fprintf(w, "  drift fixed %d", j.DriftFixed)
	}
	switch {
	case j.Status == queue.Interrupted:
		fmt.Fprint(w, "  no process works on it: `recalc run` resumes it")
	case j.Status == queue.Paused:
		fmt.Fprint(w, "  paused: share rows are deferred; `recalc resume` finishes it")
	case j.Status != queue.Done:
		fmt.Fprintf(w, "  %.0f records/s", j.RecordsPerSecond)
		if j.ETA != nil {
			fmt.Fprintf(w, "  ETA %s", *j.ETA)
		}
	case j.FinishedAt != nil:
		fmt.Fprintf(w, "  took %s, %s", j.FinishedAt.Sub(j.CreatedAt).Round(time.Millisecond), j.FinishedAt.Format(time.RFC3339))
	}
	if j.Error != "" {
		fmt.Fprintf(w, "\n    error: %s", shown(j.Error))
	}
	fmt.Fprintln(w)
}

// VerifyCmd compares the materialized tables with a recomputation.
func VerifyCmd(ctx context.Context, env *Env, opt engine.VerifyOptions, format string) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	rep, err := engine.Verify(ctx, env.Pool, opt, env.Log)
	if err != nil {
		return err
	}
	if format == "json" {
		if err := json.NewEncoder(env.Out).Encode(rep); err != nil {
			return err
		}
	} else {
		printVerify(env.Out, rep)
	}
	if rep.Drift() && !rep.Repaired || rep.Unchecked() > 0 {
		return errDrift
	}
	return nil
}

// printVerify prints a verification's report as text.
func printVerify(w io.Writer, rep *engine.VerifyReport) {
	for _, s := range rep.Sources {
		switch {
		case s.Unchecked != "":
			fmt.Fprintf(w, "Attached source %s not compared: %s.\n", s.Object, s.Unchecked)
		case s.Differing > 0:
			fmt.Fprintf(w, "Attached source %s: %d mirrored rows differ from it.\n", s.Object, s.Differing)
		}
	}
	if n := len(rep.Sources) - rep.Unchecked(); n > 0 && rep.SourceDrift() == 0 {
		fmt.Fprintf(w, "Compared %d attached sources with the records mirrored from them.\n", n)
	}
	until := "the next run"
	if _, ok := rep.Deferred[store.SideRules]; ok {
		until = "`recalc resume`"
	}
	fmt.Fprintf(w, "Verified %d families (%d skipped: changes pending until %s).\n", rep.Families, rep.Skipped, until)
	for _, side := range sortedKeys(rep.Deferred) {
		fmt.Fprintf(w, "Calculation of %s is deferred: what it waits for is pending, not drift, and a repair leaves it to `recalc resume`.\n", side)
	}
	if rep.ClosureSkipped != 0 {
		fmt.Fprintf(w, "The closure was not compared: job %d, which changes it, started meanwhile.\n", rep.ClosureSkipped)
	}
	switch {
	case !rep.Drift() && rep.Unchecked() > 0:
		fmt.Fprintf(w, "No drift in what was compared, but %d attached sources were not: see above.\n", rep.Unchecked())
		return
	case !rep.Drift():
		fmt.Fprintln(w, "No drift: the materialized tables equal a recomputation.")
		return
	}
	if len(rep.ShareRows) > 0 {
		fmt.Fprintln(w, "Share rows that differ:")
		fmt.Fprintf(w, "  %-16s %-16s %8s %8s %12s\n", "object", "cause", "missing", "extra", "wrong level")
		for _, c := range rep.ShareRows {
			fmt.Fprintf(w, "  %-16s %-16s %8d %8d %12d\n", shown(c.Object), shown(c.Cause), c.Missing, c.Extra, c.Wrong)
		}
	}
	fmt.Fprintf(w, "Record rows that differ: %d\nClosure entries missing: %d, extra: %d\n", rep.RecordRows, rep.ClosureMissing, rep.ClosureExtra)
	if rep.StrayRoots > 0 {
		fmt.Fprintf(w, "Records whose family root is wrong: %d (each fails closed; `recalc run --full` repairs them too)\n", rep.StrayRoots)
	}
	switch {
	case !rep.Repaired:
		fmt.Fprintln(w, "Run `recalc verify --repair` to fix them.")
	case rep.SourceDrift() > 0 || rep.StrayRoots > 0:
		fmt.Fprintln(w, "Repaired. The records re-read from attached sources or re-rooted wait for `recalc run` (or the watch) to recalculate them.")
	default:
		fmt.Fprintln(w, "Repaired.")
	}
}

// ExplainCmd prints why user has their access to record.
func ExplainCmd(ctx context.Context, env *Env, user, object, id, record, format string) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	record, err := recordKey(ctx, env, object, id, record)
	if err != nil {
		return err
	}
	e, err := engine.Explain(ctx, env.Pool, user, record)
	if err != nil {
		return err
	}
	if format == "json" {
		return json.NewEncoder(env.Out).Encode(e)
	}
	w := env.Out
	level := e.Level
	if level == model.None.String() { // "u has no access", not "none access"
		level = "no"
	}
	fmt.Fprintf(w, "%s has %s access to %s %s.\n", shown(user), level, shown(e.Object), shown(record))
	if e.Note != "" {
		fmt.Fprintf(w, "Note: %s\n", e.Note)
	}
	if len(e.Reasons) == 0 {
		fmt.Fprintln(w, "No grant reaches this user.")
	}
	var print func(rs []sharing.Reason, indent string)
	print = func(rs []sharing.Reason, indent string) {
		for _, r := range rs {
			fmt.Fprintf(w, "%s- %s (%s): %s\n", indent, r.Level, r.Kind, shown(r.Detail))
			if r.Via != "" {
				fmt.Fprintf(w, "%s    %s\n", indent, shown(r.Via))
			}
			print(r.Reasons, indent+"    ")
		}
	}
	print(e.Reasons, "  ")
	return nil
}
