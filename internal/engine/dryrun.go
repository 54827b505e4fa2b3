package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/planner"
	"github.com/recalc-dev/recalc/internal/sharetable"
)

// LevelChange counts the (user, record) pairs of an object whose access
// goes from one level to another.
type LevelChange struct {
	Before model.Level `json:"before"`
	After  model.Level `json:"after"`
	Pairs  int64       `json:"pairs"`
}

// PairChange is one (user, record) pair whose access changes.
type PairChange struct {
	Record string      `json:"record"`
	User   string      `json:"user"`
	Before model.Level `json:"before"`
	After  model.Level `json:"after"`
}

// DryRunObject is what a change does to one object's access.
type DryRunObject struct {
	Object      string        `json:"object"`
	Gained      int64         `json:"pairs_gaining"`
	Lost        int64         `json:"pairs_losing"`
	Changes     []LevelChange `json:"changes"`
	GainSamples []PairChange  `json:"gain_samples"`
	LossSamples []PairChange  `json:"loss_samples"`
}

// DryRunReport is what applying the stored model would do to access: the plan,
// and the (user, record) pairs that gain and lose access, by object.
type DryRunReport struct {
	Planned *Planned       `json:"plan"`
	Objects []DryRunObject `json:"objects"`
	Gained  int64          `json:"pairs_gaining"`
	Lost    int64          `json:"pairs_losing"`
	// LostWithDeleted counts pairs lost because their record is deleted;
	// they are not in Lost.
	LostWithDeleted int64 `json:"pairs_lost_with_deleted_records"`
	// PairsBefore counts the pairs with access, before, on the records the
	// change touches: the blast-radius guard's denominator.
	PairsBefore int64         `json:"pairs_with_access_before"`
	Estimated   time.Duration `json:"estimated_ns"`
	Note        string        `json:"note,omitempty"`
}

// RevokedShare is the share of the touched pairs that would lose access.
func (im *DryRunReport) RevokedShare() float64 {
	if im.PairsBefore == 0 {
		return 0
	}
	return float64(im.Lost) / float64(im.PairsBefore)
}

const samplesPerObject = 5

// DryRun computes, inside tx, what recalculating the stored model would do
// to access, by doing it: it snapshots the access of the records the plan
// touches, applies the plan in tx, and snapshots again. The caller must roll
// tx back. Deferral is ignored: the impact is what the change means, whenever
// it is recalculated. The time the apply took estimates a real run's.
func DryRun(ctx context.Context, tx pgx.Tx, opt Options) (*DryRunReport, error) {
	opt.ignoreDeferral = true
	pl, err := Plan(ctx, tx, opt)
	if err != nil {
		return nil, err
	}
	im := &DryRunReport{Planned: pl}
	if pl.Plan.Full && pl.Plan.FullReason == planner.NothingYet {
		im.Note = "nothing has been recalculated yet, so no one has access to lose or gain relative to now"
		return im, nil
	}
	if pl.Nothing() {
		return im, nil
	}
	org := pl.org
	ix := org.Index()
	users := make([]string, len(ix.Config.Users))
	for i, u := range ix.Config.Users {
		users[i] = u.ID
	}
	var keys []string
	for _, g := range org.Grantees() {
		keys = append(keys, g.String())
	}
	if _, err := sharetable.EnsureDict(ctx, tx, users, keys); err != nil {
		return nil, err
	}
	dict, err := sharetable.LoadDict(ctx, tx)
	if err != nil {
		return nil, err
	}
	closure, err := sharetable.DiffClosureOf(ctx, tx, org, dict)
	if err != nil {
		return nil, err
	}
	roots := pl.Roots
	if pl.Plan.Full {
		rows, err := tx.Query(ctx, `SELECT root_id FROM recalc.record WHERE root_id IS NOT NULL UNION SELECT root_id FROM recalc.acl_record WHERE root_id IS NOT NULL`)
		if err != nil {
			return nil, err
		}
		if roots, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, err
		}
	}
	// The records whose access can change: the recomputed families, records
	// with rows for grantees whose members change, and records whose OWD
	// (or whose users' OWD) changes.
	var newUsers, newInternal, objs []string
	for _, u := range ix.Config.Users {
		if u.Active {
			newUsers = append(newUsers, u.ID)
			if !u.External {
				newInternal = append(newInternal, u.ID)
			}
		}
	}
	var internalLv, externalLv []int16
	for _, o := range ix.Config.Objects {
		objs = append(objs, o.Name)
		internalLv, externalLv = append(internalLv, int16(o.InternalOWD.Level())), append(externalLv, int16(o.ExternalOWD.Level()))
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE dry_scope (rid bigint PRIMARY KEY) ON COMMIT DROP`); err != nil {
		return nil, fmt.Errorf("scope the dry run: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE dry_owd ON COMMIT DROP AS
		SELECT * FROM unnest($1::text[], $2::smallint[], $3::smallint[]) AS o (name, internal_level, external_level)`,
		objs, internalLv, externalLv); err != nil {
		return nil, fmt.Errorf("scope the dry run: %w", err)
	}
	scope := []struct {
		sql  string
		args []any
	}{
		{`SELECT rid FROM recalc.record WHERE root_id = ANY($1) UNION SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1)`, []any{roots}},
		{`SELECT r.rid FROM recalc.acl_record r JOIN recalc.acl_share s ON s.rid = r.rid WHERE s.gid = ANY($1)
		  UNION SELECT r.rid FROM recalc.acl_record r JOIN recalc.acl_share s ON s.rid = r.access_root WHERE s.gid = ANY($1)`, []any{closure.Grantees()}},
		// Objects whose OWD changes, or, when users change activation or
		// type, every object whose OWD gives anyone anything.
		{`WITH users_change AS (
		      SELECT EXISTS (SELECT id FROM recalc.acl_user EXCEPT SELECT unnest($1::text[]))
		          OR EXISTS (SELECT unnest($1::text[]) EXCEPT SELECT id FROM recalc.acl_user)
		          OR EXISTS (SELECT id FROM recalc.acl_user WHERE internal EXCEPT SELECT unnest($2::text[]))
		          OR EXISTS (SELECT unnest($2::text[]) EXCEPT SELECT id FROM recalc.acl_user WHERE internal) AS yes
		  ), objs AS (
		      SELECT coalesce(o.name, n.name) AS name FROM recalc.acl_object o FULL JOIN dry_owd n ON n.name = o.name, users_change
		      WHERE (o.internal_level, o.external_level) IS DISTINCT FROM (n.internal_level, n.external_level)
		         OR (users_change.yes AND greatest(o.internal_level, o.external_level, n.internal_level, n.external_level) > 0)
		  )
		  SELECT r.rid FROM recalc.acl_record r JOIN recalc.acl_record root ON root.rid = r.access_root JOIN objs ON objs.name = root.object`,
			[]any{newUsers, newInternal}},
	}
	for _, sc := range scope {
		if _, err := tx.Exec(ctx, `INSERT INTO dry_scope `+sc.sql+` ON CONFLICT DO NOTHING`, sc.args...); err != nil {
			return nil, fmt.Errorf("scope the dry run: %w", err)
		}
	}
	if err := access.Snapshot(ctx, tx, "dry_before"); err != nil {
		return nil, err
	}
	start := time.Now()
	if pl.DoRules {
		for lo := 0; lo < len(roots); lo += familiesPerChunk {
			if _, err := sharetable.ApplyFamilies(ctx, tx, org, dict, roots[lo:min(lo+familiesPerChunk, len(roots))]); err != nil {
				return nil, err
			}
		}
		if err := sharetable.WriteObjects(ctx, tx, org); err != nil {
			return nil, err
		}
	}
	if pl.DoClosure {
		if _, err := closure.Apply(ctx, tx); err != nil {
			return nil, err
		}
		if err := sharetable.WriteUsers(ctx, tx, org, dict); err != nil {
			return nil, err
		}
	}
	im.Estimated = time.Since(start)
	// New records join the scope once they have materialized rows.
	if _, err := tx.Exec(ctx, `INSERT INTO dry_scope SELECT rid FROM recalc.acl_record WHERE root_id = ANY($1) ON CONFLICT DO NOTHING`, roots); err != nil {
		return nil, err
	}
	if err := access.Snapshot(ctx, tx, "dry_after"); err != nil {
		return nil, err
	}
	return im, summarize(ctx, tx, im)
}

