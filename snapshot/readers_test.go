package snapshot_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/snapshot"
)

// pointsOf creates n restore points of one disk, changing a fifth of it
// between them, and returns their IDs and images.
func pointsOf(t *testing.T, vm *snapshot.Collection, size int64, n int) ([]string, [][]byte) {
	t.Helper()
	disk := makeDisk(t, t.TempDir(), "d.img", size, 31)
	var ids []string
	var images [][]byte
	for i := range n {
		if i > 0 {
			if _, err := demodisk.Scatter(disk, 0.2, uint64(50+i)); err != nil {
				t.Fatal(err)
			}
		}
		rp, err := vm.Create(context.Background(), snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk}}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rp.ID)
		images = append(images, readFile(t, disk))
	}
	return ids, images
}

// otherProcess opens the repository in dir as another process would: its
// own index, its own in-process locks.
func otherProcess(t *testing.T, dir string) (*snapshot.Repository, *snapshot.Collection) {
	t.Helper()
	repo, err := snapshot.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	return repo, vm
}

// An export of a restore point that another process deletes and then
// collects garbage for reads on, bit-exact; once the export closes, the
// next GC reclaims the point's space.
func TestExportOfADeletedPointReadsOn(t *testing.T) {
	ctx := context.Background()
	repo, dir := newRepo(t)
	vm, _ := repo.Collection("vm")
	ids, images := pointsOf(t, vm, 8<<20, 2)
	r, err := vm.OpenDisk(ctx, ids[0], "d", snapshot.ReaderOptions{CacheBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	other, otherVM := otherProcess(t, dir)
	if err := otherVM.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := other.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01}); err != nil {
		t.Fatalf("GC beside an export: %v", err)
	}
	var got bytes.Buffer
	if _, err := io.Copy(&got, io.NewSectionReader(r, 0, r.Size())); err != nil {
		t.Fatalf("reading the export after its point was deleted and GC ran: %v", err)
	}
	if !bytes.Equal(got.Bytes(), images[0]) {
		t.Fatal("the export reads wrong bytes after its point was deleted and GC ran")
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(make([]byte, 10), 0); err == nil {
		t.Error("a closed DiskReader still reads")
	}
	report, err := other.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	if report.BlobsRemoved == 0 || report.BytesReclaimed() <= 0 || report.PacksDeferred != 0 {
		t.Fatalf("GC once the export closed: %+v; want the deleted point's space reclaimed", report)
	}
	restoreAndCompare(t, vm, ids[1], "d", images[1])
}

// A restore reads on, bit-exact, while another process deletes the point
// being restored and an older one and collects garbage with repacking. The
// GC runs when the restore has written its first leaf and read nothing of
// the rest: the rest is read after it. The repository is in an object
// store (here in memory) shared by two Repository objects: a local store's
// cached file descriptors would keep packs deleted under the restore
// readable, an object store does not.
func TestRestoreBesideDeleteAndGC(t *testing.T) {
	ctx := context.Background()
	store := chain.NewMemStore()
	repo, err := snapshot.InitStore(ctx, store, snapshot.InitOptions{BlockSize: testBlockSize, Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	ids, images := pointsOf(t, vm, 16<<20, 3) // four block-map leaves
	other, err := snapshot.OpenStore(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherVM, _ := other.Collection("vm")
	var gcErr error
	var report chain.GCReport
	gcRan := false
	progress := func(done, total int64) {
		if gcRan {
			return
		}
		gcRan = true
		for _, id := range ids[:2] {
			if gcErr = otherVM.Delete(ctx, id); gcErr != nil {
				return
			}
		}
		report, gcErr = other.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01})
	}
	out := filepath.Join(t.TempDir(), "out.img")
	if _, err := vm.RestoreDisk(ctx, snapshot.RestoreOptions{Point: ids[1], Disk: "d", Path: out, Workers: 1, Progress: progress}); err != nil {
		t.Fatalf("restore beside delete and GC: %v", err)
	}
	if !gcRan || gcErr != nil {
		t.Fatalf("the GC beside the restore: ran %v, %v", gcRan, gcErr)
	}
	if report.PacksRepacked+report.PacksDeleted == 0 {
		t.Fatalf("the GC beside the restore moved nothing: %+v", report)
	}
	if got := readFile(t, out); !bytes.Equal(got, images[1]) {
		t.Fatal("restore beside delete and GC wrote wrong bytes")
	}
	// Its lock released, the next GC deletes what the restore held back.
	after, err := other.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01})
	if err != nil || after.GarbagePacksDeleted != report.PacksDeferred || after.BlobsRemoved == 0 {
		t.Fatalf("GC after the restore: %+v, %v; want the %d deferred packs and the restored point's own blobs gone", after, err, report.PacksDeferred)
	}
	restoreAndCompare(t, otherVM, ids[2], "d", images[2])
	if vr, err := other.Verify(ctx, snapshot.VerifyOptions{}); err != nil || !vr.OK() || vr.UnindexedPacks != 0 {
		t.Fatalf("verify: %+v, %v", vr, err)
	}
}

