package qemu

import (
	"context"
	"errors"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// A backup that fails, one cancelled mid-read, and one killed midway
// (its QMP connection dropped with nothing torn down) lose no change: the
// next backup, read against the last stored point's bitmap, restores
// every record acknowledged before its transaction.
func TestPullModeFailedBackupsLoseNoChange(t *testing.T) {
	d := startDaemon(t, diskSize)
	ctx := context.Background()
	c := d.client(t)
	vm := newVM(t)
	rw := startWriter(t, d)
	rw.waitFor(t, 200)
	if _, _, _, err := backup(t, ctx, c, d, vm, rw, "", "diskpoint-1", nil); err != nil {
		t.Fatal(err)
	}

	// A read that fails: its bitmap is merged back.
	boom := errors.New("the create failed")
	if _, _, _, err := backup(t, ctx, c, d, vm, rw, "diskpoint-1", "diskpoint-2", boom); !errors.Is(err, boom) {
		t.Fatalf("a failed read gave %v", err)
	}
	// A create cancelled while it reads.
	cctx, cancel := context.WithCancel(ctx)
	_, err := PullBackup(cctx, c, PullOptions{Node: "disk0", Previous: "diskpoint-1", Next: "diskpoint-3", NBDSocket: d.nbd, FleeceDir: t.TempDir()},
		func(ctx context.Context, exp PullExport) error {
			rw.waitFor(t, 50)
			cancel()
			_, err := vm.Create(ctx, snapshot.CreateOptions{Disks: []snapshot.DiskSource{{Name: "os", NBD: exp.URI, Bitmap: exp.Bitmap, NextBitmap: exp.NextBitmap, HeldStill: exp.FreezeWindow}}})
			return err
		})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled create gave %v", err)
	}
	node, err := c.blockNode(ctx, "disk0")
	if err != nil {
		t.Fatal(err)
	}
	if b := node.bitmap("diskpoint-1"); len(node.DirtyBitmaps) != 1 || b == nil || !b.Recording {
		t.Fatalf("after failed backups the node has bitmaps %+v, want diskpoint-1 alone, recording", node.DirtyBitmaps)
	}

	// Killed midway: the transaction ran, the export is up, and the
	// connection goes with nothing torn down. (The daemon's monitor takes
	// one connection at a time, as a VM's does.)
	if _, err := StartPull(ctx, c, PullOptions{Node: "disk0", Previous: "diskpoint-1", Next: "diskpoint-4", NBDSocket: d.nbd, FleeceDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	rw.waitFor(t, 200)
	c = d.client(t)

	rp, exp, _, err := backup(t, ctx, c, d, vm, rw, "diskpoint-1", "diskpoint-5", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Recovered {
		t.Error("the backup after a killed one did not say it recovered")
	}
	dk, _ := rp.Disk("os")
	if dk.ChangeSource != snapshot.ChangeSourceBitmap || dk.BitmapRead != "diskpoint-1" {
		t.Errorf("change source %q (%s), bitmap read %q: want the bitmap diskpoint-1", dk.ChangeSource, dk.ChangeReason, dk.BitmapRead)
	}
	checkRecords(t, vm, rp, exp, rw)
}
