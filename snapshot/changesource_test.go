package snapshot_test

import (
	"context"
	"testing"

	"github.com/diskpoint/diskpoint/blockdiff"
	"github.com/diskpoint/diskpoint/snapshot"
)

// A restore point records how each disk's changes were found: "hash"
// when every block was read and compared, "ranges" for the caller's list;
// a Bitmap on a disk that is not an NBD export is refused.
func TestCreateRecordsChangeSource(t *testing.T) {
	ctx := context.Background()
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disk := makeDisk(t, t.TempDir(), "d.img", 2<<20, 7)
	for i, src := range []snapshot.DiskSource{
		{Name: "d", Path: disk},
		{Name: "d", Path: disk, ChangedOnly: true, Changed: []blockdiff.Range{{Offset: 0, Length: 4096}}},
		{Name: "d", Path: disk},
	} {
		rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{src}})
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{true: snapshot.ChangeSourceRanges, false: snapshot.ChangeSourceHash}[src.ChangedOnly]
		if d, _ := rp.Disk("d"); d.ChangeSource != want || d.ChangeReason != "" || d.Bitmap != "" {
			t.Errorf("create %d: change source %q, reason %q, bitmap %q; want %q", i, d.ChangeSource, d.ChangeReason, d.Bitmap, want)
		}
		// Read back from the stored manifest, not only the value Create returned.
		if got, _ := vm.Get(ctx, rp.ID); got == nil || got.Disks[0].ChangeSource != want {
			t.Errorf("create %d: the stored manifest says %+v", i, got)
		}
	}
	if _, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "d", Path: disk, Bitmap: "b0"}}}); err == nil {
		t.Error("a bitmap on a disk file was accepted")
	}
}
