package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// A restore point is named by its ID, a unique prefix of it, or Latest,
// which, when a disk is named, is the newest point that has that disk.
func TestPointReferences(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	dir := t.TempDir()
	a, b := makeDisk(t, dir, "a.img", 1<<20, 1), makeDisk(t, dir, "b.img", 1<<20, 2)
	disks := []snapshot.DiskSource{{Name: "a", Path: a}, {Name: "b", Path: b}}
	withB, err := vm.Create(ctx, snapshot.CreateOptions{Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	imageB := readFile(t, b)
	demodisk.Scatter(b, 0.1, 3)
	withoutB, err := vm.Create(ctx, snapshot.CreateOptions{Disks: disks, Exclude: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		ref, disk, want string
	}{
		{snapshot.Latest, "", withoutB.ID},
		{snapshot.Latest, "a", withoutB.ID},
		{snapshot.Latest, "b", withB.ID},
		{withB.ID, "", withB.ID},
		{withB.ID[:len(withB.ID)-1], "", withB.ID},
	} {
		rp, err := vm.GetWithDisk(ctx, tc.ref, tc.disk)
		if err != nil || rp.ID != tc.want {
			t.Errorf("GetWithDisk(%q, %q) = %v, %v; want %s", tc.ref, tc.disk, rp, err, tc.want)
		}
	}
	if rp, err := vm.Get(ctx, withoutB.ID[:len(withoutB.ID)-2]); err != nil || rp.ID != withoutB.ID {
		t.Errorf("Get of a unique prefix: %v, %v", rp, err)
	}
	// Both IDs begin with the date: ambiguous, and the error lists both.
	_, err = vm.Get(ctx, withB.ID[:4])
	if !errors.Is(err, snapshot.ErrAmbiguous) || !strings.Contains(err.Error(), withB.ID) || !strings.Contains(err.Error(), withoutB.ID) {
		t.Errorf("Get of an ambiguous prefix: %v", err)
	}
	if _, err := vm.Get(ctx, "1999"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Get of no point: %v", err)
	}
	if _, err := vm.GetWithDisk(ctx, snapshot.Latest, "c"); !errors.Is(err, snapshot.ErrNotFound) || !strings.Contains(err.Error(), `"c"`) {
		t.Errorf("latest of a disk no point has: %v", err)
	}

	// Restore, OpenDisk and Diff resolve references the same way.
	out := filepath.Join(dir, "out.img")
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: snapshot.Latest, Disk: "b", Path: out}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), imageB) {
		t.Error("restore of latest b did not restore the newest point that has b")
	}
	r, err := vm.OpenDisk(ctx, snapshot.Latest, "b", snapshot.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	r.Close()
	if !bytes.Equal(got, imageB) {
		t.Error("OpenDisk of latest b did not open the newest point that has b")
	}
	if ranges, err := vm.Diff(ctx, snapshot.DiffOptions{Disk: "b", From: withB.ID[:len(withB.ID)-1], To: snapshot.Latest}); err != nil || len(ranges) != 0 {
		t.Errorf("Diff of a prefix and latest b: %v, %v", ranges, err)
	}
}
