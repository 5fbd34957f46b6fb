package chain_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

func newRepo(t *testing.T) *chain.Repository {
	t.Helper()
	cfg, err := chain.NewTestConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TreeFanout = 4 // small, so that small disks make tall trees
	cfg.PackSize = 1 << 20
	repo, err := chain.Init(context.Background(), chain.NewMemStore(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// writeMap stores a block map of the given block IDs (with data blobs for
// the non-zero ones) and returns its manifest entry.
func writeMap(t *testing.T, w *chain.Writer, name string, size int64, blocks []chain.ID, data map[chain.ID][]byte) chain.DiskManifest {
	t.Helper()
	ctx := context.Background()
	fanout := w.Repository().Config().TreeFanout
	g := chain.Geometry{Size: size, BlockSize: chain.DefaultBlockSize, Fanout: fanout}
	b := chain.NewTreeBuilder(w, g)
	for j := int64(0); j < g.Leaves(); j++ {
		leaf := blocks[j*int64(fanout) : j*int64(fanout)+int64(g.LeafBlocks(j))]
		for _, id := range leaf {
			if !id.IsZero() {
				if _, err := w.PutBlob(ctx, chain.DataBlob, id, data[id]); err != nil {
					t.Fatal(err)
				}
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
	return chain.DiskManifest{Name: name, Size: size, BlockSize: chain.DefaultBlockSize, Root: root}
}

func randomBlocks(rng *rand.Rand, n int, zeroEvery int) ([]chain.ID, map[chain.ID][]byte) {
	ids := make([]chain.ID, n)
	data := map[chain.ID][]byte{}
	for i := range ids {
		if zeroEvery > 0 && rng.IntN(zeroEvery) == 0 {
			continue
		}
		b := make([]byte, 100)
		for k := range b {
			b[k] = byte(rng.IntN(4)) // compressible
		}
		ids[i] = chain.Hash(b)
		data[ids[i]] = b
	}
	return ids, data
}

func TestTreeRoundTripGeometries(t *testing.T) {
	ctx := context.Background()
	bs := int64(chain.DefaultBlockSize)
	for _, size := range []int64{1, bs - 1, bs, bs + 1, 4 * bs, 4*bs + 1, 16 * bs, 17*bs - 3, 64 * bs, 65 * bs, 200*bs + 7} {
		for _, zeroEvery := range []int{0, 1, 3} {
			t.Run(fmt.Sprintf("size=%d/zero=%d", size, zeroEvery), func(t *testing.T) {
				repo := newRepo(t)
				g := chain.Geometry{Size: size, BlockSize: int(bs), Fanout: 4}
				rng := rand.New(rand.NewPCG(uint64(size), uint64(zeroEvery)))
				ids, data := randomBlocks(rng, int(g.Blocks()), zeroEvery)
				w, err := repo.NewWriter(ctx, "test")
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				d := writeMap(t, w, "disk", size, ids, data)
				if err := w.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				tr := repo.OpenTree(d)
				var got []chain.ID
				for j := int64(0); j < g.Leaves(); j++ {
					if got, err = tr.Leaf(ctx, j, got); err != nil {
						t.Fatal(err)
					}
				}
				if len(got) != len(ids) {
					t.Fatalf("read %d block IDs, want %d", len(got), len(ids))
				}
				for i := range ids {
					if got[i] != ids[i] {
						t.Fatalf("block %d: got %s want %s", i, got[i].Short(), ids[i].Short())
					}
				}
				if zeroEvery == 1 && !d.Root.IsZero() {
					t.Errorf("all-zero disk has root %s, want ZeroID", d.Root.Short())
				}
			})
		}
	}
}

// An unchanged block map costs nothing the second time; a change in one
// block rewrites one node per level.
func TestTreeSharesUnchangedNodes(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	bs := int64(chain.DefaultBlockSize)
	size := 256 * bs // fanout 4: 64 leaves, height 3
	rng := rand.New(rand.NewPCG(1, 2))
	ids, data := randomBlocks(rng, 256, 0)
	w, _ := repo.NewWriter(ctx, "test")
	defer w.Close()
	writeMap(t, w, "a", size, ids, data)
	g := chain.Geometry{Size: size, BlockSize: int(bs), Fanout: 4}

	stored := func(blocks []chain.ID) int64 {
		b := chain.NewTreeBuilder(w, g)
		for j := int64(0); j < g.Leaves(); j++ {
			if err := b.AddLeaf(ctx, blocks[j*4:j*4+4]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		return b.StoredBytes()
	}
	if n := stored(ids); n != 0 {
		t.Errorf("unchanged map stored %d bytes, want 0", n)
	}
	changed := append([]chain.ID(nil), ids...)
	changed[100] = chain.Hash([]byte("new"))
	n := stored(changed)
	// One leaf and one inner node per level above it: 4 nodes of 4 IDs.
	if max := int64(4 * (12 + 4*32)); n == 0 || n > max {
		t.Errorf("one changed block stored %d bytes of metadata, want 1..%d", n, max)
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"vm1", true}, {"VM-1_prod.eu", true}, {"a", true}, {string(make([]byte, 255)), false},
		{"", false}, {".", false}, {"..", false}, {".hidden", false}, {"a/b", false}, {`a\b`, false},
		{"a b", false}, {"tab\t", false}, {"nul\x00", false}, {"ünï", false},
	} {
		err := chain.CheckName("disk", tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	long := make([]byte, 256)
	for i := range long {
		long[i] = 'a'
	}
	if err := chain.CheckName("disk", string(long)); err == nil {
		t.Error("256-byte name accepted")
	}
	if err := chain.CheckName("disk", string(long[:255])); err != nil {
		t.Errorf("255-byte name refused: %v", err)
	}
}

func manifest(collection, id string, disks ...chain.DiskManifest) *chain.Manifest {
	return &chain.Manifest{ID: id, Collection: collection, Created: time.Now().UTC(), Consistency: "crash", Disks: disks}
}
