package chain_test

import (
	"context"
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// A copy from a version 2 repository decodes each chunk into a buffer its
// worker reuses, not into one of its own: it allocates far less than a
// block per chunk. Decoding into fresh memory allocated (and cleared, and
// collected) 16 KiB and more per chunk, and a goroutine per chunk grew a
// fresh stack for each: together a third of a copy's CPU.
func TestCopyV2AllocatesLessThanABlockPerChunk(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops buffers on purpose: allocation counts mean nothing")
	}
	const chunks, block = 2000, 16 << 10
	ctx := context.Background()
	store := chain.NewMemStore()
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version = chain.FormatVersion2
	repo, err := chain.Init(ctx, store, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]chain.ID, chunks)
	data := map[chain.ID][]byte{}
	for i := range ids {
		b := make([]byte, block) // a counter and zeros, as the scale benchmark's disks
		binary.LittleEndian.PutUint64(b, uint64(i)+1)
		ids[i] = chain.Hash(b)
		data[ids[i]] = b
	}
	m := commit(t, repo, "p1", ids, data)
	data = nil
	src := newV2Open(t, store)
	dstStore := chain.NewMemStore()
	dst, err := chain.Init(ctx, dstStore, src.Config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := dst.NewWriter(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := &chain.Copier{From: src, To: w}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := c.CopyDisk(ctx, m.Disks[0]); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := c.Stats().Blobs; got < chunks {
		t.Fatalf("copied %d blobs, want at least %d", got, chunks)
	}
	perChunk := (after.TotalAlloc - before.TotalAlloc) / chunks
	t.Logf("%d bytes allocated per chunk copied", perChunk)
	if perChunk > block/4 {
		t.Errorf("the copy allocated %d bytes per chunk; want under %d (a quarter block)", perChunk, block/4)
	}
	if err := w.SaveManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := readAll(t, newV2Open(t, dstStore), m); err != nil {
		t.Fatal(err)
	}
}
