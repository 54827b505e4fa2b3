package cputime

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc's times: USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

// Process returns the processor time (user and system) that process pid
// has spent, as /proc/PID/stat counts it, in 10 ms ticks, and the name of
// its command: a PostgreSQL backend on this machine, for one
// (pg_backend_pid(), named "postgres"; a pid from a server in a container
// names another process here, or none). ok is false where it cannot be
// read: no such process here, or it has ended.
func Process(pid int) (d time.Duration, name string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	// The command's name, in parentheses, may hold spaces: the fields
	// that follow it are state (3) ... utime (14), stime (15).
	i, j := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
	if i < 0 || j < i {
		return 0, "", false
	}
	f := strings.Fields(string(b[j+1:]))
	if len(f) < 13 {
		return 0, "", false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, "", false
	}
	return time.Duration(utime+stime) * clockTick, string(b[i+1 : j]), true
}
