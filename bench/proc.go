package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// recalcCmd runs the recalc binary against one database, as an operator
// would, and measures each process.
type recalcCmd struct {
	bin, url string
}

// proc is what one recalc process did.
type proc struct {
	Stdout  []byte
	Elapsed time.Duration
	MaxRSS  int64 // bytes
}

func (r recalcCmd) run(ctx context.Context, args ...string) (*proc, error) {
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+r.url, "RECALC_LOG_FORMAT=json", "RECALC_LOG_LEVEL=warn")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	p := &proc{Stdout: stdout.Bytes(), Elapsed: time.Since(start)}
	if err != nil {
		return nil, fmt.Errorf("recalc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		p.MaxRSS = ru.Maxrss * 1024 // Linux reports KiB
	}
	return p, nil
}
