package chain_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// copyBack copies point m from src into dst as a new point named id, and
// returns the new manifest.
func copyBack(t *testing.T, src, dst *chain.Repository, m *chain.Manifest, id string) *chain.Manifest {
	t.Helper()
	ctx := context.Background()
	w, err := dst.NewWriter(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := &chain.Copier{From: src, To: w}
	if err := c.CopyDisk(ctx, m.Disks[0]); err != nil {
		t.Fatal(err)
	}
	copied := manifest("vm", id, m.Disks[0])
	if err := w.SaveManifest(ctx, copied); err != nil {
		t.Fatal(err)
	}
	return copied
}

// A GC that keeps a pack (too little of it dead to repack) does not keep
// its dead tree nodes in the index while the packs under them go: a copy
// trusts a listed node to promise its subtree, and would commit a point
// whose chunks are gone.
func TestCopyAfterGCKeptADeadNodesPack(t *testing.T) {
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
	copied := copyBack(t, src, dst, smallInSrc, "small-again")
	if err := readAll(t, dst, copied); err != nil {
		t.Fatalf("the point copied back cannot be read: %v", err)
	}
}

// The tree nodes of packs a GC dropped and left in place for a reader are
// not recovered by the next index load: the packs under them may be gone
// (here, a sweep that deleted the data pack and stopped before the tree
// pack), and a copy would skip the subtree.
func TestIndexLoadDoesNotRecoverDroppedTreeNodes(t *testing.T) {
	ctx := context.Background()
	bigIDs, bigData := randomBlocks(rand.New(rand.NewPCG(8, 1)), 16, 0)
	smallIDs, smallData := randomBlocks(rand.New(rand.NewPCG(8, 2)), 4, 0)
	src := newRepo(t)
	smallInSrc := commit(t, src, "small", smallIDs, smallData)

	store := chain.NewMemStore()
	dst := newRepoOn(t, store)
	big := commit(t, dst, "big", bigIDs, bigData)
	reader, err := dst.OpenReader(ctx, "restore", roots(big))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	before := packNames(t, store)
	small := commit(t, dst, "small", smallIDs, smallData)
	if err := dst.DeleteManifest(ctx, "vm", "small"); err != nil {
		t.Fatal(err)
	}
	rep, err := dst.GC(ctx, chain.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksDeferred < 2 {
		t.Fatalf("GC beside a reader deferred %d packs; want small's data and tree packs: %+v", rep.PacksDeferred, rep)
	}
	// A sweep that got as far as small's data pack (the largest: four
	// incompressible chunks against one tree node).
	var dataPack string
	var dataSize int64
	store.List(ctx, "packs/", func(i chain.ObjectInfo) error {
		if !before[i.Name] && i.Size > dataSize {
			dataPack, dataSize = i.Name, i.Size
		}
		return nil
	})
	if err := store.Delete(ctx, dataPack); err != nil {
		t.Fatal(err)
	}

	other, err := chain.Open(ctx, store, nil) // another process
	if err != nil {
		t.Fatal(err)
	}
	if err := other.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if other.HasBlob(small.Disks[0].Root) {
		t.Errorf("a fresh index lists the root node of a dropped pack")
	}
	copied := copyBack(t, src, other, smallInSrc, "small-again")
	if err := readAll(t, other, copied); err != nil {
		t.Fatalf("the point copied back cannot be read: %v", err)
	}
}
