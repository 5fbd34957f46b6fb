package chain_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/storetest"
)

// A version 2 index is read as blobs are looked up. A lookup whose read
// fails is that failure, not a missing blob: a read reports the store's
// error (not damage), and a writer fails rather than store a blob again.
func TestVersion2LookupFailuresPropagate(t *testing.T) {
	ctx := context.Background()
	mem := chain.NewMemStore()
	cfg, err := chain.NewConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version, cfg.TreeFanout, cfg.PackSize = chain.FormatVersion2, 4, 1<<20
	repo, err := chain.Init(ctx, mem, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, data := randomBlocks(rand.New(rand.NewPCG(21, 21)), 30, 0)
	commit(t, repo, "p1", ids, data)

	faulty := storetest.NewFaultStore(mem, 1)
	opened, err := chain.Open(ctx, faulty, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := opened.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	faulty.Inject(storetest.Fault{Op: storetest.OpReadAt, Prefix: "index/", Err: syscall.EIO})
	_, err = opened.ReadBlob(ctx, chain.DataBlob, ids[0], nil)
	if !errors.Is(err, syscall.EIO) || errors.Is(err, chain.ErrCorrupt) {
		t.Errorf("read while the index cannot be read: %v; want EIO, not damage", err)
	}
	w, err := opened.NewWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if n, err := w.PutBlob(ctx, chain.DataBlob, ids[0], data[ids[0]]); !errors.Is(err, syscall.EIO) {
		t.Errorf("put of a stored blob while the index cannot be read: %d bytes, %v; want EIO", n, err)
	}
}
