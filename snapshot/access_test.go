package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// chainOfThree makes three restore points of one disk with scattered
// changes between them and returns their IDs and images.
func chainOfThree(t *testing.T) (*snapshot.Collection, []string, [][]byte) {
	t.Helper()
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 6<<20+3000, 11)
	var ids []string
	var images [][]byte
	for i := range 3 {
		if i > 0 {
			if _, err := demodisk.Scatter(disk, 0.03, uint64(40+i)); err != nil {
				t.Fatal(err)
			}
			// Zero a region too, so that restores must turn data back into zeros.
			f, _ := os.OpenFile(disk, os.O_WRONLY, 0)
			f.WriteAt(make([]byte, 200<<10), int64(i)<<20)
			f.Close()
		}
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rp.ID)
		images = append(images, readFile(t, disk))
	}
	return vm, ids, images
}

// differingBlocks compares two images block by block.
func differingBlocks(a, b []byte, bs int) []blockdiff.Range {
	var out []blockdiff.Range
	for off := 0; off < max(len(a), len(b)); off += bs {
		ea, eb := min(off+bs, len(a)), min(off+bs, len(b))
		var pa, pb []byte
		if off < len(a) {
			pa = a[off:ea]
		}
		if off < len(b) {
			pb = b[off:eb]
		}
		if bytes.Equal(pa, pb) {
			continue
		}
		n := int64(max(ea, eb) - off)
		if k := len(out); k > 0 && out[k-1].End() == int64(off) {
			out[k-1].Length += n
		} else {
			out = append(out, blockdiff.Range{Offset: int64(off), Length: n})
		}
	}
	return out
}

func TestDiffEqualsComparingRestoredImages(t *testing.T) {
	ctx := context.Background()
	vm, ids, images := chainOfThree(t)
	for _, pair := range [][2]int{{0, 1}, {1, 2}, {0, 2}, {2, 0}, {1, 1}} {
		got, err := vm.Diff(ctx, snapshot.DiffOptions{Disk: "d", From: ids[pair[0]], To: ids[pair[1]]})
		if err != nil {
			t.Fatal(err)
		}
		want := differingBlocks(images[pair[0]], images[pair[1]], testBlockSize)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("diff %d..%d: %d ranges %v\nwant %d ranges %v", pair[0], pair[1], len(got), got, len(want), want)
		}
	}
	if _, err := vm.Diff(ctx, snapshot.DiffOptions{Disk: "nope", From: ids[0], To: ids[1]}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("diff of an unknown disk: %v", err)
	}
}

func TestIncrementalRestore(t *testing.T) {
	ctx := context.Background()
	vm, ids, images := chainOfThree(t)
	blocks := func(r []blockdiff.Range) (n int64) {
		for _, x := range r {
			n += (x.Length + testBlockSize - 1) / testBlockSize
		}
		return n
	}
	total := int64((len(images[0]) + testBlockSize - 1) / testBlockSize)
	for _, tc := range []struct {
		name     string
		from, to int
		useFrom  bool
	}{
		{"roll back by hashing", 2, 0, false},
		{"roll forward by hashing", 0, 2, false},
		{"roll back by block maps", 2, 0, true},
		{"step by block maps", 1, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "target.img")
			if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[tc.from], Disk: "d", Path: target}); err != nil {
				t.Fatal(err)
			}
			opts := snapshot.RestoreOptions{Point: ids[tc.to], Disk: "d", Path: target, Incremental: true}
			if tc.useFrom {
				opts.From = ids[tc.from]
			}
			stats, err := vm.RestoreDisk(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readFile(t, target), images[tc.to]) {
				t.Fatal("incremental restore is not bit-exact")
			}
			differ := blocks(differingBlocks(images[tc.from], images[tc.to], testBlockSize))
			if stats.BlocksWritten != differ {
				t.Errorf("wrote %d blocks, %d differ", stats.BlocksWritten, differ)
			}
			wantRead := total
			if tc.useFrom {
				wantRead = 0
			}
			if stats.BlocksRead != wantRead || stats.BlocksWritten+stats.BlocksSkipped != total {
				t.Errorf("stats %+v: want %d blocks read, written+skipped = %d", stats, wantRead, total)
			}
		})
	}
	// A target that does not exist, or From without Incremental, is refused.
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[0], Disk: "d", Path: filepath.Join(t.TempDir(), "none"), Incremental: true}); err == nil {
		t.Error("incremental restore onto nothing succeeded")
	}
}

func TestOpenDiskReadsAnywhere(t *testing.T) {
	ctx := context.Background()
	vm, ids, images := chainOfThree(t)
	r, err := vm.OpenDisk(ctx, ids[2], "d", snapshot.ReaderOptions{CacheBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := images[2]
	if r.Size() != int64(len(want)) {
		t.Fatalf("Size %d, want %d", r.Size(), len(want))
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 5))
			for range 300 {
				off := rng.Int64N(int64(len(want)))
				n := rng.IntN(200 << 10)
				p := make([]byte, n)
				got, err := r.ReadAt(p, off)
				end := min(off+int64(n), int64(len(want)))
				if got != int(end-off) || (end < off+int64(n)) != (err == io.EOF) || err != nil && err != io.EOF {
					t.Errorf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
					return
				}
				if !bytes.Equal(p[:got], want[off:end]) {
					t.Errorf("ReadAt(%d bytes at %d): wrong bytes", n, off)
					return
				}
			}
		})
	}
	wg.Wait()
	if n, err := r.ReadAt(make([]byte, 10), r.Size()); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, EOF", n, err)
	}
	// The whole disk through the reader is the image.
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.NewSectionReader(r, 0, r.Size())); err != nil || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("sequential read: %v", err)
	}
}
