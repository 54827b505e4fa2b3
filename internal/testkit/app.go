package testkit

import (
	"context"
	"sync"

	"github.com/urfave/cli/v2"
)

// appMu serializes urfave/cli's parsing of command lines in one test
// binary: its help and version flags are package variables, and each parse
// writes to them (BoolFlag.Apply), so two command lines parsed at once race
// (the race detector fails the tests that run them side by side). One
// command line a process, as the recalc binary runs, never races.
var appMu sync.Mutex

// RunApp runs app, made by cli.App, on argv, holding appMu until every flag
// of the command line is parsed: until the action of the command named
// starts, or the run ends without one. A command that waits (for a lock it
// gives up on after 10 s, or a watch until ctx ends) then runs beside the
// other tests' command lines instead of holding them all up. It changes
// app's actions: run each app once.
func RunApp(ctx context.Context, app *cli.App, argv []string) error {
	var once sync.Once
	unlock := func() { once.Do(appMu.Unlock) }
	appMu.Lock()
	defer unlock()
	unlockOnAction(app.Commands, unlock)
	return app.RunContext(ctx, argv)
}

// unlockOnAction makes the action of each command of cmds that has no
// subcommands call unlock as it starts: urfave/cli has parsed the whole
// command line by then, and the action reads no flag of the package's.
// help's action, and those of commands with subcommands, print the flags'
// help, which reads them: they keep the lock to the end.
func unlockOnAction(cmds []*cli.Command, unlock func()) {
	for _, c := range cmds {
		if len(c.Subcommands) > 0 {
			unlockOnAction(c.Subcommands, unlock)
			continue
		}
		if c.Action == nil || c.Name == "help" {
			continue
		}
		act := c.Action
		c.Action = func(cc *cli.Context) error {
			unlock()
			return act(cc)
		}
	}
}
