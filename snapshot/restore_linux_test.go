package snapshot_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// Restoring onto a block device writes zeros where the disk has them (the
// device held other data), never truncates it, and refuses a device that is
// too small; an incremental restore onto it writes only what differs.
func TestRestoreToBlockDevice(t *testing.T) {
	systest.Require(t)
	ctx := context.Background()
	vm, ids, images := chainOfThree(t)
	size := int64(len(images[0]))
	backing := filepath.Join(t.TempDir(), "dev.img")
	devSize := (size + 2<<20) &^ (1<<20 - 1) // whole sectors, and room past the disk's end
	junk := make([]byte, devSize)
	rand.Read(junk)
	os.WriteFile(backing, junk, 0o600)
	dev := systest.Loop(t, backing)

	// A device is written only when asked to, and through a link to it too.
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[0], Disk: "d", Path: dev}); !errors.Is(err, snapshot.ErrExists) {
		t.Fatalf("restore onto a device without Overwrite: %v, want ErrExists", err)
	}
	if got := readDevice(t, dev, devSize); !bytes.Equal(got, junk) {
		t.Fatal("a refused restore wrote to the device")
	}
	link := filepath.Join(t.TempDir(), "disk")
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	stats, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[0], Disk: "d", Path: link, Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	got := readDevice(t, dev, devSize)
	if !bytes.Equal(got[:size], images[0]) {
		t.Fatal("device does not hold the restored disk")
	}
	if !bytes.Equal(got[size:], junk[size:]) {
		t.Error("restore wrote past the disk's end on the device")
	}
	if stats.ZeroBytes == 0 {
		t.Error("no zero blocks written over the junk")
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link to the device was replaced: %v %v", fi.Mode(), err)
	}

	stats, err = vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[2], Disk: "d", Path: dev, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readDevice(t, dev, size); !bytes.Equal(got, images[2]) {
		t.Fatal("incremental restore onto the device is not bit-exact")
	}
	if stats.BlocksWritten == 0 || stats.BlocksSkipped == 0 {
		t.Errorf("incremental restore onto a device: %+v", stats)
	}

	small := systest.Loop(t, systest.Sparse(t, filepath.Join(t.TempDir(), "small.img"), size/2))
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[0], Disk: "d", Path: small, Overwrite: true}); err == nil || !strings.Contains(err.Error(), "smaller") {
		t.Errorf("restore onto a device smaller than the disk: %v", err)
	}
}

func readDevice(t *testing.T, dev string, n int64) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}
