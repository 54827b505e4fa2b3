package access

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// RLS names an application table to protect with a row-level security
// policy that shows a session only the rows its user may read.
type RLS struct {
	Table       string // table, optionally schema-qualified
	Object      string // the recalc object its rows are records of
	IDColumn    string // the column holding the record id
	UserSetting string // the setting that holds the current user's id, e.g. app.user_id
	// UserFromRole takes the user id from current_user instead of a
	// setting: for applications that log each end user in as (or SET ROLE
	// to) a database role named like the user. No session can then claim
	// another user's id, which any session can do with a setting.
	UserFromRole bool
}

// PolicyName is the name of the policy recalc installs.
const PolicyName = "recalc_read"

var (
	settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$`)
	objectName  = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

func (r *RLS) table() (pgx.Identifier, error) {
	parts := strings.Split(r.Table, ".")
	if len(parts) > 2 || r.Table == "" {
		return nil, fmt.Errorf("table %q: give TABLE or SCHEMA.TABLE", r.Table)
	}
	return pgx.Identifier(parts), nil
}

// EnableRLS enables row-level security on the table and installs (or
// replaces) a SELECT policy calling recalc.visible_records. Every name is
// quoted as an identifier and every value passed as a literal.
func EnableRLS(ctx context.Context, tx pgx.Tx, r *RLS) error {
	tbl, err := r.table()
	if err != nil {
		return err
	}
	// The server quotes every name (%I) and value (%L) into the policy.
	tmpl := `CREATE POLICY %I ON %s FOR SELECT USING (%I IN (SELECT v.record FROM recalc.visible_records(current_setting(%L, true), %L) v))`
	args := []string{PolicyName, tbl.Sanitize(), r.IDColumn, r.UserSetting, r.Object}
	switch {
	case r.UserFromRole && r.UserSetting != "":
		return fmt.Errorf("give either a user setting or user from role, not both")
	case r.UserFromRole:
		tmpl = `CREATE POLICY %I ON %s FOR SELECT USING (%I IN (SELECT v.record FROM recalc.visible_records(current_user::text, %L) v))`
		args = []string{PolicyName, tbl.Sanitize(), r.IDColumn, r.Object}
	case !settingName.MatchString(r.UserSetting):
		return fmt.Errorf("user setting %q must look like prefix.name (a custom setting)", r.UserSetting)
	}
	if !objectName.MatchString(r.Object) {
		return fmt.Errorf("object %q is not an object name", r.Object)
	}
	var policy string
	if err := tx.QueryRow(ctx, `SELECT format($1::text, VARIADIC $2::text[])`, tmpl, args).Scan(&policy); err != nil {
		return fmt.Errorf("build policy: %w", err)
	}
	for _, sql := range []string{
		`ALTER TABLE ` + tbl.Sanitize() + ` ENABLE ROW LEVEL SECURITY`,
		`DROP POLICY IF EXISTS ` + pgx.Identifier{PolicyName}.Sanitize() + ` ON ` + tbl.Sanitize(),
		policy,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("enable row-level security on %s: %w", r.Table, err)
		}
	}
	return nil
}

// DisableRLS drops recalc's policy and disables row-level security.
func DisableRLS(ctx context.Context, tx pgx.Tx, table string) error {
	tbl, err := (&RLS{Table: table}).table()
	if err != nil {
		return err
	}
	for _, sql := range []string{
		`DROP POLICY IF EXISTS ` + pgx.Identifier{PolicyName}.Sanitize() + ` ON ` + tbl.Sanitize(),
		`ALTER TABLE ` + tbl.Sanitize() + ` DISABLE ROW LEVEL SECURITY`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("disable row-level security on %s: %w", table, err)
		}
	}
	return nil
}
