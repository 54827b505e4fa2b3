// Package workers runs chunks of a recalculation on a bounded pool of
// goroutines (an errgroup with a limit): the first error cancels the rest, and
// progress is reported as chunks finish.
package workers

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"
)

// Progress is called after each chunk with the number done and the total.
type Progress func(done, total int)

// Run calls fn for chunks 0..total-1 with at most n running at once.
func Run(ctx context.Context, n, total int, fn func(ctx context.Context, chunk int) error, progress Progress) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(max(n, 1))
	var mu sync.Mutex
	done := 0
	for i := 0; i < total; i++ {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := fn(ctx, i); err != nil {
				return err
			}
			if progress != nil {
				mu.Lock()
				done++
				progress(done, total)
				mu.Unlock()
			}
			return nil
		})
	}
	return g.Wait()
}
