package snapshot_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// openFilesUnder counts this process's open files under dir.
func openFilesUnder(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

// Close releases what a repository holds open: a service that opens and
// closes repositories must not run out of file descriptors.
func TestRepositoryCloseReleasesFiles(t *testing.T) {
	ctx := context.Background()
	_, dir := newRepo(t)
	dir, _ = filepath.EvalSymlinks(dir)
	repo, err := snapshot.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	disk := makeDisk(t, work, "d.img", 4<<20, 3)
	vm, _ := repo.Collection("vm")
	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
	if err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, vm, rp.ID, "d", readFile(t, disk))
	if openFilesUnder(t, dir) == 0 {
		t.Fatal("the restore left no pack open: the test shows nothing")
	}
	if err := repo.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFilesUnder(t, dir); n != 0 {
		t.Fatalf("%d files under the repository still open after Close", n)
	}
}
