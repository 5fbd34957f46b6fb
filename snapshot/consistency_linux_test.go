package snapshot_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/diskpoint/diskpoint/consistency"
	"github.com/diskpoint/diskpoint/internal/systest"
	"github.com/diskpoint/diskpoint/snapshot"
)

// A mounted ext4 on a block device, written all the time, is read as it is
// when nothing holds it still: that restore point is labelled inconsistent
// (a restore of it can need more than a journal replay), never crash. The
// same disk frozen by the fsfreeze hook is file-system-consistent.
func TestLiveReadOfAMountedFileSystemIsInconsistent(t *testing.T) {
	systest.Require(t, "mkfs.ext4", "fsfreeze")
	ctx := context.Background()
	dev, mnt := systest.FileSystem(t, t.TempDir(), "ext4", 64<<20)
	writer := startWriter(t, mnt)
	writer.awaitWrite(t, "before the restore points")
	repo, _ := newRepo(t)
	vm, _ := repo.Collection("vm")
	disks := []snapshot.DiskSource{{Name: "root", Path: dev}}

	rp, err := vm.Create(ctx, snapshot.CreateOptions{Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	if rp.Disks[0].Capture != "read" || rp.Consistency != "inconsistent" || !strings.Contains(rp.FallbackReason, `disk "root" was read while in use`) {
		t.Errorf("live read: capture %q, consistency %q because %q", rp.Disks[0].Capture, rp.Consistency, rp.FallbackReason)
	}
	if rp.CaptureSpreadMillis < 0 {
		t.Errorf("capture spread %d ms", rp.CaptureSpreadMillis)
	}
	writer.awaitWrite(t, "between the restore points")

	rp, err = vm.Create(ctx, snapshot.CreateOptions{
		Disks: disks, Consistency: consistency.FileSystem,
		Hooks: []consistency.Hook{&consistency.FSFreezeHook{MountPoints: []string{mnt}}}, MaxFreeze: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rp.Disks[0].Capture != "read-frozen" || rp.Consistency != "filesystem" || rp.FallbackReason != "" {
		t.Errorf("frozen: capture %q, consistency %q because %q", rp.Disks[0].Capture, rp.Consistency, rp.FallbackReason)
	}
	e2fsck(t, restoreTo(t, vm, rp.ID, "root"))
	writer.awaitWrite(t, "after the thaw")
}
