package snapshot_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
)

// packReadCounter counts the reads of each data pack through it (tree
// packs, which a remote repository's cache holds, are left out).
type packReadCounter struct {
	chain.Store
	mu    sync.Mutex
	reads map[string]int
}

func (s *packReadCounter) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if strings.HasPrefix(name, "packs/") && !chain.IsTreePackAccess(ctx) {
		s.mu.Lock()
		s.reads[name]++
		s.mu.Unlock()
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

// TestRestoreReadsEachPackInFewPieces restores a disk of many leaves whose
// blocks share a few packs: read leaf by leaf, each pack was read once per
// leaf that has blocks in it (one request each on an object store); read
// in pack order, each pack is read in a span or two of up to 16 MiB.
func TestRestoreReadsEachPackInFewPieces(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	local, err := chain.NewLocalStore(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	store := &packReadCounter{Store: local, reads: map[string]int{}}
	repo, err := snapshot.InitStore(ctx, store, snapshot.InitOptions{BlockSize: testBlockSize, Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	// 64 MiB of 16 KiB blocks: 16 leaves of 256 blocks.
	image := makeDisk(t, dir, "disk.img", 64<<20, 7)
	vm, err := repo.Collection("vm")
	if err != nil {
		t.Fatal(err)
	}
	point, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: image}}})
	if err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	clear(store.reads)
	store.mu.Unlock()
	restoreAndCompare(t, vm, point.ID, "d", readFile(t, image))
	for name, n := range store.reads {
		if n > 2 {
			t.Errorf("the restore read %s %d times, want at most 2 (spans of 16 MiB)", name, n)
		}
	}
	if len(store.reads) == 0 {
		t.Fatal("the restore read no pack through the store")
	}
}
