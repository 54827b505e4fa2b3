package testdb

import (
	"net/url"
	"strings"
)

// WithDatabase returns conn with its database name replaced. It accepts both
// URL and keyword/value connection strings, as libpq does.
func WithDatabase(conn, db string) string {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := url.Parse(conn)
		if err == nil {
			u.Path = "/" + db
			q := u.Query()
			q.Del("dbname")
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return conn + " dbname=" + db
}

// WithUser returns conn with its user replaced.
func WithUser(conn, user string) string {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := url.Parse(conn)
		if err == nil {
			u.User = url.User(user)
			return u.String()
		}
	}
	return conn + " user=" + user
}
