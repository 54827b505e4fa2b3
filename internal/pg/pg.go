// Package pg holds what recalc's storage packages share about PostgreSQL:
// the Querier that both a pool and a transaction are, LISTEN, and the
// SQLSTATE codes the engine tells apart, with their IsXxx helpers.
package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what both a pool and a transaction offer.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Listen subscribes the session of q, a connection of its own, to NOTIFY
// channel; the caller then waits for notifications on that connection.
func Listen(ctx context.Context, q Querier, channel string) error {
	if _, err := q.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return nil
}

// PinSession makes every session that cfg opens set, before its first
// statement, whatever the URL, the role or the database sets:
//
//   - its search_path to pg_catalog, pg_temp. An unqualified function or
//     operator in the engine's statements then never resolves to one that
//     another role created: a public.unnest(text[]) is a closer match than
//     pg_catalog.unnest(anyarray) wherever public is on the path, and would
//     run with the engine's rights (SECURITY.md);
//   - its default isolation to READ COMMITTED, which the engine's
//     transactions are written for (each statement sees what committed
//     before it, such as the rows an absorb or a chunk reads once it holds
//     their locks); those that need a snapshot ask for REPEATABLE READ
//     themselves. A database or role whose default is REPEATABLE READ or
//     SERIALIZABLE otherwise failed every import and run.
//
// RESET, and pg_settings' reset_val, still give the session's default.
func PinSession(cfg *pgconn.Config) {
	cfg.AfterConnect = func(ctx context.Context, c *pgconn.PgConn) error {
		if _, err := c.Exec(ctx, "SET search_path = pg_catalog, pg_temp; SET default_transaction_isolation = 'read committed'").ReadAll(); err != nil {
			return fmt.Errorf("pin the session's search_path and isolation: %w", err)
		}
		return nil
	}
}

// SQLSTATE codes recalc tells apart.
const (
	SerializationFailure  = "40001"
	DeadlockDetected      = "40P01"
	LockNotAvailable      = "55P03"
	UndefinedTable        = "42P01"
	InvalidSchemaName     = "3F000"
	CheckViolation        = "23514"
	InsufficientPrivilege = "42501"
	FeatureNotSupported   = "0A000"
	TooManyConnections    = "53300"
	QueryCanceled         = "57014"
	InvalidCatalogName    = "3D000" // a database that does not exist
	InvalidAuthorization  = "28000" // a role that does not exist or may not log in, pg_hba.conf's refusal
	InvalidPassword       = "28P01"
)

// Code returns err's SQLSTATE, or "" when it is not a PostgreSQL error.
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Hint returns err's PostgreSQL hint (what to do next), or "".
func Hint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Hint
	}
	return ""
}

// IsRetryable reports whether err is a lock timeout, a deadlock or a
// serialization failure: worth trying again after a backoff.
func IsRetryable(err error) bool {
	switch Code(err) {
	case SerializationFailure, DeadlockDetected, LockNotAvailable:
		return true
	}
	return false
}

// IsConcurrentCatalogUpdate reports whether err is PostgreSQL's "tuple
// concurrently updated" (SQLSTATE XX000): a DDL statement found catalog
// rows that another transaction changed while it waited to lock them (DROP
// FUNCTION ... CASCADE over the triggers of a table whose owner was
// altering them). Trying again succeeds.
func IsConcurrentCatalogUpdate(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "XX000" && pgErr.Message == "tuple concurrently updated"
}

// IsLockNotAvailable reports whether err is a lock wait that lock_timeout
// ended, or a NOWAIT lock that another session held.
func IsLockNotAvailable(err error) bool { return Code(err) == LockNotAvailable }

// IsTooManyConnections reports whether err is the server refusing a
// connection: too many clients (max_connections), or too many for the
// role or the database (CONNECTION LIMIT), SQLSTATE 53300.
func IsTooManyConnections(err error) bool { return Code(err) == TooManyConnections }

// IsServerGone reports whether err is the server ending the session or
// not taking it: SQLSTATE class 08 (connection exception) or 57 (operator
// intervention: a shutdown, a crash, a terminated backend, a server
// starting up), but a statement cancelled or timed out on a live
// connection (57014).
func IsServerGone(err error) bool {
	c := Code(err)
	return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "57") && c != QueryCanceled
}

// ConnectRefused returns the server's refusal of a connection that no
// retry fixes, as long as the configuration stays as it is: the database
// does not exist (3D000), the role does not exist, may not log in, or
// gave a wrong password, or pg_hba.conf refuses it (28000, 28P01), or it
// may not CONNECT to the database (42501). It returns nil for any other
// error, such as a server starting up or too many connections, which
// waiting fixes, and for the same codes answering a statement, even one
// err joins or wraps beside a failed connect (the server's error is read
// inside the *pgconn.ConnectError only).
func ConnectRefused(err error) *pgconn.PgError {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	if !errors.As(err, &ce) || !errors.As(ce.Unwrap(), &pe) {
		return nil
	}
	switch pe.Code {
	case InvalidCatalogName, InvalidAuthorization, InvalidPassword, InsufficientPrivilege:
		return pe
	}
	return nil
}

