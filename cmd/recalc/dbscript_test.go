package main

import (
	"context"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/testdb"
)

// TestDBScriptRecreatesTheDatabaseItsURLNames holds scripts/db.sh's dropdb
// and createdb to working when DATABASE_URL names the very database they
// drop and create, as it does once a reader follows `make demo`'s closing
// advice (export DATABASE_URL=…/recalc_demo) and runs `make demo` again:
// they connect to the server's database postgres then, since no session can
// drop the database it is connected to, nor connect to one not yet created.
// It runs beside the package's other tests (its database is its own): run
// first and alone, its 14 drops and creates, a checkpoint each drop, held
// every other test back for 27 s of a loaded machine.
func TestDBScriptRecreatesTheDatabaseItsURLNames(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	keyword := "host=" + u.Hostname() + " port=" + u.Port() + " user=" + u.User.Username() +
		" dbname=" + name + " sslmode=disable"
	byQuery := *u
	byQuery.Path = "/postgres"
	q := byQuery.Query()
	q.Set("dbname", name)
	byQuery.RawQuery = q.Encode()
	encoded, none := *u, *u
	encoded.RawPath = "/" + strings.ReplaceAll(name, "_", "%5F")
	none.Path = "/"
	for _, tc := range []struct {
		form, conn string
		env        []string
	}{
		{"URL path", u.String(), nil},
		{"URL dbname parameter", byQuery.String(), nil},
		{"keyword", keyword, nil},
		// Forms libpq reads as naming the database too, which db.sh
		// missed: it then dropped the database it was connected to.
		{"URL path percent-encoded", encoded.String(), nil},
		{"keyword quoted", strings.Replace(keyword, "dbname="+name, "dbname='"+name+"'", 1), nil},
		{"keyword spaced", strings.Replace(keyword, "dbname="+name, "dbname = "+name, 1), nil},
		{"URL naming none, PGDATABASE", none.String(), []string{"PGDATABASE=" + name}},
	} {
		t.Run(tc.form, func(t *testing.T) {
			for _, cmd := range []string{"dropdb", "createdb"} {
				c := exec.Command("bash", "../../scripts/db.sh", cmd, name)
				c.Env = append(append(c.Environ(), tc.env...), "DATABASE_URL="+tc.conn)
				if out, err := c.CombinedOutput(); err != nil {
					t.Fatalf("db.sh %s %s with DATABASE_URL naming it: %v\n%s", cmd, name, err, out)
				}
			}
			conn, err := pgx.Connect(context.Background(), u.String())
			if err != nil {
				t.Fatalf("connect to the recreated database: %v", err)
			}
			conn.Close(context.Background())
		})
	}
}