// summarize compares the two snapshots.
func summarize(ctx context.Context, tx pgx.Tx, im *DryRunReport) error {
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM dry_before`).Scan(&im.PairsBefore); err != nil {
		return fmt.Errorf("count pairs: %w", err)
	}
	// The two snapshots are temporary tables: analyze them, or the join
	// plans blind. Then materialize the difference once.
	for _, sql := range []string{
		`ANALYZE dry_before`, `ANALYZE dry_after`,
		`CREATE TEMP TABLE dry_diff ON COMMIT DROP AS
		 SELECT coalesce(a.object, b.object) AS object, coalesce(a.record, b.record) AS record, coalesce(a.user_id, b.user_id) AS user_id,
		        coalesce(b.level, 0) AS before, coalesce(a.level, 0) AS after, r.id IS NULL AS deleted
		 FROM dry_before b FULL JOIN dry_after a ON a.record = b.record AND a.user_id = b.user_id
		 LEFT JOIN recalc.record r ON r.id = coalesce(a.record, b.record)
		 WHERE coalesce(b.level, 0) <> coalesce(a.level, 0)`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("compare access: %w", err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT object, before, after, deleted, count(*) FROM dry_diff GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3`)
	if err != nil {
		return fmt.Errorf("compare access: %w", err)
	}
	byObject := map[string]*DryRunObject{}
	var order []string
	var object string
	var before, after int16
	var deleted bool
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&object, &before, &after, &deleted, &n}, func() error {
		if deleted {
			im.LostWithDeleted += n
			return nil
		}
		oi := byObject[object]
		if oi == nil {
			oi = &DryRunObject{Object: object}
			byObject[object] = oi
			order = append(order, object)
		}
		oi.Changes = append(oi.Changes, LevelChange{Before: model.Level(before), After: model.Level(after), Pairs: n})
		if after > before {
			oi.Gained += n
			im.Gained += n
		} else {
			oi.Lost += n
			im.Lost += n
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("compare access: %w", err)
	}
	for _, o := range order {
		oi := byObject[o]
		for _, gain := range []bool{true, false} {
			rows, err := tx.Query(ctx, `SELECT record, user_id, before, after FROM dry_diff
				WHERE object = $1 AND NOT deleted AND (after > before) = $2 ORDER BY record, user_id LIMIT $3`, o, gain, samplesPerObject)
			if err != nil {
				return fmt.Errorf("sample changes: %w", err)
			}
			var pc PairChange
			var b, a int16
			_, err = pgx.ForEachRow(rows, []any{&pc.Record, &pc.User, &b, &a}, func() error {
				pc.Before, pc.After = model.Level(b), model.Level(a)
				if gain {
					oi.GainSamples = append(oi.GainSamples, pc)
				} else {
					oi.LossSamples = append(oi.LossSamples, pc)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("sample changes: %w", err)
			}
		}
		im.Objects = append(im.Objects, *oi)
	}
	return nil
}
