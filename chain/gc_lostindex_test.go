package chain_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// After a GC kept a pack with a dead tree node unlisted, losing the index
// file makes the next load recover the pack from its header, dead node
// included: readable, but promising nothing, so a copy does not skip the
// node's (swept) subtree.
func TestLostIndexFileDoesNotReexposeDeadNodes(t *testing.T) {
	ctx := context.Background()
	bigIDs, bigData := randomBlocks(rand.New(rand.NewPCG(7, 1)), 400, 0)
	smallIDs, smallData := randomBlocks(rand.New(rand.NewPCG(7, 2)), 4, 0)
	src := newRepo(t)
	smallInSrc := commit(t, src, "small", smallIDs, smallData)

	// In dst, small's chunks have a data pack of their own, and small's one
	// tree node shares a tree pack with big's ~135 nodes, so that pack is
	// kept when small goes.
	dst := newRepo(t)
	w, err := dst.NewWriter(ctx, "create")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range smallIDs {
		if _, err := w.PutBlob(ctx, chain.DataBlob, id, smallData[id]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	small := writeMap(t, w, "disk", int64(len(smallIDs))*chain.DefaultBlockSize, smallIDs, smallData)
	big := writeMap(t, w, "disk", int64(len(bigIDs))*chain.DefaultBlockSize, bigIDs, bigData)
	for _, m := range []*chain.Manifest{manifest("vm", "big", big), manifest("vm", "small", small)} {
		if err := w.SaveManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	if err := dst.DeleteManifest(ctx, "vm", "small"); err != nil {
		t.Fatal(err)
	}
	rep, err := dst.GC(ctx, chain.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dst.HasBlob(small.Root) {
		t.Errorf("after GC (%+v) the index still lists small's dead root node", rep)
	}
	// The index file GC wrote is lost (README: "a lost or damaged index
	// file loses nothing").
	dst.Store().List(ctx, "index/", func(i chain.ObjectInfo) error { return dst.Store().Delete(ctx, i.Name) })
	other, err := chain.Open(ctx, dst.Store(), nil)
	if err != nil {
		t.Fatal(err)
	}
	copied := copyBack(t, src, other, smallInSrc, "small-again")
	if err := readAll(t, other, copied); err != nil {
		t.Fatalf("the point copied back cannot be read: %v", err)
	}
}
