package cli_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	ucli "github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/cli"
	"github.com/recalc-dev/recalc/internal/testkit"
)

// TestCommandLinesSideBySide runs command lines that need no database side
// by side through testkit.RunApp, as parallel tests do: urfave/cli writes
// its package-level help and version flags as it parses, and run with
// app.RunContext instead these lines race (go test -race fails this test).
// Each still prints what it prints alone.
func TestCommandLinesSideBySide(t *testing.T) {
	t.Parallel()
	lines := []struct {
		args []string
		want string // in standard output or the error
	}{
		{[]string{"help"}, "COMMANDS"},
		{[]string{"--version"}, "recalc version"},
		{[]string{"access", "--help"}, "--min-level"},
		{[]string{"status", "--format", "yaml"}, "--format"},
	}
	var wg sync.WaitGroup
	got := make([]string, len(lines))
	for round := range 4 {
		for i, l := range lines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out, errOut bytes.Buffer
				app := cli.App(&out, &errOut)
				app.ExitErrHandler = func(*ucli.Context, error) {}
				err := testkit.RunApp(context.Background(), app, append([]string{"recalc"}, l.args...))
				if round == 0 {
					got[i] = out.String() + errOut.String()
					if err != nil {
						got[i] += err.Error()
					}
				}
			}()
		}
	}
	wg.Wait()
	for i, l := range lines {
		if !strings.Contains(got[i], l.want) {
			t.Errorf("recalc %s: output %.300q lacks %q", strings.Join(l.args, " "), got[i], l.want)
		}
	}
}
