package snapshot_test

import (
	"context"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/internal/synthdisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// diskBytes reads a whole generated disk.
func diskBytes(t *testing.T, d synthdisk.Disk) []byte {
	t.Helper()
	b := make([]byte, d.Size)
	if n, err := d.ReadAt(b, 0); n != len(b) {
		t.Fatalf("reading the generated disk: %d of %d bytes, %v", n, len(b), err)
	}
	return b
}

// A disk given as an io.ReaderAt is captured, read as it is (it has no
// clone), restores bit-exact, and an incremental of a changed generated
// disk stores exactly the blocks that changed.
func TestReaderDiskCreatesAndRestores(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	gen0, err := synthdisk.New(1000*testBlockSize+100, testBlockSize, 7, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	first, err := vm.Create(ctx, snapshot.CreateOptions{
		Disks: []snapshot.DiskSource{{Name: "d", Reader: gen0, Size: gen0.Size}},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := first.Disks[0]
	if d.Size != gen0.Size || d.Capture != "read" || first.Consistency != consistency.Inconsistent || !strings.Contains(first.FallbackReason, "read while in use") {
		t.Errorf("first point: disk %+v, consistency %q because %q; want size %d read live, labelled so", d, first.Consistency, first.FallbackReason, gen0.Size)
	}
	if d.NewChunkBytes != gen0.Size || d.StoredBytes > gen0.Size/20 {
		t.Errorf("first point stored %d bytes for %d new chunk bytes; want every block new, compressed to little", d.StoredBytes, d.NewChunkBytes)
	}
	restoreAndCompare(t, vm, first.ID, "d", diskBytes(t, gen0))

	gen1 := gen0.Change()
	var changed int64
	for b := range gen1.Blocks() {
		if gen1.Changed(1, b) {
			changed += min(testBlockSize, gen1.Size-b*testBlockSize)
		}
	}
	second, err := vm.Create(ctx, snapshot.CreateOptions{
		Disks:       []snapshot.DiskSource{{Name: "d", Reader: gen1, Size: gen1.Size}},
		Consistency: consistency.Crash, Hooks: []consistency.Hook{pauseHook()},
	})
	if err != nil {
		t.Fatal(err)
	}
	d = second.Disks[0]
	if d.Parent != first.ID || d.ChangedBytes != changed || d.NewChunkBytes != changed {
		t.Errorf("incremental: parent %q, changed %d, new chunks %d; want parent %q and %d bytes (the blocks generation 1 rewrote)", d.Parent, d.ChangedBytes, d.NewChunkBytes, first.ID, changed)
	}
	if frac := float64(changed) / float64(gen1.Size); frac < 0.03 || frac > 0.07 {
		t.Errorf("a 5%% change rewrote %.1f%% of the disk", 100*frac)
	}
	if d.Capture != "read-frozen" || second.Consistency != consistency.Crash {
		t.Errorf("paused reader disk: capture %q, consistency %q; want read-frozen, crash", d.Capture, second.Consistency)
	}
	restoreAndCompare(t, vm, second.ID, "d", diskBytes(t, gen1))
	restoreAndCompare(t, vm, first.ID, "d", diskBytes(t, gen0))
}

// A disk is a path or a reader, never both, and a Snapshotter (which
// works on paths) cannot take a reader.
func TestReaderDiskRefusesWhatCannotWork(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	gen, err := synthdisk.New(10*testBlockSize, testBlockSize, 1, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	path := makeDisk(t, t.TempDir(), "d.img", 1<<20, 1)
	for _, tc := range []struct {
		name string
		src  snapshot.DiskSource
		snap bool
		want string
	}{
		{"path and reader", snapshot.DiskSource{Name: "d", Path: path, Reader: gen, Size: gen.Size}, false, "both Path and Reader"},
		{"size without reader", snapshot.DiskSource{Name: "d", Path: path, Size: gen.Size}, false, "Size is given without a Reader"},
		{"reader of size 0", snapshot.DiskSource{Name: "d", Reader: gen}, false, "size 0"},
		{"reader and snapshotter", snapshot.DiskSource{Name: "d", Reader: gen, Size: gen.Size}, true, "Snapshotter"},
	} {
		opts := snapshot.CreateOptions{Disks: []snapshot.DiskSource{tc.src}}
		if tc.snap {
			opts.Snapshotter = newTestSnapshotter()
		}
		if _, err := vm.Create(ctx, opts); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `disk "d"`) {
			t.Errorf("%s: %v, want an error naming the disk and saying %q", tc.name, err, tc.want)
		}
	}
	if points, err := vm.List(ctx); err != nil || len(points) != 0 {
		t.Errorf("refused creates left %d points (%v)", len(points), err)
	}
}
