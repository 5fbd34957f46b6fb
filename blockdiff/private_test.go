package blockdiff_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/chain"
)

// Store gets a private copy of each block, the bytes its ID was hashed
// from: the guest writing the block while Store runs (here, Store itself
// writes it) changes neither Block.Data nor its match with Block.ID. Were
// Data the mapped image, Store would keep other bytes than the ID names.
func TestScanStoresPrivateCopyWhileDiskIsWritten(t *testing.T) {
	const blocks = 64
	path := filepath.Join(t.TempDir(), "disk.img")
	original := make([]byte, blocks*bs)
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range original {
		original[i] = byte(rng.IntN(256))
	}
	if err := os.WriteFile(path, original, 0o600); err != nil {
		t.Fatal(err)
	}
	guest, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()

	// A parent whose every block differs: each block is compared, found
	// changed, and stored.
	differing := make([]chain.ID, blocks)
	for i := range differing {
		differing[i] = chain.Hash([]byte{byte(i), 1})
	}
	for _, tc := range []struct {
		name   string
		parent blockdiff.Parent
	}{
		{"no parent", nil},
		{"changed since the parent", sliceParent{size: blocks * bs, ids: differing}},
	} {
		if _, err := guest.WriteAt(original, 0); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		d, err := blockdiff.OpenDisk(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		stored := make([]bool, blocks) // each index written by one Store call only
		_, err = blockdiff.Scan(ctx, d, blockdiff.Options{
			BlockSize: bs, SegmentBlocks: segBlocks, Workers: 2, Parent: tc.parent,
			Store: func(_ context.Context, b blockdiff.Block) error {
				stored[b.Index] = true
				want := original[b.Index*bs : (b.Index+1)*bs]
				overwrite := bytes.Repeat([]byte{^want[0]}, bs)
				if _, err := guest.WriteAt(overwrite, b.Index*bs); err != nil {
					return err
				}
				if !bytes.Equal(b.Data, want) {
					t.Errorf("%s: block %d: Data changed when the disk was written during Store", tc.name, b.Index)
				}
				if chain.Hash(b.Data) != b.ID {
					t.Errorf("%s: block %d: Data no longer hashes to its ID", tc.name, b.Index)
				}
				return nil
			},
			Segment: func(context.Context, blockdiff.Segment) error { return nil },
		})
		d.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for i, ok := range stored {
			if !ok {
				t.Errorf("%s: block %d was not stored", tc.name, i)
			}
		}
	}
}
