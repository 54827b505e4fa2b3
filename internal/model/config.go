package model

import (
	"bytes"
	"fmt"
)

// DecodeConfig decodes configuration sections stored as one JSON object.
func DecodeConfig(doc []byte) (*Config, error) {
	f, err := Decode(bytes.NewReader(doc), Sink{})
	if err != nil {
		return nil, fmt.Errorf("decode stored configuration: %w", err)
	}
	return &f.Config, nil
}
