package chain_test

import (
	"context"
	"runtime"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// heapSampler is a store that measures the live Go heap at every 256th
// read: a deterministic look at what an operation holds while it reads.
type heapSampler struct {
	chain.Store
	mu      sync.Mutex
	reads   int
	samples int
	peak    uint64
}

func (s *heapSampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reads++; s.reads%256 != 0 {
		return
	}
	s.samples++
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	s.peak = max(s.peak, m.HeapAlloc)
}

func (s *heapSampler) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	s.sample()
	return s.Store.ReadAt(ctx, name, p, off)
}

func (s *heapSampler) Get(ctx context.Context, name string) ([]byte, error) {
	s.sample()
	return s.Store.Get(ctx, name)
}

// Verify of a version 2 repository reads its index a file and a batch of
// packs at a time, and looks blobs up through version 2's readers: the
// live heap a structure check holds while it reads is a few bytes a blob,
// where version 1 holds its whole index.
func TestVerifyMemoryIsBounded(t *testing.T) {
	n := 1 << 20
	if testing.Short() {
		n = 1 << 18
	}
	ctx := context.Background()
	for _, version := range []int{chain.FormatVersion, chain.FormatVersion2} {
		dir := t.TempDir()
		fillRepository(t, dir, version, n, 0)
		local, err := chain.NewLocalStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, structureOnly := range []bool{true, false} {
			store := &heapSampler{Store: local}
			repo, err := chain.Open(ctx, store, nil)
			if err != nil {
				t.Fatal(err)
			}
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			report, err := repo.Verify(ctx, chain.VerifyOptions{StructureOnly: structureOnly})
			if err != nil || !report.OK() {
				t.Fatalf("version %d: verify: %+v, %v", version, report.Damage, err)
			}
			if store.samples == 0 {
				t.Fatalf("version %d: verify read too little to be measured", version)
			}
			perBlob := float64(store.peak-min(store.peak, before.HeapAlloc)) / float64(n)
			t.Logf("version %d, structure only %v: %d blobs, live heap while verifying up to %.1f MiB (%.1f bytes a blob)", version, structureOnly, n, perBlob*float64(n)/(1<<20), perBlob)
			// Reading the data also holds a batch of up to 2^20 packs'
			// entries (the whole index here): bounded by the batch, not by
			// the index, so only the structure check is held to bytes a blob.
			// And one batch of chunk IDs looked up at once: a constant.
			if want := 8 + float64(chain.IndexV2BatchBytes())/float64(n); version == chain.FormatVersion2 && structureOnly && perBlob > want {
				t.Errorf("version 2 verify -structure-only held %.1f bytes a blob; want a few and a batch of IDs (%.1f)", perBlob, want)
			}
		}
		local.Close()
	}
}

// A repair of one blob in a version 2 repository holds the entries of the
// pack it evacuates and one new index file being merged (at most 2^18
// entries, about 60 bytes each), not the index: beyond that, a few bytes a
// blob of the repository.
func TestRepairMemoryIsBounded(t *testing.T) {
	n := 1 << 18 // fewer would fit under the limit whole
	ctx := context.Background()
	for _, version := range []int{chain.FormatVersion, chain.FormatVersion2} {
		dir := t.TempDir()
		fillRepository(t, dir, version, n, 512) // 2,000 blobs a pack
		local, err := chain.NewLocalStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		store := &heapSampler{Store: local}
		repo, err := chain.Open(ctx, store, nil)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 512)
		fillBlob(data, 1) // the first blob fillRepository stores
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if _, err := repo.RepairBlobs(ctx, chain.DataBlob, map[chain.ID][]byte{chain.Hash(data): data}); err != nil {
			t.Fatal(err)
		}
		local.Close()
		if store.samples == 0 {
			t.Fatalf("version %d: repair read too little to be measured", version)
		}
		held := store.peak - min(store.peak, before.HeapAlloc)
		t.Logf("version %d: repair of 1 blob among %d: live heap up to %.1f MiB (%.1f bytes a blob)", version, n, float64(held)/(1<<20), float64(held)/float64(n))
		if limit := uint64(1<<18*64 + 8*n); version == chain.FormatVersion2 && held > limit {
			t.Errorf("version 2 repair held %.1f MiB; want at most one merged index file and a few bytes a blob (%.1f MiB)", float64(held)/(1<<20), float64(limit)/(1<<20))
		}
	}
}
