package snapshot_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
	"golang.org/x/sys/unix"
)

// mountRepo mounts repo on a new directory, unmounted when the test ends.
func mountRepo(t *testing.T, repo *snapshot.Repository, opts snapshot.MountOptions) *snapshot.Mounted {
	t.Helper()
	systest.RequireFUSE(t)
	m, err := snapshot.Mount(context.Background(), repo, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			m.Detach()
		}
	})
	return m
}

// sparseDisk writes a disk of blocks of random data and holes: block i is
// data when data(i).
func sparseDisk(t *testing.T, path string, blocks int64, data func(int64) bool) []byte {
	t.Helper()
	image := make([]byte, blocks*testBlockSize)
	for i := range blocks {
		if data(i) {
			rand.Read(image[i*testBlockSize : (i+1)*testBlockSize])
		}
	}
	if err := os.WriteFile(path, image, 0o600); err != nil {
		t.Fatal(err)
	}
	return image
}

// The mount shows COLLECTION/POINT/DISK.img and vm-config with exact
// sizes and the point's time, latest links to the newest point, each
// image reads as its disk did, and SEEK_DATA/SEEK_HOLE find the holes.
func TestMountShowsRestorePoints(t *testing.T) {
	systest.RequireFUSE(t)
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	work := t.TempDir()
	// Data in blocks 0-9 and 300-309; the rest (more than a leaf) holes.
	path := filepath.Join(work, "os.img")
	firstImage := sparseDisk(t, path, 600, func(i int64) bool { return i < 10 || i >= 300 && i < 310 })
	config := []byte(`{"cpus": 2}`)
	first, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: path}}, VMConfig: config})
	if err != nil {
		t.Fatal(err)
	}
	secondImage := sparseDisk(t, path, 600, func(i int64) bool { return i >= 100 && i < 120 })
	second, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", Path: path}}})
	if err != nil {
		t.Fatal(err)
	}

	m := mountRepo(t, repo, snapshot.MountOptions{})
	entries, err := os.ReadDir(filepath.Join(m.Dir(), "vm"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// os.ReadDir sorts by name; two points taken in the same second have
	// IDs in the order of their random suffixes, not of their taking.
	if want := []string{first.ID, second.ID, "latest"}; strings.Join(names, " ") != strings.Join(slices.Sorted(slices.Values(want)), " ") {
		t.Errorf("vm/ holds %q, want %q", names, want)
	}
	if target, err := os.Readlink(filepath.Join(m.Dir(), "vm", "latest")); err != nil || target != second.ID {
		t.Errorf("vm/latest -> %q (%v), want %q", target, err, second.ID)
	}
	for _, p := range []struct {
		rp    *snapshot.RestorePoint
		image []byte
	}{{first, firstImage}, {second, secondImage}} {
		img := filepath.Join(m.Dir(), "vm", p.rp.ID, "os.img")
		st, err := os.Stat(img)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(len(p.image)) || !st.ModTime().Equal(p.rp.Created) || st.Mode() != 0o444 {
			t.Errorf("%s: size %d, time %v, mode %v; want %d, %v, -r--r--r--", img, st.Size(), st.ModTime(), st.Mode(), len(p.image), p.rp.Created)
		}
		got, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p.image) {
			t.Errorf("%s does not read as the disk did", img)
		}
	}
	got, err := os.ReadFile(filepath.Join(m.Dir(), "vm", first.ID, "vm-config"))
	if err != nil || !bytes.Equal(got, config) {
		t.Errorf("vm-config reads %q (%v), want %q", got, err, config)
	}
	if _, err := os.Stat(filepath.Join(m.Dir(), "vm", second.ID, "vm-config")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a point without a VM config has vm-config: %v", err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir(), "vm", first.ID, "os.img"), []byte("x"), 0); err == nil {
		t.Error("writing a disk image worked on a read-only mount")
	}

	// SEEK_DATA and SEEK_HOLE: data [0,10) and [300,310) blocks.
	f, err := os.Open(filepath.Join(m.Dir(), "vm", first.ID, "os.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bs := int64(testBlockSize)
	for _, s := range []struct {
		from   int64
		whence int
		want   int64
	}{
		{0, unix.SEEK_HOLE, 10 * bs},
		{5 * bs, unix.SEEK_DATA, 5 * bs},
		{10 * bs, unix.SEEK_DATA, 300 * bs},
		{10*bs + 7, unix.SEEK_HOLE, 10*bs + 7},
		{300 * bs, unix.SEEK_HOLE, 310 * bs},
		{310 * bs, unix.SEEK_DATA, -1}, // ENXIO: nothing but holes follow
	} {
		got, err := unix.Seek(int(f.Fd()), s.from, s.whence)
		if s.want < 0 {
			if !errors.Is(err, syscall.ENXIO) {
				t.Errorf("lseek(%d, whence %d) = %d, %v; want ENXIO", s.from, s.whence, got, err)
			}
			continue
		}
		if err != nil || got != s.want {
			t.Errorf("lseek(%d, whence %d) = %d, %v; want %d", s.from, s.whence, got, err, s.want)
		}
	}
}

// A damaged chunk fails the reads of its region with EIO, names the
// object to OnError, and leaves the rest of the disk and other points
// readable.
func TestMountDamagedChunkIsEIO(t *testing.T) {
	systest.RequireFUSE(t)
	f := newCorruptionFixture(t)
	path, loc := f.blobFile(t, f.uniqueA)
	flipAt(t, path, loc.Offset+loc.Length/2)
	damaged := int64(-1)
	for i, id := range f.blockIDs(t, "A") {
		if id == f.uniqueA {
			damaged = int64(i) * testBlockSize
			break
		}
	}
	var mu sync.Mutex
	var reported []error
	m := mountRepo(t, f.repo, snapshot.MountOptions{OnError: func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}})
	img, err := os.Open(filepath.Join(m.Dir(), "vm", f.points["A"].ID, "d.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, testBlockSize)
	if _, err := img.ReadAt(buf, damaged); !errors.Is(err, syscall.EIO) {
		t.Errorf("reading the damaged block at %d: %v, want EIO", damaged, err)
	}
	mu.Lock()
	if len(reported) == 0 || !strings.Contains(reported[0].Error(), f.uniqueA.String()) && !strings.Contains(reported[0].Error(), loc.Pack) {
		t.Errorf("reported %v; want an error naming blob %s or pack %s", reported, f.uniqueA, loc.Pack)
	}
	mu.Unlock()
	// Every other 128 KiB region (a FUSE read's size) of A still reads.
	const region = 128 << 10
	for off := int64(0); off < int64(len(f.images["A"])); off += region {
		if off <= damaged && damaged < off+region {
			continue
		}
		part := make([]byte, min(region, int64(len(f.images["A"]))-off))
		if _, err := img.ReadAt(part, off); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("reading A at %d, away from the damage: %v", off, err)
		}
		if !bytes.Equal(part, f.images["A"][off:off+int64(len(part))]) {
			t.Fatalf("A at %d reads wrong", off)
		}
	}
	got, err := os.ReadFile(filepath.Join(m.Dir(), "vm", f.points["B"].ID, "d.img"))
	if err != nil || !bytes.Equal(got, f.images["B"]) {
		t.Errorf("point B (which lacks the damaged chunk) reads wrong: %v", err)
	}
}

// Unmount ends the mount; so does an unmount from outside (umount, as
// fusermount -u does), which Wait sees.
func TestMountUnmounts(t *testing.T) {
	systest.RequireFUSE(t)
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	path := makeDisk(t, t.TempDir(), "d.img", 1<<20, 5)
	if _, err := vm.Create(context.Background(), snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: path}}}); err != nil {
		t.Fatal(err)
	}
	for _, outside := range []bool{false, true} {
		dir := t.TempDir()
		m, err := snapshot.Mount(context.Background(), repo, dir, snapshot.MountOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !systest.IsMountPoint(t, dir) {
			t.Fatalf("%s is not a mount point after Mount", dir)
		}
		if outside {
			if err := unix.Unmount(dir, 0); err != nil {
				t.Fatal(err)
			}
			select {
			case <-m.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("Wait did not return after an unmount from outside")
			}
		} else if err := m.Unmount(); err != nil {
			t.Fatal(err)
		}
		if systest.IsMountPoint(t, dir) {
			t.Errorf("%s is still a mount point (unmounted from outside: %v)", dir, outside)
		}
		if err := m.Unmount(); err != nil {
			t.Errorf("a second Unmount: %v", err)
		}
	}
}
