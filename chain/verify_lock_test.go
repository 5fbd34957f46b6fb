package chain_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// packReadsHeld holds every pack read until released or until its context
// ends, and says when the first one is held.
type packReadsHeld struct {
	chain.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *packReadsHeld) Get(ctx context.Context, name string) ([]byte, error) {
	if strings.HasPrefix(name, "packs/") {
		s.once.Do(func() { close(s.entered) })
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.Get(ctx, name)
}

// A verify whose lock is removed under it (unlock -all, or a process that
// took it for stale) stops with ErrLockLost: a GC may run beside it from
// then on, and what that GC removes is not damage to report. It stops
// whether its refresher notices (here every 20 ms, cancelling the reads)
// or the verify finishes first (the default 5-minute period): it checks
// its lock itself before it reports.
func TestVerifyStopsWhenItsLockIsLost(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refresh time.Duration // 0: the default
	}{
		{"the refresher notices", 20 * time.Millisecond},
		{"the verify ends first", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.refresh > 0 {
				defer chain.SetLockTiming(tc.refresh, 10*time.Second, time.Millisecond)()
			}
			ctx := context.Background()
			mem := chain.NewMemStore()
			store := &packReadsHeld{Store: mem, entered: make(chan struct{}), release: make(chan struct{})}
			repo := newRepoOn(t, store)
			ids1, data1 := randomBlocks(rand.New(rand.NewPCG(3, 1)), 40, 0)
			ids2, data2 := randomBlocks(rand.New(rand.NewPCG(3, 2)), 40, 0)
			commit(t, repo, "p1", ids1, data1)
			commit(t, repo, "p2", ids2, data2)

			type result struct {
				rep chain.VerifyReport
				err error
			}
			done := make(chan result, 1)
			go func() {
				rep, err := repo.Verify(ctx, chain.VerifyOptions{})
				done <- result{rep, err}
			}()
			<-store.entered // verify is reading packs

			// Another process removes every lock, then deletes a point and
			// collects its packs.
			mem.List(ctx, "locks/", func(i chain.ObjectInfo) error { return mem.Delete(ctx, i.Name) })
			other, err := chain.Open(ctx, mem, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := other.DeleteManifest(ctx, "vm", "p2"); err != nil {
				t.Fatal(err)
			}
			if rep, err := other.GC(ctx, chain.GCOptions{}); err != nil || rep.PacksDeleted == 0 {
				t.Fatalf("GC beside the verify: %+v, %v; want p2's packs deleted", rep, err)
			}
			if tc.refresh == 0 {
				close(store.release)
			}
			select {
			case res := <-done:
				if !errors.Is(res.err, chain.ErrLockLost) || len(res.rep.Damage) > 0 {
					t.Fatalf("verify whose lock was removed: %v, damage %v; want ErrLockLost and no damage", res.err, res.rep.Damage)
				}
			case <-time.After(time.Minute):
				t.Fatal("verify did not stop within a minute of losing its lock")
			}
		})
	}
}
