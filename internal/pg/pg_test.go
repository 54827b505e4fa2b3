package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recalc-dev/recalc/internal/dburl"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/testdb"
)

// connectErr is the error of connecting to conn, which must fail.
func connectErr(t *testing.T, conn string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, conn)
	if err == nil {
		_ = c.Close(ctx)
		t.Fatalf("connecting to %s succeeded", conn)
	}
	return err
}

// TestConnectRefused: only the server's refusal of a connection counts,
// read inside the *pgconn.ConnectError. An error that joined a statement's
// 42501 (permission denied for a table) with another session's failed
// connect (a dial error, a server starting up) was taken for a refusal of
// the connection, "grant the role CONNECT on the database".
func TestConnectRefused(t *testing.T) {
	t.Parallel()
	missing := connectErr(t, dburl.WithDatabase(testdb.AdminURL(), "h45_7_missing"))
	dial := connectErr(t, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5")
	statement := &pgconn.PgError{Severity: "ERROR", Code: pg.InsufficientPrivilege, Message: "permission denied for table account"}
	for _, tc := range []struct {
		name string
		err  error
		want string // the refusal's SQLSTATE, "" for none
	}{
		{"a database that does not exist", missing, pg.InvalidCatalogName},
		{"a refusal wrapped", fmt.Errorf("acquire listening connection: %w", missing), pg.InvalidCatalogName},
		{"a statement's 42501", statement, ""},
		{"a connect that could not dial", dial, ""},
		{"a statement's 42501 joined with a failed dial", errors.Join(statement, dial), ""},
		{"a failed dial wrapping a statement's 42501", fmt.Errorf("%w (then: %w)", dial, statement), ""},
	} {
		got := ""
		if pe := pg.ConnectRefused(tc.err); pe != nil {
			got = pe.Code
		}
		if got != tc.want {
			t.Errorf("ConnectRefused of %s (%v): %q, want %q", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestConnectMisconfigured: a connection the client gives up on for its
// own settings (require_auth or channel_binding=require that the server's
// method does not meet) exited 3, "run it again once it is reachable",
// which no retry fixes. The errors are pgconn's own, from connecting to
// the test server (which trusts its clients) with such settings; a
// server's refusal, a dial error and a statement's error are not the
// client's.
func TestConnectMisconfigured(t *testing.T) {
	t.Parallel()
	admin := testdb.AdminURL()
	requireAuth := connectErr(t, dburl.WithParam(admin, "require_auth", "scram-sha-256"))
	channelBinding := connectErr(t, dburl.WithParam(admin, "channel_binding", "require"))
	missing := connectErr(t, dburl.WithDatabase(admin, "h45_8_missing"))
	dial := connectErr(t, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5")
	statement := errors.New("failed SASL auth: a statement's text") // not inside a *pgconn.ConnectError
	for _, tc := range []struct {
		name string
		err  error
		want string // the start of the reason, "" for none
	}{
		{"require_auth the server does not meet", requireAuth, "require_auth check failed: "},
		{"require_auth wrapped", fmt.Errorf("acquire listening connection: %w", requireAuth), "require_auth check failed: "},
		{"channel_binding=require without SCRAM", channelBinding, "channel binding check failed: "},
		{"a database that does not exist (the server's refusal)", missing, ""},
		{"a connect that could not dial", dial, ""},
		{"a lookalike outside a connect", statement, ""},
	} {
		got := ""
		if err := pg.ConnectMisconfigured(tc.err); err != nil {
			got = err.Error()
		}
		if !strings.HasPrefix(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("ConnectMisconfigured of %s (%v): %q, want it to start %q", tc.name, tc.err, got, tc.want)
		}
	}
}
