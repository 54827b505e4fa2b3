package engine

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/sharetable"
	"github.com/recalc-dev/recalc/internal/sharing"
)

// Explanation is why a user has the access they have to a record.
type Explanation struct {
	User     string           `json:"user"`
	Record   string           `json:"record"`
	Object   string           `json:"object"`
	Level    string           `json:"level"`    // read from the materialized tables
	Computed model.Level      `json:"computed"` // the highest reason's level
	Reasons  []sharing.Reason `json:"reasons"`
	Note     string           `json:"note,omitempty"`
}

// Explain lists every reason user has access to record, computed from the
// stored record family and the configuration the share rows were last
// computed from, and checks it against the materialized level.
func Explain(ctx context.Context, pool *pgxpool.Pool, user, record string) (*Explanation, error) {
	var e *Explanation
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		org, _, err := appliedOrgs(ctx, tx, nil, nil)
		if err != nil {
			return err
		}
		if org == nil {
			return fmt.Errorf("nothing has been recalculated yet: run `recalc run`")
		}
		rec, err := sharetable.FindRecord(ctx, tx, record)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("record %q does not exist: check the id (a record's key, as stored), or run `recalc run` if it was written since", record)
		}
		if org.Index().Users[user] == nil {
			// bounded: a user id may be 64 KiB
			return fmt.Errorf("user %.100q does not exist: check the id, or run `recalc run` if it was added since", user)
		}
		in, err := sharetable.LoadFamiliesOf(ctx, tx, org, []string{rec.Root})
		if err != nil {
			return err
		}
		e = &Explanation{User: user, Record: record, Object: rec.Object, Reasons: org.Explain(in, rec.RID, user)}
		for _, r := range e.Reasons {
			e.Computed = max(e.Computed, r.Level)
		}
		if e.Level, err = access.Level(ctx, tx, user, record); err != nil {
			return err
		}
		if !org.Index().Users[user].Active {
			e.Note = "the user is inactive: inactive users have no access"
		} else if e.Level != e.Computed.String() {
			e.Note = fmt.Sprintf("the materialized level %s differs from the reasons' %s: changes are pending since the last run (see `recalc plan`) or the tables drifted (see `recalc verify`)",
				e.Level, e.Computed)
		}
		return nil
	})
	return e, err
}
