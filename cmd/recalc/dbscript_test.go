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
func TestDBScriptRecreatesTheDatabaseItsURLNames(t *testing.T) {
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
	for _, tc := range []struct{ form, conn string }{
		{"URL path", u.String()},
		{"URL dbname parameter", byQuery.String()},
		{"keyword", keyword},
	} {
		t.Run(tc.form, func(t *testing.T) {
			for _, cmd := range []string{"dropdb", "createdb"} {
				c := exec.Command("bash", "../../scripts/db.sh", cmd, name)
				c.Env = append(c.Environ(), "DATABASE_URL="+tc.conn)
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
