package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/oracle"
)

// TestKillWaitingImportOrResume SIGKILLs an `import`, and a `resume`, while
// it waits for a row lock an application transaction holds (a known point:
// the import inside its one transaction, the resume inside a chunk), as an
// operator's kill -9 or an OOM kill would. Nothing the killed import was
// storing may show: the stored model and access stay as they were. Then the
// next command (the same import again, or resume again) succeeds, and access
// equals both the oracle's for the stored model and a from-scratch full run.
func TestKillWaitingImportOrResume(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// lock is the application's row lock that stops the command.
		lock    string
		deferIt bool     // defer and import the file first; the command is resume
		args    []string // the command killed, then run again
	}{
		{"import waiting for a record's lock", `SELECT FROM recalc.record WHERE id = $1 FOR UPDATE`, false,
			[]string{"import", "--lock-timeout", "10m"}},
		{"resume waiting for a materialized row's lock", `SELECT FROM recalc.acl_record WHERE id = $1 FOR UPDATE`, true,
			[]string{"resume", "--lock-timeout", "10m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := newProcessOrg(t, 200)
			ctx := context.Background()
			_, record := o.attackSample()
			file := o.ownerChangedModel(record)
			args := tc.args
			if tc.deferIt {
				o.run("defer")
				o.run("import", file)
			} else {
				args = append(slices.Clone(args), file)
			}
			before, exported := o.stdout("access", "--format", "csv"), o.stdout("export")

			app, err := o.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer app.Rollback(ctx)
			if _, err := app.Exec(ctx, tc.lock, record); err != nil {
				t.Fatal(err)
			}
			cmd := o.command(args...)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			o.waitLockWaiter(time.Minute)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			if err := app.Rollback(ctx); err != nil {
				t.Fatal(err)
			}

			// An import is one transaction: killed, it stored nothing. A
			// resume's job may have committed chunks before the kill.
			if !tc.deferIt {
				if got := o.stdout("export"); got != exported {
					t.Errorf("recalc %s killed while waiting: the stored model changed\n%s", shortArgs(args), lastLines(stderr.String(), 5))
				}
				if got := o.stdout("access", "--format", "csv"); got != before {
					t.Errorf("recalc %s killed while waiting: access changed (%d bytes, were %d)", shortArgs(args), len(got), len(before))
				}
			}
			o.run(args...)
			o.run("run")
			m, _, err := model.Parse(strings.NewReader(o.stdout("export")))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := o.stdout("access", "--format", "csv"), oracle.CSV(oracle.Access(m)); got != want {
				t.Fatalf("after the kill and recalc %s again, access differs from the oracle's (< oracle, > recalc)\n%s", shortArgs(args), oracle.Diff(want, got))
			}
			o.checkEqualsFull(tc.name)
		})
	}
}

// ownerChangedModel writes the stored model with record's owner changed to
// another user and the account OWD flipped, and returns the file's path.
func (o *processOrg) ownerChangedModel(record string) string {
	o.t.Helper()
	var owner, other string
	o.attackQuery(`SELECT owner FROM recalc.record WHERE id = $1`, &owner, record)
	o.attackQuery(`SELECT owner FROM recalc.record WHERE object = 'account' AND owner <> $1 ORDER BY id LIMIT 1`, &other, owner)
	m, _, err := model.Parse(strings.NewReader(o.stdout("export")))
	if err != nil {
		o.t.Fatal(err)
	}
	for i := range m.Records {
		if m.Records[i].ID == record {
			m.Records[i].Owner = other
		}
	}
	for i := range m.Objects {
		if m.Objects[i].Name == "account" && m.Objects[i].InternalOWD == model.Private {
			m.Objects[i].InternalOWD = model.PublicReadOnly
		}
	}
	file := filepath.Join(o.t.TempDir(), "changed.json")
	f, err := os.Create(file)
	if err != nil {
		o.t.Fatal(err)
	}
	defer f.Close()
	if err := model.Encode(f, m, nil); err != nil {
		o.t.Fatal(err)
	}
	return file
}
