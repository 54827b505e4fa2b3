package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/access"
	"github.com/recalc-dev/recalc/internal/queue"
)

// TestStatusJobColumnsAlign checks that `recalc status` lines up its jobs'
// columns whatever their kind, status and trigger: "interrupted" and
// "resume --full" are the longest.
func TestStatusJobColumnsAlign(t *testing.T) {
	t.Parallel()
	var at []int
	for _, kind := range []queue.Kind{queue.Full, queue.Incremental} {
		for _, status := range []queue.Status{queue.Done, queue.Failed, queue.Running, queue.Interrupted, queue.Paused} {
			for _, trigger := range []string{"run", "watch", "run --full", "resume --full"} {
				var b bytes.Buffer
				printJob(&b, access.JobSummary{ID: 12, Kind: kind, Status: status, Trigger: trigger, Chunks: 3})
				at = append(at, strings.Index(b.String(), " chunks "))
				if at[len(at)-1] != at[0] {
					t.Fatalf("%s %s %s: chunks at column %d, the first job's at %d:\n%s", kind, status, trigger, at[len(at)-1], at[0], b.String())
				}
			}
		}
	}
}
