package chain_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// firstPackReadWaits holds the first pack read until released.
type firstPackReadWaits struct {
	chain.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *firstPackReadWaits) Get(ctx context.Context, name string) ([]byte, error) {
	if strings.HasPrefix(name, "packs/") {
		s.once.Do(func() { close(s.entered); <-s.release })
	}
	return s.Store.Get(ctx, name)
}

// With the default refresh period (5 minutes), a verify whose lock is
// removed, and beside which a GC runs, finishes before its refresh could
// notice; it checks its lock before it reports, and stops with
// ErrLockLost rather than report the GC's work as damage.
func TestVerifyChecksItsLockBeforeReporting(t *testing.T) {
	ctx := context.Background()
	mem := chain.NewMemStore()
	store := &firstPackReadWaits{Store: mem, entered: make(chan struct{}), release: make(chan struct{})}
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
	<-store.entered
	mem.List(ctx, "locks/", func(i chain.ObjectInfo) error { return mem.Delete(ctx, i.Name) })
	other, err := chain.Open(ctx, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.DeleteManifest(ctx, "vm", "p2"); err != nil {
		t.Fatal(err)
	}
	if rep, err := other.GC(ctx, chain.GCOptions{}); err != nil || rep.PacksDeleted == 0 {
		t.Fatalf("GC: %+v %v", rep, err)
	}
	close(store.release)
	res := <-done
	if len(res.rep.Damage) > 0 {
		t.Errorf("verify whose lock was removed reports damage that is only GC's work: err %v, damage %+v", res.err, res.rep.Damage)
	}
}
