package snapshot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
	"golang.org/x/sys/unix"
)

// fragmentedImage writes an image of size bytes with a hole punched in
// every other 4 KiB, so that it has thousands of extents: FICLONE of it
// takes tens of milliseconds on XFS, and cannot be interrupted.
func fragmentedImage(t *testing.T, dir, name string, size int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < int64(size); off += 8 << 10 {
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, 4<<10); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// The freeze window ends while FICLONE runs: Create returns the timeout,
// and the clone that FICLONE finishes afterwards is removed all the same.
func TestCaptureReflinkCloneFinishedAfterTimeoutIsRemoved(t *testing.T) {
	systest.Require(t, "mkfs.xfs")
	ctx := context.Background()
	_, mnt := systest.FileSystem(t, t.TempDir(), "xfs", 512<<20)
	var disks []snapshot.DiskSource
	for _, name := range []string{"a", "b"} {
		disks = append(disks, snapshot.DiskSource{Name: name, Path: fragmentedImage(t, mnt, name+".img", 32<<20)})
	}
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	for i := range 3 {
		_, err := vm.Create(ctx, snapshot.CreateOptions{Disks: disks, MaxFreeze: time.Millisecond})
		if !errors.Is(err, consistency.ErrFreezeTimeout) {
			t.Fatalf("create %d with a 1ms freeze window: %v, want ErrFreezeTimeout", i, err)
		}
		// The capture's writer holds the repository lock until everything
		// is released: GC, which needs it exclusively, waits for that.
		if _, err := repo.GC(ctx, snapshot.GCOptions{LockWait: waitLong}); err != nil {
			t.Fatalf("gc after create %d: %v", i, err)
		}
		entries, err := os.ReadDir(mnt)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.Contains(e.Name(), "diskpoint-capture") {
				t.Fatalf("create %d left clone %s behind", i, e.Name())
			}
		}
	}
}
