package chain_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
)

// The same half-way sweep as TestIndexLoadDoesNotRecoverDroppedTreeNodes,
// but with no reader: GC deletes the dropped packs at once and writes no
// garbage record. A GC killed after deleting small's data pack and before
// its tree pack leaves a tree pack no index lists and no garbage record
// names; the next index load may read its dead root node, but it promises
// nothing, so a copy does not skip the subtree.
func TestHalfSweptGCLeavesNoPromisingDeadNode(t *testing.T) {
	ctx := context.Background()
	bigIDs, bigData := randomBlocks(rand.New(rand.NewPCG(8, 1)), 16, 0)
	smallIDs, smallData := randomBlocks(rand.New(rand.NewPCG(8, 2)), 4, 0)
	src := newRepo(t)
	smallInSrc := commit(t, src, "small", smallIDs, smallData)

	store := chain.NewMemStore()
	dst := newRepoOn(t, store)
	commit(t, dst, "big", bigIDs, bigData)
	before := packNames(t, store)
	small := commit(t, dst, "small", smallIDs, smallData)
	var treePack string
	var treeSize int64 = 1 << 62
	store.List(ctx, "packs/", func(i chain.ObjectInfo) error {
		if !before[i.Name] && i.Size < treeSize {
			treePack, treeSize = i.Name, i.Size
		}
		return nil
	})
	treeBytes, err := store.Get(ctx, treePack)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.DeleteManifest(ctx, "vm", "small"); err != nil {
		t.Fatal(err)
	}
	rep, err := dst.GC(ctx, chain.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GC: %+v", rep)
	// The GC was killed after deleting the data pack: the tree pack is still there.
	if err := store.Put(ctx, treePack, treeBytes); err != nil {
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
		t.Errorf("a fresh index lists the dead root node of a half-swept pack")
	}
	copied := copyBack(t, src, other, smallInSrc, "small-again")
	if err := readAll(t, other, copied); err != nil {
		t.Errorf("the point copied back cannot be read: %v", err)
	}
}
