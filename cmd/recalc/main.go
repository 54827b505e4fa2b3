// Command recalc recalculates a CRM's materialized sharing on PostgreSQL.
// See the README and `recalc --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/recalc-dev/recalc/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := cli.ExitCode(os.Stderr, cli.App(os.Stdout, os.Stderr).RunContext(ctx, os.Args))
	stop()
	os.Exit(code)
}
