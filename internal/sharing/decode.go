package sharing

import "github.com/recalc-dev/recalc/internal/model"

// DecodeOrg decodes and validates a configuration document and derives the
// computation's lookups from it.
func DecodeOrg(doc []byte) (*Org, error) {
	cfg, err := model.DecodeConfig(doc)
	if err != nil {
		return nil, err
	}
	ix, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	return NewOrg(ix), nil
}
