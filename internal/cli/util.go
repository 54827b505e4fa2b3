package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"unicode"

	"github.com/urfave/cli/v2"
)

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// shown is s as text output prints it: as it is when every character is
// printable, quoted with Go's escapes otherwise. An id is the
// application's (or a model file's) choice, and must not write control
// sequences or forged lines to the operator's terminal.
func shown(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func formatFlag() cli.Flag {
	return &cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"}
}

// textOrJSON reads --format, which must be text or json.
func textOrJSON(c *cli.Context) (string, error) {
	f := c.String("format")
	if f != "text" && f != "json" {
		return "", usageError(c, fmt.Errorf("--format must be text or json, not %.100q", f), false)
	}
	return f, nil
}

// formatAction is the action of a command with --format text|json: it
// checks the flag, then runs the command that cmd returns for it.
func formatAction(out, errOut io.Writer, cmd func(c *cli.Context, format string) func(context.Context, *Env) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		f, err := textOrJSON(c)
		if err != nil {
			return err
		}
		return action(out, errOut, cmd(c, f))(c)
	}
}
