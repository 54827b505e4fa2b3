package cli

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/engine"
)

// metricsAddrFlag is --metrics-addr of the long-running commands.
func metricsAddrFlag() cli.Flag {
	return &cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"RECALC_METRICS_ADDR"},
		Usage: "serve Prometheus metrics at /metrics and a health check at /healthz on this host:port (e.g. 127.0.0.1:9187); unset: none"}
}

// metricsAddr reads --metrics-addr: empty, or a valid host:port.
func metricsAddr(c *cli.Context) (string, error) {
	addr := c.String("metrics-addr")
	if addr == "" {
		return "", nil
	}
	_, port, err := net.SplitHostPort(addr)
	if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 0 || p > 65535 {
		return "", cli.Exit("recalc: --metrics-addr must be host:port, such as 127.0.0.1:9187 (or :9187 for every interface)", ExitUsage)
	}
	return addr, nil
}

// runOf is the job report of a watch step, nil when it ran no job.
func runOf(rep *engine.LiveReport) *engine.Report {
	if rep == nil {
		return nil
	}
	return rep.Run
}

// printKept lists the completion notifications kept for redelivery.
func printKept(w io.Writer, st *access.Status) {
	if st.NotificationsKept == 0 {
		return
	}
	fmt.Fprintf(w, "Notifications not delivered, kept for redelivery: %d (a run or watch with the same target retries them)\n", st.NotificationsKept)
	for _, e := range st.Notifications {
		when := "next try " + e.NextAt.Format(time.RFC3339)
		if e.GivenUp {
			when = "gave up"
		}
		fmt.Fprintf(w, "  job %d %s %s: %d attempts, %s; last error: %s\n", e.Job, e.Channel, shown(e.Target), e.Attempts, when, shown(e.LastError))
	}
}
