package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"

	"github.com/urfave/cli/v2"
)

// softMemoryLimit is the Go heap size past which the garbage collector works
// harder, unless GOMEMLIMIT says otherwise: a run's live memory is a few
// chunks of families, so the collector can run rarely (GOGC 400) and still
// keep the heap under the limit.
const softMemoryLimit = 160 << 20

// before sets the soft memory limit, creates the files --cpu-profile and
// --mem-profile name (a bad path is a usage error before the command runs)
// and starts the CPU profile.
func before(c *cli.Context) error {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(softMemoryLimit)
		if os.Getenv("GOGC") == "" { // below the limit, collect less often than by default
			debug.SetGCPercent(400)
		}
	}
	c.App.Metadata = map[string]any{}
	for _, flag := range []string{"mem-profile", "cpu-profile"} {
		if path := c.String(flag); path != "" {
			f, err := os.Create(path)
			if err != nil {
				return cli.Exit(fmt.Sprintf("recalc: --%s: %v", flag, err), ExitUsage)
			}
			c.App.Metadata[flag] = f
		}
	}
	if f, ok := c.App.Metadata["cpu-profile"].(*os.File); ok {
		if err := pprof.StartCPUProfile(f); err != nil {
			return cli.Exit(fmt.Sprintf("recalc: --cpu-profile: %v", err), ExitUsage)
		}
	}
	return nil
}

// stopProfiles ends the CPU profile and writes the heap profile.
func stopProfiles(c *cli.Context) error {
	if f, ok := c.App.Metadata["cpu-profile"].(*os.File); ok {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return cli.Exit(fmt.Sprintf("recalc: --cpu-profile: %v", err), ExitFailed)
		}
	}
	f, ok := c.App.Metadata["mem-profile"].(*os.File)
	if !ok {
		return nil
	}
	runtime.GC()
	err := pprof.Lookup("allocs").WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("recalc: --mem-profile: %v", err), ExitFailed)
	}
	return nil
}

// ExitCode prints err, when there is one, to w and returns the process's
// exit code: that of a cli.Exit error, 1 for any other error, 0 for none.
func ExitCode(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(w, msg)
	}
	if ec, ok := errors.AsType[cli.ExitCoder](err); ok {
		return ec.ExitCode()
	}
	return 1
}
