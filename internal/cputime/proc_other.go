//go:build !linux

package cputime

import "time"

// Process is not available here: ok is false.
func Process(pid int) (d time.Duration, name string, ok bool) { return 0, "", false }