// clientRefusals are the reasons pgconn gives up on a connection on the
// client side for its own settings, before or without the server's word:
// require_auth or channel_binding=require that the server's method does
// not meet, sslcertmode=require with no certificate asked for, settings it
// cannot read, and SCRAM (SASL) or GSS authentication that the client
// cannot carry out (a mechanism it lacks, no GSSAPI provider). pgconn
// builds each as fmt.Errorf("%s: %w", reason, err) inside the attempt's
// error; its types are unexported, so the reason is read from the text.
var clientRefusals = [...]string{
	"require_auth check failed: ", "invalid require_auth: ",
	"channel binding check failed: ", "sslcertmode check failed: ",
	"invalid max_protocol_version: ", "invalid min_protocol_version: ",
	"failed SASL auth: ", "failed GSS auth: ",
}

// ConnectMisconfigured returns the client's own refusal of a connection
// that no retry fixes, as long as the configuration stays as it is (see
// clientRefusals), read inside the *pgconn.ConnectError only, as
// ConnectRefused reads the server's; nil for any other error. A SASL or
// GSS exchange that the server ended, answered with an error (the
// server's refusal is ConnectRefused's), or that a timeout or the network
// cut is no refusal. Its text holds no password: pgconn's reasons name
// the settings, the methods and the server's messages only.
func ConnectMisconfigured(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return nil
	}
	return clientRefusal(ce.Unwrap())
}

// clientRefusal is the first of the errors err joins or wraps that is one
// of clientRefusals, or nil.
func clientRefusal(err error) error {
	if err == nil {
		return nil
	}
	for _, r := range clientRefusals {
		if strings.HasPrefix(err.Error(), r) && !lostInAuth(errors.Unwrap(err)) {
			return err
		}
	}
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range m.Unwrap() {
			if r := clientRefusal(e); r != nil {
				return r
			}
		}
		return nil
	}
	return clientRefusal(errors.Unwrap(err))
}

// lostInAuth reports whether err, the cause of a failed authentication
// exchange, is the server's error, a timeout or the connection lost: a
// refusal that ConnectRefused reads, or a failure that waiting may fix.
func lostInAuth(err error) bool {
	var pe *pgconn.PgError
	var ne net.Error
	return errors.As(err, &pe) || errors.As(err, &ne) || pgconn.Timeout(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// IsInsufficientPrivilege reports whether err says the role lacks a right.
func IsInsufficientPrivilege(err error) bool { return Code(err) == InsufficientPrivilege }

// IsNoSchema reports whether err says the recalc schema or one of its
// tables does not exist.
func IsNoSchema(err error) bool {
	c := Code(err)
	return c == UndefinedTable || c == InvalidSchemaName
}

// MaxName is PostgreSQL's identifier length in bytes: a longer name is cut
// to it silently, and would name another object.
const MaxName = 63

// CheckName refuses an empty name, and one PostgreSQL would cut to MaxName
// bytes; what says which name it is.
func CheckName(what, v string) error {
	if v == "" {
		return fmt.Errorf("%s is required", what)
	}
	if len(v) > MaxName {
		return fmt.Errorf("%s is %d bytes long, more than PostgreSQL's %d: PostgreSQL would cut it and name another object", what, len(v), MaxName)
	}
	return nil
}

// nearHint is the hint NearTable and NearColumn append.
const nearHint = ": did you mean %q? (names as the catalog spells them, unquoted and case-sensitive)"

// NearTable returns a hint naming the relation that table (SCHEMA.TABLE or
// TABLE, as recalc takes names: as the catalog spells them, unquoted) would
// be with its case or double quotes corrected, for an error saying that it
// does not exist: a schema of quoted mixed-case names (Twenty's
// "workspaceMember") is typed `ws."workspaceMember"` or `ws.workspacemember`
// by habit. It returns "" unless exactly one relation matches, or when the
// lookup fails (the caller's error stands).
func NearTable(ctx context.Context, q Querier, table string) string {
	schema, name, ok := strings.Cut(table, ".")
	if !ok {
		schema, name = "", table
	}
	rows, err := q.Query(ctx, `SELECT pg_catalog.format('%s.%s', n.nspname, c.relname)
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND pg_catalog.lower(c.relname::text) = pg_catalog.lower(pg_catalog.btrim($2, '"'))
		  AND ($1 = '' OR pg_catalog.lower(n.nspname::text) = pg_catalog.lower(pg_catalog.btrim($1, '"')))
		LIMIT 2`, schema, name)
	return near(rows, err, table)
}

// NearColumn returns a hint naming the column of table (a regclass's text,
// quoted as Sanitize quotes it) that col would be with its case or double
// quotes corrected, for an error saying the column does not exist; "" unless
// exactly one column matches, or when the lookup fails.
func NearColumn(ctx context.Context, q Querier, table, col string) string {
	rows, err := q.Query(ctx, `SELECT a.attname::text FROM pg_catalog.pg_attribute a
		WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
		  AND pg_catalog.lower(a.attname::text) = pg_catalog.lower(pg_catalog.btrim($2, '"'))
		LIMIT 2`, table, col)
	return near(rows, err, col)
}

// near is the hint naming the one name rows hold, when it is not typed
// itself; "" when the query failed or found none or two.
func near(rows pgx.Rows, err error, typed string) string {
	if err != nil {
		return ""
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(names) != 1 || names[0] == typed {
		return ""
	}
	return fmt.Sprintf(nearHint, names[0])
}
