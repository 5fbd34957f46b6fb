package qemu

import (
	"context"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/snapshot"
)

// Backup chains restore points through generation-named bitmaps, and a
// bitmap lost by the daemon makes it compare every block, saying why.
func TestBackupChainsBitmapsAndSurvivesALostOne(t *testing.T) {
	d := startDaemon(t, diskSize)
	ctx := context.Background()
	c := d.client(t)
	vm := newVM(t)
	rw := startWriter(t, d)
	opts := BackupOptions{Disk: "os", Node: "disk0", NBDSocket: d.nbd, FleeceDir: t.TempDir()}
	var recorded []string
	for i, want := range []string{snapshot.ChangeSourceHash, snapshot.ChangeSourceBitmap, snapshot.ChangeSourceHash} {
		rw.waitFor(t, 100)
		if i == 2 { // the daemon lost the bitmap
			if err := c.Execute(ctx, "block-dirty-bitmap-remove", map[string]any{"node": "disk0", "name": recorded[1]}, nil); err != nil {
				t.Fatal(err)
			}
		}
		rp, exp, err := Backup(ctx, c, vm, opts)
		if err != nil {
			t.Fatalf("backup %d: %v", i, err)
		}
		checkRecords(t, vm, rp, exp, rw)
		dk, _ := rp.Disk("os")
		recorded = append(recorded, dk.Bitmap)
		if dk.ChangeSource != want || !strings.HasPrefix(dk.Bitmap, BitmapPrefix) || (i > 0 && dk.Bitmap == recorded[i-1]) {
			t.Errorf("backup %d: change source %q (%s), bitmap %q after %q", i, dk.ChangeSource, dk.ChangeReason, dk.Bitmap, recorded)
		}
		if i == 2 && !strings.Contains(dk.ChangeReason, recorded[1]) {
			t.Errorf("backup after a lost bitmap: reason %q does not name %q", dk.ChangeReason, recorded[1])
		}
	}
}
