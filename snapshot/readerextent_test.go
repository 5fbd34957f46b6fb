package snapshot_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// DiskReader.Extent shows exactly the zero blocks of a restore point, in
// few calls, across block-map leaves, up to an unaligned end; SeekData and
// SeekHole find them from any offset.
func TestDiskReaderExtentShowsZeroBlocks(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	const size = 40<<20 + 3000
	disk := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 3))
	fill := func(off, n int) {
		for i := off; i < off+n; i++ {
			disk[i] = byte(rng.Uint32() | 1)
		}
	}
	fill(0, 1<<20)              // data, then 33 MiB of zeroes: several leaves
	fill(34<<20+5000, 100)      // one block with a little data in it
	fill(35<<20, testBlockSize) // one whole block
	fill(size-1000, 1000)       // the last, partial block
	path := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(path, disk, 0o600); err != nil {
		t.Fatal(err)
	}
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: path}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := vm.OpenDisk(ctx, rp.ID, "d", snapshot.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	calls := 0
	for off := int64(0); off < size; calls++ {
		n, zero, err := r.Extent(ctx, off)
		if err != nil {
			t.Fatal(err)
		}
		if n <= 0 || off+n > size || (off+n)%testBlockSize != 0 && off+n != size {
			t.Fatalf("extent at %d of %d bytes", off, n)
		}
		for b := off; b < off+n; b += testBlockSize {
			block := disk[b:min(b+testBlockSize, size)]
			if allZero := bytes.Equal(block, make([]byte, len(block))); allZero != zero {
				t.Fatalf("block at %d: all zero %v, but in an extent at %d of %d bytes that says zero %v", b, allZero, off, n, zero)
			}
		}
		off += n
	}
	if calls > 12 {
		t.Errorf("%d calls to cover a disk of 9 runs", calls)
	}
	if _, _, err := r.Extent(ctx, size); err == nil {
		t.Error("an extent at the end of the disk")
	}

	// SeekData and SeekHole find the same holes, from any offset.
	isHole := func(b int64) bool {
		block := disk[b*testBlockSize : min((b+1)*testBlockSize, size)]
		return bytes.Equal(block, make([]byte, len(block)))
	}
	blocks := int64(size+testBlockSize-1) / testBlockSize
	for off := int64(0); off < size; off += testBlockSize/2 + 3 {
		wantData, wantHole := int64(-1), int64(size)
		for b := off / testBlockSize; b < blocks; b++ {
			if !isHole(b) {
				wantData = max(off, b*testBlockSize)
				break
			}
		}
		for b := off / testBlockSize; b < blocks; b++ {
			if isHole(b) {
				wantHole = max(off, b*testBlockSize)
				break
			}
		}
		data, ok, err := r.SeekData(ctx, off)
		if err != nil || !ok && wantData != -1 || ok && data != wantData {
			t.Fatalf("SeekData(%d) = %d, %v, %v; want %d", off, data, ok, err, wantData)
		}
		if hole, err := r.SeekHole(ctx, off); err != nil || hole != wantHole {
			t.Fatalf("SeekHole(%d) = %d, %v; want %d", off, hole, err, wantHole)
		}
	}
}
