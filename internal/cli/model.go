package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/store"
	"github.com/recalc-dev/recalc/schema"
)

// exportCommand writes the stored model: `recalc export`.
func exportCommand(out, errOut io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write the stored model as a model file that `recalc import` takes back",
		Description: "Writes the stored configuration sections as they were imported, and the records, shares\n" +
			"and team entries in key order, one a line, from one snapshot. Importing the file gives\n" +
			"back the same stored model and logs no change. The file carries the configuration's\n" +
			"\"revision\": importing it (whole or with --merge) is refused once the configuration has\n" +
			"changed since, so an old export never silently reverts a newer edit.\n" +
			"Records written with plain SQL are exported as stored, even invalid ones, which an\n" +
			"import then refuses (see recalc.invalid_record). The records of attached objects are left\n" +
			"out: they are the application's rows, which an import keeps and may not write.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "-", TakesFile: true, Usage: "the file to write; - is standard output. A file is written whole or not at all, readable by its owner only; a device or pipe is written to"},
			&cli.StringSliceFlag{Name: "section", Usage: "export only this section (repeatable): " + strings.Join(allSections(), ", ")},
			&cli.BoolFlag{Name: "no-records", Usage: "leave out records, shares and teams: the configuration only"},
		},
		Action: func(c *cli.Context) error {
			if c.String("output") == "" {
				return usageError(c, fmt.Errorf("--output must name a file, or - for standard output"), false)
			}
			sections, err := exportSections(c.StringSlice("section"), c.Bool("no-records"))
			if err != nil {
				return err
			}
			return action(out, errOut, func(ctx context.Context, env *Env) error {
				return Export(ctx, env, c.String("output"), sections)
			})(c)
		},
	}
}

func allSections() []string { return append(slices.Clone(model.ConfigSections), model.DataSections...) }

// exportSections checks --section and --no-records and returns the
// sections to write, in file order.
func exportSections(named []string, noRecords bool) ([]string, error) {
	for _, n := range named {
		if !slices.Contains(allSections(), n) {
			return nil, cli.Exit(fmt.Sprintf("recalc export: unknown --section %.100q (known: %s)", n, strings.Join(allSections(), ", ")), ExitUsage)
		}
	}
	var out []string
	for _, s := range allSections() {
		data := slices.Contains(model.DataSections, s)
		if (len(named) == 0 || slices.Contains(named, s)) && !(noRecords && data) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, cli.Exit("recalc export: --no-records leaves none of the --section sections: drop one of them", ExitUsage)
	}
	return out, nil
}

// Export writes the stored model's sections to path ("-" for standard
// output). A regular file is written beside path and renamed over it when
// complete; anything else that exists (a device, a pipe) is written to.
func Export(ctx context.Context, env *Env, path string, sections []string) error {
	if err := schema.Check(ctx, env.Pool); err != nil {
		return err
	}
	if path == "-" {
		_, err := exportTo(ctx, env, env.Out, sections)
		return err
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("export file %s is a directory: give a file's path, such as %s (or -o - for standard output)", shown(path), shown(filepath.Join(path, "org.json")))
	} else if err == nil && !st.Mode().IsRegular() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("open export file: %w", err)
		}
		defer f.Close()
		_, err = exportTo(ctx, env, f, sections)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		// The error names the temporary file, which the user never named.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("create export file %s: %w: give a path in a folder that exists and you may write to (or -o - for standard output)", shown(path), err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if _, err := exportTo(ctx, env, tmp, sections); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write export file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write export file: %w", err)
	}
	return nil
}

func exportTo(ctx context.Context, env *Env, w io.Writer, sections []string) (*store.ExportCounts, error) {
	res, err := store.Export(ctx, env.Pool, w, sections)
	if err != nil {
		return nil, err
	}
	env.Log.Info().Str("revision", res.Revision).Strs("sections", res.Sections).Int64("records", res.Records).
		Int64("shares", res.Shares).Int64("teams", res.Teams).Msg("model exported")
	return res, nil
}
