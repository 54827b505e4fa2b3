// Package cputime measures the processor time a computation spends, for
// tests that bound its cost. Unlike the time elapsed, it does not grow
// when other processes load the machine: a bound on it catches a
// computation that does more work, not a busy CI machine.
package cputime

import (
	"runtime"
	"time"
)

// Of runs f on its goroutine, locked to one OS thread, and returns the
// processor time (user and system) that thread spent running it. Work f
// hands to other goroutines is not counted. Where the thread's time is
// not available (outside Linux), it returns the time elapsed.
func Of(f func()) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, ok := threadTime()
	began := time.Now()
	f()
	end, ok2 := threadTime()
	if !ok || !ok2 {
		return time.Since(began)
	}
	return end - start
}
