package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/model"
)

// TestImportPastStoredBoundsOneClearError: a model valid by the spec but past
// what recalc.record stores (1,000 territories a record; fields of 1 MiB as
// PostgreSQL prints them) failed the import with PostgreSQL's constraint
// error, SQLSTATE and all. It must fail with one line naming the record and
// what to fix, leaving access as it was.
func TestImportPastStoredBoundsOneClearError(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	_, record := o.attackSample()
	for _, tc := range []struct {
		name, want string
		edit       func(m *model.Model, r *model.Record)
	}{
		{"1,001 territories on a record", "1001 territories", func(m *model.Model, r *model.Record) {
			r.Territories = nil
			for i := range 1001 {
				id := fmt.Sprintf("h209_t%04d", i)
				m.Territories = append(m.Territories, model.Territory{ID: id, AccountAccess: model.Read})
				r.Territories = append(r.Territories, id)
			}
		}},
		{"90,000 small fields, 1.17 MB as stored", "fields take 1170000 bytes", func(_ *model.Model, r *model.Record) {
			r.Fields = model.Fields{}
			for i := range 90000 {
				r.Fields[fmt.Sprintf("f%05d", i)] = model.Num(0)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _, err := model.Parse(strings.NewReader(o.stdout("export")))
			if err != nil {
				t.Fatal(err)
			}
			for i := range m.Records {
				if m.Records[i].ID == record {
					tc.edit(m, &m.Records[i])
				}
			}
			file := filepath.Join(t.TempDir(), "model.json")
			f, err := os.Create(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := model.Encode(f, m, nil); err != nil {
				t.Fatal(err)
			}
			f.Close()
			before := o.stdout("access", "--format", "csv")
			code, _, stderr := o.attackRun(nil, "import", file)
			// One error line; an import that lasts past 2 s (a loaded
			// machine) also logs its progress, which is not an error.
			lines := 0
			for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
				if !strings.Contains(l, "import progress") {
					lines++
				}
			}
			if code != 1 || lines != 1 || strings.Contains(stderr, "SQLSTATE") || !strings.Contains(stderr, tc.want) {
				t.Errorf("recalc import: exit %d, stderr %.400q; want exit 1 and one line saying %q", code, stderr, tc.want)
			}
			o.run("run")
			if after := o.stdout("access", "--format", "csv"); after != before {
				t.Errorf("access changed after a refused import")
			}
		})
	}
}
