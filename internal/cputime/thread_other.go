//go:build !linux

package cputime

import "time"

// threadTime is not available here: Of falls back to the time elapsed.
func threadTime() (time.Duration, bool) { return 0, false }
