// Package dburl rewrites PostgreSQL connection strings: the database or the
// user they name, or a parameter. It accepts both URL and keyword/value forms, as libpq
// does, and imports nothing but the standard library, so that tools (the
// bench driver) and tests (internal/testdb) share it without the testing
// package.
package dburl

import (
	"net/url"
	"strings"
)

// WithDatabase returns conn with its database name replaced.
func WithDatabase(conn, db string) string {
	if u, ok := parse(conn); ok {
		u.Path = "/" + db
		q := u.Query()
		q.Del("dbname")
		u.RawQuery = q.Encode()
		return u.String()
	}
	return conn + " dbname=" + quote(db)
}

// WithUser returns conn with its user replaced.
func WithUser(conn, user string) string {
	if u, ok := parse(conn); ok {
		u.User = url.User(user)
		return u.String()
	}
	return conn + " user=" + quote(user)
}

// WithParam returns conn with parameter key (require_auth, sslmode, ...)
// set to value.
func WithParam(conn, key, value string) string {
	if u, ok := parse(conn); ok {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return conn + " " + key + "=" + quote(value)
}

// parse parses conn when it is a URL.
func parse(conn string) (*url.URL, bool) {
	if !strings.HasPrefix(conn, "postgres://") && !strings.HasPrefix(conn, "postgresql://") {
		return nil, false
	}
	u, err := url.Parse(conn)
	return u, err == nil
}

// quote quotes a keyword/value connection string value when it needs it.
func quote(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
