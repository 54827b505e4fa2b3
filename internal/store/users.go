package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/model"
)

// SyncAttachedUsers rebuilds the stored users section from the rows of the
// attached users table (recalc.attached_user, migration 023) when they
// changed since it was last built, or a team entry or share that names a
// user went, and reports whether the section changed. Its caller holds the
// model lock. A changed section is logged as a section change, as an
// import's is.
//
// It takes what marks the section first, and reads after: the state row
// locked (a re-read of the users table that marked it and has not
// committed, `recalc verify`'s, is waited for) and the marks the deletes of
// team entries and shares committed taken (migration 057). A mark that
// commits later stays for the next run, whatever this one read.
func SyncAttachedUsers(ctx context.Context, tx pgx.Tx) (bool, error) {
	var dirty bool
	if err := tx.QueryRow(ctx, `SELECT dirty FROM recalc.attached_users_state FOR UPDATE`).Scan(&dirty); err != nil {
		return false, fmt.Errorf("read the attached users' state: %w", err)
	}
	var marked bool
	if err := tx.QueryRow(ctx, `WITH m AS (DELETE FROM recalc.attached_users_mark RETURNING 1) SELECT EXISTS (SELECT FROM m)`).Scan(&marked); err != nil {
		return false, fmt.Errorf("take the attached users' marks: %w", err)
	}
	if !dirty && !marked { // detaching the users clears dirty; a mark left is taken here
		return false, nil
	}
	cfg, err := LoadConfig(ctx, tx)
	if err != nil {
		return false, err
	}
	if _, _, err := attachUsers(ctx, tx, cfg, model.DefaultLimits()); err != nil {
		return false, err
	}
	if _, err := cfg.Validate(); err != nil {
		return false, fmt.Errorf("the users read from the attached users table leave the stored model invalid: %w", err)
	}
	doc, err := model.UsersJSON(cfg.Users)
	if err != nil {
		return false, fmt.Errorf("encode the attached users: %w", err)
	}
	return storeSection(ctx, tx, "users", doc)
}

// attachUsers makes cfg's users those of the attached users table, when
// one is attached, and records what it had to change (model.AttachUsers).
func attachUsers(ctx context.Context, tx pgx.Tx, cfg *model.Config, lim model.Limits) (attached bool, fx model.UserFixes, err error) {
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM recalc.attachment WHERE object = $1)`, model.UsersAttachment).Scan(&attached); err != nil || !attached {
		return false, fx, err
	}
	rows, err := tx.Query(ctx, `SELECT id, role, type, active FROM recalc.attached_user ORDER BY id`)
	if err != nil {
		return true, fx, fmt.Errorf("read the attached users: %w", err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowToStructByPos[model.UserRow])
	if err != nil {
		return true, fx, fmt.Errorf("read the attached users: %w", err)
	}
	// Team entries and shares to a user name users too: keep them.
	var named []string
	if err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(u ORDER BY u), '{}') FROM (
		SELECT user_id FROM recalc.team UNION SELECT substr(grantee, 6) FROM recalc.share_input WHERE grantee LIKE 'user:%') x(u)`).Scan(&named); err != nil {
		return true, fx, fmt.Errorf("read the users teams and shares name: %w", err)
	}
	if fx, err = cfg.AttachUsers(users, named, lim); err != nil {
		return true, fx, err
	}
	b, err := json.Marshal(fx)
	if err != nil {
		return true, fx, err
	}
	if _, err := tx.Exec(ctx, `UPDATE recalc.attached_users_state SET dirty = false, fixes = $1`, b); err != nil {
		return true, fx, fmt.Errorf("record the attached users' state: %w", err)
	}
	return true, fx, nil
}

// storeSection stores the configuration section name as doc (a JSON
// list), logging a section change when it differs from the stored one, and
// reports whether it did.
func storeSection(ctx context.Context, tx pgx.Tx, name string, doc []byte) (bool, error) {
	tag, err := tx.Exec(ctx, `
		WITH changed AS (
			INSERT INTO recalc.change (kind, keys)
			SELECT 'section', ARRAY[$1] WHERE NOT EXISTS (
				SELECT 1 FROM recalc.model_section WHERE name = $1 AND doc = $2::jsonb)
			RETURNING 1)
		INSERT INTO recalc.model_section (name, doc) SELECT $1, $2::jsonb WHERE EXISTS (SELECT 1 FROM changed)
		ON CONFLICT (name) DO UPDATE SET doc = excluded.doc`, name, string(doc))
	if err != nil {
		return false, fmt.Errorf("store section %s: %w", name, err)
	}
	return tag.RowsAffected() > 0, nil
}
