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

// keptPackWithDeadNode makes the case of the two tests below: a source
// repository holding point "small", and a target where small was deleted
// and collected while the tree pack holding its one node was kept (small's
// node shares it with big's ~135 nodes) and its data pack removed.
func keptPackWithDeadNode(t *testing.T) (src, dst *chain.Repository, smallInSrc *chain.Manifest, small chain.DiskManifest) {
	t.Helper()
	ctx := context.Background()
	bigIDs, bigData := randomBlocks(rand.New(rand.NewPCG(7, 1)), 400, 0)
	smallIDs, smallData := randomBlocks(rand.New(rand.NewPCG(7, 2)), 4, 0)
	src = newRepo(t)
	smallInSrc = commit(t, src, "small", smallIDs, smallData)
	dst = newRepo(t)
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
	small = writeMap(t, w, "disk", int64(len(smallIDs))*chain.DefaultBlockSize, smallIDs, smallData)
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
	if _, err := dst.GC(ctx, chain.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	return src, dst, smallInSrc, small
}

// A GC that keeps a pack (too little of it dead to repack) does not keep
// its dead tree nodes in the index while the packs under them go: a copy
// trusts a listed node to promise its subtree, and would commit a point
// whose chunks are gone. Nor does losing the index file bring the dead
// node back as a promise: recovered from the pack's header it is readable,
// but not held (README: "a lost or damaged index file loses nothing").
func TestCopyAfterGCKeptADeadNodesPack(t *testing.T) {
	for _, lose := range []bool{false, true} {
		t.Run(map[bool]string{false: "index kept", true: "index file lost"}[lose], func(t *testing.T) {
			ctx := context.Background()
			src, dst, smallInSrc, small := keptPackWithDeadNode(t)
			if lose {
				dst.Store().List(ctx, "index/", func(i chain.ObjectInfo) error { return dst.Store().Delete(ctx, i.Name) })
				var err error
				if dst, err = chain.Open(ctx, dst.Store(), nil); err != nil {
					t.Fatal(err)
				}
				if err := dst.LoadIndex(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if dst.HasBlob(small.Root) {
				t.Errorf("after GC the index holds small's dead root node")
			}
			copied := copyBack(t, src, dst, smallInSrc, "small-again")
			if err := readAll(t, dst, copied); err != nil {
				t.Fatalf("the point copied back cannot be read: %v", err)
			}
		})
	}
}

// The tree nodes of packs a GC dropped promise nothing to the next index
// load, which recovers them from their headers: the packs under them may
// be gone. With a reader live, GC leaves the packs for it (a garbage
// record) and a later sweep may stop after the data pack; with none, GC
// deletes them at once and may be killed between the data pack and the
// tree pack. Either way a copy must not skip the dead node's subtree.
func TestDroppedPacksPromiseNoDeadNode(t *testing.T) {
	for _, reader := range []bool{true, false} {
		t.Run(map[bool]string{true: "left for a reader, sweep stopped", false: "no reader, GC killed"}[reader], func(t *testing.T) {
			ctx := context.Background()
			bigIDs, bigData := randomBlocks(rand.New(rand.NewPCG(8, 1)), 16, 0)
			smallIDs, smallData := randomBlocks(rand.New(rand.NewPCG(8, 2)), 4, 0)
			src := newRepo(t)
			smallInSrc := commit(t, src, "small", smallIDs, smallData)

			store := chain.NewMemStore()
			dst := newRepoOn(t, store)
			big := commit(t, dst, "big", bigIDs, bigData)
			if reader {
				lock, err := dst.OpenReader(ctx, "restore", roots(big))
				if err != nil {
					t.Fatal(err)
				}
				defer lock.Close()
			}
			before := packNames(t, store)
			small := commit(t, dst, "small", smallIDs, smallData)
			// small's packs: the data pack (four incompressible chunks) is
			// the larger, the tree pack (one node) the smaller.
			var dataPack, treePack string
			var dataSize, treeSize int64 = 0, 1 << 62
			store.List(ctx, "packs/", func(i chain.ObjectInfo) error {
				if !before[i.Name] && i.Size > dataSize {
					dataPack, dataSize = i.Name, i.Size
				}
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
			if reader {
				if rep.PacksDeferred < 2 {
					t.Fatalf("GC beside a reader deferred %d packs; want small's data and tree packs: %+v", rep.PacksDeferred, rep)
				}
				if err := store.Delete(ctx, dataPack); err != nil { // a sweep got that far
					t.Fatal(err)
				}
			} else if err := store.Put(ctx, treePack, treeBytes); err != nil { // killed before the tree pack
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
				t.Errorf("a fresh index holds the root node of a dropped pack")
			}
			copied := copyBack(t, src, other, smallInSrc, "small-again")
			if err := readAll(t, other, copied); err != nil {
				t.Fatalf("the point copied back cannot be read: %v", err)
			}
		})
	}
}
