package dburl

import "testing"

func TestRewrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, conn, db, user, wantDB, wantUser, wantParam string
	}{
		{
			name: "URL", conn: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", db: "x", user: "u",
			wantDB:    "postgres://postgres@127.0.0.1:5432/x?sslmode=disable",
			wantUser:  "postgres://u@127.0.0.1:5432/postgres?sslmode=disable",
			wantParam: "postgres://postgres@127.0.0.1:5432/postgres?require_auth=scram-sha-256&sslmode=disable",
		},
		{
			name: "URL with dbname parameter and password", conn: "postgresql://a:secret@h/db?dbname=other", db: "x", user: "u",
			wantDB:    "postgresql://a:secret@h/x",
			wantUser:  "postgresql://u@h/db?dbname=other",
			wantParam: "postgresql://a:secret@h/db?dbname=other&require_auth=scram-sha-256",
		},
		{
			name: "keyword/value", conn: "host=h user=a dbname=db", db: "x", user: "u",
			wantDB:    "host=h user=a dbname=db dbname=x",
			wantUser:  "host=h user=a dbname=db user=u",
			wantParam: "host=h user=a dbname=db require_auth=scram-sha-256",
		},
		{
			name: "keyword/value, values quoted", conn: "host=h", db: "it's", user: "a b",
			wantDB:    `host=h dbname='it\'s'`,
			wantUser:  `host=h user='a b'`,
			wantParam: "host=h require_auth=scram-sha-256",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := WithDatabase(tc.conn, tc.db); got != tc.wantDB {
				t.Errorf("WithDatabase(%q, %q) = %q, want %q", tc.conn, tc.db, got, tc.wantDB)
			}
			if got := WithUser(tc.conn, tc.user); got != tc.wantUser {
				t.Errorf("WithUser(%q, %q) = %q, want %q", tc.conn, tc.user, got, tc.wantUser)
			}
			if got := WithParam(tc.conn, "require_auth", "scram-sha-256"); got != tc.wantParam {
				t.Errorf("WithParam(%q, require_auth, scram-sha-256) = %q, want %q", tc.conn, got, tc.wantParam)
			}
		})
	}
}
