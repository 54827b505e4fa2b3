package access

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/pg"
)

// MaxPage is the most records a page of visible records may hold, as
// recalc.visible_records checks.
const MaxPage = 10000

// Visible is a record a user can access, with the level.
type Visible struct {
	Record string `json:"record"`
	Level  string `json:"level"`
}

// VisiblePage returns the records of object that user can access at
// minLevel ("read", "edit" or "all") or above, in record id order, after
// the id after (nil from the start: "" is an id), at most limit (1 to
// MaxPage) of them,
// through recalc.visible_ids: for an attached object the ids are the
// application's (42, not account:42). A page shorter than limit is the last;
// otherwise the next starts after its last record. recalc.visible_ids
// reads at most 50 x limit records per call and then returns a continuation
// row instead of a full page: VisiblePage calls it again from there until
// the page is full or the records end, so no page here is silently short.
func VisiblePage(ctx context.Context, q pg.Querier, user, object, minLevel string, after *string, limit int) ([]Visible, error) {
	if limit < 1 || limit > MaxPage {
		return nil, fmt.Errorf("page limit %d: give 1 to %d", limit, MaxPage)
	}
	if minLevel != "read" && minLevel != "edit" && minLevel != "all" {
		return nil, fmt.Errorf("min level %q: give read, edit or all", minLevel)
	}
	var out []Visible
	for {
		rows, err := q.Query(ctx, `SELECT id, level, next_after FROM recalc.visible_ids($1, $2, $3, $4::text, $5)`,
			user, object, minLevel, after, limit-len(out))
		if err != nil {
			return nil, fmt.Errorf("list visible records: %w", err)
		}
		var next, rec, level, cont *string
		_, err = pgx.ForEachRow(rows, []any{&rec, &level, &cont}, func() error {
			switch {
			case cont != nil:
				v := *cont
				next = &v
			case rec != nil && level != nil:
				out = append(out, Visible{Record: *rec, Level: *level})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list visible records: %w", err)
		}
		if next == nil || len(out) >= limit {
			return out, nil
		}
		after = next
	}
}

// CheckLevel is Level for a user and a record that must exist: it fails
// saying which does not. A user exists when active or in the stored model
// (an inactive user has no access); a record, when stored.
func CheckLevel(ctx context.Context, q pg.Querier, user, record string) (string, error) {
	if err := checkUser(ctx, q, user); err != nil {
		return "", err
	}
	var ok, attached bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM recalc.record WHERE id = $1) OR EXISTS (SELECT 1 FROM recalc.acl_record WHERE id = $1),
		EXISTS (SELECT 1 FROM recalc.attachment)`, record).Scan(&ok, &attached)
	switch {
	case err != nil:
		return "", fmt.Errorf("look up record: %w", err)
	case !ok && attached && !strings.Contains(record, ":"):
		return "", fmt.Errorf("record %q does not exist: an attached object's records are keyed OBJECT:ID (account:42), or give --object and --id", record)
	case !ok:
		return "", fmt.Errorf("record %q does not exist: check the id (a record's key, as stored)", record)
	}
	return Level(ctx, q, user, record)
}

// RecordKey returns the key of the record the application calls id in
// object (recalc.record_key): object:id for an attached object, id itself
// for any other. It fails when no record of object has that id.
func RecordKey(ctx context.Context, q pg.Querier, object, id string) (string, error) {
	var key *string
	var ok bool
	if err := q.QueryRow(ctx, `SELECT k, EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = k AND r.object = $1)
		FROM recalc.record_key($1, $2) k`, object, id).Scan(&key, &ok); err != nil {
		return "", fmt.Errorf("look up the key of %s %q: %w", object, id, err)
	}
	if !ok {
		var objects []string
		if err := q.QueryRow(ctx, `SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM recalc.acl_object`).Scan(&objects); err != nil {
			return "", fmt.Errorf("look up objects: %w", err)
		}
		if len(objects) > 0 && !slices.Contains(objects, object) {
			return "", fmt.Errorf("object %q does not exist: give one of %s", object, strings.Join(objects, ", "))
		}
		if app, found := strings.CutPrefix(id, object+":"); found {
			return "", fmt.Errorf("record %q of object %s does not exist: --id takes the application's id (%s), not the record's key; or give --record %s", id, object, app, id)
		}
		return "", fmt.Errorf("record %q of object %s does not exist%s", id, object, notAbsorbed(ctx, q, object))
	}
	return *key, nil
}

// notAbsorbed says, for an attached object, why a row of its source may
// have no record: the view leaves it out (a soft-deleted row), or recalc
// has not absorbed its write yet; for any other object, to check the id.
// It names the source, never a row.
func notAbsorbed(ctx context.Context, q pg.Querier, object string) string {
	var source string
	if err := q.QueryRow(ctx, `SELECT source FROM recalc.attachment WHERE object = $1`, object).Scan(&source); err != nil {
		return ": check the id" // not attached (or unreadable)
	}
	return fmt.Sprintf(": object %s is attached to %s, and a row of it is a record once recalc has absorbed its write "+
		"(`recalc watch` does within moments, `recalc run` at once; `recalc status` counts what waits); "+
		"a row the source leaves out, such as a soft-deleted one its view filters, is no record", object, source)
}

// checkUser fails unless user is active or in the stored model.
func checkUser(ctx context.Context, q pg.Querier, user string) error {
	var ok bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM recalc.acl_user WHERE id = $1)
		OR EXISTS (SELECT 1 FROM recalc.model_section s, jsonb_array_elements(s.doc) u
		           WHERE s.name = 'users' AND jsonb_typeof(s.doc) = 'array' AND u->>'id' = $1)`, user).Scan(&ok)
	switch {
	case err != nil:
		return fmt.Errorf("look up user: %w", err)
	case !ok:
		// bounded: a user id may be 64 KiB
		return fmt.Errorf("user %.100q does not exist: check the id (`recalc export --section users` lists the users)", user)
	}
	return nil
}

// CheckUserObject fails unless user exists (active or in the stored
// model) and object is in the stored model, naming what is missing.
func CheckUserObject(ctx context.Context, tx pgx.Tx, user, object string) error {
	if err := checkUser(ctx, tx, user); err != nil {
		return err
	}
	return checkObject(ctx, tx, object)
}
