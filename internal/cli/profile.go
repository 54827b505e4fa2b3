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

// before sets the soft memory limit and starts the CPU profile that
// --cpu-profile asks for.
func before(c *cli.Context) error {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(softMemoryLimit)
		if os.Getenv("GOGC") == "" { // below the limit, collect less often than by default
			debug.SetGCPercent(400)
		}
	}
	f, err := createProfile(c, "cpu-profile", 2)
	if err != nil || f == nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return cli.Exit(fmt.Sprintf("recalc: --cpu-profile: %v", err), 2)
	}
	c.App.Metadata = map[string]any{"cpu-profile": f}
	return nil
}

// stopProfiles ends the CPU profile and writes the heap profile.
func stopProfiles(c *cli.Context) error {
	if f, ok := c.App.Metadata["cpu-profile"].(*os.File); ok {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return cli.Exit(fmt.Sprintf("recalc: --cpu-profile: %v", err), 1)
		}
	}
	f, err := createProfile(c, "mem-profile", 1)
	if err != nil || f == nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		return cli.Exit(fmt.Sprintf("recalc: --mem-profile: %v", err), 1)
	}
	return nil
}

// createProfile creates the file that flag names, nil when it names none;
// a failure exits with code.
func createProfile(c *cli.Context, flag string, code int) (*os.File, error) {
	path := c.String(flag)
	if path == "" {
		return nil, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("recalc: --%s: %v", flag, err), code)
	}
	return f, nil
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
