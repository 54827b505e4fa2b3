package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/feed"
	"github.com/recalc-dev/recalc/internal/watch"
	"github.com/recalc-dev/recalc/internal/workers"
	"github.com/recalc-dev/recalc/schema"
)

// changesCommand prints the feed of access changes: `recalc changes`.
func changesCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "changes",
		Usage: "print the access changes published after a cursor, one JSON object a line (docs/feed.md)",
		Description: "Each line is {\"cursor\", \"kind\", \"key\", \"object\", \"job\", \"at\"}: kind record (key: a record\n" +
			"whose share rows changed), grantee (key: a grantee whose members changed), user (key: a user\n" +
			"activated, deactivated or moved between internal and external), owd (key: an object whose\n" +
			"org-wide defaults changed) or swap (key empty: a full job swapped new share tables in; redo a\n" +
			"resync whose head it follows, docs/feed.md). Cursors increase in commit order: store the last\n" +
			"one you processed and pass it as --since next time. A cursor older than the retention fails\n" +
			"and says how to resync. With --retention, sets how long entries are kept and exits.",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "since", Usage: "print entries after this cursor (0: from the oldest kept)"},
			&cli.IntFlag{Name: "limit", Value: 1000, Usage: fmt.Sprintf("print at most this many entries (1 to %d; with --follow, per read)", feed.MaxLimit)},
			&cli.BoolFlag{Name: "follow", Usage: "keep printing new entries as they are published, until SIGINT or SIGTERM (then exit 0); a lost connection, or one the server refuses once it runs (logged at level error), reconnects with backoff and goes on from the last entry printed"},
			&cli.DurationFlag{Name: "poll", Value: 500 * time.Millisecond, Action: atLeast("poll", minPoll),
				Usage: fmt.Sprintf("with --follow, how often to look for new entries (%v or more)", minPoll)},
			&cli.StringFlag{Name: "retention", Usage: "set how long published entries are kept (e.g. 7d, 36h; 1m to 3650d), then exit (alone: not with --follow, --since, --limit or --poll)"},
		},
		Action: func(c *cli.Context) error {
			if c.IsSet("retention") {
				// It sets the retention and exits: a --follow beside it
				// would exit at once, and a service restart it for ever.
				for _, f := range []string{"follow", "since", "limit", "poll"} {
					if c.IsSet(f) {
						return usageError(c, fmt.Errorf("--retention sets how long entries are kept, then exits: give it without --%s, in a command of its own", f), false)
					}
				}
				d, err := parseRetention(c.String("retention"))
				if err != nil {
					return cli.Exit("recalc changes: "+err.Error(), ExitUsage)
				}
				return action(out, errOut, func(ctx context.Context, env *Env) error { return SetRetentionCmd(ctx, env, d) })(c)
			}
			since, limit, poll := c.Int64("since"), c.Int("limit"), c.Duration("poll")
			if err := outOfRange(c, []flagRange{
				{"since", since, since >= 0, "0 or more"},
				{"limit", limit, limit >= 1 && limit <= feed.MaxLimit, fmt.Sprintf("between 1 and %d", feed.MaxLimit)},
			}); err != nil {
				return err
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error {
				return ChangesCmd(ctx, env, since, limit, c.Bool("follow"), poll)
			})(c)
		},
	}
}

// ChangesCmd prints the entries after since as JSON lines: at most limit,
// or with follow every entry as it is published, reading limit at a time
// and waiting poll when there is none, until ctx ends (a signal), which
// ends it without error.
func ChangesCmd(ctx context.Context, env *Env, since int64, limit int, follow bool, poll time.Duration) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	enc := json.NewEncoder(env.Out)
	for attempt := 0; ; {
		es, err := feed.Read(ctx, env.Pool, since, limit)
		if err != nil {
			if follow && errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil // a signal is how a follower stops; what it printed is whole
			}
			if !follow || !connectionLost(err) {
				return err
			}
			// A server restart or a killed connection: read again from the
			// same cursor once it answers, as `recalc watch` does.
			wait := workers.Backoff(attempt)
			attempt++
			ev, msg := watch.Reconnecting(env.Log, err)
			ev.Int("attempt", attempt).Dur("backoff_ms", wait).Int64("since", since).Msg(msg)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			continue
		}
		attempt = 0
		for _, e := range es {
			if err := enc.Encode(e); err != nil {
				return fmt.Errorf("write access changes: %w", err)
			}
			since = e.Cursor
		}
		if !follow {
			return nil
		}
		if len(es) == limit {
			continue // more are there already
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// SetRetentionCmd sets the feed's retention.
func SetRetentionCmd(ctx context.Context, env *Env, d time.Duration) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	if err := feed.SetRetention(ctx, env.Pool, d); err != nil {
		return err
	}
	env.Log.Info().Dur("retention_ms", d).Msg("feed retention set; the next job's finish prunes older entries")
	return nil
}

// parseRetention reads a duration as Go writes them (36h, 90m) or a whole
// number of days (7d), within feed's bounds.
func parseRetention(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if n, err = strconv.Atoi(days); err == nil && n >= 0 && n <= 3650 {
			d = time.Duration(n) * 24 * time.Hour
		}
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d < feed.MinRetention || d > feed.MaxRetention {
		return 0, fmt.Errorf("--retention %.100q: give a duration between 1m and 3650d, such as 7d or 36h", s)
	}
	return d, nil
}
