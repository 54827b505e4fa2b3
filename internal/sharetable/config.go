package sharetable

import (
	"bytes"
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/recalc-dev/recalc/internal/grants"
	"github.com/recalc-dev/recalc/internal/model"
)

// Querier is what both a pool and a transaction offer.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// LoadConfig reads the stored configuration sections and decodes them with
// the model parser.
func LoadConfig(ctx context.Context, q Querier) (*model.Config, error) {
	doc, err := StoredConfig(ctx, q)
	if err != nil {
		return nil, err
	}
	return DecodeConfig(doc)
}

// DecodeConfig decodes configuration sections stored as one JSON object.
func DecodeConfig(doc []byte) (*model.Config, error) {
	f, err := model.Decode(bytes.NewReader(doc), model.Sink{})
	if err != nil {
		return nil, fmt.Errorf("decode stored configuration: %w", err)
	}
	return &f.Config, nil
}

// DecodeOrg decodes and validates a configuration document and derives the
// computation's lookups from it.
func DecodeOrg(doc []byte) (*grants.Org, error) {
	cfg, err := DecodeConfig(doc)
	if err != nil {
		return nil, err
	}
	ix, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	return grants.NewOrg(ix), nil
}