// The source side of a copy holds a reader lock: another process deletes
// the point being copied and collects garbage while the copy runs (after
// its first blob), and the copy completes and restores bit-exact.
func TestCopyBesideDeleteAndGCOfItsSource(t *testing.T) {
	ctx := context.Background()
	store := chain.NewMemStore() // no cached descriptors: see TestRestoreBesideDeleteAndGC
	src, err := snapshot.InitStore(ctx, store, snapshot.InitOptions{BlockSize: testBlockSize, Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := src.Collection("vm")
	ids, images := pointsOf(t, vm, 4<<20, 2)
	other, err := snapshot.OpenStore(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherVM, _ := other.Collection("vm")
	dst, _ := newRepo(t)
	to, _ := dst.Collection("vm")
	var gcErr error
	gcRan := false
	progress := func(chain.CopyStats) {
		if gcRan {
			return
		}
		gcRan = true
		if gcErr = otherVM.Delete(ctx, ids[0]); gcErr == nil {
			_, gcErr = other.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01})
		}
	}
	if _, _, err := vm.Copy(ctx, ids[0], to, snapshot.CopyOptions{Progress: progress}); err != nil {
		t.Fatalf("copy beside delete and GC of its source: %v", err)
	}
	if !gcRan || gcErr != nil {
		t.Fatalf("the GC beside the copy: ran %v, %v", gcRan, gcErr)
	}
	restoreAndCompare(t, to, ids[0], "d", images[0])
}

// onFirstPackRead is a store that runs hook when a pack is first read
// through it: another process acting while a reader has just begun.
type onFirstPackRead struct {
	chain.Store
	once sync.Once
	hook func()
}

func (s *onFirstPackRead) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if strings.HasPrefix(name, "packs/") {
		s.once.Do(s.hook)
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

// A diff holds a reader lock: another process deletes both points and
// collects garbage as the diff reads its first block-map node, and the diff
// still reads every node it needs.
func TestDiffBesideDeleteAndGC(t *testing.T) {
	ctx := context.Background()
	store := chain.NewMemStore()
	repo, err := snapshot.InitStore(ctx, store, snapshot.InitOptions{BlockSize: testBlockSize, Format: testFormat()})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := repo.Collection("vm")
	ids, _ := pointsOf(t, vm, 16<<20, 2)
	want, err := vm.Diff(ctx, snapshot.DiffOptions{Disk: "d", From: ids[0], To: ids[1]})
	if err != nil || len(want) == 0 {
		t.Fatalf("diff: %v, %v", want, err)
	}
	other, err := snapshot.OpenStore(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherVM, _ := other.Collection("vm")
	var gcErr error
	watched := &onFirstPackRead{Store: store, hook: func() {
		for _, id := range ids {
			if gcErr = otherVM.Delete(ctx, id); gcErr != nil {
				return
			}
		}
		_, gcErr = other.GC(ctx, snapshot.GCOptions{RepackUnused: 0.01})
	}}
	reader, err := snapshot.OpenStore(ctx, watched, nil)
	if err != nil {
		t.Fatal(err)
	}
	readerVM, _ := reader.Collection("vm")
	got, err := readerVM.Diff(ctx, snapshot.DiffOptions{Disk: "d", From: ids[0], To: ids[1]})
	if gcErr != nil {
		t.Fatalf("the GC beside the diff: %v", gcErr)
	}
	if err != nil {
		t.Fatalf("diff beside delete and GC: %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("diff beside delete and GC: %v, want %v", got, want)
	}
}
