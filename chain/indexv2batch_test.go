package chain_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// indexBytesRead counts the bytes read from index objects.
type indexBytesRead struct {
	chain.Store
	n atomic.Int64
}

func (s *indexBytesRead) Get(ctx context.Context, name string) ([]byte, error) {
	b, err := s.Store.Get(ctx, name)
	if strings.HasPrefix(name, "index/") {
		s.n.Add(int64(len(b)))
	}
	return b, err
}

func (s *indexBytesRead) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if strings.HasPrefix(name, "index/") {
		s.n.Add(int64(len(p)))
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

// bigPoint commits one restore point of n unique chunks, with the default
// tree fanout, in a version 2 repository of its own, and returns it and
// its store.
func bigPoint(t *testing.T, n int) (*chain.MemStore, *chain.Manifest) {
	t.Helper()
	store := chain.NewMemStore()
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version = chain.FormatVersion2
	repo, err := chain.Init(context.Background(), store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]chain.ID, n)
	data := map[chain.ID][]byte{}
	for i := range ids {
		b := []byte(fmt.Sprintf("chunk %d", i))
		ids[i] = chain.Hash(b)
		data[ids[i]] = b
	}
	return store, commit(t, repo, "p1", ids, data)
}

// Verify and GC's mark look chunks up in sorted batches: each reads the
// index a few times through, not a bucket per chunk (which reads the
// index about 64 times through, a bucket being 64 entries), and a batch
// far smaller than the index finds the same.
func TestVersion2VerifyAndGCReadTheIndexInBatches(t *testing.T) {
	defer quickLocks()()
	ctx := context.Background()
	const chunks = 20_000
	store, _ := bigPoint(t, chunks)
	indexBytes := storedBytes(t, store, "index/")
	counted := &indexBytesRead{Store: store}
	repo, err := chain.Open(ctx, counted, nil)
	if err != nil {
		t.Fatal(err)
	}
	report, err := repo.Verify(ctx, chain.VerifyOptions{StructureOnly: true})
	if err != nil || !report.OK() {
		t.Fatalf("verify: %v, %+v", err, report.Damage)
	}
	// Opened, read through and checked against its name, counted by pack
	// twice (packs to check, and their entries), and the batched lookups.
	if read := counted.n.Load(); read > 6*indexBytes {
		t.Errorf("verify read %d bytes of index files of %d: more than six times through", read, indexBytes)
	}
	counted.n.Store(0)
	gc, err := repo.GC(ctx, chain.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if gc.LiveBlobs < chunks {
		t.Fatalf("gc: %d live blobs, want at least %d", gc.LiveBlobs, chunks)
	}
	if read := counted.n.Load(); read > 4*indexBytes {
		t.Errorf("gc read %d bytes of index files of %d: more than four times through", read, indexBytes)
	}

	// Batches of 1000 find the same.
	defer chain.SetIndexV2Batches(1000)()
	small, err := repo.Verify(ctx, chain.VerifyOptions{StructureOnly: true})
	if err != nil || !small.OK() || small.Blobs != report.Blobs || small.RestorePoints != report.RestorePoints {
		t.Fatalf("verify in small batches: %v, %+v, against %+v", err, small, report)
	}
	smallGC, err := repo.GC(ctx, chain.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if smallGC.LiveBlobs != gc.LiveBlobs || smallGC.BlobsRemoved != gc.BlobsRemoved || smallGC.BytesAfter != gc.BytesAfter {
		t.Fatalf("gc in small batches: %+v, against %+v", smallGC, gc)
	}
}
