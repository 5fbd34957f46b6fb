package qemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/diskpoint/diskpoint/snapshot"
)

// BackupOptions configure Backup.
type BackupOptions struct {
	// Disk names the disk in the collection ("os").
	Disk string
	// Node, NBDSocket, FleeceDir and Hold are as in PullOptions.
	Node, NBDSocket, FleeceDir string
	Hold                       func(ctx context.Context) (release func(), err error)
	// Create is the rest of the create's options; its Disks are replaced
	// by the frozen view of Disk.
	Create snapshot.CreateOptions
}

// Backup takes a restore point of one disk of a running QEMU or
// qemu-storage-daemon in vm by a pull-mode backup: the bitmap to read is
// the one the disk's newest restore point recorded, a new bitmap
// (BitmapPrefix + a new name) starts at the view's instant, and only the
// previous bitmap's dirty extents are read. A previous bitmap missing from
// the node (the daemon restarted without it) is no error: every block is
// read and compared, and the restore point says why.
func Backup(ctx context.Context, c *Client, vm *snapshot.Collection, opts BackupOptions) (*snapshot.RestorePoint, PullExport, error) {
	previous := ""
	switch last, err := vm.GetWithDisk(ctx, snapshot.Latest, opts.Disk); {
	case err == nil:
		if d, _ := last.Disk(opts.Disk); strings.HasPrefix(d.Bitmap, BitmapPrefix) {
			previous = d.Bitmap
		}
	case !errors.Is(err, snapshot.ErrNotFound):
		return nil, PullExport{}, err
	}
	next, err := newBitmapName(time.Now())
	if err != nil {
		return nil, PullExport{}, err
	}
	pull := PullOptions{Node: opts.Node, Previous: previous, Next: next, NBDSocket: opts.NBDSocket, FleeceDir: opts.FleeceDir, Hold: opts.Hold}
	create := opts.Create
	var rp *snapshot.RestorePoint
	read := func(ctx context.Context, exp PullExport) (err error) {
		// Bitmap is the previous one even when the node lost it: asked for
		// by name, the create finds the export without it and records the
		// reason it compared every block.
		create.Disks = []snapshot.DiskSource{{Name: opts.Disk, NBD: exp.URI, Bitmap: previous, NextBitmap: exp.NextBitmap, HeldStill: exp.FreezeWindow}}
		rp, err = vm.Create(ctx, create)
		return err
	}
	exp, err := PullBackup(ctx, c, pull, read)
	if errors.Is(err, ErrNoBitmap) {
		pull.Previous = ""
		exp, err = PullBackup(ctx, c, pull, read)
	}
	return rp, exp, err
}

// newBitmapName names a new bitmap: each backup starts its own, so that a
// bitmap deleted and recreated under one name is never taken for the one
// a restore point recorded.
func newBitmapName(now time.Time) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new bitmap name: %w", err)
	}
	return BitmapPrefix + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:]), nil
}
