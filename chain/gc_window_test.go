package chain_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// afterIndexReplaced runs hook once, the first time locks/ is listed after
// an index file was deleted: that is, inside a GC's sweep, after its new
// index replaced the old files and before it writes its garbage record.
type afterIndexReplaced struct {
	chain.Store
	mu        sync.Mutex
	indexGone bool
	done      bool
	hook      func()
}

func (s *afterIndexReplaced) Delete(ctx context.Context, name string) error {
	err := s.Store.Delete(ctx, name)
	if strings.HasPrefix(name, "index/") {
		s.mu.Lock()
		s.indexGone = true
		s.mu.Unlock()
	}
	return err
}

func (s *afterIndexReplaced) List(ctx context.Context, prefix string, fn func(chain.ObjectInfo) error) error {
	s.mu.Lock()
	run := prefix == "locks/" && s.indexGone && !s.done && s.hook != nil
	if run {
		s.done = true
	}
	s.mu.Unlock()
	if run {
		s.hook()
	}
	return s.Store.List(ctx, prefix, fn)
}

// An index loaded between a GC's replaceIndex and its writeGarbage reads
// the dropped packs from their headers (no garbage record names them yet),
// and its refresh keeps them (no index file went, the packs exist). Their
// tree nodes promise nothing, so a create in that process does not
// deduplicate against dead nodes: its point can be read by every process,
// and GC and verify stay clean.
func TestIndexLoadedInsideAGCPromisesNoDroppedNode(t *testing.T) {
	ctx := context.Background()
	bigIDs, bigData := randomBlocks(rand.New(rand.NewPCG(9, 1)), 16, 0)
	smallIDs, smallData := randomBlocks(rand.New(rand.NewPCG(9, 2)), 4, 0)
	mem := chain.NewMemStore()
	hooked := &afterIndexReplaced{Store: mem}
	gcRepo := newRepoOn(t, hooked)
	big := commit(t, gcRepo, "big", bigIDs, bigData)
	reader, err := gcRepo.OpenReader(ctx, "restore", roots(big))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	small := commit(t, gcRepo, "small", smallIDs, smallData)
	if err := gcRepo.DeleteManifest(ctx, "vm", "small"); err != nil {
		t.Fatal(err)
	}

	other, err := chain.Open(ctx, mem, nil) // another process
	if err != nil {
		t.Fatal(err)
	}
	hooked.hook = func() {
		if err := other.LoadIndex(ctx); err != nil {
			t.Error(err)
		}
	}
	rep, err := gcRepo.GC(ctx, chain.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hooked.done || rep.PacksDeferred == 0 {
		t.Fatalf("hook ran %v, report %+v", hooked.done, rep)
	}
	t.Logf("other process lists small's dead root after the GC: %v", other.HasBlob(small.Disks[0].Root))

	// The other process now creates the same disk again.
	again := commit(t, other, "small-again", smallIDs, smallData)

	fresh, err := chain.Open(ctx, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := readAll(t, fresh, again); err != nil {
		t.Errorf("a committed point cannot be read by a fresh process: %v", err)
	}
	if _, err := fresh.GC(ctx, chain.GCOptions{}); err != nil {
		t.Errorf("GC after the create: %v", err)
	}
	rep2, err := fresh.Verify(ctx, chain.VerifyOptions{})
	if err != nil || len(rep2.Damage) > 0 {
		t.Errorf("verify: %v, damage %+v", err, rep2.Damage)
	}
}
