package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
)

// Calculation sides, deferred and applied separately.
const (
	SideRules   = "rules"   // share rows, and the OWDs read with them
	SideClosure = "closure" // group membership: the closure and the user table
)

// SetApplied records config (a JSON object of configuration sections) as
// what side is computed from.
func SetApplied(ctx context.Context, tx pgx.Tx, side string, config []byte) error {
	if _, err := tx.Exec(ctx, `DELETE FROM recalc.applied_section WHERE side = $1`, side); err != nil {
		return fmt.Errorf("record applied configuration: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO recalc.applied_section (side, name, doc) SELECT $1, key, value FROM jsonb_each($2::jsonb)`,
		side, string(config)); err != nil {
		return fmt.Errorf("record applied configuration: %w", err)
	}
	return nil
}

// StoredConfig returns the stored configuration sections as one JSON object.
func StoredConfig(ctx context.Context, q pg.Querier) ([]byte, error) {
	return configJSON(ctx, q, `SELECT coalesce(jsonb_object_agg(name, doc), '{}')::text FROM recalc.model_section`)
}

// Section returns the stored configuration section name (a JSON list).
func Section(ctx context.Context, q pg.Querier, name string) ([]byte, error) {
	var doc []byte
	if err := q.QueryRow(ctx, `SELECT doc FROM recalc.model_section WHERE name = $1`, name).Scan(&doc); err != nil {
		return nil, fmt.Errorf("read section %s: %w", name, err)
	}
	return doc, nil
}

// AppliedConfig returns the configuration side was last computed from, as
// one JSON object ("{}" when never).
func AppliedConfig(ctx context.Context, q pg.Querier, side string) ([]byte, error) {
	return configJSON(ctx, q, `SELECT coalesce(jsonb_object_agg(name, doc), '{}')::text FROM recalc.applied_section WHERE side = $1`, side)
}

func configJSON(ctx context.Context, q pg.Querier, sql string, args ...any) ([]byte, error) {
	var doc []byte
	if err := q.QueryRow(ctx, sql, args...).Scan(&doc); err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return doc, nil
}

// LoadConfig reads the stored configuration sections and decodes them with
// the model parser.
func LoadConfig(ctx context.Context, q pg.Querier) (*model.Config, error) {
	doc, err := StoredConfig(ctx, q)
	if err != nil {
		return nil, err
	}
	return model.DecodeConfig(doc)
}

// Recalculated reports whether any recalculation has been applied: until
// then the share tables are empty, and every level reads none.
func Recalculated(ctx context.Context, q pg.Querier) (bool, error) {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM recalc.applied_section)`).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for a recalculation applied: %w", err)
	}
	return ok, nil
}
