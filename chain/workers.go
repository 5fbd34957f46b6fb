package chain

import (
	"context"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// inWorkers calls, for each i from 0 to n-1, the function one of at most
// workers goroutines made with newWorker, each goroutine taking the next
// i in turn: a few goroutines, each with its own state (a buffer), rather
// than a goroutine per item, whose stack grows afresh each time. The
// first error cancels the context of the others and is returned.
func inWorkers(ctx context.Context, workers, n int, newWorker func(ctx context.Context) func(i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(workers, n) {
		g.Go(func() error {
			do := newWorker(gctx)
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := do(i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}
