package chain_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// fillRepository stores n tiny distinct data blobs and one restore point
// whose block map names them all (the blobs stand for chunks: the mark
// does not read them), in a repository of format version in dir. Blobs
// are 8 bytes; with blobSize > 8 they are that long and incompressible
// (see fillBlob), in packs of 1 MiB, so that a pack holds few of them.
func fillRepository(t *testing.T, dir string, version, n, blobSize int) {
	t.Helper()
	ctx := context.Background()
	store, err := chain.NewLocalStore(dir) // not in memory: the heap measured is the index's
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version = version
	if blobSize > 8 {
		cfg.PackSize = 1 << 20
	}
	repo, err := chain.Init(ctx, store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := repo.NewWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	g := chain.Geometry{Size: int64(n) * int64(cfg.BlockSize), BlockSize: cfg.BlockSize, Fanout: cfg.TreeFanout}
	b := chain.NewTreeBuilder(w, g)
	leaf := make([]chain.ID, cfg.TreeFanout)
	data := make([]byte, max(8, blobSize))
	for j := int64(0); j < g.Leaves(); j++ {
		for k := range leaf {
			fillBlob(data, uint64(j)*uint64(len(leaf))+uint64(k)+1)
			leaf[k] = chain.Hash(data)
			if _, err := w.PutBlob(ctx, chain.DataBlob, leaf[k], data); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.AddLeaf(ctx, leaf); err != nil {
			t.Fatal(err)
		}
	}
	root, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := chain.DiskManifest{Name: "disk", Size: g.Size, BlockSize: cfg.BlockSize, Root: root}
	if err := w.SaveManifest(ctx, manifest("vm", "p1", d)); err != nil {
		t.Fatal(err)
	}
}

// fillBlob fills b with blob number i of fillRepository: i, then (past 8
// bytes) bytes drawn from a source seeded with i.
func fillBlob(b []byte, i uint64) {
	binary.LittleEndian.PutUint64(b, i)
	rng := rand.New(rand.NewPCG(i, i))
	for k := 8; k < len(b); k++ {
		b[k] = byte(rng.Uint32())
	}
}

// GC's mark in a version 2 repository keeps a bit per index entry, not a
// map of the live blobs, and reads the index through version 2's readers:
// the live Go heap at the end of the mark, measured by GC's progress
// callback, is a couple of bytes a blob, where version 1 holds its whole
// index and the set of live blobs.
func TestGCMarkMemoryIsBounded(t *testing.T) {
	n := 1 << 20
	if testing.Short() {
		n = 1 << 18
	}
	ctx := context.Background()
	heap := map[int]float64{} // bytes a blob
	for _, version := range []int{chain.FormatVersion, chain.FormatVersion2} {
		dir := t.TempDir()
		fillRepository(t, dir, version, n, 0)
		store, err := chain.NewLocalStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		repo, err := chain.Open(ctx, store, nil)
		if err != nil {
			t.Fatal(err)
		}
		var before, atMark runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		report, err := repo.GC(ctx, chain.GCOptions{Progress: func(p chain.GCProgress) {
			if p.Phase == "mark" && p.Done == p.Total {
				runtime.GC()
				runtime.ReadMemStats(&atMark)
			}
		}})
		store.Close()
		if err != nil {
			t.Fatal(err)
		}
		if report.LiveBlobs < n {
			t.Fatalf("version %d: GC found %d live blobs, want at least %d", version, report.LiveBlobs, n)
		}
		heap[version] = float64(atMark.HeapAlloc-min(atMark.HeapAlloc, before.HeapAlloc)) / float64(n)
		t.Logf("version %d: %d blobs, %.1f MiB of live Go heap at the end of GC's mark (%.1f bytes a blob)", version, n, heap[version]*float64(n)/(1<<20), heap[version])
	}
	// Plus one batch of IDs looked up at once: a constant, 8 MiB at any
	// size, so a few bytes a blob at a million and less than one at ten.
	if want := 4 + float64(chain.IndexV2BatchBytes())/float64(n); heap[chain.FormatVersion2] > want {
		t.Errorf("version 2's mark holds %.1f bytes a blob; want the readers' tables, a bit and a batch of IDs (%.1f)", heap[chain.FormatVersion2], want)
	}
}
